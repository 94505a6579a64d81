"""Server settings, and what follows from the listen address (is it public? which Host names are ours?)."""
from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None  # required from every client when set
    max_upload_bytes: int = 100 * MiB
    max_body_bytes: int = 16 * MiB  # JSON request bodies
    max_history: int = 10000
    max_queue: int = 10000  # pending prompts; a submission beyond it gets 429
    max_queue_bytes: int = 1024 * MiB  # pending prompts' JSON text, all together
    db_path: Path | None = None  # default: <user dir>/server.sqlite3
    web_dir: Path | None = None  # default: the repository's web/
    allowed_hosts: tuple[str, ...] = ()  # extra Host names to accept (a reverse proxy's name, say)
    probe_torch: bool = True  # /system_stats may import torch (in a thread) to read device memory
    # Connection limits, enforced by `sdgraph serve` (sdgraph/server/connections.py):
    head_timeout_s: float = 30.0  # a connection must send a whole request head this soon (also the idle limit)
    body_timeout_s: float = 30.0  # a request body that sends nothing for this long is cut off
    max_connections: int = 1000  # beyond it, the oldest connections with no request in progress are closed
    backlog: int = 1024  # connections the kernel holds before the server accepts them

    @property
    def public(self) -> bool:
        return not all(is_loopback(host) for host in self.listen_hosts)

    @property
    def listen_hosts(self) -> list[str]:
        return [h.strip() for h in self.listen.split(",")] or ["127.0.0.1"]

    def with_token_if_public(self) -> tuple[ServerConfig, bool]:
        """A token is required off loopback: keep the given one or make one. Returns (config, generated)."""
        if self.public and not self.token:
            self.token = secrets.token_urlsafe(24)
            return self, True
        return self, False


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def default_web_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "web", package / "web"):
        if candidate.is_dir():
            return candidate
    return package.parent / "web"

