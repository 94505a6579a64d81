"""The HTTP and WebSocket face of sdgraph, speaking ComfyUI's API: `create_app(executor, ServerConfig(...))`."""
from sdgraph.server.app import create_app
from sdgraph.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
