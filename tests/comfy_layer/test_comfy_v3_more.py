"""V3 dynamic inputs (DynamicCombo, Autogrow, MatchType), a native pack using a V3 class, previews, load errors."""
from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import numpy as np
from PIL import Image

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import activate_comfy_layer, load_custom_nodes, load_module_pack
from sdgraph.registry import Registry


def _show(prompt: dict, source: str, index: int = 0, node: str = "9") -> dict:
    return {**prompt, node: {"class_type": "ToyShow", "inputs": {"value": [source, index]}}}


def shown(result, node: str = "9") -> str:
    return result.outputs[node]["text"][0].split(" at ")[0]


def test_dynamic_combo_gives_execute_the_chosen_options_inputs_nested(v3) -> None:
    base = {"1": {"class_type": "ToyNumber", "inputs": {"value": 10}}}
    pick = {"class_type": "ToyPick", "inputs": {"value": ["1", 0], "method": "offset", "method.amount": 3,
                                                  "method.factor": 9.0}}
    result, _ = v3.run(_show(_show({**base, "2": pick}, "2", 0), "2", 1, node="8"))
    assert result.ok, (result.error, result.node_errors)
    assert shown(result) == "13.0"  # 10 + 3 + the default of `extra`
    assert json.loads(shown(result, "8")) == {"method": "offset", "amount": 3, "extra": 0}  # not `factor`
    pick["inputs"].update({"method": "scale", "method.factor": 0.5})
    result, _ = v3.run(_show({**base, "2": pick}, "2"))
    assert shown(result) == "5.0"
    pick["inputs"]["method"] = "rotate"
    result, _ = v3.run(_show({**base, "2": pick}, "2"))
    assert result.node_errors["2"]["errors"][0]["type"] == "value_not_in_list"


def test_dynamic_combo_is_described_with_its_options_inputs(v3) -> None:
    entry = v3.registry.describe(v3.dirs)["ToyPick"]
    kind, options = entry["input"]["required"]["method"]
    assert kind == "COMFY_DYNAMICCOMBO_V3"
    assert [o["key"] for o in options["options"]] == ["scale", "offset"]
    assert options["options"][1]["inputs"]["required"]["amount"] == ("INT", {"default": 1, "min": -5, "max": 5})
    assert entry["search_aliases"] == ["choose"] and entry["display_name"] is None  # V3 ignores display mappings


def test_autogrow_gives_execute_the_filled_slots_by_name(v3) -> None:
    prompt = {"1": {"class_type": "ToyNumber", "inputs": {"value": 4}},
              "2": {"class_type": "ToySum", "inputs": {"values.n0": ["1", 0], "values.n2": 5}}}
    result, _ = v3.run(_show(_show(prompt, "2", 0), "2", 1, node="8"))
    assert result.ok, (result.error, result.node_errors)
    assert shown(result) == "9" and shown(result, "8") == "n0,n2"
    spec = v3.registry.get("ToySum").spec
    assert spec.inputs_by_name["values.n0"].section == "required"  # min=1
    assert spec.inputs_by_name["values.n3"].section == "optional"
    result, _ = v3.run(_show({"2": {"class_type": "ToySum", "inputs": {"values.n1": 1}}}, "2"))
    assert result.node_errors["2"]["errors"][0]["extra_info"]["input_name"] == "values.n0"


def test_match_type_accepts_its_templates_types_only(v3) -> None:
    prompt = {"1": {"class_type": "ToyNumber", "inputs": {"value": 4}},
              "2": {"class_type": "ToyPass", "inputs": {"value": ["1", 0]}}}
    result, _ = v3.run(_show(prompt, "2"))
    assert result.ok and shown(result) == "4"
    prompt["1"] = {"class_type": "ToyText", "inputs": {"text": "x"}}
    result, _ = v3.run(_show(prompt, "2"))
    assert result.node_errors["2"]["errors"][0]["type"] == "return_type_mismatch"


def test_preview_image_writes_the_batch_to_the_temp_folder_with_the_prompt(v3) -> None:
    prompt = {"1": {"class_type": "ToySolid", "inputs": {}},
              "2": {"class_type": "ToyPreview", "inputs": {"images": ["1", 0]}}}
    result = v3.executor.run(prompt, extra_data={"extra_pnginfo": {"workflow": {"n": 1}}})
    assert result.ok, result.error
    files = result.outputs["2"]["images"]
    assert [f["type"] for f in files] == ["temp", "temp"] and result.outputs["2"]["animated"] == [False]
    png = Image.open(v3.dirs.temp / files[1]["subfolder"] / files[1]["filename"])
    assert np.array(png)[0, 0].tolist() == [255, 0, 0] and png.size == (4, 3)
    assert json.loads(png.text["workflow"]) == {"n": 1} and json.loads(png.text["prompt"])["2"]["inputs"] == {"images": ["1", 0]}


def test_a_native_pack_may_list_a_v3_class_among_its_nodes(tmp_path: Path) -> None:
    activate_comfy_layer(Dirs(base=tmp_path))
    from comfy_api.latest import io  # noqa: PLC0415

    class Triple(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="Triple", category="mine", is_output_node=True,
                             inputs=[io.Int.Input("value", default=1)], outputs=[io.Int.Output()])

        @classmethod
        def execute(cls, value):
            return io.NodeOutput(value * 3, ui={"tripled": [value * 3]})

    registry = Registry()
    load_module_pack(registry, types.SimpleNamespace(NODES=[Triple]), "mine")  # type: ignore[arg-type]
    assert not registry.problems and registry.packs["mine"] == ["Triple"]
    result = Executor(registry, Services(dirs=Dirs(base=tmp_path))).run(
        {"1": {"class_type": "Triple", "inputs": {"value": 7}}})
    assert result.ok and result.outputs["1"] == {"tripled": [21]}


def test_a_failing_entrypoint_and_a_broken_schema_are_reported_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "custom_nodes"
    (broken / "bad_entry").mkdir(parents=True)
    (broken / "bad_entry" / "__init__.py").write_text("async def comfy_entrypoint():\n    raise RuntimeError('no')\n")
    (broken / "bad_schema").mkdir()
    (broken / "bad_schema" / "__init__.py").write_text(textwrap.dedent('''
        from comfy_api.latest import io
        class Twice(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="Twice", inputs=[io.Int.Input("a"), io.Int.Input("a")])
            @classmethod
            def execute(cls, a):
                return io.NodeOutput()
        NODE_CLASS_MAPPINGS = {"Twice": Twice}
    '''))
    registry = Registry()
    load_custom_nodes(registry, broken, Dirs(base=tmp_path))
    found = {(p.pack, p.node): p.message for p in registry.problems}
    assert found[("custom_nodes/bad_entry", None)] == "comfy_entrypoint() failed: RuntimeError: no"
    assert "Input ids must be unique, but ['a'] are not" in found[("custom_nodes/bad_schema", "Twice")]
