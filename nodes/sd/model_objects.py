"""The values that travel on Stable Diffusion sockets: the contract between loaders, samplers and latent nodes.

Socket values (what a node receives / returns):

- MODEL -> `DiffusionModel` (with ComfyUI ModelPatcher-shaped `model_options`, see `nodes.sd.model_patcher`). `prediction_type` ("epsilon" | "v_prediction"), `alphas_cumprod` (1-D float64 CPU
  tensor of the training schedule; SD: scaled_linear betas 0.00085..0.012 over 1000 steps), `is_sdxl`
  (base or refiner), `is_sdxl_refiner`, `latent_channels`, `latent_format` (a `LatentFormat`: how the sampler
  maps LATENT samples into the UNet's space and back), `unet(manager)` -> the diffusers `UNet2DConditionModel` on
  its compute device with this model's LoRA patches applied, `compute_device(manager)`, `dtype(manager)` (cast
  UNet inputs to it and the output back to float32), `clone()`, `patches` (a tuple of `LoraPatch`),
  `sdxl_added_cond(...)` (SDXL's `added_cond_kwargs`). `manager` may be omitted: every object remembers the
  manager that loaded it. The UNet config's `in_channels` tells its kind: `latent_channels` (plain), twice that
  (InstructPix2Pix) or twice plus one (inpainting); see `nodes.sd.concat_cond`. Sampling reads
  `get_model_object("model_sampling")` (see `nodes.sd.model_sampling`) and `get_model_object("latent_format")`:
  object patches can replace either.
- CLIP -> `ClipModel` (tokenizers + text encoders, `clip_skip`, LoRA patches); `TextEncode` turns it into CONDITIONING.
- VAE -> `VaeModel`: `encode(pixels [B,H,W,C] in 0..1) -> latents` and `decode(latents) -> pixels [B,H,W,C]
  in 0..1`, the latents unscaled (what the VAE's encoder gives and its decoder takes); `encode_tiled` /
  `decode_tiled` do the same in overlapping tiles, as ComfyUI's VAE does.
- CONTROL_NET -> `ControlNetModel`: `module(manager)` -> the diffusers `ControlNetModel` on its compute device,
  `extra_args` (ComfyUI's extra ControlNet arguments, e.g. SetUnionControlNetType's "control_type").
- CONDITIONING -> a list of `[cond, extras]` pairs, `cond` a float32 tensor [1, T, D] (T a multiple of 77 for
  long prompts), `extras` a dict that may hold:
    "pooled_output" [1, 1280] (SDXL), "width"/"height"/"crop_w"/"crop_h"/"target_width"/"target_height" (SDXL
    size conditioning, pixels), "aesthetic_score" (the SDXL refiner's; default 6, or 2.5 on the negative side),
    "prompt_type" ("positive" | "negative": overrides the side the entry is sampled on),
    "control" (a `ControlHint`, chained through `.previous`),
    "area": (h, w, y, x) in latent units (pixels // 8), or ("percentage", h, w, y, x) as fractions of the
    latent's size, resolved when sampling; "strength" (the entry's weight among its side's entries, default 1);
    "mask" [B, H, W] (any size: resized to the latent) with "mask_strength" (a factor on it) and
    "set_area_to_bounds" (True: the area is the mask's bounding box, at least 8x8 latent pixels);
    "start_percent" / "end_percent" (0..1: the entry acts only on the steps whose sigma lies between the sigmas
    at those fractions of the schedule, compared as ComfyUI compares them);
    "concat_latent_image" (unscaled VAE latents [B, 4, h, w]) and "concat_mask" ([B, 1, H, W], pixel size): the
    extra UNet channels of inpainting / InstructPix2Pix models (see `nodes.sd.concat_cond`);
    "unclip_conditioning" (a list of {"clip_vision_output", "strength", "noise_augmentation"}: an unCLIP model's
    image input, see `nodes.sd.unclip`); "attention_mask" / "attention_mask_img_shape" (StyleModelApply's
    attention bias; SD UNets do not read it, as in ComfyUI).
  Several pairs are combined by the sampler (ConditioningCombine concatenates the lists): each active entry is
  evaluated on its area and a side's estimate is their weighted average (see `nodes.sd.cond_areas`).
- LATENT -> {"samples": Tensor [B, C, h, w] float32, unscaled as in ComfyUI (the VAE's own latents; the sampler
  scales them into the model's space with the MODEL's `latent_format` and back; all zeros means "empty" and is
  not shifted),
  optional "noise_mask": [B, 1, h', w'] float 0..1 (1 = regenerate; resize to the latent size if h', w' differ),
  optional "batch_index": list[int]}.
- IMAGE -> Tensor [B, H, W, C] float32 in 0..1 (CPU). MASK -> Tensor [B, H, W] float32 in 0..1.

ControlNet at sampling time: call `control_residuals(hint, x, t, cond, percent)` (see `nodes/sd/control.py`)
for the "control" of the conditioning being evaluated; it walks the chain and returns the UNet keyword arguments
(`down_block_additional_residuals`, `mid_block_additional_residual`) or {} when no hint is active at `percent`
(0 = first step, 1 = last).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdgraph.models.cast_at_use import is_narrow, widened_sum
from sdgraph.models.patching import WeightPatch, lora_delta
from sdgraph.nodes.sd.comfy_keys import clip_key_map, unet_key_map
from sdgraph.nodes.sd.model_patcher import PatcherMethods, WeightMethods, copy_options, default_model_options
from sdgraph.nodes.sd.model_sampling import ModelSampling, discrete_sampling
from sdgraph.nodes.sd.unet_compile import prepare_unet

if TYPE_CHECKING:
    from sdgraph.models import ManagedModule, ModelManager


def sd_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000,
                      schedule: str = "scaled_linear") -> torch.Tensor:
    """The training noise schedule of Stable Diffusion as cumulative alpha products (float64, CPU)."""
    if schedule == "scaled_linear":
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unsupported beta schedule {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class LoraPatch:
    """One LoRA applied with one strength: weight deltas keyed by the module path inside the target model.

    `deltas` maps a module name (e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q") to the
    (up, down, scale) factors: delta = scale * up @ down (reshaped to the weight's shape).
    """

    name: str
    strength: float
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(compare=False, hash=False)

    @property
    def key(self) -> tuple[str, float]:
        return (self.name, self.strength)

    def targets(self) -> list[str]:
        return [f"{module}.weight" for module in self.deltas]

    def delta(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """This LoRA's float32 change to the parameter `name` (strength included)."""
        up, down, scale = self.deltas[name.removesuffix(".weight")]
        return lora_delta(up, down, weight.shape, weight.device) * (scale * self.strength)

    def apply(self, name: str, weight: torch.Tensor, original: torch.Tensor) -> None:
        delta = self.delta(name, weight)
        if is_narrow(weight.dtype):  # fp8 has no arithmetic of its own
            weight.copy_(widened_sum(weight, delta))
        else:
            weight.add_(delta.to(weight.dtype))


def _manager(own: "ModelManager", given: "ModelManager | None") -> "ModelManager":
    return given if given is not None else own


def _patch_nbytes(patches: tuple[Any, ...]) -> int:
    """Bytes of LoRA factors; key patches (merges, scaling) refer to tensors other values own."""
    return sum(t.nbytes for p in patches if isinstance(p, LoraPatch)
               for up, down, _ in p.deltas.values() for t in (up, down))


@dataclass(frozen=True)
class LatentFormat:
    """A model family's latent space: the UNet samples (latent - shift_factor) * scale_factor of the VAE's latents
    (SD 1.x/2.x scale 0.18215, SDXL 0.13025; no shift for either)."""

    scale_factor: float = 0.18215
    shift_factor: float = 0.0

    @classmethod
    def from_vae_config(cls, config: dict[str, Any]) -> "LatentFormat":
        """The format a checkpoint was trained with, from its VAE config's scaling_factor / shift_factor."""
        return cls(float(config.get("scaling_factor") or 0.18215), float(config.get("shift_factor") or 0.0))

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the model's sampling space."""
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """The model's sampling space -> VAE latents."""
        return latent / self.scale_factor + self.shift_factor


@dataclass
class DiffusionModel(PatcherMethods, WeightMethods):
    """MODEL: a denoising UNet with its noise schedule, the LoRA patches to apply when it is used, and
    ComfyUI-shaped `model_options` / `object_patches` (see `nodes.sd.model_patcher`)."""

    slot: "ManagedModule"
    prediction_type: str = "epsilon"
    alphas_cumprod: torch.Tensor = field(default_factory=sd_alphas_cumprod)
    is_sdxl: bool = False
    is_sdxl_refiner: bool = False
    latent_channels: int = 4
    latent_format: LatentFormat = LatentFormat()
    patches: tuple[WeightPatch, ...] = ()
    name: str = ""
    model_options: dict[str, Any] = field(default_factory=default_model_options)
    object_patches: dict[str, Any] = field(default_factory=dict)

    @property
    def manager(self) -> "ModelManager":
        return self.slot.manager

    @property
    def model_sampling(self) -> ModelSampling:
        """The sampling of this model's training schedule and prediction type; samplers read it through
        `get_model_object("model_sampling")`, which an object patch replaces (see `nodes.sd.model_sampling`)."""
        return discrete_sampling(self.alphas_cumprod, self.prediction_type)

    def unet(self, manager: "ModelManager | None" = None) -> torch.nn.Module:
        """The UNet on its compute device with exactly this model's patches applied (and the manager's fast
        path: compiled blocks, channels_last; see `unet_compile`)."""
        manager = _manager(self.manager, manager)
        unet = manager.acquire(self.slot, self.patches)
        return prepare_unet(unet, getattr(manager, "fast_path", None), streamed=self.slot.streamed)

    def compute_device(self, manager: "ModelManager | None" = None) -> torch.device:
        return _manager(self.manager, manager).compute_device

    def dtype(self, manager: "ModelManager | None" = None) -> torch.dtype:
        return _manager(self.manager, manager).dtype_for(self.slot)

    def cache_nbytes(self) -> int:
        """Bytes this handle holds itself (schedule, LoRA deltas); the weights belong to the model manager."""
        return self.alphas_cumprod.nbytes + _patch_nbytes(self.patches)

    def clone(self) -> "DiffusionModel":
        """A MODEL whose options and object patches can change without touching this one's."""
        return dataclasses.replace(self, model_options=copy_options(self.model_options),
                                   object_patches=dict(self.object_patches))

    def with_patch(self, patch: LoraPatch) -> "DiffusionModel":
        return dataclasses.replace(self.clone(), patches=(*self.patches, patch))

    def _weight_targets(self) -> dict[str, tuple[int, str]]:
        return {key: (0, name) for key, name in unet_key_map(self.slot.module).items()}

    def _weight_slots(self) -> tuple["ManagedModule", ...]:
        return (self.slot,)

    def _weight_patches(self, index: int) -> tuple[WeightPatch, ...]:
        return self.patches

    def _append_weight_patch(self, index: int, patch: WeightPatch) -> None:
        self.patches = (*self.patches, patch)

    def sdxl_added_cond(self, pooled: torch.Tensor, extras: dict[str, Any], latent_hw: tuple[int, int],
                        batch: int, device: torch.device, dtype: torch.dtype,
                        prompt_type: str = "positive") -> dict[str, torch.Tensor]:
        """SDXL's `added_cond_kwargs` (pooled text embeds + size/crop time ids) for one conditioning entry; the
        refiner's last id is the aesthetic score instead of the target size."""
        height, width = latent_hw[0] * 8, latent_hw[1] * 8
        ids = [extras.get("height", height), extras.get("width", width), extras.get("crop_h", 0),
               extras.get("crop_w", 0)]
        if self.is_sdxl_refiner:
            negative = extras.get("prompt_type", prompt_type) == "negative"
            ids.append(extras.get("aesthetic_score", 2.5 if negative else 6.0))
        else:
            ids += [extras.get("target_height", height), extras.get("target_width", width)]
        time_ids = torch.tensor([ids], dtype=dtype, device=device).repeat(batch, 1)
        text_embeds = pooled.to(device=device, dtype=dtype).expand(batch, -1)
        return {"text_embeds": text_embeds, "time_ids": time_ids}


@dataclass(frozen=True)
class EncoderSpec:
    """How one text encoder is used: its kind, default layer, final norm, and layers its weights dropped."""

    kind: str = "clip_l"  # "clip_l" (SD 1.x, SDXL), "clip_h" (SD 2.x) or "clip_g" (SDXL, with projection)
    default_skip: int = -1  # ComfyUI's stop_at_clip_layer: -1 the last layer, -2 the one before, ...
    final_norm: bool = True  # apply the final layer norm to the chosen hidden state (SD 1.x / 2.x)
    dropped_layers: int = 0  # layers the stored model lacks at its end (SD 2.x drops OpenCLIP's last one)
    pad_id: int = 49407  # CLIP-L pads with end-of-text, OpenCLIP with 0


@dataclass
class ClipModel(WeightMethods):
    """CLIP: one text encoder (SD 1.x/2.x) or two (SDXL), their tokenizers and how each is used.

    `clip_skip` is ComfyUI's `stop_at_clip_layer` (-1 the last layer, -2 the one before, counted in the original
    OpenCLIP/CLIP depth); None uses each encoder's `default_skip`. `embedding_dirs` are where a prompt's
    `embedding:name` is looked up (the loader nodes set models/embeddings); with none, it is plain text.
    """

    tokenizers: tuple[Any, ...]
    encoders: tuple["ManagedModule", ...]
    specs: tuple[EncoderSpec, ...] = (EncoderSpec(),)
    clip_skip: int | None = None
    patches: tuple[tuple[WeightPatch, ...], ...] = ()
    name: str = ""
    embedding_dirs: tuple[Path, ...] = ()

    @property
    def manager(self) -> "ModelManager":
        return self.encoders[0].manager

    @property
    def is_sdxl(self) -> bool:
        return len(self.encoders) == 2

    def encoder(self, index: int, manager: "ModelManager | None" = None) -> torch.nn.Module:
        patches = self.patches[index] if index < len(self.patches) else ()
        return _manager(self.manager, manager).acquire(self.encoders[index], patches)

    def compute_device(self, manager: "ModelManager | None" = None) -> torch.device:
        return _manager(self.manager, manager).compute_device

    def cache_nbytes(self) -> int:
        """Bytes of its LoRA deltas; the encoders belong to the model manager."""
        return sum(_patch_nbytes(p) for p in self.patches)

    def clone(self) -> "ClipModel":
        return dataclasses.replace(self)

    @property
    def cond_stage_model(self) -> "ClipModel":
        """ComfyUI's `clip.cond_stage_model` (its inner text encoder module): here the CLIP itself."""
        return self

    # ComfyUI's CLIP token API (see `nodes.sd.clip_tokens`), for plugins and nodes written against it
    def tokenize(self, text: str, return_word_ids: bool = False, **_: Any) -> dict[str, list[list[tuple]]]:
        from sdgraph.nodes.sd.clip_tokens import tokenize

        return tokenize(self, text, return_word_ids)

    def encode_from_tokens(self, tokens: dict[str, Any], return_pooled: bool = False, return_dict: bool = False
                           ) -> Any:
        """The conditioning tensor; with `return_pooled`, (cond, pooled); with `return_dict`, both by name."""
        from sdgraph.nodes.sd.clip_tokens import encode_tokens

        cond, pooled = encode_tokens(self, tokens)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: dict[str, Any], **_: Any) -> list[list[Any]]:
        """The tokens as a CONDITIONING (one entry, with its pooled output)."""
        cond, pooled = self.encode_from_tokens(tokens, return_pooled=True)
        return [[cond, {"pooled_output": pooled}]]

    def encode(self, text: str) -> Any:
        return self.encode_from_tokens(self.tokenize(text))

    def with_patch(self, index: int, patch: WeightPatch) -> "ClipModel":
        out = self.clone()
        out._append_weight_patch(index, patch)
        return out

    def _weight_targets(self) -> dict[str, tuple[int, str]]:
        return clip_key_map([slot.module for slot in self.encoders], [spec.kind for spec in self.specs])

    def _weight_slots(self) -> tuple["ManagedModule", ...]:
        return self.encoders

    def _weight_patches(self, index: int) -> tuple[WeightPatch, ...]:
        return self.patches[index] if index < len(self.patches) else ()

    def _append_weight_patch(self, index: int, patch: WeightPatch) -> None:
        lists = [list(p) for p in self.patches] + [[] for _ in range(len(self.encoders) - len(self.patches))]
        lists[index].append(patch)
        self.patches = tuple(tuple(p) for p in lists)


class _SingleModule:
    """A socket value backed by one managed module (`slot`), fetched to its device on demand."""

    slot: "ManagedModule"

    @property
    def manager(self) -> "ModelManager":
        return self.slot.manager

    def module(self, manager: "ModelManager | None" = None) -> torch.nn.Module:
        return _manager(self.manager, manager).acquire(self.slot)

    def placement(self, manager: "ModelManager | None" = None) -> tuple[torch.device, torch.dtype]:
        """Where and in what precision the module computes; a streamed module's weights rest elsewhere."""
        manager = _manager(self.manager, manager)
        return manager.compute_device, manager.dtype_for(self.slot)

    def cache_nbytes(self) -> int:
        return 0  # the module belongs to the model manager


@dataclass
class VaeModel(_SingleModule):
    """VAE: pixels [B,H,W,C] 0..1 <-> unscaled latents [B,C,H/8,W/8], with ComfyUI VAE's surface: `encode`,
    `decode`, `encode_tiled`, `decode_tiled` (see `nodes.sd.tiling`), `downscale_ratio`, `upscale_ratio`.

    `scaling_factor` / `shift_factor` are the VAE config's, for information only: encode and decode never apply
    them; the MODEL's `latent_format` scales latents in and out of sampling, as in ComfyUI.
    """

    slot: "ManagedModule"
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    latent_channels: int = 4
    downscale: int = 8
    name: str = ""

    @property
    def downscale_ratio(self) -> int:
        """Pixels per latent pixel along each side, encoding."""
        return self.downscale

    @property
    def upscale_ratio(self) -> int:
        """Pixels per latent pixel along each side, decoding."""
        return self.downscale

    def spacial_compression_encode(self) -> int:
        return self.downscale

    def spacial_compression_decode(self) -> int:
        return self.downscale

    def temporal_compression_decode(self) -> None:
        return None  # an image VAE: no frames to compress

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, manager: "ModelManager | None" = None) -> torch.Tensor:
        """Encode images (mode of the posterior, deterministic) to unscaled float32 CPU latents; the images are
        centre-cropped to a multiple of `downscale` first, as ComfyUI's VAE does."""
        return self._encoder(manager)(self._cropped(pixels)).cpu()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, manager: "ModelManager | None" = None) -> torch.Tensor:
        """Decode unscaled latents to float32 CPU images [B,H,W,C] in 0..1."""
        return _to_image(self._decoder(manager)(latents))

    @torch.inference_mode()
    def decode_tiled(self, samples: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None, overlap_t: int | None = None,
                     manager: "ModelManager | None" = None, on_tile: Any = None) -> torch.Tensor:
        """`decode` in overlapping tiles of latent pixels (default 64 x 64, overlap 16), averaged over ComfyUI's
        three tile shapes before the output is mapped to 0..1. `tile_t` / `overlap_t` are for video VAEs: unused."""
        from sdgraph.nodes.sd.tiling import averaged_passes, pass_shapes

        shapes = pass_shapes(tile_x or 64, tile_y or 64, "decode")
        raw = averaged_passes(samples, self._decoder(manager), shapes, 16 if overlap is None else overlap,
                              self.upscale_ratio, 3, on_tile)
        return _to_image(raw)

    @torch.inference_mode()
    def encode_tiled(self, pixels: torch.Tensor, tile_x: int | None = None, tile_y: int | None = None,
                     overlap: int | None = None, tile_t: int | None = None, overlap_t: int | None = None,
                     manager: "ModelManager | None" = None, on_tile: Any = None) -> torch.Tensor:
        """`encode` in overlapping tiles of pixels (default 512 x 512, overlap 64), averaged over ComfyUI's three
        tile shapes. `tile_t` / `overlap_t` are for video VAEs: unused."""
        from sdgraph.nodes.sd.tiling import averaged_passes, pass_shapes

        shapes = pass_shapes(tile_x or 512, tile_y or 512, "encode")
        x, encoder = self._cropped(pixels).movedim(-1, 1), self._encoder(manager)
        return averaged_passes(x, lambda tile: encoder(tile.movedim(1, -1)), shapes,
                               64 if overlap is None else overlap, 1 / self.downscale_ratio, self.latent_channels,
                               on_tile)

    def _cropped(self, pixels: torch.Tensor) -> torch.Tensor:
        from sdgraph.nodes.sd.latent import crop_to_multiple  # latent.py's nodes import this module

        return crop_to_multiple(pixels[..., :3], self.downscale_ratio)

    def _encoder(self, manager: "ModelManager | None") -> Any:
        """pixels [B,H,W,3] 0..1 -> float32 latents on the compute device."""
        vae = self.module(manager)
        device, dtype = self.placement(manager)
        return lambda pixels: vae.encode(pixels.movedim(-1, 1).to(device=device, dtype=dtype) * 2.0 - 1.0
                                         ).latent_dist.mode().float()

    def _decoder(self, manager: "ModelManager | None") -> Any:
        """latents -> the decoder's float32 output on the compute device (about -1..1, not yet clamped)."""
        vae = self.module(manager)
        device, dtype = self.placement(manager)
        return lambda latents: vae.decode(latents.to(device=device, dtype=dtype)).sample.float()


