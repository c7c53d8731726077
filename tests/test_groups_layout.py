"""The groups package: its public names, the old import paths, and one-way imports inside it."""

from __future__ import annotations

import ast
from pathlib import Path

import widthwise
import widthwise.groups as groups

PKG = Path(groups.__file__).parent


def test_public_names_and_old_paths():
    for name in ("ChannelGroup", "Member", "find_groups", "GroupingError", "GroupingWarning"):
        assert getattr(groups, name) is getattr(widthwise, name)
    from widthwise import _recurrent
    from widthwise.groups import _call_model, call_model, recurrent

    assert _call_model is call_model  # streamline and resize still import the old name
    assert _recurrent.CutHooks is recurrent.CutHooks
    assert set(_recurrent.__all__) == set(recurrent.__all__)


def _imports(path: Path) -> set[str]:
    """widthwise.groups submodules imported by ``path``, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module
            if mod == "widthwise.groups":
                out |= {a.name for a in node.names if (PKG / f"{a.name}.py").exists()}
            elif mod.startswith("widthwise.groups."):
                out.add(mod.rsplit(".", 1)[1])
        elif isinstance(node, ast.ImportFrom) and node.module is None:
            out |= {a.name for a in node.names}
    return out


def test_imports_inside_the_package_run_one_way():
    graph = {p.stem: _imports(p) for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert graph["types"] == set()
    assert graph["verify"] <= {"types"} and graph["recurrent"] <= {"types"}
    # no cycle: repeatedly remove modules that import nothing left
    left = dict(graph)
    while left:
        free = [m for m, deps in left.items() if not deps & left.keys() - {m}]
        assert free, f"import cycle among {sorted(left)}"
        for m in free:
            del left[m]
    # nothing in the package imports a module further up the core (norms, tracker, ...)
    for p in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("widthwise"):
                assert node.module.startswith("widthwise.groups"), (p.name, node.module)
