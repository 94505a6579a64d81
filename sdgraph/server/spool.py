"""A remote worker's private output directories, and the files in them sent to the server as they appear.

A remote executor's nodes write into a spool (`Dirs.spool`: a fresh temporary directory of the worker's own, never
the server's output directory, even where both share a disk). Before an `executed` event and before the history
entry leave the worker, `ship` sends every file written since the last time, as `("file", meta, chunk, last)`
messages of at most CHUNK_BYTES each; the server stores them (`sdgraph.server.outputs`) and answers for the
names the events and the history carry. A sent file is emptied, not removed: its name stays taken, so the
spool never gives the same name to two files and a record replayed from the worker's cache still names one file.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from sdgraph.execute import Executor
from sdgraph.plugins import rebind_comfy_layer

log = logging.getLogger("sdgraph.server")

CHUNK_BYTES = 4 * 1024 * 1024
KINDS = ("output", "temp")
Send = Callable[[tuple[Any, ...]], None]


class Spool:
    def __init__(self, root: Path | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.root = (root or Path(tempfile.mkdtemp(prefix=f"sdgraph-spool-{os.getpid()}-"))).resolve()
        self._sent: set[str] = set()
        self._lock = threading.Lock()

    def attach(self, executor: Executor) -> None:
        """Have the executor's nodes (and ComfyUI-convention packs) write here."""
        dirs = executor.services.dirs
        dirs.spool = self.root  # in place: whatever holds the layout (combos, the registry) sees it
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        rebind_comfy_layer(dirs)

    def describe(self) -> dict[str, str]:
        return {"spool": self.id, "spool_dir": str(self.root)}

    def ship(self, send: Send, ui: dict[str, Any] | None = None) -> int:
        """Send the files written since the last call, in name order (so counters keep their order); how many.
        With a node's `ui`, only the files its records name: other nodes may still be writing theirs."""
        with self._lock:
            found = self._files() if ui is None else self._named(ui)
            fresh = [(kind, path) for kind, path in found if _key(kind, path) not in self._sent]
            for kind, path in fresh:
                self._send_file(kind, path, send)
                self._sent.add(_key(kind, path))
            return len(fresh)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _files(self) -> Iterator[tuple[str, Path]]:
        for kind in KINDS:
            top = self.root / kind
            for folder, _, names in os.walk(top):
                for name in sorted(names):
                    yield kind, Path(folder, name)

    def _named(self, ui: dict[str, Any]) -> Iterator[tuple[str, Path]]:
        for record in file_records(ui):
            top = (self.root / record["type"]).resolve()
            path = (top / record.get("subfolder", "") / record["filename"]).resolve()
            if top in path.parents and path.is_file():
                yield record["type"], path

    def _send_file(self, kind: str, path: Path, send: Send) -> None:
        relative = path.relative_to(self.root / kind)
        subfolder = "" if relative.parent == Path(".") else relative.parent.as_posix()
        meta = {"spool": self.id, "type": kind, "subfolder": subfolder,
                "filename": relative.name}
        with path.open("r+b") as f:
            chunk = f.read(CHUNK_BYTES)
            while True:
                following = f.read(CHUNK_BYTES)
                send(("file", meta, chunk, not following))
                if not following:
                    break
                chunk = following
            f.truncate(0)  # the server holds it now; the name stays taken here


def remove_left(hello: dict[str, Any]) -> None:
    """Remove the spool a dead worker on this machine left (its `hello` names it)."""
    if hello.get("spool_dir"):
        shutil.rmtree(hello["spool_dir"], ignore_errors=True)


def _key(kind: str, path: Path) -> str:
    return f"{kind}:{path}"


def file_records(ui: Any) -> Iterator[dict[str, Any]]:
    """The records of output and temp files in a node's `ui` (`{"filename", "subfolder", "type"}` in its lists)."""
    if not isinstance(ui, dict):
        return
    for value in ui.values():
        for record in value if isinstance(value, list) else ():
            if (isinstance(record, dict) and record.get("type") in KINDS and isinstance(record.get("filename"), str)
                    and isinstance(record.get("subfolder", ""), str)):
                yield record
