"""Resource budgets: how large a tensor, prompt, image file or schedule a node may build, checked before it does.

A small valid prompt must not be able to exhaust memory: each allocating node estimates what it is about to
allocate and refuses with `BudgetExceeded` (naming the node, the input, the estimate and the budget) when it is
over. Pure Python: the engine core imports this module and stays free of torch.

`Services.limits` holds the budget a run uses. `validate_inputs` only receives the directories, so the budget an
executor was built with is also installed process-wide (`configure`) for the checks done at validation time.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

MEMORY_FRACTION = 4  # the default single-allocation budget is 1/4 of the memory the process may use
FLOAT32 = 4
MIB = 1024 ** 2


class BudgetExceeded(ValueError):
    """An allocation a node was about to make is over its budget; nothing was allocated."""


def machine_memory_bytes() -> int:
    """Physical memory, or the process's address-space limit (`ulimit -v`, `prlimit --as`) when lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        total = 16 * 1024 ** 3
    try:
        import resource  # noqa: PLC0415 - POSIX only
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):
        return total
    return total if soft == resource.RLIM_INFINITY else min(total, soft)


def default_memory_bytes() -> int:
    return machine_memory_bytes() // MEMORY_FRACTION


class Limits(BaseModel):
    """Budgets every node checks before allocating. Each maps to a command-line flag (`add_limit_arguments`)."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int = Field(default_factory=default_memory_bytes, gt=0)  # one tensor (latent, image, frames)
    max_tokens: int = Field(8192, gt=0)  # text-encoder tokens of one prompt
    max_prompt_chars: int = Field(262_144, gt=0)  # checked before tokenising
    max_image_frames: int = Field(4096, gt=0)  # frames decoded from one image file
    max_image_pixels: int = Field(1 << 30, gt=0)  # pixels decoded from one image file, all frames together
    max_schedule_steps: int = Field(100_000, gt=0)  # sigmas computed for one sampler (steps / denoise)


# ---- the process-wide budget used at validation time --------------------------------------------------------

_configured: Limits | None = None


def configure(limits: Limits) -> None:
    """Install the budget that `validate_inputs` checks use (the executor's; `create_executor` calls this)."""
    global _configured
    _configured = limits


def current_limits() -> Limits:
    global _configured
    if _configured is None:
        _configured = Limits()
    return _configured


# ---- the checks ---------------------------------------------------------------------------------------------


def estimate_bytes(shape: Sequence[int], itemsize: int = FLOAT32) -> int:
    """Bytes of a dense tensor of `shape`; the one estimate every allocating node uses."""
    return math.prod(int(n) for n in shape) * itemsize


def check_memory(limits: Limits, where: str, what: str, shape: Sequence[int], itemsize: int = FLOAT32) -> None:
    """Refuse a tensor of `shape` over the memory budget. `where` is "Node.input", `what` names the tensor."""
    needed = estimate_bytes(shape, itemsize)
    if needed > limits.memory_bytes:
        dims = "x".join(str(int(n)) for n in shape)
        raise BudgetExceeded(f"{where}: {what} [{dims}] would need {_size(needed)}, over the memory budget of "
                             f"{_size(limits.memory_bytes)} for one tensor (raise it with --max-tensor-mb)")


def check_count(where: str, what: str, count: int, limit: int, flag: str) -> None:
    """Refuse a count (tokens, frames, pixels, schedule steps) over its limit."""
    if count > limit:
        raise BudgetExceeded(f"{where}: {what} is {count:,}, over the limit of {limit:,} (raise it with {flag})")


def refusal(check: Callable[[], None]) -> str | None:
    """A check's message for `validate_inputs` (the server answers 400 with node_errors), None when it passes."""
    try:
        check()
    except BudgetExceeded as exc:
        return str(exc)
    return None


def _size(n: int) -> str:
    return f"{n / 1024 ** 3:.1f} GiB" if n >= 1024 ** 3 else f"{n / MIB:.1f} MiB"


# ---- command-line flags -------------------------------------------------------------------------------------


def add_limit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("resource limits (checked before a node allocates)")
    group.add_argument("--max-tensor-mb", type=float, default=None, metavar="MB",
                       help="largest tensor one node may allocate: a latent, an image batch, an image file's "
                            "frames (default: a quarter of RAM, or of the address-space limit)")
    group.add_argument("--max-tokens", type=int, default=None, help="text-encoder tokens per prompt (default 8192)")
    group.add_argument("--max-prompt-chars", type=int, default=None,
                       help="characters per prompt text, checked before tokenising (default 262144)")
    group.add_argument("--max-image-frames", type=int, default=None,
                       help="frames decoded from one image file (default 4096)")
    group.add_argument("--max-image-megapixels", type=float, default=None, metavar="MP",
                       help="pixels decoded from one image file, all frames together (default 1073.7)")
    group.add_argument("--max-schedule-steps", type=int, default=None,
                       help="length of a sampler's schedule, steps / denoise (default 100000)")
    return parser


RAM_BUDGET_HELP = ("CPU memory the loaded models may hold; beyond it the least recently used are dropped and "
                   "read from disk again when needed (default: half the memory available at start)")


def gigabytes(text: str) -> float:
    """An argparse type: a non-negative size in GB."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GB: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a size in GB must be 0 or more, got {text!r}")
    return value


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The Limits of parsed flags; a flag left out keeps its default."""
    given = {
        "memory_bytes": _scaled(getattr(args, "max_tensor_mb", None), MIB),
        "max_tokens": getattr(args, "max_tokens", None),
        "max_prompt_chars": getattr(args, "max_prompt_chars", None),
        "max_image_frames": getattr(args, "max_image_frames", None),
        "max_image_pixels": _scaled(getattr(args, "max_image_megapixels", None), 1_000_000),
        "max_schedule_steps": getattr(args, "max_schedule_steps", None),
    }
    return Limits(**{key: value for key, value in given.items() if value is not None})


def _scaled(value: float | None, unit: int) -> int | None:
    return None if value is None else int(value * unit)
