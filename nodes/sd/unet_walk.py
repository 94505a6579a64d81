"""A diffusers UNet2DConditionModel evaluated in ComfyUI's block order, honouring a MODEL's transformer_options.

The sampler calls the UNet through `patched_unet` only when `has_unet_patches(options)`; otherwise it calls the
diffusers module as always. The walk runs the diffusers submodules (resnets, transformers, down/upsamplers) in the
order of the original LDM UNet and numbers them as ComfyUI does:

- input blocks: 0 is conv_in, then one per resnet (with its transformer, if any) and one per downsampler
  (`ldm_names.unet_name_to_ldm` names the same numbers); the middle block is ("middle", 0); output blocks: one per
  resnet of each up block, its upsampler part of the last one;
- transformer_options["block"] = (name, number) while a block runs, "original_shape" is the UNet input's shape,
  "transformer_index" counts the transformers passed so far (see `nodes.sd.transformer_walk`);
- after each input block: "input_block_patch" `p(h, transformer_options) -> h`, then h is kept as the skip, then
  "input_block_patch_after_skip" `p(h, transformer_options) -> h`;
- before each output block: "output_block_patch" `p(h, skip, transformer_options) -> (h, skip)`, then the two
  are concatenated; an upsampler scales to the size of the skip its output meets next (ComfyUI's output_shape).

ControlNet residuals are added to the skips and the middle block's output, T2I-Adapter features inside the down
blocks, exactly where diffusers' own forward adds them, so a patched call with patches that change nothing
computes what the plain call computes.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from sdgraph.nodes.sd.transformer_walk import check_transformer, run_transformer

Tensor = torch.Tensor
Options = dict[str, Any]

_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("CrossAttnUpBlock2D", "UpBlock2D")
_MID = ("UNetMidBlock2DCrossAttn",)


def has_unet_patches(options: Options | None) -> bool:
    """Whether transformer_options hold any patch the plain diffusers call would ignore."""
    if not options:
        return False
    return any(options.get("patches", {}).values()) or any(options.get("patches_replace", {}).values())


def check_unet(unet: torch.nn.Module) -> None:
    """Refuse UNet layouts the walk does not reproduce, naming the part (SD 1.x / 2.x / XL all pass)."""
    config = unet.config
    if config.center_input_sample or config.addition_embed_type not in (None, "text_time"):
        raise NotImplementedError("model patches: this UNet's input or added embedding is not an SD layout")
    for side, blocks, kinds in (("down", unet.down_blocks, _DOWN), ("up", unet.up_blocks, _UP)):
        for index, block in enumerate(blocks):
            if type(block).__name__ not in kinds:
                raise NotImplementedError(f"model patches: {side}_blocks.{index} is a {type(block).__name__}")
    if unet.mid_block is not None and type(unet.mid_block).__name__ not in _MID:
        raise NotImplementedError(f"model patches: the middle block is a {type(unet.mid_block).__name__}")
    for name, module in unet.named_modules():
        if type(module).__name__ == "Transformer2DModel":
            check_transformer(module, name)


def patched_unet(unet: torch.nn.Module, sample: Tensor, timestep: Tensor, context: Tensor, options: Options,
                 added_cond_kwargs: dict[str, Tensor] | None = None,
                 down_block_additional_residuals: Sequence[Tensor] | None = None,
                 mid_block_additional_residual: Tensor | None = None,
                 down_intrablock_additional_residuals: Sequence[Tensor] | None = None,
                 class_labels: Tensor | None = None) -> Tensor:
    """The UNet's output for one call; `options` is this call's transformer_options dict (written into);
    `class_labels` an unCLIP UNet's class-embedding input."""
    check_unet(unet)
    options["original_shape"] = list(sample.shape)
    options["transformer_index"] = 0
    emb = _embedding(unet, sample, timestep, context, added_cond_kwargs, class_labels)
    context = unet.process_encoder_hidden_states(encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs)
    walk = _Walk(options, emb, context)
    adapter = list(down_intrablock_additional_residuals) if down_intrablock_additional_residuals else []

    options["block"] = ("input", 0)
    h = walk.after_input(unet.conv_in(sample))
    h = walk.down(unet.down_blocks, h, adapter)
    if down_block_additional_residuals is not None and mid_block_additional_residual is not None:
        walk.skips = [s + r for s, r in zip(walk.skips, down_block_additional_residuals)]
    options["block"] = ("middle", 0)
    if unet.mid_block is not None:
        h = walk.middle(unet.mid_block, h)
        if adapter and h.shape == adapter[0].shape:
            h = h + adapter.pop(0)
    if down_block_additional_residuals is not None and mid_block_additional_residual is not None:
        h = h + mid_block_additional_residual
    h = walk.up(unet.up_blocks, h)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


