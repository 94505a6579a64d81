"""Workflows in pictures: sdgraph's PNG and WebP outputs carry `prompt` and `workflow` the way ComfyUI writes them,
and the reader takes them out of pictures built the way ComfyUI builds them."""
from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdgraph.uiformat.pictures import (
    EXIF_FIRST_EXTRA_TAG,
    EXIF_PROMPT_TAG,
    PictureError,
    picture_metadata,
    read_picture_chunks,
)

PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}},
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a café: \"red\" circle ✓", "clip": ["4", 1]}}}
WORKFLOW = {"last_node_id": 6, "nodes": [{"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a café ✓"]}],
            "links": [], "version": 0.4}


def _pixels(size: tuple[int, int] = (8, 6)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 40))


# --- pictures built the way ComfyUI builds them (its SaveImage / SaveAnimatedWEBP, through Pillow) ---

def comfy_png(prompt: dict, extra_pnginfo: dict) -> bytes:
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    for key, value in extra_pnginfo.items():
        info.add_text(key, json.dumps(value))
    out = io.BytesIO()
    _pixels().save(out, format="PNG", pnginfo=info, compress_level=4)
    return out.getvalue()


def comfy_webp(prompt: dict, extra_pnginfo: dict, frames: int = 1) -> bytes:
    image = _pixels()
    exif = image.getexif()
    exif[0x0110] = "prompt:{}".format(json.dumps(prompt))
    tag = 0x010F
    for key, value in extra_pnginfo.items():
        exif[tag] = "{}:{}".format(key, json.dumps(value))
        tag -= 1
    out = io.BytesIO()
    image.save(out, format="WEBP", save_all=True, duration=100, append_images=[_pixels()] * (frames - 1),
               exif=exif, lossless=False, quality=80, method=4)
    return out.getvalue()


def test_reads_a_comfyui_png():
    texts = read_picture_chunks(comfy_png(PROMPT, {"workflow": WORKFLOW}))
    assert set(texts) == {"prompt", "workflow"}
    assert json.loads(texts["prompt"]) == PROMPT
    assert json.loads(texts["workflow"]) == WORKFLOW


@pytest.mark.parametrize("frames", [1, 3])
def test_reads_a_comfyui_webp(frames):
    texts = read_picture_chunks(comfy_webp(PROMPT, {"workflow": WORKFLOW, "other": [1, 2]}, frames))
    assert json.loads(texts["prompt"]) == PROMPT
    assert json.loads(texts["workflow"]) == WORKFLOW
    assert json.loads(texts["other"]) == [1, 2]  # the second extra key, tag 0x010E


def test_reads_a_path(tmp_path):
    path = tmp_path / "pic.png"
    path.write_bytes(comfy_png(PROMPT, {"workflow": WORKFLOW}))
    assert json.loads(read_picture_chunks(path)["workflow"]) == WORKFLOW
    assert json.loads(read_picture_chunks(str(path))["prompt"]) == PROMPT


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bare_png(*chunks: bytes) -> bytes:
    out = io.BytesIO()
    _pixels().save(out, format="PNG")
    png = out.getvalue()
    return png[:33] + b"".join(chunks) + png[33:]  # after the signature and IHDR


def test_reads_itxt_and_ztxt_chunks():
    workflow = json.dumps(WORKFLOW, ensure_ascii=False).encode()
    png = _bare_png(
        _png_chunk(b"iTXt", b"workflow\0\0\0en\0Workflow\0" + workflow),
        _png_chunk(b"iTXt", b"prompt\0\1\0\0\0" + zlib.compress(json.dumps(PROMPT).encode())),
        _png_chunk(b"zTXt", b"note\0\0" + zlib.compress(b"zipped")),
    )
    texts = read_picture_chunks(png)
    assert json.loads(texts["workflow"]) == WORKFLOW
    assert json.loads(texts["prompt"]) == PROMPT
    assert texts["note"] == "zipped"


