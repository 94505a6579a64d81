"""Where sdgraph reads models and inputs and writes outputs, and the guard that keeps client paths inside them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# ComfyUI's model folders that read more than one directory under models/, in its search order, and its legacy
# names for two of them (a node asking for "unet" sees what one asking for "diffusion_models" sees).
FOLDER_DIRS = {"diffusion_models": ("unet", "diffusion_models"), "text_encoders": ("text_encoders", "clip"),
               "controlnet": ("controlnet", "t2i_adapter")}
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}


class UnsafePath(ValueError):
    """A path from a client that would leave its directory."""


class PathTooDeep(UnsafePath):
    """A path from a client with more folders than any real layout has (`MAX_PATH_DEPTH`)."""


# Folders a client's path may name. Without a bound a deep path is refused only where pathlib's recursion (mkdir
# with parents) hits the interpreter's recursion limit, which other code may have raised.
MAX_PATH_DEPTH = 64


def default_base() -> Path:
    return Path(os.environ.get("SDGRAPH_HOME", Path.cwd() / "user")).resolve()


@dataclass
class Dirs:
    """The directory layout: `base/{models,input,output,temp,custom_nodes,user}` plus the shipped models.

    `spool`, when set (a remote worker's, `sdgraph.server.spool`), is where nodes write their outputs instead:
    `output` and `temp` answer under it, while `of_type` (the files clients name) still answers under base.
    """

    base: Path = field(default_factory=default_base)
    extra_model_roots: list[Path] = field(default_factory=lambda: [PACKAGE_DATA / "models"])
    spool: Path | None = None

    @property
    def models(self) -> Path:
        return self.base / "models"

    @property
    def input(self) -> Path:
        return self.base / "input"

    @property
    def output(self) -> Path:
        """Where nodes write outputs."""
        return (self.spool or self.base) / "output"

    @property
    def temp(self) -> Path:
        """Where nodes write temporary pictures (previews)."""
        return (self.spool or self.base) / "temp"

    @property
    def custom_nodes(self) -> Path:
        return self.base / "custom_nodes"

    @property
    def user(self) -> Path:
        return self.base / "user"

    def of_type(self, kind: str) -> Path:
        """The directory for a client-facing file type: output, input or temp."""
        if kind not in ("output", "input", "temp"):
            raise UnsafePath(f"unknown directory type {kind!r}; expected output, input or temp")
        return self.base / kind

    def model_roots(self, folder: str) -> list[Path]:
        """Directories searched for models of one kind (checkpoints, loras, ...), user's first; a ComfyUI folder
        name spanning several directories (`FOLDER_DIRS`) searches each of them in ComfyUI's order."""
        names = FOLDER_DIRS.get(LEGACY_FOLDERS.get(folder, folder), (folder,))
        return [base / name for base in (self.models, *self.extra_model_roots) for name in names]

    def list_models(self, folder: str) -> list[str]:
        """Model names in a folder: files with a model extension, and diffusers-format directories (whose
        own files and subfolders are parts of one model, not models of their own)."""
        names: set[str] = set()
        for root in self.model_roots(folder):
            if root.is_dir():
                names.update(_models_under(root, root))
        return sorted(names)

    def find_model(self, folder: str, name: str) -> Path:
        """Resolve a model name from `list_models` to its path; refuse names that leave the folder."""
        for root in self.model_roots(folder):
            candidate = safe_join(root, name)
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"model {name!r} not found in {folder} (looked in {self.model_roots(folder)})")


def _is_model_dir(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def _models_under(directory: Path, root: Path) -> list[str]:
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            if _is_model_dir(entry):
                found.append(entry.relative_to(root).as_posix())
            else:
                found.extend(_models_under(entry, root))
        elif entry.suffix in MODEL_EXTENSIONS:
            found.append(entry.relative_to(root).as_posix())
    return found


def safe_join(root: Path, *parts: str) -> Path:
    """Join client-supplied parts under root, refusing anything that could point outside it.

    Refused: empty root escapes via `..`, absolute paths, backslashes, NUL bytes, and symlinks leading out.
    """
    for part in parts:
        if not isinstance(part, str):
            raise UnsafePath(f"path part must be a string, got {type(part).__name__}")
        if "\x00" in part or "\\" in part:
            raise UnsafePath(f"path {part!r} contains a NUL byte or a backslash")
        if part.startswith("/") or (len(part) > 1 and part[1] == ":"):
            raise UnsafePath(f"path {part!r} is absolute")
        if any(piece == ".." for piece in part.split("/")):
            raise UnsafePath(f"path {part!r} contains '..'")
    depth = sum(1 for part in parts for piece in part.split("/") if piece)
    if depth > MAX_PATH_DEPTH:
        raise PathTooDeep(f"path {'/'.join(parts)[:60]!r}... has {depth} levels, more than {MAX_PATH_DEPTH}")
    root_resolved = root.resolve()
    joined = root_resolved.joinpath(*[p for p in parts if p])
    resolved = joined.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UnsafePath(f"path {'/'.join(parts)!r} leads outside {root_resolved.name}/")
    return resolved
