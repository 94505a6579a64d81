"""Host, Origin and token checks; paths that try to leave their directory; size limits; no inline HTML/SVG."""
from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from aiohttp import WSServerHandshakeError

from sdgraph.server import ServerConfig
from sdgraph.server.security import split_host
from tests.server.conftest import Harness, raw_request
from tests.server.nodes import chain

SECRET = b"top secret outside the base directory"


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


# ---- cross-origin and DNS rebinding ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:1"},
    {"Origin": "https://127.0.0.1"},
    {"Origin": "garbage"},
    {"Host": "evil.example"},
    {"Host": "evil.example:8188"},
    {"Host": "127.0.0.1.nip.io"},
    {"Host": "[::1"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
])
async def test_cross_origin_and_rebinding_refused(server: Harness, headers: dict[str, str]) -> None:
    body = b'{"prompt": {"1": {"class_type": "Number", "inputs": {"value": 1}}}}'
    status, _, payload = await raw_request(server, "POST", "/prompt", {"Content-Type": "application/json",
                                                                        **headers}, body)
    assert status == 403, payload
    status, _, _ = await raw_request(server, "GET", "/queue", headers)
    assert status == 403
    assert server.state.store.remaining() == 0


async def test_same_origin_and_loopback_names_allowed(server: Harness) -> None:
    port = server.client.port
    for headers in ({"Origin": f"http://127.0.0.1:{port}"}, {"Host": f"localhost:{port}"},
                    {"Host": f"[::1]:{port}", "Origin": f"http://[::1]:{port}"}, {"Host": "127.0.0.2"},
                    {"Sec-Fetch-Site": "same-origin"},
                    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}):
        status, _, _ = await raw_request(server, "GET", "/queue", headers)
        assert status == 200, headers


async def test_websocket_refuses_foreign_origin(server: Harness) -> None:
    with pytest.raises(WSServerHandshakeError) as info:
        await server.client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert info.value.status == 403


def test_split_host() -> None:
    assert split_host("Example.COM:80") == ("example.com", 80)
    assert split_host("[::1]:8188") == ("::1", 8188)
    assert split_host("::1") == ("", None)
    assert split_host("a:b") == ("", None)


# ---- the token ---------------------------------------------------------------------------------------------


