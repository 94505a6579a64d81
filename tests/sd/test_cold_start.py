"""A fast first image: listing, validating and converting import no model library; a run imports only the
diffusers / transformers modules it uses and builds the default model without random initialisation."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdgraph.nodes.sd import lean_imports

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "txt2img.json"


def _python(code: str, tmp_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_nodes_validate_and_convert_import_no_model_library(tmp_path):
    out = _python(f"""
        import contextlib, io, json, sys
        from sdgraph.cli import main
        base = {str(tmp_path / "base")!r}
        with contextlib.redirect_stdout(io.StringIO()):
            codes = [main(["nodes", "--base-dir", base]), main(["nodes", "KSampler", "--base-dir", base]),
                     main(["validate", {str(WORKFLOW)!r}, "--base-dir", base]),
                     main(["convert", "--ui", {str(WORKFLOW)!r}, "--base-dir", base])]
        heavy = ["diffusers", "transformers", "kornia", "scipy"]
        print(json.dumps({{"codes": codes, "loaded": [m for m in heavy if m in sys.modules]}}))
    """, tmp_path)
    assert out == {"codes": [0, 0, 0, 0], "loaded": []}


def test_a_run_imports_only_what_it_uses_and_initialises_no_weight(tmp_path):
    """txt2img on the default model with torch's initialisers refusing real tensors (meta ones cost nothing) and
    `from_pretrained` refused."""
    out = _python(f"""
        import contextlib, io, json, sys
        import torch

        def refusing(name, real):
            def init(tensor, *args, **kwargs):
                if not tensor.is_meta:
                    raise AssertionError(f"torch.nn.init.{{name}} ran on a real tensor of {{tuple(tensor.shape)}}")
                return real(tensor, *args, **kwargs)
            return init

        for name in ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "xavier_uniform_",
                     "xavier_normal_", "trunc_normal_", "orthogonal_"):
            setattr(torch.nn.init, name, refusing(name, getattr(torch.nn.init, name)))
        # from_pretrained allocates every weight and copies the file into it: the default model must not need it
        from diffusers.models.modeling_utils import ModelMixin
        from transformers.modeling_utils import PreTrainedModel

        def refused(cls, *args, **kwargs):
            raise AssertionError(f"{{cls.__name__}}.from_pretrained was called")
        ModelMixin.from_pretrained = PreTrainedModel.from_pretrained = classmethod(refused)
        from sdgraph.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", {str(WORKFLOW)!r}, "--cpu", "--quiet", "--no-disk-cache",
                         "--base-dir", {str(tmp_path / "base")!r}])
        siblings = ["diffusers.models.autoencoders.autoencoder_dc", "diffusers.models.unets.unet_3d_condition",
                    "diffusers.models.transformers.auraflow_transformer_2d", "transformers.models.bert"]
        print(json.dumps({{"code": code, "siblings": [m for m in siblings if m in sys.modules],
                          "used": "diffusers.models.unets.unet_2d_condition" in sys.modules}}))
    """, tmp_path)
    assert out == {"code": 0, "siblings": [], "used": True}
    assert list((tmp_path / "base" / "output").glob("txt2img_*.png"))


# ---- the deferred packages ------------------------------------------------------------------------------------


@pytest.fixture
def toy_packages(tmp_path, monkeypatch):
    """`cs_eager`: an `__init__` that imports a heavy sibling; `cs_swapped`: one that replaces itself in
    sys.modules, as transformers' lazy packages do. Both found through a DeferringFinder."""
    eager = tmp_path / "cs_eager"
    eager.mkdir()
    (eager / "__init__.py").write_text("from .heavy import HEAVY\nNAME = 'eager'\n")
    (eager / "heavy.py").write_text("HEAVY = 'heavy'\n")
    (eager / "light.py").write_text("LIGHT = 'light'\n")
    swapped = tmp_path / "cs_swapped"
    swapped.mkdir()
    (swapped / "__init__.py").write_text(
        "import sys, types\n"
        "class Lazy(types.ModuleType):\n"
        "    def __getattr__(self, name):\n"
        "        if name == 'LATE':\n"
        "            return 'late'\n"
        "        raise AttributeError(name)\n"
        "lazy = Lazy(__name__)\nlazy.__path__ = __path__\nlazy.EARLY = 'early'\nsys.modules.update({__name__: lazy})\n")
    (swapped / "part.py").write_text("PART = 'part'\n")
    finder = lean_imports.DeferringFinder(frozenset({"cs_eager", "cs_swapped"}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("cs_eager", "cs_swapped")]:
        del sys.modules[name]


def test_a_submodule_imports_without_its_package_init(toy_packages):
    from cs_eager.light import LIGHT

    assert LIGHT == "light"
    assert "cs_eager.heavy" not in sys.modules
    assert isinstance(sys.modules["cs_eager"], lean_imports.DeferredPackage)


def test_the_package_completes_when_a_name_of_it_is_asked_for(toy_packages):
    import cs_eager.light  # noqa: F401
    from cs_eager import HEAVY, NAME

    assert (HEAVY, NAME) == ("heavy", "eager")
    assert not isinstance(sys.modules["cs_eager"], lean_imports.DeferredPackage)
    with pytest.raises(AttributeError):
        sys.modules["cs_eager"].missing


def test_dir_completes_it_too(toy_packages):
    import cs_eager

    assert {"NAME", "HEAVY", "heavy"} <= set(dir(cs_eager))


def test_an_init_that_replaces_itself_is_followed(toy_packages):
    import cs_swapped.part
    import cs_swapped

    assert cs_swapped.part.PART == "part"
    assert (cs_swapped.EARLY, cs_swapped.LATE) == ("early", "late")
    assert sys.modules["cs_swapped"] is cs_swapped
