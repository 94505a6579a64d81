"""MODEL's ComfyUI-shaped option setters: they record where ComfyUI records, and a clone never leaks into its
source."""
from __future__ import annotations

from typing import Any

from sdgraph.nodes.sd.model_patcher import copy_options


def test_setters_record_in_comfyui_layout(sd1: tuple[Any, Any, Any]) -> None:
    model = sd1[0].clone()
    cfg, post, attn, replace = (lambda a: a), (lambda a: a), (lambda *a: a), (lambda *a: a)
    model.set_model_sampler_cfg_function(cfg)
    model.set_model_sampler_post_cfg_function(post, disable_cfg1_optimization=True)
    model.set_model_attn1_patch(attn)
    model.set_model_attn2_replace(replace, "input", 4, 1)
    model.set_model_output_block_patch(attn)
    options = model.model_options
    assert options["sampler_cfg_function"] is cfg and options["sampler_post_cfg_function"] == [post]
    assert options["disable_cfg1_optimization"] is True
    patches = options["transformer_options"]["patches"]
    assert patches == {"attn1_patch": [attn], "output_block_patch": [attn]}
    assert options["transformer_options"]["patches_replace"] == {"attn2": {("input", 4, 1): replace}}


def test_clone_copies_containers_and_shares_leaves(sd1: tuple[Any, Any, Any]) -> None:
    base = sd1[0].clone()
    first = (lambda *a: a)
    base.set_model_attn1_patch(first)
    child = base.clone()
    child.set_model_attn1_patch(lambda *a: a)
    child.set_model_sampler_cfg_function(lambda a: a)
    child.add_object_patch("model_sampling", "replaced")
    assert base.model_options["transformer_options"]["patches"]["attn1_patch"] == [first]
    assert "sampler_cfg_function" not in base.model_options and base.object_patches == {}
    assert child.model_options["transformer_options"]["patches"]["attn1_patch"][0] is first
    assert child.get_model_object("model_sampling") == "replaced"
    assert base.get_model_object("prediction_type") == base.prediction_type
    assert sd1[0].model_options == {"transformer_options": {}}  # the loader's MODEL is untouched


def test_copy_options_is_deep_for_containers_only() -> None:
    leaf = object()
    source = {"a": {"b": [leaf, {"c": leaf}]}, "d": leaf}
    copied = copy_options(source)
    assert copied == source and copied["a"] is not source["a"] and copied["a"]["b"] is not source["a"]["b"]
    assert copied["a"]["b"][0] is leaf and copied["d"] is leaf
