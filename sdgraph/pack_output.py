"""Plugins print while they load (banners, warnings); that text goes to stderr, so stdout stays the face's own.

`sdgraph nodes --json` prints one JSON document on stdout; a pack that prints during import must not end up in
the middle of it. Python-level writes are redirected, and so is file descriptor 1, for text written by native
extensions (their C buffers are flushed before the descriptor is given back).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (or a platform without dlopen(NULL))
        pass


@contextlib.contextmanager
def _fd_redirect() -> Iterator[None]:
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real stdout descriptor (embedded, closed)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def plugin_output_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Everything written to stdout inside the block lands on stderr."""
    if not enabled:
        yield
        return
    with _fd_redirect(), contextlib.redirect_stdout(sys.stderr):
        yield
