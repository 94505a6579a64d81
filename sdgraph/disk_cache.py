"""Node outputs kept on disk under their signature, so a restarted server or a new `sdgraph run` reuses them.

Only values that can be written faithfully are kept: tensors, numbers, strings, booleans, None, and lists, tuples
and str-keyed dicts of them (images, latents, masks, conditioning, primitives). Anything else (a model, a
ControlNet inside a conditioning, a blocker) keeps the entry in memory only. Outputs cheaper to compute than to
read (`min_seconds`) are not written, nor are those of output nodes (their side effects are the point of them).

One file per entry, `<dir>/<key[:2]>/<key>.out`: a magic line, the header's length, a JSON header (the values'
structure with tensors as references, the UI, the format and engine versions), the tensors as safetensors bytes,
and a sha256 of all that. A file that is short, altered or of another version is a miss (and is removed), never a
wrong value. Writes go to a temporary file renamed into place, so several processes may share a directory. The
directory is bounded by bytes, least recently used first out (a hit refreshes the file's modification time).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from sdgraph import __version__

log = logging.getLogger("sdgraph")

MAGIC = b"sdgraph-output\n"
FORMAT = 1
DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MIN_SECONDS = 0.005
_LENGTH = struct.Struct("<Q")
_DIGEST_BYTES = 32


class Unstorable(Exception):
    """A value the disk cache cannot write faithfully."""


class DiskCache:
    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 min_seconds: float = DEFAULT_MIN_SECONDS) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.min_seconds = min_seconds
        self._index: dict[str, tuple[int, float]] | None = None  # key -> (bytes, last use), read on first use
        self.total_bytes = 0

    # ---- the index ----------------------------------------------------------------------------------------

    @property
    def index(self) -> dict[str, tuple[int, float]]:
        if self._index is None:
            self._index = {}
            if self.directory.is_dir():
                for path in self.directory.glob("??/*.out"):
                    try:
                        stat = path.stat()
                    except OSError:
                        continue
                    self._index[path.stem] = (stat.st_size, stat.st_mtime)
            self.total_bytes = sum(size for size, _ in self._index.values())
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.out"

    # ---- reading and writing --------------------------------------------------------------------------------

    def get(self, key: str) -> tuple[tuple[list[Any], ...], dict[str, Any] | None] | None:
        """The outputs and UI stored under `key`, or None (missing, damaged or of another version)."""
        if key not in self.index:
            return None
        path = self.path(key)
        try:
            data = path.read_bytes()
            values, ui = decode(data)
        except FileNotFoundError:
            self._forget(key)
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged entry is a miss, whatever is wrong with it
            log.warning("disk cache: dropping unreadable entry %s (%s)", path.name, exc)
            self._remove(key)
            return None
        now = time.time()
        try:
            os.utime(path, (now, now))
        except OSError:
            pass
        self.index[key] = (len(data), now)
        return values, ui

    def put(self, key: str, values: tuple[list[Any], ...], ui: dict[str, Any] | None) -> bool:
        """Store an entry if its values can be written; whether it was."""
        try:
            data = encode(values, ui)
        except Unstorable:
            return False
        if len(data) > self.max_bytes:
            return False
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".writing-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("disk cache: could not write %s (%s)", path, exc)
            Path(temporary).unlink(missing_ok=True)
            return False
        self._forget(key)
        self.index[key] = (len(data), time.time())
        self.total_bytes += len(data)
        self._evict()
        return True

    def _evict(self) -> None:
        if self.total_bytes <= self.max_bytes:
            return
        for key, _ in sorted(self.index.items(), key=lambda item: item[1][1]):
            if self.total_bytes <= self.max_bytes:
                break
            self._remove(key)

    def _remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
        self._forget(key)

    def _forget(self, key: str) -> None:
        entry = self.index.pop(key, None)
        if entry is not None:
            self.total_bytes -= entry[0]

    def clear(self) -> None:
        for key in list(self.index):
            self._remove(key)

    def stats(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "entries": len(self.index), "bytes": self.total_bytes,
                "max_bytes": self.max_bytes, "min_seconds": self.min_seconds}


# ---- the file format -----------------------------------------------------------------------------------------

def encode(values: tuple[list[Any], ...], ui: dict[str, Any] | None) -> bytes:
    tensors: dict[str, Any] = {}
    header = {"format": FORMAT, "engine": __version__, "values": _structure(list(values), tensors),
              "ui": _structure(ui, {}) if ui is not None else None}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    blob = _save_tensors(tensors) if tensors else b""
    body = MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes + blob
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size + _DIGEST_BYTES:
        raise ValueError("not a disk cache entry")
    if hashlib.sha256(body).digest() != digest:
        raise ValueError("checksum mismatch (a truncated or altered file)")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack(body[len(MAGIC):start])
    header = json.loads(body[start:start + length])
    if header.get("format") != FORMAT or header.get("engine") != __version__:
        raise ValueError("written by another version")
    blob = body[start + length:]
    tensors = _load_tensors(blob) if blob else {}
    values = _rebuild(header["values"], tensors)
    ui = _rebuild(header["ui"], {}) if header["ui"] is not None else None
    return tuple(values), ui


_PLAIN = (str, bool, int, float, type(None))


def _structure(value: Any, tensors: dict[str, Any]) -> Any:
    """JSON for `value`, with tensors moved into `tensors` (by reference name) and tuples marked."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, list):
        return [_structure(v, tensors) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_structure(v, tensors) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value) or any(k.startswith("$") for k in value):
            raise Unstorable("a dict with keys that are not plain strings")
        return {k: _structure(v, tensors) for k, v in value.items()}
    if _is_tensor(value):
        name = next((n for n, t in tensors.items() if t is value), None)  # the same tensor twice: one copy
        if name is None:
            name = str(len(tensors))
            tensors[name] = value
        return {"$tensor": name, "device": str(value.device)}
    raise Unstorable(f"a {type(value).__name__}")