def _riff(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WEBP"
    for kind, data in chunks:
        body += kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _tiff(order: str, entries: list[tuple[int, int, bytes]]) -> bytes:
    """One IFD of (tag, type, value bytes), values after the directory."""
    head = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    values_at = 8 + 2 + 12 * len(entries) + 4
    directory, values = struct.pack(order + "H", len(entries)), b""
    for tag, kind, value in entries:
        if len(value) <= 4:
            directory += struct.pack(order + "HHI", tag, kind, len(value)) + value.ljust(4, b"\0")
        else:
            directory += struct.pack(order + "HHII", tag, kind, len(value), values_at + len(values))
            values += value
    return head + directory + struct.pack(order + "I", 0) + values


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("prefix", [b"", b"Exif\0\0"])
def test_reads_webp_exif_either_byte_order_with_or_without_the_exif_prefix(order, prefix):
    exif = prefix + _tiff(order, [
        (0x010E, 2, b"extra:{\"a\": \"x:y\"}\0"),  # split at the first colon only
        (0x010F, 2, ("workflow:" + json.dumps(WORKFLOW)).encode() + b"\0"),
        (0x0110, 2, ("prompt:" + json.dumps(PROMPT)).encode() + b"\0"),
        (0x0112, 3, struct.pack(order + "H", 1)),  # a SHORT (orientation): not text, left out
        (0x0131, 2, b"Gimp\0"),  # a camera's or editor's plain text, no key: left out
    ])
    texts = read_picture_chunks(_riff((b"VP8X", bytes(10)), (b"EXIF", exif)))
    assert texts == {"prompt": json.dumps(PROMPT), "workflow": json.dumps(WORKFLOW), "extra": "{\"a\": \"x:y\"}"}


def test_a_picture_without_metadata_gives_nothing_and_other_bytes_are_refused():
    out = io.BytesIO()
    _pixels().save(out, format="WEBP")
    assert read_picture_chunks(out.getvalue()) == {}
    assert read_picture_chunks(_bare_png()) == {}
    with pytest.raises(PictureError):
        read_picture_chunks(b"GIF89a" + bytes(20))
    with pytest.raises(ValueError):
        read_picture_chunks(b"{\"nodes\": []}")


# --- sdgraph's own outputs, as ComfyUI writes them ---

def test_picture_metadata_is_comfyuis_layout():
    exif = picture_metadata(PROMPT, WORKFLOW, "webp")
    assert (EXIF_PROMPT_TAG, EXIF_FIRST_EXTRA_TAG) == (0x0110, 0x010F)
    assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
    assert exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)
    assert set(exif) == {0x0110, 0x010F}
    png = picture_metadata(PROMPT, WORKFLOW, "png")
    assert [(c[0], c[1]) for c in png.chunks] == [(b"tEXt", b"prompt\0" + json.dumps(PROMPT).encode()),
                                                  (b"tEXt", b"workflow\0" + json.dumps(WORKFLOW).encode())]
    assert list(picture_metadata(PROMPT, None, "webp")) == [0x0110]
    with pytest.raises(ValueError):
        picture_metadata(PROMPT, WORKFLOW, "jpeg")


def _written_by_comfyui_and_by_sdgraph(fmt: str) -> tuple[bytes, bytes]:
    ours = io.BytesIO()
    meta = picture_metadata(PROMPT, WORKFLOW, fmt)
    _pixels().save(ours, format=fmt.upper(), **({"pnginfo": meta, "compress_level": 4} if fmt == "png" else
                                                 {"exif": meta, "save_all": True, "duration": 100,
                                                  "lossless": False, "quality": 80, "method": 4}))
    theirs = comfy_png(PROMPT, {"workflow": WORKFLOW}) if fmt == "png" else comfy_webp(PROMPT, {"workflow": WORKFLOW})
    return ours.getvalue(), theirs


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_sdgraph_writes_the_same_bytes_as_comfyui(fmt):
    ours, theirs = _written_by_comfyui_and_by_sdgraph(fmt)
    assert ours == theirs


torch = pytest.importorskip("torch")


def _images(batch: int = 1):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, 6, 8, 3, generator=gen)


def test_save_pngs_round_trip(tmp_path):
    from sdgraph.nodes.sd.image_files import png_metadata, save_pngs

    records = save_pngs(_images(2), tmp_path, "sub/pic", "output", png_metadata(PROMPT, {"workflow": WORKFLOW}))
    assert [r["filename"] for r in records] == ["pic_00001_.png", "pic_00002_.png"]
    for record in records:
        path = tmp_path / "sub" / record["filename"]
        texts = read_picture_chunks(path)
        assert json.loads(texts["prompt"]) == PROMPT and json.loads(texts["workflow"]) == WORKFLOW
        with Image.open(path) as opened:  # what Pillow (ComfyUI's server) sees
            assert json.loads(opened.text["workflow"]) == WORKFLOW


@pytest.mark.parametrize("batch", [1, 3])
def test_save_webp_round_trip(tmp_path, batch):
    from sdgraph.nodes.sd.image_files import save_webp, webp_metadata

    first = save_webp(_images(batch), tmp_path, "clip", "output", webp_metadata(PROMPT, {"workflow": WORKFLOW}))
    second = save_webp(_images(batch), tmp_path, "clip", "output", None, lossless=True)
    assert [first[0]["filename"], second[0]["filename"]] == ["clip_00001_.webp", "clip_00002_.webp"]
    path = tmp_path / first[0]["filename"]
    texts = read_picture_chunks(path)
    assert json.loads(texts["prompt"]) == PROMPT and json.loads(texts["workflow"]) == WORKFLOW
    with Image.open(path) as opened:
        assert getattr(opened, "n_frames", 1) == batch
        exif = opened.getexif()
        assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
        assert exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)
    assert read_picture_chunks(tmp_path / second[0]["filename"]) == {}
