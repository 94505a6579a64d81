"""Who may talk to the server: the Host and Origin checks, the access token, and headers on every response.

- Host must be a loopback name or IP, the listen address (any IP literal when listening on a wildcard), or a
  name allowed explicitly. Other names are refused: that is what defeats DNS rebinding.
- A request carrying an Origin must come from the same origin as its Host; `Origin: null` is refused. Browsers'
  Sec-Fetch-Site marks cross-site sub-requests (an <img> or <script> on another site): refused too, except
  top-level navigations.
- When a token is set (always when listening off loopback), every request needs it, as `Authorization: Bearer`
  or `?token=`, except the editor's page and static files (code, no data), which a browser loads from the printed
  `/?token=...` URL; the editor keeps the token in its tab's sessionStorage. No cookie: browsers send cookies to
  every port of a host, so one would hand the token to whatever else listens there.
"""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from sdgraph.server import static
from sdgraph.server.config import WILDCARDS, ServerConfig, is_ip, is_loopback
from sdgraph.server.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EDITOR_HANDLERS = {handler for _, _, handler in static.ROUTES}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
}


def split_host(value: str) -> tuple[str, int | None]:
    """`host[:port]` or `[v6]:port` -> (host, port); a malformed value gives ("", None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return "", None
        host, rest = value[1:end], value[end + 1:]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            return "", None
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:
        return "", None  # a bare IPv6 address must be bracketed
    else:
        host, port_text = value, ""
    if not port_text:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5:
        return "", None
    return host, int(port_text)


def host_allowed(host: str, config: ServerConfig) -> bool:
    if not host:
        return False
    if is_loopback(host) or host in (name.lower() for name in config.allowed_hosts):
        return True
    listen = [h.lower().strip("[]") for h in config.listen_hosts]
    if host in listen:
        return True
    return any(h in WILDCARDS for h in listen) and is_ip(host)


def check_request(request: web.Request, config: ServerConfig) -> str | None:
    """Why the request is refused (403), or None."""
    host_header = request.headers.get("Host")
    host, port = split_host(host_header) if host_header is not None else ("", None)
    if host_header is not None and not host_allowed(host, config):
        return f"Host {host_header!r} is not this server (only loopback names and the listen address are)"
    origin = request.headers.get("Origin")
    if origin is not None:
        if host_header is None:
            return "a request with an Origin must carry a Host"
        if not _same_origin(origin, request.scheme, host, port):
            return f"cross-origin request from {origin!r} refused"
    site = request.headers.get("Sec-Fetch-Site")
    if site in ("cross-site", "same-site"):
        navigating = request.method in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Mode") == "navigate"
        if not navigating:
            return "cross-site request refused"
    return None


def _same_origin(origin: str, scheme: str, host: str, port: int | None) -> bool:
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return False
    default = {"http": 80, "https": 443}
    origin_port = origin_port or default[parts.scheme]
    host_port = port or default.get(scheme, 80)
    return parts.scheme == scheme and parts.hostname.lower() == host and origin_port == host_port


def presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token")


def is_editor_file(request: web.Request) -> bool:
    """The editor's page or one of its static files: public code, so a browser can load it before the token."""
    return request.method in ("GET", "HEAD") and request.match_info.route.handler in EDITOR_HANDLERS


def token_valid(presented: str | None, expected: str) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8"))


def security_middleware(config: ServerConfig) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = check_request(request, config)
        if refusal is not None:
            return error_response(403, "forbidden", refusal)
        if config.token and not is_editor_file(request):
            if not token_valid(presented_token(request), config.token):
                response = error_response(401, "unauthorized",
                                          "an access token is required: use the URL printed by `sdgraph serve`, "
                                          "or send 'Authorization: Bearer <token>'")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await handler(request)

    return guard


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