def _embedding(unet: torch.nn.Module, sample: Tensor, timestep: Tensor, context: Tensor,
               added: dict[str, Tensor] | None, class_labels: Tensor | None = None) -> Tensor:
    """The timestep embedding (plus the class and SDXL's added embeddings), as diffusers' forward builds it."""
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=context, added_cond_kwargs=added)
    if aug is not None:
        emb = emb + aug
    return emb if unet.time_embed_act is None else unet.time_embed_act(emb)


class _Walk:
    """The state of one walk: the options being written, the embeddings, the skips kept so far."""

    def __init__(self, options: Options, emb: Tensor, context: Tensor) -> None:
        self.options = options
        self.patches: dict[str, list[Any]] = options.get("patches", {})
        self.emb = emb
        self.context = context
        self.skips: list[Tensor] = []
        self.number = 0  # the input or output block being run

    def after_input(self, h: Tensor) -> Tensor:
        for patch in self.patches.get("input_block_patch", ()):
            h = patch(h, self.options)
        self.skips.append(h)
        for patch in self.patches.get("input_block_patch_after_skip", ()):
            h = patch(h, self.options)
        return h

    def _pair(self, resnet: torch.nn.Module, transformer: torch.nn.Module | None, h: Tensor) -> Tensor:
        h = resnet(h, self.emb)
        return h if transformer is None else run_transformer(transformer, h, self.context, self.options)

    def down(self, blocks: Sequence[torch.nn.Module], h: Tensor, adapter: list[Tensor]) -> Tensor:
        self.number = 1
        for block in blocks:
            cross = bool(getattr(block, "has_cross_attention", False))
            transformers = list(block.attentions) if cross else [None] * len(block.resnets)
            samplers = list(block.downsamplers) if block.downsamplers is not None else []
            for index, (resnet, transformer) in enumerate(zip(block.resnets, transformers)):
                self.options["block"] = ("input", self.number)
                h = self._pair(resnet, transformer, h)
                last = index == len(block.resnets) - 1
                if adapter and last and (cross or not samplers):  # diffusers: after the last resnet pair
                    h = h + adapter.pop(0)
                h = self._next_input(h)
            if samplers:
                self.options["block"] = ("input", self.number)
                for sampler in samplers:
                    h = sampler(h)
                if adapter and not cross:  # diffusers: after a plain down block, downsampler included
                    h = h + adapter.pop(0)
                h = self._next_input(h)
        return h

    def _next_input(self, h: Tensor) -> Tensor:
        h = self.after_input(h)
        self.number += 1
        return h

    def middle(self, block: torch.nn.Module, h: Tensor) -> Tensor:
        h = block.resnets[0](h, self.emb)
        for transformer, resnet in zip(block.attentions, block.resnets[1:]):
            h = run_transformer(transformer, h, self.context, self.options)
            h = resnet(h, self.emb)
        return h

    def up(self, blocks: Sequence[torch.nn.Module], h: Tensor) -> Tensor:
        self.number = 0
        for block in blocks:
            cross = bool(getattr(block, "has_cross_attention", False))
            transformers = list(block.attentions) if cross else [None] * len(block.resnets)
            for index, (resnet, transformer) in enumerate(zip(block.resnets, transformers)):
                self.options["block"] = ("output", self.number)
                skip = self.skips.pop()
                for patch in self.patches.get("output_block_patch", ()):
                    h, skip = patch(h, skip, self.options)
                h = self._pair(resnet, transformer, torch.cat([h, skip], dim=1))
                if index == len(block.resnets) - 1 and block.upsamplers is not None:
                    size = self.skips[-1].shape[2:] if self.skips else None
                    for sampler in block.upsamplers:
                        h = sampler(h, size)
                self.number += 1
        return h
