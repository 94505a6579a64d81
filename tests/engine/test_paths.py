"""Directory layout: model listing, and client paths kept inside their directory."""
from __future__ import annotations

import os

import pytest

from sdgraph.paths import MAX_PATH_DEPTH, Dirs, PathTooDeep, UnsafePath, safe_join


def test_model_listing_treats_a_diffusers_folder_as_one_model(tmp_path):
    dirs = Dirs(base=tmp_path, extra_model_roots=[])
    ckpts = dirs.models / "checkpoints"
    (ckpts / "tiny" / "unet").mkdir(parents=True)
    (ckpts / "tiny" / "model_index.json").write_text("{}")
    (ckpts / "tiny" / "unet" / "config.json").write_text("{}")
    (ckpts / "tiny" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (ckpts / "sd15.safetensors").write_bytes(b"")
    (ckpts / "sub").mkdir()
    (ckpts / "sub" / "other.ckpt").write_bytes(b"")
    (ckpts / "notes.txt").write_text("")
    assert dirs.list_models("checkpoints") == ["sd15.safetensors", "sub/other.ckpt", "tiny"]
    assert dirs.find_model("checkpoints", "tiny") == (ckpts / "tiny").resolve()


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a\\\\b", "a\\x00b", "C:x"])
def test_safe_join_refuses_escapes(tmp_path, bad):
    with pytest.raises(UnsafePath):
        safe_join(tmp_path, bad.encode().decode("unicode_escape"))


def test_safe_join_refuses_symlinks_that_lead_out(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    os.symlink(tmp_path, inside / "up")
    with pytest.raises(UnsafePath):
        safe_join(inside, "up/secret")
    assert safe_join(inside, "sub/file.png") == (inside / "sub" / "file.png").resolve()


def test_safe_join_bounds_the_depth(tmp_path):
    """A deep path is refused by count, not by whether pathlib's recursion (mkdir with parents) overflows, which
    depends on the recursion limit other code may have raised."""
    deepest = "/".join(["d"] * MAX_PATH_DEPTH)
    assert safe_join(tmp_path, deepest) == (tmp_path / deepest).resolve()
    assert safe_join(tmp_path, "d/" * (MAX_PATH_DEPTH - 1), "f.png").name == "f.png"
    for parts in (["/".join(["d"] * (MAX_PATH_DEPTH + 1))], ["d/" * MAX_PATH_DEPTH, "f.png"]):
        with pytest.raises(PathTooDeep):
            safe_join(tmp_path, *parts)


def test_comfyui_folder_names_span_their_directories(tmp_path):
    dirs = Dirs(base=tmp_path, extra_model_roots=[tmp_path / "shipped"])
    for folder, name in (("unet", "a.safetensors"), ("diffusion_models", "b.safetensors"), ("clip", "c.pt"),
                         ("text_encoders", "d.safetensors"), ("t2i_adapter", "e.pth")):
        (dirs.models / folder).mkdir(parents=True)
        (dirs.models / folder / name).write_bytes(b"")
    assert dirs.list_models("diffusion_models") == dirs.list_models("unet") == ["a.safetensors", "b.safetensors"]
    assert dirs.list_models("text_encoders") == dirs.list_models("clip") == ["c.pt", "d.safetensors"]
    assert dirs.list_models("controlnet") == ["e.pth"]
    assert dirs.model_roots("diffusion_models") == [dirs.models / "unet", dirs.models / "diffusion_models",
                                                    tmp_path / "shipped" / "unet",
                                                    tmp_path / "shipped" / "diffusion_models"]
    assert dirs.find_model("text_encoders", "c.pt") == (dirs.models / "clip" / "c.pt").resolve()
    assert dirs.model_roots("vae") == [dirs.models / "vae", tmp_path / "shipped" / "vae"]
