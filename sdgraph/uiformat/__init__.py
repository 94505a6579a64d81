"""ComfyUI's UI (litegraph) workflow format: conversion to and from the API format, and loading any workflow file.

The engine core stays torch-free: nothing here imports torch.
"""
from sdgraph.uiformat.convert import Conversion, convert, ui_to_api
from sdgraph.uiformat.errors import ConversionError, name_node_errors
from sdgraph.uiformat.layout import api_to_ui
from sdgraph.uiformat.load import is_ui_workflow, load_any, ui_graph

__all__ = ["Conversion", "ConversionError", "api_to_ui", "convert", "is_ui_workflow", "load_any", "name_node_errors",
           "ui_graph", "ui_to_api"]
