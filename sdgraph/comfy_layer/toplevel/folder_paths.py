"""ComfyUI's `folder_paths` for plugins, answering with sdgraph's directories (sdgraph.paths.Dirs).

`folder_names_and_paths` maps a folder name to ([directories], extensions) as in ComfyUI: the user's
`models/<name>` first, then sdgraph's shipped models; packs may add to it. Model look-ups never leave their
folders: a name is normalised as ComfyUI does (`../x` reads as `x`) and then joined under each folder with
sdgraph's guard. Annotated names (`x.png [output]`) and save paths stay inside input/output/temp likewise.
"""
from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Collection
from pathlib import Path

from sdgraph.comfy_layer import binding
from sdgraph.paths import FOLDER_DIRS, UnsafePath, safe_join

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
# ComfyUI's default folders, and the extensions each lists ("folder": diffusers directories; empty set: all)
_DEFAULT_FOLDERS: dict[str, Collection[str]] = {
    "checkpoints": supported_pt_extensions, "configs": [".yaml"], "loras": supported_pt_extensions,
    "vae": supported_pt_extensions, "text_encoders": supported_pt_extensions,
    "diffusion_models": supported_pt_extensions, "clip_vision": supported_pt_extensions,
    "style_models": supported_pt_extensions, "embeddings": supported_pt_extensions, "diffusers": ["folder"],
    "vae_approx": supported_pt_extensions, "controlnet": supported_pt_extensions,
    "gligen": supported_pt_extensions, "upscale_models": supported_pt_extensions,
    "hypernetworks": supported_pt_extensions, "photomaker": supported_pt_extensions, "classifiers": {""},
    "model_patches": supported_pt_extensions, "audio_encoders": supported_pt_extensions,
}
_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}

folder_names_and_paths: dict[str, tuple[list[str], Collection[str]]] = {}
filename_list_cache: dict[str, tuple[list[str], dict[str, float], float]] = {}
base_path = models_dir = output_directory = temp_directory = input_directory = user_directory = ""


def _bind(dirs) -> None:
    """Point every folder at this layout (folders packs added stay, with their own directories)."""
    global base_path, models_dir, output_directory, temp_directory, input_directory, user_directory
    base_path, models_dir = str(dirs.base), str(dirs.models)
    output_directory, temp_directory = str(dirs.output), str(dirs.temp)
    input_directory, user_directory = str(dirs.input), str(dirs.user)
    for name, extensions in _DEFAULT_FOLDERS.items():
        roots = [str(root / sub) for root in (dirs.models, *dirs.extra_model_roots)
                 for sub in FOLDER_DIRS.get(name, (name,))]
        folder_names_and_paths[name] = (roots, extensions)
    folder_names_and_paths["custom_nodes"] = ([str(dirs.custom_nodes)], set())
    filename_list_cache.clear()


_bind(binding.dirs())
binding.on_rebind(_bind)


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


# ---- input, output, temp, user ------------------------------------------------------------------------------

def set_output_directory(output_dir: str) -> None:
    global output_directory
    output_directory = output_dir


def set_temp_directory(temp_dir: str) -> None:
    global temp_directory
    temp_directory = temp_dir


def set_input_directory(input_dir: str) -> None:
    global input_directory
    input_directory = input_dir


def set_user_directory(user_dir: str) -> None:
    global user_directory
    user_directory = user_dir


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def get_user_directory() -> str:
    return user_directory


def get_directory_by_type(type_name: str) -> str | None:
    return {"output": output_directory, "temp": temp_directory, "input": input_directory}.get(type_name)


def get_input_subfolders() -> list[str]:
    """Every folder under input/, relative to it (forward slashes), sorted."""
    root = Path(input_directory)
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir())


# ---- annotated names: "name.png [output]" -------------------------------------------------------------------

_ANNOTATIONS = {" [output]": "output", " [input]": "input", " [temp]": "temp"}


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """(name without its annotation, the directory it names or None)."""
    for suffix, kind in _ANNOTATIONS.items():
        if name.endswith(suffix):
            return name[:-len(suffix)], get_directory_by_type(kind)
    return name, None


