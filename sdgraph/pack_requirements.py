"""What a pack's requirements.txt asks for that this environment lacks, found without installing anything."""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a file: comments, blank lines, pip options and URLs left out."""
    lines = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line:
            continue
        lines.append(line)
    return lines


def _check(line: str) -> tuple[str, str] | None:
    """(name, why) when the requirement is not met here, else None."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement  # noqa: PLC0415
    except ImportError:  # packaging absent: check presence only
        match = _NAME.match(line)
        if match is None:
            return None
        return _presence(match.group(1))
    try:
        req = Requirement(line)
    except InvalidRequirement:
        match = _NAME.match(line)
        return _presence(match.group(1)) if match else None
    if req.marker is not None and not req.marker.evaluate():
        return None
    found = _presence(req.name)
    if found is not None:
        return found
    installed = version(req.name)
    if req.specifier and not req.specifier.contains(installed, prereleases=True):
        return req.name, f"is not met: {req.name} {installed} is installed"
    return None


def _presence(name: str) -> tuple[str, str] | None:
    try:
        version(name)
    except PackageNotFoundError:
        return name, "is not installed"
    return None


def missing_requirements(path: Path) -> list[tuple[str, str, str]]:
    """(name, line, why) for each requirement of the file that this environment does not satisfy."""
    found = []
    for line in requirement_lines(path):
        result = _check(line)
        if result is not None:
            found.append((result[0], line, result[1]))
    return found
