"""/view (previews, channels) and uploads (dedup, clashes, overwrite, subfolders, masks)."""
from __future__ import annotations

import io

from PIL import Image

from tests.server.conftest import Harness
from tests.server.test_security import png_bytes, upload


def image_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_upload_dedup_clash_overwrite(server: Harness) -> None:
    red, blue = png_bytes(color=(255, 0, 0, 255)), png_bytes(color=(0, 0, 255, 255))
    first = await (await upload(server, red, "pic.png")).json()
    assert first == {"name": "pic.png", "subfolder": "", "type": "input"}
    same = await (await upload(server, red, "pic.png")).json()
    assert same["name"] == "pic.png"  # identical content is stored once
    other = await (await upload(server, blue, "pic.png")).json()
    assert other["name"] == "pic (1).png"
    again = await (await upload(server, blue, "pic.png")).json()
    assert again["name"] == "pic (1).png"
    inputs = server.base / "input"
    assert sorted(p.name for p in inputs.iterdir()) == ["pic (1).png", "pic.png"]
    replaced = await (await upload(server, blue, "pic.png", overwrite="true")).json()
    assert replaced["name"] == "pic.png" and (inputs / "pic.png").read_bytes() == blue
    assert sorted(p.name for p in inputs.iterdir()) == ["pic (1).png", "pic.png"]  # no temp files left
    # Outputs are never overwritten, whatever the flag says.
    assert (await (await upload(server, red, "out.png", type="output")).json())["name"] == "out.png"
    kept = await (await upload(server, blue, "out.png", type="output", overwrite="true")).json()
    assert kept["name"] == "out (1).png" and (server.base / "output" / "out.png").read_bytes() == red


async def test_upload_subfolder_and_type(server: Harness) -> None:
    reply = await (await upload(server, png_bytes(), "a.png", subfolder="clipspace/x", type="temp")).json()
    assert reply == {"name": "a.png", "subfolder": "clipspace/x", "type": "temp"}
    assert (server.base / "temp" / "clipspace" / "x" / "a.png").is_file()
    resp = await server.client.get("/view", params={"filename": "a.png", "subfolder": "clipspace/x",
                                                    "type": "temp"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    resp = await server.client.get("/view", params={"filename": "a.png [temp]", "subfolder": "clipspace/x"})
    assert resp.status == 200
    assert (await upload(server, png_bytes(), "a.png", type="models")).status == 400


async def test_view_previews_and_channels(server: Harness) -> None:
    (server.base / "output" / "c.png").write_bytes(png_bytes((6, 4), (10, 20, 30, 128)))
    webp = await server.client.get("/view", params={"filename": "c.png", "preview": "webp;50"})
    assert webp.status == 200 and webp.headers["Content-Type"] == "image/webp"
    assert image_of(await webp.read()).size == (6, 4)
    jpeg = await server.client.get("/view", params={"filename": "c.png", "preview": "jpeg;80"})
    assert image_of(await jpeg.read()).format == "JPEG"
    rgb = image_of(await (await server.client.get("/view", params={"filename": "c.png", "channel": "rgb"})).read())
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (10, 20, 30)
    alpha = image_of(await (await server.client.get("/view", params={"filename": "c.png", "channel": "a"})).read())
    assert alpha.getpixel((0, 0)) == (0, 0, 0, 128)
    for params in ({"preview": "gif;3"}, {"preview": "webp;0"}, {"preview": "webp;x"}, {"channel": "cmyk"},
                   {"type": "models"}):
        resp = await server.client.get("/view", params={"filename": "c.png", **params})
        assert resp.status == 400, params
    (server.base / "output" / "notes.txt").write_text("plain")
    resp = await server.client.get("/view", params={"filename": "notes.txt", "preview": "webp;90"})
    assert resp.status == 400
    assert (await server.client.get("/view", params={"filename": "missing.png"})).status == 404
    assert (await server.client.get("/view")).status == 400


async def test_mask_upload_applies_alpha_to_the_original(server: Harness) -> None:
    await upload(server, png_bytes((4, 4), (200, 100, 50, 255)), "photo.png")
    mask = png_bytes((2, 2), (0, 0, 0, 0))
    reply = await (await upload(server, mask, "photo-mask.png", route="/upload/mask",
                                original_ref='{"filename": "photo.png", "subfolder": "", "type": "input"}')).json()
    assert reply["name"] == "photo-mask.png"
    result = Image.open(server.base / "input" / "photo-mask.png")
    assert result.size == (4, 4) and result.getpixel((0, 0)) == (200, 100, 50, 0)
    for ref in ("", "[]", '{"filename": "../../x.png"}', '{"filename": "nope.png"}'):
        resp = await upload(server, mask, "m.png", route="/upload/mask", original_ref=ref)
        assert resp.status in (400, 403, 404), ref


async def test_upload_without_a_file_part(server: Harness) -> None:
    assert (await server.client.post("/upload/image", data=b"x")).status == 400
    resp = await server.client.post("/upload/image", data=b"--b--\r\n",
                                    headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert resp.status == 400
