"""The discrete-time Stable Diffusion denoiser: a UNet, its noise schedule and classifier-free guidance, seen by
the samplers as `denoise(x, sigma) -> denoised` in the parametrisation x = x0 + sigma * eps.

- the MODEL's model sampling (`get_model_object("model_sampling")`, see `nodes.sd.model_sampling`) maps sigma to
  the UNet's timestep (discrete models: the whole one nearest in log-sigma, as ComfyUI's), scales its input
  (c_in = 1 / sqrt(sigma^2 + 1)) and reads its output (epsilon: x0 = x - sigma * eps; v-prediction, x0, ...);
- guidance: out = out_uncond + cfg * (out_cond - out_uncond) on the UNet's outputs (every parametrisation is
  affine in them, so this is cfg on the x0 estimates); with one positive and one negative entry (the usual case)
  both go through the UNet in one batched call, [uncond; cond], as diffusers pipelines do, and the per-call
  tensors that do not change between steps (text embeddings, SDXL ids) are built once;
- a MODEL whose options set sampler-level hooks (cfg / pre-cfg / post-cfg functions, a UNet function wrapper) is
  evaluated by ComfyUI's pipeline instead (`nodes.sd.cfg_pipeline`), on x0 estimates, with the hooks' arguments;
  `disable_cfg1_optimization` (or a CFG++ sampler) evaluates the negative side at cfg 1 too;
- several entries per side, "area", "mask" and "strength" extras: each entry is evaluated on its own (on its
  area's crop) and the entries of a side are averaged with ComfyUI's weights (see `cond_areas`: percentage
  areas, mask bounds, mask strength, the fade at an area's inner edges, twins of area entries on the other side);
  where no entry of a side weighs anything (outside every area, or every entry outside its step window) the
  side's estimate is 0, as in ComfyUI;
- "start_percent"/"end_percent": an entry sits out the steps outside its window (`cond_areas.in_window`);
- inpainting (9-channel) and InstructPix2Pix (8-channel) UNets get each entry's concat channels after the
  scaled latent (see `concat_cond`); the sampler hands over the LATENT's noise mask with `set_noise_mask`;
- ControlNet: an entry's "control" hint (see `nodes.sd.control`) adds residuals while the step's percent
  (ComfyUI's: 1 - timestep / 999) lies in the hint's [start_percent, end_percent];
- SDXL: `added_cond_kwargs` from the entry's pooled output and size/crop extras (the refiner's aesthetic score
  defaults by the side the entry is on: positive or negative); an entry's "unclip_conditioning" replaces the
  pooled output (ComfyUI's ReVision, see `unclip`);
- unCLIP: a UNet with a projection class embedding gets each entry's ADM vector as `class_labels` (ComfyUI's
  "y", zeros for entries without unCLIP items), its noise drawn from the sampling seed (`unclip.sampling_seed`);
- model patches: when the MODEL's transformer_options hold patches, each UNet call goes through
  `nodes.sd.unet_walk.patched_unet` with a per-call copy of them plus ComfyUI's "cond_or_uncond" (0 cond, 1 uncond,
  one per stacked batch chunk) and "sigmas" (the step's sigma per latent); without patches the diffusers UNet is
  called as it is. On the hooked path the per-call options are the ones `cfg_pipeline.calc_cond_batch` builds from
  the model options it is given;
- GLIGEN: an entry's "gligen" boxes become a per-call middle patch after the MODEL's (see `gligen_cond`); such an
  entry always gets a UNet call of its own, and the negative side gets the positive's boxes first, as in ComfyUI.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from sdgraph.nodes.sd.batching import to_batch
from sdgraph.nodes.sd.cfg_pipeline import guided_prediction, sampler_hooks_set
from sdgraph.nodes.sd.concat_cond import ConcatSource, concat_kind
from sdgraph.nodes.sd.gligen_cond import cond_patches, share_with_other_side, with_cond_patches
from sdgraph.nodes.sd.cond_areas import (add_area_twins, area_box, entry_weight, in_window, resize_mask,
                                         resolve_entry, step_window)
from sdgraph.nodes.sd.model_patcher import copy_options
from sdgraph.nodes.sd.model_sampling import latent_format_of, model_sampling_of
from sdgraph.nodes.sd.unclip import adm_input, current_seed, revision_pooled
from sdgraph.nodes.sd.unet_merge import call_unet, on_model_thread
from sdgraph.nodes.sd.unet_walk import has_unet_patches, patched_unet

Tensor = torch.Tensor


@dataclass
class Entry:
    """One conditioning entry, prepared once for the whole sampling run."""

    context: Tensor  # [1, T, D] on the compute device, in the UNet's dtype
    extras: dict[str, Any]
    area: tuple[int, int, int, int] | None = None  # (h, w, y, x) in latent units
    strength: float = 1.0
    mask: Tensor | None = None  # [1 or B, 1, h, w] float32 on the device
    added: dict[str, Tensor] | None = None  # SDXL added_cond_kwargs for the full batch
    y: Tensor | None = None  # an unCLIP UNet's class-embedding input [B, ADM] (see `unclip`)
    control: Any = None
    window: tuple[float, float] | None = None  # (sigma at start_percent, sigma at end_percent)
    weight: Tensor | None = None  # its weight on its area's box, [1 or B, 1, h, w] (see cond_areas.entry_weight)
    concat: Tensor | None = None  # the UNet's extra input channels over the full latent (see concat_cond)
    uuid: uuid.UUID = field(default_factory=uuid.uuid4)  # ComfyUI's per-cond id (transformer_options["uuids"])
    gligen: Any = None  # GLIGEN boxes: a middle patch per call (see gligen_cond)

    @property
    def plain(self) -> bool:
        """Whether the entry may share a UNet call with others (ComfyUI never batches a cond with patches)."""
        return self.area is None and self.mask is None and self.window is None and self.strength != 0 and \
            self.gligen is None


@dataclass
class _Batched:
    """The constant inputs of one UNet call that stacks entries along the batch ([uncond; cond], cond-only, ...)."""

    context: Tensor
    added: dict[str, Tensor] | None
    entries: list[Entry] = field(default_factory=list)
    concat: Tensor | None = None
    y: Tensor | None = None


@dataclass
class CondCall:
    """One UNet evaluation of `cfg_pipeline.calc_cond_batch`: `entries` stacked along the batch, all on the crop
    `box` (y0, y1, x0, x1) of x; `indices` the cond each chunk of the output belongs to (ComfyUI's cond_or_uncond)."""

    indices: list[int]
    entries: list[Entry]
    box: tuple[int, int, int, int]
    context: Tensor
    added: dict[str, Tensor] | None
    concat: Tensor | None = None
    y: Tensor | None = None


class SDDenoiser:
    """`denoise(x, sigma) -> denoised` for a DiffusionModel with positive/negative conditioning and a cfg scale."""

    def __init__(self, model: Any, positive: Sequence[Sequence[Any]], negative: Sequence[Sequence[Any]],
                 cfg: float, latent: Tensor, manager: Any = None, keep_uncond: bool = False) -> None:
        self.model = model
        self.manager = manager
        self.unet = model.unet(manager)
        self.device = torch.device(model.compute_device(manager))
        self.dtype = model.dtype(manager)
        self.model_sampling = model_sampling_of(model)
        self.seed = current_seed()  # the sampling run's (ComfyUI draws the unCLIP noise from it)
        self.model_options = copy_options(getattr(model, "model_options", None) or {})
        self.hooked = sampler_hooks_set(self.model_options)
        self.cfg = float(cfg)
        self.batch, _, self.height, self.width = latent.shape
        self.concat_source = ConcatSource(concat_kind(self.unet, latent.shape[1]), tuple(latent.shape), latent,
                                          latent_format_of(model), self.device, self.dtype)
        positive, negative = self._resolved(positive, negative)
        self.positive = [self._entry(c, "positive") for c in positive]
        # CFG++ samplers read the unconditional prediction even at cfg 1, as ComfyUI's disable_cfg1_optimization
        self.keep_uncond = bool(keep_uncond)
        cfg1_off = bool(self.model_options.get("disable_cfg1_optimization"))
        self.uses_negative = self.guided or self.keep_uncond or cfg1_off
        self.negative = [self._entry(c, "negative") for c in negative] if self.uses_negative else []
        self.extra: list[Entry] = []  # entries of a guider's further sides (`prepare`)
        if not self.positive:
            raise ValueError("sampling needs at least one positive conditioning entry")
        self._stacks: dict[tuple[int, ...], _Batched | None] = {}
        self._coverage: dict[tuple[int, ...], bool] = {}  # see _covers_all
        self._levels: dict[int, tuple[Tensor, float]] = {}  # see remember_level
        self.batched = self._plan_batched()
        options = getattr(model, "model_options", {}).get("transformer_options")
        self.transformer_options = options if has_unet_patches(options) else None
        self.calls = 0  # UNet evaluations, for tests and benchmarks

    @property
    def guided(self) -> bool:
        return not math.isclose(self.cfg, 1.0)

    @property
    def inner_model(self) -> "SDDenoiser":
        """ComfyUI's path from the guider to the model (`extra_options["model"].inner_model.model_sampling`): the
        denoiser plays both parts."""
        return self

    # ---- preparation ----------------------------------------------------------------------------------------

    def prepare(self, conditioning: Sequence[Sequence[Any]], prompt_type: str) -> list[Entry]:
        """A further side's CONDITIONING as entries for this run (`prompt_type`: the side SDXL's refiner reads its
        default aesthetic score from): what guiders with more sides than two evaluate through calc_cond_batch.
        Its area entries get no twins on the other sides."""
        pairs = [resolve_entry(c, self.height, self.width) for c in conditioning]
        share_with_other_side(self._positive_pairs, pairs)
        entries = [self._entry(pair, prompt_type) for pair in pairs]
        self.extra.extend(entries)
        return entries

    def _resolved(self, positive: Sequence[Sequence[Any]],
                  negative: Sequence[Sequence[Any]]) -> tuple[list[list[Any]], list[list[Any]]]:
        """Both sides with areas and masks resolved to the latent and area entries twinned across the sides."""
        sides = [[resolve_entry(c, self.height, self.width) for c in side] for side in (positive, negative)]
        add_area_twins(sides)
        share_with_other_side(sides[0], sides[1])
        self._positive_pairs = sides[0]
        return sides[0], sides[1]

    def _entry(self, pair: Sequence[Any], prompt_type: str) -> Entry:
        cond, extras = pair[0], dict(pair[1]) if len(pair) > 1 and pair[1] else {}
        entry = Entry(context=cond.to(self.device, self.dtype), extras=extras,
                      area=tuple(extras["area"]) if extras.get("area") is not None else None,
                      strength=float(extras.get("strength", 1.0)), control=extras.get("control"),
                      window=step_window(extras, self.model_sampling),
                      weight=entry_weight(extras, self.height, self.width, self.device),
                      concat=self.concat_source.build(extras), gligen=extras.get("gligen"))
        if extras.get("mask") is not None:
            entry.mask = extras["mask"].to(self.device)
        entry.y = adm_input(self.model, self.unet, extras, self.seed, self.batch, self.device, self.dtype)
        if getattr(self.model, "is_sdxl", False):
            pooled = extras.get("pooled_output")
            if pooled is not None or extras.get("unclip_conditioning"):
                revision = revision_pooled(extras, self.seed, None if pooled is None else pooled.shape[-1])
                entry.added = self.model.sdxl_added_cond(pooled if revision is None else revision, extras,
                                                         (self.height, self.width), self.batch, self.device,
                                                         self.dtype, prompt_type)
        return entry

    def _plan_batched(self) -> _Batched | None:
        """One UNet call per step when each side is a single plain entry and the contexts can be stacked."""
        sides = [self.negative, self.positive] if self.negative else [self.positive]
        if any(len(side) != 1 or not side[0].plain for side in sides):
            return None
        return self.stacked([side[0] for side in sides])

    def stacked(self, entries: Sequence[Entry]) -> _Batched | None:
        """The inputs of one call stacking these plain entries, built once per run (and again when the noise mask
        changes their concat channels); None when their contexts cannot be stacked."""
        key = tuple(id(e) for e in entries)
        if key not in self._stacks:
            self._stacks[key] = self._stack(list(entries))
        return self._stacks[key]

    def _stack(self, entries: list[Entry]) -> _Batched | None:
        contexts = _same_length([e.context for e in entries])
        if contexts is None:
            return None
        context = torch.cat([to_batch(c, self.batch) for c in contexts])
        added = None
        if all(e.added is not None for e in entries):
            added = {k: torch.cat([e.added[k] for e in entries]) for k in entries[0].added}
        concat = None
        if entries[0].concat is not None:
            concat = torch.cat([to_batch(e.concat, self.batch) for e in entries])
        y = torch.cat([e.y for e in entries]) if entries[0].y is not None else None
        return _Batched(context=context, added=added, entries=entries, concat=concat, y=y)

    def set_noise_mask(self, mask: Tensor | None) -> None:
        """The LATENT's noise mask (any MASK shape): an inpainting model's mask channel when an entry has no
        "concat_mask" of its own."""
        if self.concat_source.kind is None:
            return
        if mask is not None:
            mask = to_batch(resize_mask(mask, self.height, self.width), self.batch).to(self.device)
        self.concat_source.noise_mask = mask
        for entry in (*self.positive, *self.negative, *self.extra):
            entry.concat = self.concat_source.build(entry.extras)
        self._stacks.clear()
        self.batched = self._plan_batched()

    # ---- evaluation -----------------------------------------------------------------------------------------

    def timestep(self, sigma: float) -> float:
        return self.model_sampling.unet_timestep(sigma)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        """x0 estimated from x at noise level sigma (call it under torch.inference_mode(), as sampling does)."""
        return self._evaluate(x, float(sigma), want_uncond=False)[0]

    def with_uncond(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """(guided x0, unconditional x0): what the CFG++ samplers step with. Needs `keep_uncond=True`."""
        if not self.keep_uncond:
            raise RuntimeError("SDDenoiser.with_uncond needs a denoiser built with keep_uncond=True")
        denoised, uncond = self._evaluate(x, float(sigma), want_uncond=True)
        return denoised, uncond

    def _evaluate(self, x: Tensor, sigma: float, want_uncond: bool) -> tuple[Tensor, Tensor | None]:
        if self.hooked:
            denoised, uncond = guided_prediction(self, x, sigma)
            return denoised, (_required(uncond) if want_uncond else None)
        t = torch.full((1,), self.timestep(sigma), device=self.device, dtype=torch.float32)
        x_in = self.model_sampling.calculate_input(sigma, x).to(self.dtype)
        if self.batched is not None:
            out, uncond_out = self._batched_eps(x_in, t, sigma)
        else:
            out, uncond_out = self._general_eps(x_in, t, sigma, x)
        denoised = self._denoised(x, out, sigma)
        if not want_uncond:
            return denoised, None
        return denoised, self._denoised(x, _required(uncond_out), sigma)

    def _denoised(self, x: Tensor, out: Tensor, sigma: float) -> Tensor:
        return self.model_sampling.calculate_denoised(sigma, out.to(x.dtype), x)

    # ---- ComfyUI's model evaluation, for the hooked pipeline (`cfg_pipeline`) ---------------------------------

    def apply_model(self, x: Tensor, timestep: Tensor, c_concat: Tensor | None = None,
                    c_crossattn: Tensor | None = None, control: dict[str, Any] | None = None,
                    transformer_options: dict[str, Any] | None = None,
                    added_cond_kwargs: dict[str, Tensor] | None = None, y: Tensor | None = None) -> Tensor:
        """ComfyUI's `BaseModel.apply_model`: the x0 estimate of the UNet on x at the noise levels `timestep`
        (sigmas, one per batch item), through the model sampling; what `model_function_wrapper` wraps."""
        ms = self.model_sampling
        x_in = _with_concat(ms.calculate_input(timestep, x).to(self.dtype), c_concat)
        options = transformer_options or {}
        out = self._unet(x_in, ms.timestep(timestep).float(), c_crossattn, added_cond_kwargs, control or {},
                         options.get("cond_or_uncond", [0]), self.level_of(timestep), options, y=y)
        return ms.calculate_denoised(timestep, out.float(), x)

    def remember_level(self, levels: Tensor, sigma: float) -> Tensor:
        """Note that the noise levels `levels` (a device tensor the pipeline built) all are `sigma`, so that
        `level_of` need not read them back from the device; the notes of earlier steps are dropped."""
        if len(self._levels) > 8:
            self._levels.clear()
        self._levels[id(levels)] = (levels, sigma)
        return levels

    def level_of(self, levels: Tensor) -> float:
        """The first noise level of `levels`: from the note `remember_level` made, else read from the tensor."""
        known = self._levels.get(id(levels))
        if known is not None and known[0] is levels:
            return known[1]
        return float(levels.reshape(-1)[0])

    def cond_calls(self, conds: Sequence[Sequence[Entry] | None], sigma: float) -> list[CondCall]:
        """How `calc_cond_batch` evaluates these conds at `sigma`: one call stacking them when each is a single
        plain entry (the last cond first, as ComfyUI stacks: [uncond; cond]), else one call per entry in its step
        window, on its area."""
        present = [(i, list(c)) for i, c in enumerate(conds) if c]
        if present and all(len(c) == 1 and c[0].plain for _, c in present):
            order = present[::-1]
            plan = self.stacked([c[0] for _, c in order])
            if plan is not None:
                box = (0, self.height, 0, self.width)
                return [CondCall([i for i, _ in order], plan.entries, box, plan.context, plan.added, plan.concat,
                                 plan.y)]
        calls = []
        for i, entries in present:
            for e in entries:
                if not in_window(e.window, sigma):
                    continue
                box = y0, y1, x0, x1 = area_box(e.area, self.height, self.width)
                concat = None if e.concat is None else to_batch(e.concat[:, :, y0:y1, x0:x1], self.batch)
                calls.append(CondCall([i], [e], box, to_batch(e.context, self.batch), e.added, concat, e.y))
        return calls

    def call_inputs(self, call: CondCall, x: Tensor, sigma: float) -> tuple[Tensor, dict[str, Any]]:
        """The stacked input and ComfyUI's `c` (c_crossattn, c_concat, control, added_cond_kwargs) of one call."""
        y0, y1, x0, x1 = call.box
        crop = x[:, :, y0:y1, x0:x1]
        stacked = torch.cat([crop] * len(call.entries)) if len(call.entries) > 1 else crop
        control: dict[str, Any] = {}
        if any(e.control is not None for e in call.entries):
            t = torch.full((1,), self.timestep(sigma), device=self.device, dtype=torch.float32)
            x_in = self.model_sampling.calculate_input(sigma, crop).to(self.dtype)
            control = self._control_kwargs(call.entries, x_in, t, call.context, sigma)
        c = {"c_crossattn": call.context, "control": control, "added_cond_kwargs": call.added}
        if call.concat is not None:
            c["c_concat"] = call.concat
        if call.y is not None:
            c["y"] = call.y
        return stacked, c

    def call_patches(self, call: CondCall, input_shape: Sequence[int]) -> dict[str, Any] | None:
        """ComfyUI's per-cond patches of a `calc_cond_batch` call (GLIGEN's middle patch; only a lone entry has
        any, see `Entry.plain`)."""
        if len(call.entries) != 1:
            return None
        return cond_patches(call.entries[0].gligen, input_shape, self.device)

    def entry_weight(self, entry: Entry, batch: int) -> Tensor:
        """An entry's weight over its area's box (see `cond_areas.entry_weight`), [batch, 1, h, w]."""
        return to_batch(entry.weight, batch)

    def _batched_eps(self, x_in: Tensor, t: Tensor, sigma: float) -> tuple[Tensor, Tensor | None]:
        plan = self.batched
        halves = len(plan.entries)
        x_batch = torch.cat([x_in] * halves) if halves > 1 else x_in
        control = self._control_kwargs(plan.entries, x_in, t, plan.context, sigma)
        out = self._unet(_with_concat(x_batch, plan.concat), t, plan.context, plan.added, control,
                         [1, 0] if halves > 1 else [0], sigma, y=plan.y)
        if halves == 1:
            return out, None
        uncond, cond = out.chunk(2)
        return torch.lerp(uncond, cond, self.cfg), uncond  # uncond + cfg * (cond - uncond) in one kernel

    def _general_eps(self, x_in: Tensor, t: Tensor, sigma: float, x: Tensor) -> tuple[Tensor, Tensor | None]:
        cond = self._side_eps(self.positive, x_in, t, sigma, x, 0)
        if not self.negative:
            return cond, None
        uncond = self._side_eps(self.negative, x_in, t, sigma, x, 1)
        return uncond + (cond - uncond) * self.cfg, uncond

    def _side_eps(self, entries: list[Entry], x_in: Tensor, t: Tensor, sigma: float, x: Tensor,
                  side: int) -> Tensor:
        """The weighted average of the active entries' predictions, each on its own area; where nothing weighs,
        the output whose estimate is 0 (ComfyUI averages estimates, starting from 0). `side` is ComfyUI's
        cond_or_uncond index of the entries (0 positive, 1 negative)."""
        total = torch.zeros(x_in.shape, device=self.device, dtype=torch.float32)
        weight = torch.zeros((x_in.shape[0], 1, *x_in.shape[2:]), device=self.device, dtype=torch.float32)
        active = tuple(entry for entry in entries if in_window(entry.window, sigma))
        for entry in active:
            y0, y1, x0, x1 = area_box(entry.area, self.height, self.width)
            crop = x_in[:, :, y0:y1, x0:x1]
            context = to_batch(entry.context, crop.shape[0])
            control = self._control_kwargs([entry], crop, t, context, sigma)
            concat = None if entry.concat is None else to_batch(entry.concat[:, :, y0:y1, x0:x1], crop.shape[0])
            patches = cond_patches(entry.gligen, crop.shape, self.device)
            out = self._unet(_with_concat(crop, concat), t, context, entry.added, control, [side], sigma,
                             cond=patches, y=entry.y).float()
            w = to_batch(entry.weight, crop.shape[0])
            total[:, :, y0:y1, x0:x1] += out * w
            weight[:, :, y0:y1, x0:x1] += w
        covered = weight > 0
        if self._covers_all(active, covered):
            return total / weight
        return torch.where(covered, total / weight.clamp_min(1e-37), self._zero_estimate_output(x, sigma))

    def _covers_all(self, active: tuple[Entry, ...], covered: Tensor) -> bool:
        """Whether these entries weigh everywhere: their weights are fixed for the run, so the host reads it
        once per set of active entries, not on every step (a read waits for the device's queued work)."""
        key = tuple(id(e) for e in active)
        if key not in self._coverage:
            self._coverage[key] = bool(covered.all())
        return self._coverage[key]

    def _zero_estimate_output(self, x: Tensor, sigma: float) -> Tensor:
        """The UNet output whose x0 estimate is 0 at (x, sigma) (at sigma 0 none is: the estimate is x)."""
        x = x.float()
        if sigma <= 0:
            return torch.zeros_like(x)
        return self.model_sampling.prediction.zero_estimate_output(self.model_sampling, sigma, x)

    def _unet(self, x: Tensor, t: Tensor, context: Tensor, added: dict[str, Tensor] | None,
              control: dict[str, Any], cond_or_uncond: list[int], sigma: float,
              call_options: dict[str, Any] | None = None, cond: dict[str, Any] | None = None,
              y: Tensor | None = None) -> Tensor:
        """One UNet call. `call_options`: this call's transformer_options as the hooked pipeline built them (with
        cond_or_uncond, sigmas and the cond's own patches); else they come from the MODEL's, with `cond`'s patches
        (GLIGEN's middle patch) after the MODEL's."""
        self.calls += 1
        kwargs: dict[str, Any] = dict(control)
        if "down_intrablock_additional_residuals" in kwargs:  # the UNet pops them off the list it is given
            kwargs["down_intrablock_additional_residuals"] = list(kwargs["down_intrablock_additional_residuals"])
        if added is not None:
            kwargs["added_cond_kwargs"] = added
        if y is not None:
            kwargs["class_labels"] = y.to(x.dtype)
        if call_options is not None:
            if not has_unet_patches(call_options):
                return call_unet(self.unet, x, t, context, kwargs)
            return on_model_thread(lambda: patched_unet(self.unet, x, t, context, dict(call_options), **kwargs))
        if self.transformer_options is None and not cond:
            return call_unet(self.unet, x, t, context, kwargs)
        sigmas = torch.full((x.shape[0] // len(cond_or_uncond),), sigma, device=self.device, dtype=torch.float32)
        base = self.transformer_options or self.model_options.get("transformer_options") or {}
        options = {**base, "cond_or_uncond": list(cond_or_uncond), "sigmas": sigmas}
        return on_model_thread(lambda: patched_unet(self.unet, x, t, context, with_cond_patches(options, cond),
                                                    **kwargs))

    def _control_kwargs(self, entries: list[Entry], x_in: Tensor, t: Tensor, context: Tensor,
                        sigma: float) -> dict[str, Any]:
        """ControlNet residuals for a call that stacks `entries` (each over x_in's batch), summed over chains."""
        if all(e.control is None for e in entries):
            return {}
        from sdgraph.nodes.sd.control import control_residuals  # noqa: PLC0415 - only ControlNet workflows need it

        percent = self.model_sampling.sigma_to_percent(sigma)
        per_entry = []
        contexts = context.chunk(len(entries))
        for entry, ctx in zip(entries, contexts):
            if not entry.control:
                per_entry.append({})
                continue
            per_entry.append(on_model_thread(lambda entry=entry, ctx=ctx: control_residuals(
                entry.control, x_in, t, ctx, percent, manager=self.manager, added_cond_kwargs=entry.added)))
        return _stack_residuals(per_entry)


def _required(uncond: Tensor | None) -> Tensor:
    if uncond is None:
        raise ValueError("the cfg_pp samplers need a negative conditioning entry (they step with its prediction)")
    return uncond


def _stack_residuals(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-entry control inputs along the batch (ControlNet residuals, T2I-Adapter features); an
    entry without some kind of active control contributes zeros for it."""
    if len(parts) == 1:
        return parts[0]
    templates = {key: value for part in parts for key, value in part.items()}
    out: dict[str, Any] = {}
    for key, template in templates.items():
        if isinstance(template, Tensor):
            out[key] = torch.cat([p[key] if key in p else torch.zeros_like(template) for p in parts])
        else:
            rows = [p[key] if key in p else [torch.zeros_like(r) for r in template] for p in parts]
            out[key] = [torch.cat(rs) for rs in zip(*rows)]
    return out


def _same_length(contexts: list[Tensor]) -> list[Tensor] | None:
    """Contexts of equal token count, repeating shorter ones when the lengths divide their least common
    multiple (repeating all keys and values leaves cross-attention unchanged); None when they cannot be."""
    lengths = [c.shape[1] for c in contexts]
    if len(set(lengths)) == 1:
        return contexts
    target = math.lcm(*lengths)
    if target > 4 * max(lengths) or len({c.shape[2] for c in contexts}) != 1:
        return None
    return [c.repeat(1, target // c.shape[1], 1) for c in contexts]


def _with_concat(x: Tensor, concat: Tensor | None) -> Tensor:
    """The UNet input: the scaled latent, then the entry's extra channels (inpainting / InstructPix2Pix)."""
    return x if concat is None else torch.cat([x, concat], dim=1)


_resize_mask = resize_mask  # the sampler's name for it
