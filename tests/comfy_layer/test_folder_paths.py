"""folder_paths answers with sdgraph's directories, as ComfyUI's does, and never leads outside them."""
from __future__ import annotations

import os

import pytest

from sdgraph.comfy_layer import activate
from sdgraph.paths import Dirs, UnsafePath


@pytest.fixture
def fp(tmp_path):
    dirs = Dirs(base=tmp_path / "home", extra_model_roots=[tmp_path / "shipped"])
    activate(dirs)
    import folder_paths

    for path in ("home/models/loras/x.safetensors", "shipped/loras/y.pt", "home/models/unet/u.sft",
                 "home/models/diffusion_models/d.safetensors", "outside/secret.safetensors"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    return folder_paths, dirs, tmp_path


def test_folders_are_sdgraphs_directories_user_first(fp):
    folder_paths, dirs, tmp = fp
    assert folder_paths.get_folder_paths("loras") == [str(dirs.models / "loras"), str(tmp / "shipped" / "loras")]
    assert folder_paths.get_filename_list("loras") == ["x.safetensors", "y.pt"]
    assert folder_paths.get_filename_list("unet") == ["d.safetensors", "u.sft"]  # the legacy name, both dirs
    assert folder_paths.get_input_directory() == str(dirs.input)
    assert folder_paths.get_output_directory() == str(dirs.output)
    assert folder_paths.models_dir == str(dirs.models)
    with pytest.raises(KeyError):
        folder_paths.get_folder_paths("nobody_declared_this")


def test_full_paths_stay_inside_their_folders(fp):
    folder_paths, dirs, tmp = fp
    assert folder_paths.get_full_path("loras", "y.pt") == str(tmp / "shipped" / "loras" / "y.pt")
    # "../.." is read as ComfyUI reads it (relative to the folder), so it can never climb out
    assert folder_paths.get_full_path("loras", "../../../outside/secret.safetensors") is None
    os.symlink(tmp / "outside" / "secret.safetensors", dirs.models / "loras" / "link.safetensors")
    assert folder_paths.get_full_path("loras", "link.safetensors") is None  # a link leading out is refused
    with pytest.raises(FileNotFoundError, match="loras"):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")


def test_annotated_names(fp):
    folder_paths, dirs, _ = fp
    assert folder_paths.get_annotated_filepath("a.png [output]") == str(dirs.output.resolve() / "a.png")
    assert folder_paths.get_annotated_filepath("a.png") == str(dirs.input.resolve() / "a.png")
    assert folder_paths.get_annotated_filepath("a.png", "/elsewhere") == "/elsewhere/a.png"
    with pytest.raises(UnsafePath):
        folder_paths.get_annotated_filepath("../../etc/passwd [temp]")
    assert folder_paths.exists_annotated_filepath("../x [input]") is False


def test_add_model_folder_path_orders_as_comfyui(fp):
    folder_paths, _, tmp = fp
    extra = str(tmp / "extra")
    folder_paths.add_model_folder_path("loras", extra)
    assert folder_paths.get_folder_paths("loras")[-1] == extra
    folder_paths.add_model_folder_path("loras", extra, is_default=True)
    assert folder_paths.get_folder_paths("loras")[0] == extra
    folder_paths.add_model_folder_path("ipadapter", extra)
    assert folder_paths.folder_names_and_paths["ipadapter"] == ([extra], set())


def test_save_image_path_counts_and_refuses_escape(fp):
    folder_paths, dirs, _ = fp
    out = str(dirs.output)
    folder, name, counter, sub, prefix = folder_paths.get_save_image_path("run/img_%width%", out, 64, 32)
    assert (folder, name, counter, sub, prefix) == (os.path.join(out, "run"), "img_64", 1, "run", "run/img_64")
    for existing in ("img_64_00001_.png", "img_64_00007_.png", "img_64x_00009_.png", "other_00020_.png"):
        open(os.path.join(folder, existing), "w").close()
    assert folder_paths.get_save_image_path("run/img_64", out)[2] == 8
    with pytest.raises(Exception, match="outside the output folder"):
        folder_paths.get_save_image_path("../escape", out)


def test_extension_and_content_filters(fp):
    folder_paths, _, _ = fp
    files = ["b.SAFETENSORS", "a.pt", "c.txt", "d.png", "e.mp4"]
    assert folder_paths.filter_files_extensions(files, folder_paths.supported_pt_extensions) == ["a.pt", "b.SAFETENSORS"]
    assert folder_paths.filter_files_extensions(files, []) == sorted(files)
    assert folder_paths.filter_files_content_types(files, ["image", "video"]) == ["d.png", "e.mp4"]


def test_rebinding_follows_the_latest_layout(fp, tmp_path):
    folder_paths, _, _ = fp
    other = Dirs(base=tmp_path / "other", extra_model_roots=[])
    activate(other)
    assert folder_paths.get_folder_paths("checkpoints") == [str(other.models / "checkpoints")]
    assert folder_paths.get_temp_directory() == str(other.temp)


def test_a_remote_worker_s_spool_takes_the_saves(fp):
    from sdgraph.plugins import rebind_comfy_layer

    folder_paths, dirs, tmp = fp
    dirs.spool = tmp / "spool"
    rebind_comfy_layer(dirs)
    assert folder_paths.get_output_directory() == str(tmp / "spool" / "output")
    assert folder_paths.get_temp_directory() == str(tmp / "spool" / "temp")
    folder, *_ = folder_paths.get_save_image_path("runs/ComfyUI", folder_paths.get_output_directory())
    assert folder == str(tmp / "spool" / "output" / "runs")
    assert dirs.of_type("output") == dirs.base / "output"  # what clients name is still under base
