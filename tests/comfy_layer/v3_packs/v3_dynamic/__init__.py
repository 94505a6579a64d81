"""A toy pack of V3 nodes with dynamic inputs (DynamicCombo, Autogrow, MatchType: ComfyUI >= 0.8), registered
through NODE_CLASS_MAPPINGS; written for sdgraph's tests."""
import json

from comfy_api.latest import io


class ToyPick(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ToyPick", category="toy/v3", search_aliases=["choose"],
            inputs=[io.Int.Input("value", force_input=True),
                    io.DynamicCombo.Input("method", options=[
                        io.DynamicCombo.Option("scale", [io.Float.Input("factor", default=2.0, min=0.0, max=10.0)]),
                        io.DynamicCombo.Option("offset", [io.Int.Input("amount", default=1, min=-5, max=5),
                                                          io.Int.Input("extra", default=0)]),
                    ])],
            outputs=[io.Float.Output(), io.String.Output(display_name="seen")])

    @classmethod
    def execute(cls, value, method):
        if method["method"] == "scale":
            result = value * method["factor"]
        else:
            result = value + method["amount"] + method["extra"]
        return io.NodeOutput(float(result), json.dumps(method, sort_keys=True))


class ToySum(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplatePrefix(io.Int.Input("n", default=0), prefix="n", min=1, max=4)
        return io.Schema(node_id="ToySum", category="toy/v3",
                         inputs=[io.Autogrow.Input("values", template=template)],
                         outputs=[io.Int.Output(), io.String.Output(display_name="names")])

    @classmethod
    def execute(cls, values):
        return io.NodeOutput(sum(values.values()), ",".join(sorted(values)))


class ToyPass(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        number = io.MatchType.Template("number", [io.Int, io.Float])
        return io.Schema(node_id="ToyPass", category="toy/v3",
                         inputs=[io.MatchType.Input("value", number)],
                         outputs=[io.MatchType.Output(number, display_name="same")])

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value)


class ToyText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToyText", category="toy/v3", inputs=[io.String.Input("text", default="")],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, text):
        return io.NodeOutput(text)


class ToySolid(io.ComfyNode):
    """Two 4x3 images: black, then red."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ToySolid", category="toy/v3", outputs=[io.Image.Output()])

    @classmethod
    def execute(cls):
        import torch

        image = torch.zeros(2, 3, 4, 3)
        image[1, :, :, 0] = 1.0
        return io.NodeOutput(image)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (ToyPick, ToySum, ToyPass, ToyText, ToySolid)}
NODE_DISPLAY_NAME_MAPPINGS = {"ToyPick": "Toy pick"}