def _rebuild(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_rebuild(v, tensors) for v in value]
    if isinstance(value, dict):
        if "$tuple" in value:
            return tuple(_rebuild(v, tensors) for v in value["$tuple"])
        if "$tensor" in value:
            return _on_device(tensors[value["$tensor"]], value.get("device", "cpu"))
        return {k: _rebuild(v, tensors) for k, v in value.items()}
    return value


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter")


# torch is imported only where a tensor is already in hand: a pure-Python run never loads it
def _save_tensors(tensors: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    out, storages = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return save(out)


def _load_tensors(blob: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(blob)


def _on_device(tensor: Any, device: str) -> Any:
    if device == "cpu":
        return tensor
    try:
        return tensor.to(device)
    except (RuntimeError, AssertionError):  # written on a device this process does not have
        return tensor


# ---- which code wrote an entry ---------------------------------------------------------------------------------

_stamps: dict[Any, str] = {}  # package directory or node class -> its stamp


def code_stamp(cls: Any) -> str:
    """What stands for the code that computed a node's output: sizes and modification times of the files of the
    package its class comes from, and of sdgraph's own (the models layer, the engine).

    Part of an entry's key, so editing a node pack (or upgrading sdgraph) makes its old entries misses. The whole
    package, not the class's own file: a sampler's numbers live in helper modules too."""
    stamp = _stamps.get(cls)
    if stamp is None:  # once per class: every node's disk key asks, on the run's hot path
        import inspect

        try:
            source = Path(inspect.getfile(cls)).resolve()
        except (TypeError, OSError):
            return "unknown"
        stamp = _stamps[cls] = _stamp(_package_root(source)) + _stamp(Path(__file__).resolve().parent)
    return stamp


def _package_root(source: Path) -> Path:
    root = source
    while (root.parent / "__init__.py").is_file() and root.parent != root.parent.parent:
        root = root.parent
    return root


def _stamp(base: Path) -> str:
    stamp = _stamps.get(base)
    if stamp is None:
        digest = hashlib.sha256(__version__.encode())
        for path in sorted(base.rglob("*.py")) if base.is_dir() else [base]:
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        stamp = _stamps[base] = digest.hexdigest()[:16]
    return stamp


def entry_key(key: str, cls: Any) -> str:
    """The disk key of a node output: its signature and the code that computed it."""
    return hashlib.sha256(f"{key}:{code_stamp(cls)}".encode()).hexdigest()


# ---- command-line flags (shared by `sdgraph run` and `sdgraph serve`) -------------------------------------------

def add_disk_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """The disk cache's flags, and --sequential (both say how the executor keeps and schedules work)."""
    parser.add_argument("--sequential", action="store_true",
                        help="run nodes one at a time in order (by default nodes on different resources overlap: "
                             "image loading and saving on the CPU while the accelerator samples)")
    parser.add_argument("--no-disk-cache", action="store_true",
                        help="keep node outputs in memory only, not on disk for later processes")
    parser.add_argument("--disk-cache-gb", type=float, default=DEFAULT_MAX_BYTES / 1024**3, metavar="GB",
                        help="bound of the on-disk output cache, least recently used out (default 4)")
    parser.add_argument("--disk-cache-dir", type=Path, default=None, metavar="DIR",
                        help="where the on-disk output cache lives (default <base-dir>/cache/outputs)")


def disk_cache_options(args: argparse.Namespace) -> dict[str, object]:
    """The RuntimeOptions fields these flags set."""
    return {"sequential": args.sequential, "disk_cache": not args.no_disk_cache, "disk_cache_dir": args.disk_cache_dir,
            "disk_cache_bytes": int(max(args.disk_cache_gb, 0) * 1024**3)}
