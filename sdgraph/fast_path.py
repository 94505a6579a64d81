"""The fast-path settings of the UNet (`--compile`, `--compile-mode`, `--channels-last`): what a face parses and
the model manager carries to the nodes. Pure Python: applying them is the diffusion nodes' work
(`nodes.sd.unet_compile`)."""
from __future__ import annotations

import argparse

from pydantic import BaseModel

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("blocks", "unet")


class FastPath(BaseModel, frozen=True):
    """How the UNet runs: its repeated blocks through torch.compile, its convolutions in channels_last."""

    compile: bool = False
    compile_mode: str = "default"
    compile_scope: str = "blocks"  # the repeated blocks (regional), or the UNet's whole forward
    channels_last: bool = False

    @property
    def active(self) -> bool:
        return self.compile or self.channels_last


def add_fast_path_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="run the UNet's repeated blocks through torch.compile (inductor; the first step at "
                             "each new image size compiles them: tens of seconds)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                        help="torch.compile mode with --compile (default: default)")
    parser.add_argument("--compile-scope", choices=COMPILE_SCOPES, default="blocks",
                        help="with --compile: the UNet's repeated blocks (default; ControlNet, patches and LoRA "
                             "run through the same compiled code) or its whole forward (one graph per input "
                             "signature: a ControlNet or a new size compiles it again)")
    parser.add_argument("--channels-last", action="store_true",
                        help="keep the UNet's convolution weights in channels_last memory order")


def fast_path_options(args: argparse.Namespace) -> dict[str, object]:
    """The RuntimeOptions field these flags set."""
    return {"fast_path": FastPath(compile=args.compile, compile_mode=args.compile_mode,
                                  compile_scope=args.compile_scope, channels_last=args.channels_last)}
