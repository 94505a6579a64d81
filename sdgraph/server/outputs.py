"""The server's storage of the files remote workers send (`sdgraph.server.spool`): content-addressed.

A counted name (`ComfyUI_00001_.png`) keeps its prefix and extension, and the server chooses the counter, after
the ones its own folder holds, as a save node in the server's process would (workers with private disks cannot
see each other's counters). What makes a retry write the same file is the content: a file whose bytes equal
those of a file already stored under the same prefix, extension and folder is not stored again; the run's
records name the stored one. So a prompt retried after its worker died (its files sent, its history not yet)
names the files of its first attempt, and `/view` and the history see what an in-process run shows.
A name without a counter is stored as it is, replacing an older file of that name (as its node does in-process).

The names a worker's records carry are answered for per spool (`resolve`), so a record replayed from a worker's
output cache, whose file was sent in an earlier run, names the stored file too.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdgraph.output_names import counted, next_counter_of
from sdgraph.paths import Dirs, UnsafePath, safe_join
from sdgraph.server.spool import KINDS, file_records

log = logging.getLogger("sdgraph.server")

REMEMBERED = 100_000  # (spool, record) -> stored name, for records replayed from a worker's cache
Key = tuple[str, str, str, str]  # spool, type, subfolder, the worker's file name


@dataclass
class _Incoming:
    folder: Path
    part: Path
    handle: Any
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0


class OutputStore:
    def __init__(self, dirs: Dirs) -> None:
        self.dirs = dirs
        self.stored = 0  # files written
        self.reused = 0  # files whose content was stored already
        self._incoming: dict[Key, _Incoming | None] = {}  # None: refused, its chunks are dropped
        self._names: OrderedDict[Key, tuple[str, str]] = OrderedDict()
        self._hashes: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256)
        self._lock = threading.Lock()

    def receive(self, meta: dict[str, Any], chunk: bytes, last: bool) -> None:
        """One chunk of a file from a worker; the last one stores it."""
        key: Key = (str(meta["spool"]), str(meta["type"]), str(meta.get("subfolder", "")), str(meta["filename"]))
        try:
            incoming = self._incoming[key] if key in self._incoming else self._open(key)
            if incoming is not None:
                incoming.handle.write(chunk)
                incoming.digest.update(chunk)
                incoming.size += len(chunk)
                if last:
                    self._finish(key, incoming)
        except (OSError, UnsafePath) as exc:
            log.error("could not store %s/%s from a worker: %s", key[1], "/".join(key[2:]), exc)
            self._drop(key)
            self._incoming[key] = None
        if last:
            self._incoming.pop(key, None)

    def abandon(self, spool: str | None) -> None:
        """Drop the files of a worker that was lost while sending them."""
        for key in [key for key in self._incoming if key[0] == spool]:
            self._drop(key)
            self._incoming.pop(key, None)

    def resolve(self, spool: str | None, ui: Any) -> Any:
        """A node's `ui` with the worker's file names replaced by the stored ones."""
        if spool is None or not any(True for _ in file_records(ui)):
            return ui
        ui = copy.deepcopy(ui)
        for record in file_records(ui):
            stored = self._names.get((spool, record["type"], record.get("subfolder", ""), record["filename"]))
            if stored is not None:
                record["subfolder"], record["filename"] = stored
        return ui

    def resolve_entry(self, spool: str | None, entry: dict[str, Any]) -> dict[str, Any]:
        """A history entry with its outputs resolved."""
        outputs = entry.get("outputs")
        if isinstance(outputs, dict):
            entry["outputs"] = {node: self.resolve(spool, ui) for node, ui in outputs.items()}
        return entry

    # ---- storing -------------------------------------------------------------------------------------------

    def _open(self, key: Key) -> _Incoming | None:
        _, kind, subfolder, filename = key
        if kind not in KINDS:  # never the input directory
            raise UnsafePath(f"a worker's file must be an output or temp file, not {kind!r}")
        if filename != Path(filename).name or filename.startswith("."):
            raise UnsafePath(f"file name {filename!r} is not a plain name")
        folder = safe_join(self.dirs.of_type(kind), subfolder)
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".sdgraph-incoming-{uuid.uuid4().hex}"
        incoming = _Incoming(folder, part, part.open("xb"))
        self._incoming[key] = incoming
        return incoming

    def _finish(self, key: Key, incoming: _Incoming) -> None:
        incoming.handle.close()
        sha = incoming.digest.hexdigest()
        with self._lock:
            name = self._same_content(incoming, key[3], sha)
            if name is not None:
                incoming.part.unlink()
                self.reused += 1
            else:
                name = self._place(incoming, key[3])
                self._remember_hash(incoming.folder / name, sha)
                self.stored += 1
            self._names[key] = (key[2], name)
            while len(self._names) > REMEMBERED:
                self._names.popitem(last=False)

    def _same_content(self, incoming: _Incoming, filename: str, sha: str) -> str | None:
        """The name of a stored file of this name's family (prefix, extension) with these bytes, if any."""
        for path in _family(incoming.folder, filename):
            try:
                if path.stat().st_size == incoming.size and self._sha(path) == sha:
                    return path.name
            except OSError:  # removed meanwhile
                continue
        return None

    def _place(self, incoming: _Incoming, filename: str) -> str:
        """Move the received file to its name: the next free counter of its family, or its own name."""
        parts = counted(filename)
        if parts is None:
            os.replace(incoming.part, incoming.folder / filename)
            return filename
        counter = next_counter_of(incoming.folder, parts)
        while True:
            name = parts.name(counter)
            try:
                (incoming.folder / name).open("xb").close()  # taken, so no save in this process races us
            except FileExistsError:
                counter += 1
                continue
            os.replace(incoming.part, incoming.folder / name)
            return name

    def _sha(self, path: Path) -> str:
        stat = path.stat()
        known = self._hashes.get(str(path))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                digest.update(block)
        self._remember_hash(path, digest.hexdigest())
        return digest.hexdigest()

    def _remember_hash(self, path: Path, sha: str) -> None:
        stat = path.stat()
        if len(self._hashes) > REMEMBERED:
            self._hashes.clear()
        self._hashes[str(path)] = (stat.st_size, stat.st_mtime_ns, sha)

    def _drop(self, key: Key) -> None:
        incoming = self._incoming.get(key)
        if incoming is not None:
            incoming.handle.close()
            incoming.part.unlink(missing_ok=True)


def _family(folder: Path, filename: str) -> list[Path]:
    """The files of folder a file of this name could be the same as: its counted siblings, or itself."""
    parts = counted(filename)
    if parts is None:
        return [folder / filename] if (folder / filename).is_file() else []
    pattern = parts.pattern()
    return sorted(path for path in folder.iterdir() if pattern.match(path.name) and path.is_file())