def _under(base: str, name: str) -> str:
    return str(safe_join(Path(base), name.replace(os.sep, "/") if os.sep != "/" else name))


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path of an annotated name, inside its directory (default_dir, else input/); UnsafePath if not."""
    name, base = annotated_filepath(name)
    return _under(base or default_dir or input_directory, name)


def exists_annotated_filepath(name: str) -> bool:
    name, base = annotated_filepath(name)
    try:
        return os.path.exists(_under(base or input_directory, name))
    except UnsafePath:
        return False


# ---- model folders -----------------------------------------------------------------------------------------

def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a directory to a folder (first when is_default, else last); a new folder lists every extension."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    """The directories of a folder (a copy); KeyError for a folder nobody declared, as in ComfyUI."""
    return list(folder_names_and_paths[map_legacy(folder_name)][0])


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    """The files whose extension (any case) is listed, sorted; every file when no extension is listed."""
    return sorted(f for f in files if not extensions or os.path.splitext(f)[-1].lower() in extensions)


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    """The files whose guessed MIME major type ("image", "video", "audio", "model") is one of content_types."""
    kept = []
    for file in files:
        mime, _ = mimetypes.guess_type(file, strict=False)
        if mime and mime.split("/")[0] in content_types:
            kept.append(file)
    return kept


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None
                     ) -> tuple[list[str], dict[str, float]]:
    """(files under directory relative to it, {each directory visited: its mtime}), following links."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or ())
    files: list[str] = []
    seen = {directory: os.path.getmtime(directory)}
    for dirpath, subdirs, filenames in os.walk(directory, followlinks=True, topdown=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        files.extend(os.path.relpath(os.path.join(dirpath, f), directory) for f in filenames)
        for d in subdirs:
            path = os.path.join(dirpath, d)
            try:
                seen[path] = os.path.getmtime(path)
            except FileNotFoundError:
                continue
    return files, seen


def _normalised(filename: str) -> str:
    """ComfyUI's reading of a model name: relative to the folder, with `..` that would climb out dropped."""
    return os.path.relpath(os.path.join("/", filename), "/")


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The first file of that name in the folder's directories, or None (never a path outside them)."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    name = _normalised(filename)
    for directory in folder_names_and_paths[folder_name][0]:
        try:
            candidate = safe_join(Path(directory), name)
        except UnsafePath:  # a link that leads out of the folder
            continue
        if candidate.is_file():
            return str(candidate)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float]:
    directories, extensions = folder_names_and_paths[map_legacy(folder_name)]
    names: set[str] = set()
    visited: dict[str, float] = {}
    for directory in directories:
        files, seen = recursive_search(directory, excluded_dir_names=[".git"])
        names.update(filter_files_extensions(files, extensions))
        visited.update(seen)
    return sorted(names), visited, time.perf_counter()


def cached_filename_list_(folder_name: str) -> tuple[list[str], dict[str, float], float] | None:
    """The cached listing while no directory of the folder changed (or appeared) since it was taken."""
    folder_name = map_legacy(folder_name)
    cached = filename_list_cache.get(folder_name)
    if cached is None:
        return None
    for directory, mtime in cached[1].items():
        if not os.path.isdir(directory) or os.path.getmtime(directory) != mtime:
            return None
    if any(os.path.isdir(d) and d not in cached[1] for d in folder_names_and_paths[folder_name][0]):
        return None
    return cached


def get_filename_list(folder_name: str) -> list[str]:
    """Model names in a folder: files with its extensions under any of its directories, sorted, deduplicated."""
    folder_name = map_legacy(folder_name)
    listing = cached_filename_list_(folder_name)
    if listing is None:
        listing = filename_list_cache[folder_name] = get_filename_list_(folder_name)
    return list(listing[0])


# ---- saving ------------------------------------------------------------------------------------------------

def _expand(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def _counter(folder: str, filename: str) -> int:
    """One more than the largest N of the `<filename>_<N>...` entries in folder (1 when none)."""
    size = len(filename)
    found = [0]
    for entry in os.listdir(folder):
        if os.path.normcase(entry[:size]) != os.path.normcase(filename) or entry[size:size + 1] != "_":
            continue
        digits = entry[size + 1:].split("_")[0]
        found.append(int(digits) if digits.isdigit() else 0)
    return max(found) + 1 if len(found) > 1 else 1


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0
                        ) -> tuple[str, str, int, str, str]:
    """(full folder, file name stem, next counter, subfolder, the expanded prefix) for saving under output_dir.

    `%width%`, `%height%`, `%year%` ... in the prefix are filled in; a prefix that would leave output_dir
    raises. The folder is created when missing.
    """
    if "%" in filename_prefix:
        filename_prefix = _expand(filename_prefix, image_width, image_height)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception(f"Saving image outside the output folder is not allowed: {filename_prefix!r} leads to "
                        f"{os.path.abspath(full_output_folder)}, outside {output_dir}")
    os.makedirs(full_output_folder, exist_ok=True)
    return full_output_folder, filename, _counter(full_output_folder, filename), subfolder, filename_prefix
