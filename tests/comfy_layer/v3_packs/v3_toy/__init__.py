"""A toy ComfyUI V3 pack (comfy_api.latest), loaded by comfy_entrypoint; written for sdgraph's tests.

It loads in ComfyUI 0.3.64 too: tools/comfy_reference/v3_object_info.py dumps ComfyUI's /object_info entries of
these nodes to tests/comfy_layer/data/v3_object_info.json, which sdgraph's own entries must equal.
"""
import asyncio

from comfy_api.latest import ComfyExtension, io, ui
from comfy_execution.graph_utils import GraphBuilder

CALLS = []  # (node, value) for each evaluation, so tests can tell which nodes ran
FINGERPRINT = ["a"]
Vector = io.Custom("TOY_VECTOR")


class ToyNumber(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ToyNumber", display_name="Toy number", category="toy/v3",
            description="Gives the number it holds.",
            inputs=[io.Int.Input("value", default=1, min=-100, max=100, step=1, tooltip="the number",
                                 display_mode=io.NumberDisplay.slider, control_after_generate=True)],
            outputs=[io.Int.Output(display_name="number", tooltip="the same number")])

    @classmethod
    def execute(cls, value):
        CALLS.append(("ToyNumber", value))
        return io.NodeOutput(value)


class ToyAdd(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ToyAdd", category="toy/v3",
            inputs=[io.Int.Input("a", default=0, force_input=True), io.Int.Input("b", default=0, optional=True)],
            outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, a, b=0):
        return io.NodeOutput(a + b)


class ToySwitch(io.ComfyNode):
    """Evaluates only the branch it picks."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ToySwitch", display_name="Toy switch", category="toy/v3",
            inputs=[io.Boolean.Input("switch", default=True, label_on="first", label_off="second"),
                    io.Int.Input("on_true", lazy=True, force_input=True),
                    io.Int.Input("on_false", lazy=True, force_input=True)],
            outputs=[io.Int.Output()])

    @classmethod
    def check_lazy_status(cls, switch, on_true=None, on_false=None):
        wanted = "on_true" if switch else "on_false"
        return [wanted] if (on_true if switch else on_false) is None else []

    @classmethod
    def execute(cls, switch, on_true=None, on_false=None):
        return io.NodeOutput(on_true if switch else on_false)


class ToyAsyncDouble(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyAsyncDouble", category="toy/v3", is_experimental=True,
                         inputs=[io.Int.Input("value", force_input=True)], outputs=[io.Int.Output()])

    @classmethod
    async def execute(cls, value):
        await asyncio.sleep(0.01)
        return io.NodeOutput(value * 2)


class ToyTimes(io.ComfyNode):
    """value * count, as a chain of ToyAdd nodes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyTimes", category="toy/v3", enable_expand=True,
                         inputs=[io.Int.Input("value", force_input=True), io.Int.Input("count", default=3, min=1)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, value, count):
        graph = GraphBuilder()
        total = graph.node("ToyAdd", a=value, b=0)
        for _ in range(count - 1):
            total = graph.node("ToyAdd", a=total.out(0), b=value)
        return io.NodeOutput(total.out(0), expand=graph.finalize())


class ToyUnexpandable(ToyTimes):
    @classmethod
    def define_schema(cls):
        schema = super().define_schema()
        schema.node_id, schema.enable_expand = "ToyUnexpandable", False
        return schema


class ToyGate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyGate", category="toy/v3", is_deprecated=True,
                         inputs=[io.Int.Input("value", force_input=True), io.Boolean.Input("open", default=True),
                                 io.String.Input("why", default="", optional=True)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, value, open, why=""):
        if open:
            return io.NodeOutput(value)
        if why:
            return io.NodeOutput(block_execution=why)
        return io.NodeOutput(io.ExecutionBlocker(None))  # blocks silently


class ToyShow(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyShow", display_name="Toy show", category="toy/v3", is_output_node=True,
                         inputs=[io.AnyType.Input("value", tooltip="anything")],
                         hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, value):
        CALLS.append(("ToyShow", value))
        return io.NodeOutput(ui=ui.PreviewText(f"{value} at {cls.hidden.unique_id} "
                                               f"({len(cls.hidden.prompt or {})} nodes)"))


class ToyCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyCheck", category="toy/v3",
                         inputs=[io.Int.Input("value", default=0, min=0, max=10),
                                 io.Combo.Input("mode", options=["plain", "loud"], default="plain")],
                         outputs=[io.String.Output()])

    @classmethod
    def validate_inputs(cls, value):
        return True if value % 2 == 0 else f"value must be even, got {value}"

    @classmethod
    def execute(cls, value, mode):
        return io.NodeOutput(f"{value}!" if mode == "loud" else str(value))


class ToyRange(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyRange", category="toy/v3",
                         inputs=[io.Int.Input("count", default=3, min=0, max=10)],
                         outputs=[io.Int.Output("items", display_name="items", is_output_list=True),
                                  io.Int.Output("count_out", display_name="count")])

    @classmethod
    def execute(cls, count):
        return io.NodeOutput(list(range(count)), count)


class ToyStamp(io.ComfyNode):
    """Re-runs whenever FINGERPRINT changes."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyStamp", category="toy/v3", inputs=[io.String.Input("text", multiline=True)],
                         outputs=[Vector.Output(display_name="vector")])

    @classmethod
    def fingerprint_inputs(cls, text):
        return FINGERPRINT[0]

    @classmethod
    def execute(cls, text):
        CALLS.append(("ToyStamp", text))
        return io.NodeOutput([len(text), FINGERPRINT[0]])


class ToyMix(io.ComfyNode):
    """Declares many kinds of inputs (for the /object_info comparison)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ToyMix", display_name="Toy mix", category="toy/v3/more", not_idempotent=True,
            inputs=[io.Image.Input("image"), io.Mask.Input("mask", optional=True), io.Latent.Input("latent"),
                    io.Conditioning.Input("positive"), io.Model.Input("model"), io.Clip.Input("clip"),
                    io.Vae.Input("vae"), io.ControlNet.Input("control"), io.ClipVision.Input("clip_vision"),
                    io.Sigmas.Input("sigmas"), io.Sampler.Input("sampler"), io.Guider.Input("guider"),
                    io.Noise.Input("noise"), io.UpscaleModel.Input("upscaler"), Vector.Input("vector"),
                    io.Float.Input("amount", default=0.5, min=0.0, max=1.0, step=0.05, round=0.01,
                                   display_mode=io.NumberDisplay.number),
                    io.String.Input("note", default="hi", placeholder="say something", dynamic_prompts=False),
                    io.Combo.Input("file", options=["a.png", "b.png"], upload=io.UploadType.image,
                                   image_folder=io.FolderType.input),
                    io.MultiCombo.Input("tags", options=["x", "y", "z"], default=["x"]),
                    io.MultiType.Input("either", [io.Image, io.Mask]),
                    io.MultiType.Input(io.Float.Input("scale", default=1.0), [io.Int]),
                    io.Boolean.Input("flag", default=False, display_name="Flag it", optional=True)],
            outputs=[io.Image.Output(), io.Combo.Output(options=["a.png", "b.png"]),
                     io.Latent.Output("latent_out", display_name="LATENT", tooltip="the latent")],
            hidden=[io.Hidden.prompt, io.Hidden.dynprompt, io.Hidden.extra_pnginfo])

    @classmethod
    def execute(cls, **kwargs):
        return io.NodeOutput(kwargs["image"], kwargs["file"], kwargs["latent"])


class ToyPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyPreview", category="toy/v3", is_output_node=True,
                         inputs=[io.Image.Input("images")])

    @classmethod
    def execute(cls, images):
        return io.NodeOutput(ui=ui.PreviewImage(images, cls=cls))


class ToySave(io.ComfyNode):
    """An output node (so it gets the hidden prompt) with an input of its own named prompt."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToySave", category="toy/v3", is_output_node=True,
                         inputs=[io.String.Input("prompt", multiline=True)])

    @classmethod
    def execute(cls, prompt):
        return io.NodeOutput(ui={"text": [prompt, f"the prompt has {len(cls.hidden.prompt)} node(s)"]})


TOY_NODES = [ToyNumber, ToyAdd, ToySwitch, ToyAsyncDouble, ToyTimes, ToyUnexpandable, ToyGate, ToyShow, ToyCheck,
         ToyRange, ToyStamp, ToyMix, ToyPreview, ToySave]


class ToyExtension(ComfyExtension):
    async def get_node_list(self):
        return list(TOY_NODES)


async def comfy_entrypoint():
    return ToyExtension()
