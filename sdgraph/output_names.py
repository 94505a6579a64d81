"""How saved files are named: ComfyUI's `<prefix>_<counter:05>_<suffix>`, counting up past the names that exist.

Save nodes (`sdgraph.nodes.sd.image_files`) write through these helpers, and the server stores the files remote
workers send (`sdgraph.server.outputs`) by the same convention, so a user sees the same names either way.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

from sdgraph.paths import safe_join

# `<stem>_<digits><tail>`: the last run of digits after an underscore, then an optional `_` and the extension
COUNTED = re.compile(r"^(?P<stem>.*)_(?P<digits>\d+)(?P<tail>_?(?:\.[^/]*)?)$")


class CountedName(NamedTuple):
    stem: str
    width: int  # digits of the counter, as written (5 for ComfyUI's names)
    tail: str  # what follows the counter: `_.png`, `.mp4`, `_`

    def name(self, counter: int) -> str:
        return f"{self.stem}_{counter:0{self.width}}{self.tail}"

    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.escape(self.stem) + r"_(\d+)" + re.escape(self.tail) + "$")


def counted(name: str) -> CountedName | None:
    """The parts of a counted file name; None for a name without a counter."""
    match = COUNTED.match(name)
    if match is None or not match.group("stem"):
        return None
    return CountedName(match.group("stem"), len(match.group("digits")), match.group("tail"))


def output_folder(root: Path, prefix: str) -> tuple[Path, str, str]:
    """(folder, subfolder, stem) of a filename prefix such as `sub/name` under root, the folder created;
    refused when it would leave root."""
    folder_part, _, stem = prefix.replace("\\", "/").rpartition("/")
    folder = safe_join(root, folder_part) if folder_part else root.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder, folder_part, stem


def write_new(folder: Path, stem: str, suffix: str, counter: int, write: Callable[[BinaryIO], None]) -> tuple[str, int]:
    """Write `<stem>_<counter:05>_<suffix>` with `write(file)`, counting up from `counter` past names that exist
    (never overwriting); returns the name and the counter it took."""
    while True:
        name = f"{stem}_{counter:05}_{suffix}"
        try:
            with (folder / name).open("xb") as f:
                write(f)
            return name, counter
        except FileExistsError:
            counter += 1


def next_counter(folder: Path, stem: str, suffix: str = ".png") -> int:
    """One more than the largest counter of the `<stem>_<counter>_<suffix>` files in folder (1 when none)."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)_?" + re.escape(suffix) + "$")
    return max(_counters(folder, pattern), default=0) + 1


def next_counter_of(folder: Path, name: CountedName) -> int:
    """One more than the largest counter of the files in folder named like `name` (1 when none)."""
    return max(_counters(folder, name.pattern()), default=0) + 1


def _counters(folder: Path, pattern: re.Pattern[str]) -> list[int]:
    if not folder.is_dir():
        return []
    return [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
