"""Write the reference key lists in tests/sd/data from a ComfyUI checkout, and cross-check sdgraph's test writers.

1. Key names and shapes of an original-layout ControlNet (SD1.5, SDXL) and T2I-Adapter (full SD1.4, full XL,
   light), listed from ComfyUI's own modules built on the meta device -> tests/sd/data/*.txt.
2. Tiny random nets written in the original layout by sdgraph's test writers load into ComfyUI's modules with
   strict=True and compute what the diffusers source computes (printed: the largest difference).

    python tools/comfy_reference/control_key_lists.py --comfyui /tmp/comfyui [--out tests/sd/data]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _comfy(checkout: Path) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sd"), str(checkout)]
    sys.argv = sys.argv[:1] + ["--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


def _cldm(meta: bool = True, **kwargs):
    import torch
    import comfy.cldm.cldm as cldm
    import comfy.ops

    device = "meta" if meta else "cpu"
    with torch.device(device):
        return cldm.ControlNet(image_size=32, in_channels=4, hint_channels=3, dropout=0, use_checkpoint=False,
                               legacy=False, use_spatial_transformer=True, operations=comfy.ops.disable_weight_init,
                               dtype=torch.float32, device=device, **kwargs)


def _write(out: Path, stem: str, what: str, state: dict) -> None:
    lines = [f"# Names and shapes of {what}.",
             "# Listed from ComfyUI's own modules (tools/comfy_reference/control_key_lists.py)."]
    lines += [f"{k} {tuple(v.shape)}" for k, v in sorted(state.items())]
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")


def key_lists(out: Path) -> None:
    from comfy.t2i_adapter.adapter import Adapter, Adapter_light

    sd15 = _cldm(model_channels=320, num_res_blocks=2, channel_mult=(1, 2, 4, 4), context_dim=768, num_heads=8,
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 use_linear_in_transformer=False)
    sdxl = _cldm(model_channels=320, num_res_blocks=2, channel_mult=(1, 2, 4), context_dim=2048, num_head_channels=64,
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_middle=10, use_linear_in_transformer=True,
                 adm_in_channels=2816, num_classes="sequential")
    _write(out, "controlnet_keys_sd15", "an original-layout SD1.5 ControlNet's weights (no control_model. prefix)",
           sd15.state_dict())
    _write(out, "controlnet_keys_sdxl", "an original-layout SDXL ControlNet's weights (no control_model. prefix)",
           sdxl.state_dict())
    channels = [320, 640, 1280, 1280]
    adapters = {"full_sd14": Adapter(cin=192, channels=channels, nums_rb=2, ksize=1, sk=True, use_conv=False, xl=False),
                "full_xl": Adapter(cin=768, channels=channels, nums_rb=2, ksize=1, sk=True, use_conv=False, xl=True),
                "light": Adapter_light(cin=192, channels=channels, nums_rb=4)}
    for name, adapter in adapters.items():
        _write(out, f"t2i_adapter_keys_{name}", f"TencentARC's original-layout T2I-Adapter weights ({name})",
               adapter.state_dict())


def cross_check() -> None:
    import torch
    from comfy.t2i_adapter.adapter import Adapter, Adapter_light
    from test_controlnet_layouts import CONTEXT, original_layout, tiny_controlnet
    from test_t2i_adapter import original, tiny_adapter

    nets = {"sd1": dict(model_channels=32, transformer_depth=[1, 0], num_heads=8, use_linear_in_transformer=False),
            "sd2": dict(model_channels=64, transformer_depth=[1, 1], num_head_channels=64,
                        use_linear_in_transformer=True)}
    g = torch.Generator().manual_seed(7)
    x, c = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 6, CONTEXT, generator=g)
    hint, t = torch.rand(1, 3, 64, 64, generator=g), torch.tensor([500.0])
    for kind, kwargs in nets.items():
        source = tiny_controlnet(kind)
        theirs = _cldm(meta=False, num_res_blocks=1, channel_mult=(1, 2), context_dim=CONTEXT,
                       transformer_depth_middle=1, **kwargs)
        theirs.load_state_dict({k.removeprefix("control_model."): v for k, v in original_layout(source).items()})
        with torch.no_grad():
            out = theirs(x, hint, t, c)
            down, mid = source(x, t, encoder_hidden_states=c, controlnet_cond=hint, return_dict=False)
        diff = max(float((a - b).abs().max()) for a, b in zip([*out["output"], *out["middle"]], [*down, mid]))
        print(f"ControlNet {kind}: largest difference {diff:.2e}")
    adapters = {"full": Adapter(cin=192, channels=[32, 64, 128, 128], nums_rb=2, ksize=1, sk=True, use_conv=False,
                                xl=False),
                "full_xl": Adapter(cin=768, channels=[32, 64, 128, 128], nums_rb=1, ksize=1, sk=True, use_conv=False,
                                   xl=True),
                "light": Adapter_light(cin=192, channels=[32, 64, 128, 128], nums_rb=1)}
    for kind, theirs in adapters.items():
        source = tiny_adapter(kind)
        theirs.load_state_dict(original(source))
        with torch.no_grad():
            mine, out = source(hint), theirs(hint)
        features = [f for f in [*reversed(out["input"]), *out.get("middle", [])] if f is not None]
        diff = max(float((a - b).abs().max()) for a, b in zip(mine, features))
        print(f"T2I-Adapter {kind}: largest difference {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data")
    args = parser.parse_args()
    _comfy(args.comfyui)
    key_lists(args.out)
    cross_check()


if __name__ == "__main__":
    main()
