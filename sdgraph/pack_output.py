"""Plugins print while they load (banners, warnings); that text goes to stderr, so stdout stays the face's own.

`sdgraph nodes --json` prints one JSON document on stdout; a pack that prints during import must not end up in
the middle of it. Python-level writes are redirected, and so is file descriptor 1, for text written by native
extensions (their C buffers are flushed before the descriptor is given back). Packs also print from threads
they start while loading (Impact Pack loads its wildcards so), after the loading block has ended: a command that
prints a document holds stdout for the document alone, with `document_stdout`, for as long as it runs.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Iterator, TextIO


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


@contextlib.contextmanager
def document_stdout(enabled: bool = True) -> Iterator[TextIO]:
    """Yields the stream a command's document goes to (stdout as it was); inside the block everything else
    written to stdout, by any thread or by native code, lands on stderr.

    When stdout is the process's file descriptor 1, fd 1 stays on stderr after the block: a pack's thread may
    print until the interpreter has waited for it at exit, after the document. A captured stdout (a test's) is
    given back whole."""
    document = sys.stdout
    if not enabled:
        yield document
        return
    try:
        own_fd = document.fileno() == 1
    except (OSError, ValueError, AttributeError):  # a captured or in-memory stdout: fd 1 is not the document
        own_fd = False
    if not own_fd:
        with _fd_redirect(), contextlib.redirect_stdout(sys.stderr):
            yield document
        return
    document.flush()
    with os.fdopen(os.dup(1), "w", encoding=document.encoding or "utf-8") as private:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield private