def _to_image(raw: torch.Tensor) -> torch.Tensor:
    """A decoder's output [B,3,H,W] (about -1..1) as an IMAGE: [B,H,W,3] float32 in 0..1 on the CPU."""
    return ((raw + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()


@dataclass
class ControlNetModel(_SingleModule):
    """CONTROL_NET: a diffusers ControlNetModel under the model manager. `extra_args` are ComfyUI's extra
    ControlNet call arguments set by nodes (SetUnionControlNetType's "control_type": a list of union type
    numbers, [] for auto); a ControlNet that takes no such argument ignores them, as in ComfyUI."""

    slot: "ManagedModule"
    name: str = ""
    extra_args: dict[str, Any] = field(default_factory=dict)

    def with_extra_arg(self, key: str, value: Any) -> "ControlNetModel":
        """A copy (same weights) with one extra call argument set."""
        return dataclasses.replace(self, extra_args={**self.extra_args, key: value})

    # ComfyUI's surface, for packs that apply ControlNets themselves:
    #     c_net = control_net.copy().set_cond_hint(image.movedim(-1, 1), strength, (start, end))
    #     c_net.set_previous_controlnet(previous); extras["control"] = c_net

    def copy(self) -> "ControlHint":
        """An application of this ControlNet, to be given its hint (`set_cond_hint`) and put in a conditioning."""
        return ControlHint(self, None)

    def get_models(self) -> list[Any]:
        return []


@dataclass
class T2IAdapterModel(ControlNetModel):
    """CONTROL_NET holding a diffusers T2IAdapter: features from the hint alone, added inside the UNet's down
    blocks (`down_intrablock_additional_residuals`); `unshuffle` is the pixel-unshuffle factor of its input."""

    channels_in: int = 3
    unshuffle: int = 8


@dataclass
class ControlHint:
    """A ControlNet applied to one conditioning entry; `previous` chains several ControlNets (all are summed)."""

    controlnet: ControlNetModel
    image: torch.Tensor | None  # [B, H, W, C] float 0..1 (None only until a pack's set_cond_hint gives it)
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: "ControlHint | None" = None

    def chain(self) -> list["ControlHint"]:
        """This hint and those it was chained onto, oldest first."""
        hints: list[ControlHint] = []
        node: ControlHint | None = self
        while node is not None:
            hints.append(node)
            node = node.previous
        return hints[::-1]

    def active_at(self, percent: float) -> bool:
        return self.start_percent <= percent <= self.end_percent

    # ---- ComfyUI's ControlNet object surface (see ControlNetModel.copy) ---------------------------------------

    def copy(self) -> "ControlHint":
        return dataclasses.replace(self)

    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple[float, float] = (0.0, 1.0), vae: Any = None,
                      extra_concat: Any = None) -> "ControlHint":
        """ComfyUI's call: the hint as [B, C, H, W] in 0..1, its strength and the part of the steps it acts in.
        `vae` and `extra_concat` serve ControlNets that encode their hint (none sdgraph loads)."""
        if extra_concat:
            raise NotImplementedError("ControlNet.set_cond_hint: extra_concat (inpainting ControlNets) is not "
                                      "supported")
        self.image = cond_hint.movedim(1, -1)
        self.strength = float(strength)
        self.start_percent, self.end_percent = (float(v) for v in timestep_percent_range)
        return self

    def set_previous_controlnet(self, controlnet: "ControlHint | None") -> "ControlHint":
        self.previous = controlnet
        return self

    @property
    def previous_controlnet(self) -> "ControlHint | None":
        return self.previous

    @property
    def cond_hint_original(self) -> torch.Tensor | None:
        return None if self.image is None else self.image.movedim(-1, 1)

    @property
    def timestep_percent_range(self) -> tuple[float, float]:
        return (self.start_percent, self.end_percent)

    def get_models(self) -> list[Any]:
        return []