async def test_token_required_when_listening_publicly(make_server) -> None:
    config, generated = ServerConfig(listen="0.0.0.0").with_token_if_public()
    assert generated and config.token and len(config.token) >= 24
    server = await make_server(config)
    token = config.token
    assert (await server.client.get("/queue")).status == 401
    assert (await server.client.get("/queue", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await server.client.get("/queue", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await server.client.get("/queue", params={"token": token})).status == 200
    assert (await server.client.post("/prompt", json={"prompt": chain(1)})).status == 401
    with pytest.raises(WSServerHandshakeError) as info:
        await server.client.ws_connect("/ws")
    assert info.value.status == 401
    ws = await server.client.ws_connect("/ws", params={"token": token, "clientId": "x"})
    assert (await ws.receive_json(timeout=5))["type"] == "status"
    await ws.close()
    # The editor's page and files are public code (the editor keeps the token in its tab); no cookie is ever set,
    # since browsers would send it to every port of the host.
    for path in ("/", "/index.html", "/js/api.js", "/style.css"):
        visit = await server.client.get(path, params={"token": token}, allow_redirects=False)
        assert visit.status == 200 and "Set-Cookie" not in visit.headers, path
        assert (await server.client.get(path)).status == 200, path
    server.client.session.cookie_jar.update_cookies({f"sdgraph_token_{config.port}": token})
    assert (await server.client.get("/queue")).status == 401  # a cookie is not a credential
    assert (await server.client.get("/openapi.json")).status == 401  # only the editor's own files are public
    assert (await server.client.get("/view", params={"filename": "x.png"})).status == 401
    # Any IP literal is a valid Host when listening on every interface; host names still are not.
    status, _, _ = await raw_request(server, "GET", "/queue", {"Host": "192.0.2.7:8188",
                                                                "Authorization": f"Bearer {token}"})
    assert status == 200
    status, _, _ = await raw_request(server, "GET", "/queue", {"Host": "rebind.example",
                                                                "Authorization": f"Bearer {token}"})
    assert status == 403


def test_loopback_needs_no_token_and_listen_lists() -> None:
    assert ServerConfig().with_token_if_public() == (ServerConfig(), False)
    assert not ServerConfig(listen="127.0.0.1,::1").public
    assert ServerConfig(listen="127.0.0.1,192.0.2.1").public
    kept, generated = ServerConfig(listen="::", token="mine").with_token_if_public()
    assert kept.token == "mine" and not generated


# ---- paths -------------------------------------------------------------------------------------------------


async def test_view_refuses_paths_leading_out(server: Harness, outside) -> None:
    output = server.base / "output"
    (output / "ok.png").write_bytes(b"\x89PNG fake")
    os.symlink(outside, output / "link.txt")
    os.symlink(outside.parent, output / "linkdir")
    attempts = [
        "/view?filename=../../secret.txt", "/view?filename=..%2F..%2Fsecret.txt",
        "/view?filename=secret.txt&subfolder=../..", "/view?filename=secret.txt&subfolder=..%2F..",
        f"/view?filename={outside}", f"/view?filename=x&subfolder={outside.parent}",
        "/view?filename=..%5C..%5Csecret.txt", "/view?filename=ok.png%00.txt",
        "/view?filename=link.txt", "/view?filename=secret.txt&subfolder=linkdir",
        "/view?filename=secret.txt&type=../..", "/view?filename=ok.png&type=input/../output",
        "/api/view?filename=../../secret.txt",
    ]
    for target in attempts:
        status, _, body = await raw_request(server, "GET", target)
        assert status in (400, 403, 404), target
        assert SECRET not in body, target
    status, _, body = await raw_request(server, "GET", "/view?filename=ok.png")
    assert status == 200 and body == b"\x89PNG fake"


async def test_static_files_stay_in_web_dir(make_server, tmp_path, outside) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<p>editor</p>")
    (web / "app.js").write_text("export {}")
    os.symlink(outside, web / "leak.js")
    server = await make_server(ServerConfig(web_dir=web))
    assert await (await server.client.get("/")).text() == "<p>editor</p>"
    status, headers, _ = await raw_request(server, "GET", "/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    for target in ("/../secret.txt", "/%2e%2e/secret.txt", "/leak.js", "/..%2Fsecret.txt"):
        status, _, body = await raw_request(server, "GET", target)
        assert status in (400, 403, 404) and SECRET not in body, target


def png_bytes(size=(4, 4), color=(0, 128, 255, 255)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def multipart(content: bytes, filename: str, **fields: str) -> tuple[bytes, str]:
    """A multipart body written byte for byte: the filename goes out exactly as given (clients may escape it)."""
    boundary = "sdgraphboundary7MA4YWxk"
    filename = filename.replace("\\", "\\\\").replace('"', '\\"')  # a quoted-string, nothing else escaped
    parts = [(f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n").encode("utf-8", "surrogatepass") + content]
    parts += [f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode("utf-8", "surrogatepass")
              for k, v in fields.items()]
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload(server: Harness, content: bytes, filename: str, route: str = "/upload/image", **fields: str):
    body, content_type = multipart(content, filename, **fields)
    return await server.client.post(route, data=body, headers={"Content-Type": content_type})


async def test_upload_refuses_paths_leading_out(server: Harness, tmp_path, outside) -> None:
    (server.base / "input").mkdir(parents=True, exist_ok=True)
    os.symlink(outside.parent, server.base / "input" / "escape")
    before = files_under(tmp_path)
    cases = [({"filename": "../evil.png"}), ({"filename": "a/b.png"}), ({"filename": "a\\b.png"}),
             ({"filename": "x\x00.png"}), ({"filename": ".hidden"}), ({"filename": "ok.png", "subfolder": "../.."}),
             ({"filename": "ok.png", "subfolder": str(tmp_path)}), ({"filename": "ok.png", "subfolder": "escape"}),
             ({"filename": "ok.png", "subfolder": "a\\..\\.."}), ({"filename": "ok.png", "type": "../output"})]
    for case in cases:
        filename = case.pop("filename")
        resp = await upload(server, png_bytes(), filename, **case)
        assert resp.status in (400, 403), (filename, case, await resp.text())
    assert files_under(tmp_path) == before


async def test_upload_size_and_pixel_limits(make_server) -> None:
    server = await make_server(ServerConfig(max_upload_bytes=1000))
    resp = await upload(server, b"\0" * 5000, "big.bin")
    assert resp.status == 413
    server2 = await make_server(base=server.base.parent / "b2")
    resp = await upload(server2, bomb_png(100_000, 100_000), "bomb.png")
    assert resp.status == 413 and "pixel" in (await resp.json())["error"]["message"]
    assert not (server2.base / "input" / "bomb.png").exists()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header announces a huge image (a decompression bomb, seen from the outside)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


async def test_html_and_svg_are_never_inline(server: Harness) -> None:
    output = server.base / "output"
    (output / "page.html").write_text("<script>alert(1)</script>")
    (output / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    for name in ("page.html", "pic.svg"):
        resp = await server.client.get("/view", params={"filename": name})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"].startswith("attachment")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = await upload(server, b"<svg onload=alert(1)></svg>", "x.svg")
    assert resp.status == 200
    resp = await server.client.get("/view", params={"filename": "x.svg", "type": "input"})
    assert resp.headers["Content-Disposition"].startswith("attachment")


def test_load_image_refuses_paths_leading_out(tmp_path) -> None:
    """The diffusion pack's LoadImage, validated the way POST /prompt does (skipped where it is not installed)."""
    from sdgraph.context import Services
    from sdgraph.execute import Executor
    from sdgraph.paths import Dirs
    from sdgraph.plugins import build_registry

    registry = build_registry(plugins=False)
    if "LoadImage" not in registry:
        pytest.skip("the LoadImage node is not installed")
    dirs = Dirs(base=tmp_path / "base", extra_model_roots=[])
    dirs.input.mkdir(parents=True)
    (dirs.input / "ok.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "secret.png", dirs.input / "link.png")
    executor = Executor(registry, Services(dirs=dirs))
    for name in ("../secret.png", str(tmp_path / "secret.png"), "..\\secret.png", "ok.png\x00", "link.png"):
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        assert not executor.prepare(prompt).ok, name
    good = {"1": {"class_type": "LoadImage", "inputs": {"image": "ok.png"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert executor.prepare(good).ok
