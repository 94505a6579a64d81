"""Filesystem errors on a client's path, answered as the client's problem: the one errno -> status table.

A name too long, a symlink loop, a path too deep, a denied permission or a full disk is not a server bug, so the
file routes wrap their handlers in `client_paths`: such an error becomes a 4xx (507 for a full disk) whose message
never shows server paths. Any other OSError is still a bug and stays a 500.
"""
from __future__ import annotations

import errno
import functools
from typing import Awaitable, Callable

from aiohttp import web

from sdgraph.server.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS: dict[int, tuple[int, str, str]] = {
    errno.ENAMETOOLONG: (400, "name_too_long", "a name in the path is too long (255 bytes a name at most)"),
    errno.ELOOP: (400, "symlink_loop", "the path runs into a loop of symbolic links"),
    errno.EACCES: (403, "permission_denied", "the server may not access this path"),
    errno.EPERM: (403, "permission_denied", "the server may not access this path"),
    errno.EROFS: (403, "read_only", "this directory is read-only"),
    errno.ENOENT: (404, "not_found", "no such file or folder"),
    errno.ENOTDIR: (409, "name_clash", "a file stands where the path needs a folder"),
    errno.EISDIR: (409, "name_clash", "a folder stands where the path needs a file"),
    errno.EEXIST: (409, "name_clash", "a file or folder of that name exists"),
    errno.EFBIG: (413, "file_too_large", "the file is too large for this filesystem"),
    errno.ENOSPC: (507, "insufficient_storage", "the disk is full"),
    errno.EDQUOT: (507, "insufficient_storage", "the disk quota is used up"),
}


def api_error(exc: BaseException) -> ApiError | None:
    """The client's error for a filesystem failure, or None when it is not one."""
    if isinstance(exc, RecursionError):  # pathlib walks a very deep path recursively
        return ApiError(400, "path_too_deep", "the path has too many levels")
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop"):  # pathlib before Python 3.13
        return api_error(OSError(errno.ELOOP, "symlink loop"))
    if not isinstance(exc, OSError) or isinstance(exc, (ConnectionError, TimeoutError)):
        return None  # a vanished client or a timeout is not about the path
    found = STATUS.get(exc.errno or 0)
    if found is None:
        return None
    status, kind, message = found
    return ApiError(status, kind, message)


def client_paths(handler: Handler) -> Handler:
    """Wrap a route whose client-given path reaches the filesystem."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (OSError, RuntimeError) as exc:
            error = api_error(exc)
            if error is None:
                raise
            raise error from None

    return wrapper
