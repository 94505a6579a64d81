"""ComfyUI's guider classes (comfy.samplers.CFGGuider, comfy_extras' Guider_Basic / Guider_PerpNeg) as sdgraph
GUIDER values, so a pack's guider runs through sdgraph's SamplerCustomAdvanced.

They take ComfyUI's construction (`Guider(model)`, then `set_conds(...)`, `set_cfg(...)`) and give sdgraph's
denoiser. A pack's subclass that overrides `predict_noise` (ComfyUI's per-step hook) is refused when sampling
starts: sdgraph's sampler never calls predict_noise, so running it would silently ignore the pack's guidance.
"""
from __future__ import annotations

from typing import Any

from sdgraph.nodes.sd.custom_sampling import CFGGuide
from sdgraph.nodes.sd.perp_neg import PerpNegGuide

_REFUSED = ("{cls}.predict_noise: a guider overriding ComfyUI's predict_noise cannot run in sdgraph's sampler, "
            "which computes guidance itself")


class ComfyGuiderMixin:
    """ComfyUI's guider surface over an sdgraph guide (`self.positive`, `self.negative`, `self.cfg`)."""

    def _comfy_init(self, model_patcher: Any) -> None:
        self.model_patcher = model_patcher
        self.model_options = getattr(model_patcher, "model_options", {})
        self.original_conds: dict[str, Any] = {}

    def set_conds(self, positive: list, negative: list) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def inner_set_conds(self, conds: dict[str, Any]) -> None:
        self.original_conds.update(conds)
        self.positive = conds.get("positive", self.positive)
        self.negative = conds.get("negative", self.negative)

    def set_cfg(self, cfg: float) -> None:
        self.cfg = float(cfg)

    def predict_noise(self, x: Any, timestep: Any, model_options: dict | None = None, seed: Any = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.predict_noise: ComfyUI's per-step guider call is not "
                                  "provided; sample it with sdgraph's SamplerCustomAdvanced")

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.sample: sampling from a guider object directly is not "
                                  "provided; connect the GUIDER to SamplerCustomAdvanced")

    def denoiser(self, samples: Any, manager: Any, keep_uncond: bool = False) -> Any:
        if type(self).predict_noise is not ComfyGuiderMixin.predict_noise:
            raise NotImplementedError(_REFUSED.format(cls=type(self).__name__))
        return super().denoiser(samples, manager, keep_uncond)  # type: ignore[misc]


class CFGGuider(ComfyGuiderMixin, CFGGuide):
    """Classifier-free guidance between the positive and negative conds, at cfg (1.0 until set_cfg)."""

    def __init__(self, model_patcher: Any) -> None:
        CFGGuide.__init__(self, model_patcher, [], [], 1.0)
        self._comfy_init(model_patcher)


class Guider_Basic(CFGGuider):  # noqa: N801 - ComfyUI's name
    """The positive conds' prediction alone."""

    def set_conds(self, positive: list) -> None:  # type: ignore[override]
        self.inner_set_conds({"positive": positive})


class Guider_PerpNeg(ComfyGuiderMixin, PerpNegGuide):  # noqa: N801
    """Perp-Neg guidance (sdgraph's PerpNegGuider): set_conds(positive, negative, empty_negative_prompt),
    set_cfg(cfg, neg_scale)."""

    def __init__(self, model_patcher: Any) -> None:
        PerpNegGuide.__init__(self, model_patcher, [], [], [], 1.0, 1.0)
        self._comfy_init(model_patcher)

    def set_conds(self, positive: list, negative: list, empty_negative_prompt: list) -> None:  # type: ignore[override]
        from sdgraph.nodes.sd.custom_sampling import _as_negative  # noqa: PLC0415

        self.inner_set_conds({"positive": positive, "negative": negative})
        self.original_conds["empty_negative_prompt"] = empty_negative_prompt
        self.empty = _as_negative(empty_negative_prompt)

    def set_cfg(self, cfg: float, neg_scale: float | None = None) -> None:  # type: ignore[override]
        self.cfg = float(cfg)
        if neg_scale is not None:
            self.neg_scale = float(neg_scale)
