"""The set of known node classes, by class_type and alias, and what went wrong loading the rest."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sdgraph.comfy_compat import define_comfy, is_comfy_class
from sdgraph.comfy_v3 import define_v3, is_v3_class
from sdgraph.paths import Dirs
from sdgraph.node import Node, NodeDeclarationError, NodeDef, define


@dataclass
class LoadProblem:
    """A pack or node that could not be loaded, kept for `sdgraph nodes` and the API to show."""

    pack: str
    message: str
    traceback: str = ""
    node: str | None = None
    missing_module: str | None = None  # the module (or requirement) whose absence is the problem, when known

    def as_dict(self) -> dict[str, Any]:
        return {"pack": self.pack, "node": self.node, "message": self.message, "traceback": self.traceback,
                "missing_module": self.missing_module}


@dataclass
class Registry:
    nodes: dict[str, NodeDef] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)
    packs: dict[str, list[str]] = field(default_factory=dict)
    web_dirs: dict[str, Path] = field(default_factory=dict)  # a pack's browser extensions (its WEB_DIRECTORY)

    def get(self, class_type: str) -> NodeDef | None:
        found = self.nodes.get(class_type)
        if found is None and class_type in self.aliases:
            found = self.nodes.get(self.aliases[class_type])
        return found

    def __contains__(self, class_type: str) -> bool:
        return self.get(class_type) is not None

    def add(self, node: NodeDef) -> bool:
        """Register a node; a name already taken is reported as a conflict and the first one stays."""
        for name in (node.class_type, *node.spec.aliases):
            owner = self._owner(name)
            if owner is not None:
                self.problems.append(LoadProblem(
                    pack=node.pack, node=name,
                    message=f"node {name!r} from pack {node.pack!r} conflicts with the one from pack "
                            f"{owner!r}; keeping {owner!r}'s",
                ))
                return False
        self.nodes[node.class_type] = node
        for alias in node.spec.aliases:
            self.aliases[alias] = node.class_type
        self.packs.setdefault(node.pack, []).append(node.class_type)
        return True

    def _owner(self, name: str) -> str | None:
        existing = self.get(name)
        return existing.pack if existing is not None else None

    def add_native(self, classes: Iterable[type[Node]], pack: str) -> None:
        for cls in classes:
            if is_v3_class(cls):  # a ComfyUI V3 class among a pack's own nodes
                self._add_checked(pack, cls.__name__, lambda cls=cls: define_v3(cls, pack))
            else:
                self._add_checked(pack, cls.__name__, lambda cls=cls: define(cls, pack))

    def add_comfy_mappings(self, mappings: dict[str, Any], display_names: dict[str, str] | None,
                           pack: str) -> None:
        """Register a pack's NODE_CLASS_MAPPINGS (either node style may appear in it)."""
        display_names = display_names or {}
        for class_type, cls in mappings.items():
            if is_v3_class(cls):  # before the V1 test: V3 classes answer INPUT_TYPES too
                build = lambda c=cls, n=class_type: define_v3(c, pack, n)  # noqa: E731
            elif is_comfy_class(cls):
                build = lambda c=cls, n=class_type: define_comfy(n, c, display_names.get(n), pack)  # noqa: E731
            elif isinstance(cls, type) and issubclass(cls, Node):
                build = lambda c=cls: define(c, pack)  # noqa: E731
            else:
                build = lambda n=class_type, c=cls: _not_a_node(n, c)  # noqa: E731
            self._add_checked(pack, class_type, build)

    def _add_checked(self, pack: str, name: str, build: Any) -> None:
        try:
            self.add(build())
        except NodeDeclarationError as exc:
            self.problems.append(LoadProblem(pack=pack, node=name, message=str(exc)))

    def describe(self, dirs: Dirs | None = None) -> dict[str, dict[str, Any]]:
        """Every node in the `/object_info` shape, aliases included under their own names."""
        info = {name: node.spec.describe(dirs) for name, node in self.nodes.items()}
        for alias, target in self.aliases.items():
            entry = dict(info[target])
            entry["name"] = alias
            info[alias] = entry
        return info


def _not_a_node(name: str, obj: Any) -> NodeDef:
    raise NodeDeclarationError(f"node {name}: {obj!r} is neither a Node subclass nor a ComfyUI-style class")
