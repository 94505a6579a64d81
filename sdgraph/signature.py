"""Stable cache keys for node outputs: sha256 over class, literal inputs, fingerprint and ancestors' keys.

Stable across processes and machines (no salted `hash()`), so a key means the same thing tomorrow.
"""
from __future__ import annotations

import hashlib
import math
import uuid
from typing import Any

from sdgraph.validate import PreparedNode


def _encode(value: Any) -> str:
    """repr of JSON-born values (dicts in declaration order, str, int, float, bool, None) is stable everywhere."""
    return repr(value)


def always_changes(fingerprint: Any) -> bool:
    """A NaN fingerprint is the ecosystem's way of saying "never reuse my output"."""
    return isinstance(fingerprint, float) and math.isnan(fingerprint)


def node_signature(node: PreparedNode, fingerprint: Any, source_keys: dict[str, str],
                   hidden: dict[str, str] | None = None) -> str:
    """The cache key of one node, given the keys of the nodes its links come from, and what stands for the
    hidden inputs it receives (its id, digests of the prompt), so the key covers exactly what it is given."""
    spec = node.node.spec
    if spec.not_idempotent or (fingerprint is not None and always_changes(fingerprint)):
        fingerprint = uuid.uuid4().hex
    parts = [spec.class_type, _encode(node.literals)]
    parts.extend(f"{name}<{source_keys[src]}:{index}" for name, (src, index) in node.links.items())
    if hidden:
        parts.append("hidden" + _encode(hidden))
    if fingerprint is not None:
        parts.append(_encode(fingerprint))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
