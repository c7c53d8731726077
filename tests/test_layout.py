"""The package's layout is its architecture: the core reads in one direction.

Core modules, in the order data flows through them, may import (at module level) only modules
listed before them; the probes, the reproduction harness, the integrations and the command line
sit beside or above the core and the core never imports them, not even lazily. The two named
conveniences that reach up to the view at call time (``Run.report``, ``WidthTracker.report``)
are the only imports inside function bodies that go up the order.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import widthwise

SRC = Path(widthwise.__file__).parent

#: The core, in data-flow order: model -> groups -> norms -> store/tracker -> verdicts ->
#: report / plan -> resize. A module may import only those before it.
ORDER = [
    "_version",
    "_extras",
    "groups",
    "_recurrent",
    "distributed",
    "norms",
    "store",
    "evidence",
    "tracker",
    "patterns",
    "verdicts",
    "analysis",
    "report",
    "resize",
    "streamline",
]
#: Beside or above the core: never imported by it.
OUTSIDE = ("probes", "reproduction", "integrations", "cli", "commands")
#: (module, imported) pairs allowed inside a function body although they go up the order.
LAZY_UP = {("store", "report"), ("tracker", "report")}


def _unit(module: str) -> str:
    """``widthwise.groups.finder`` -> ``groups``; ``widthwise`` -> ``""`` (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """``(imported widthwise module, inside a function)`` for every import in ``path``,
    leaving out ``if TYPE_CHECKING:`` blocks (annotations only)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import):
            found.extend(
                (a.name, in_function) for a in node.names if a.name.startswith("widthwise")
            )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.startswith("widthwise"):
                for alias in node.names:  # `from widthwise import verdicts` names a module
                    sub = f"{base}.{alias.name}"
                    is_module = (
                        importlib.util.find_spec(sub) is not None if base == "widthwise" else False
                    )
                    found.append((sub if is_module else base, in_function))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def test_every_core_module_has_a_place_in_the_order() -> None:
    units = {_unit(m) for m in _modules()} - {""} - set(OUTSIDE) - {"_moved"}
    assert units <= set(ORDER), f"add {sorted(units - set(ORDER))} to ORDER (or OUTSIDE)"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_follow_the_data_flow(module: str) -> None:
    unit = _unit(module)
    if unit in OUTSIDE or unit in ("", "_moved"):
        return  # above the core: may use anything below
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for imported, lazy in _imports(path, package):
        target = _unit(imported)
        assert target not in OUTSIDE, f"{module} imports {imported}: the core never does"
        assert target != "", f"{module} imports the package root; import the module itself"
        if target == unit or target == "_moved":
            continue
        up = ORDER.index(target) > ORDER.index(unit)
        if lazy:
            assert not up or (unit, target) in LAZY_UP, f"{module} reaches up to {imported}"
        else:
            assert not up, f"{module} imports {imported}, which comes later in the data flow"


def test_the_core_imports_without_the_harness_or_the_probes() -> None:
    import subprocess
    import sys

    code = (
        "import sys, widthwise; "
        "bad = [m for m in sys.modules if m.startswith(('widthwise.probes', "
        "'widthwise.reproduction', 'widthwise.integrations', 'sklearn', 'mnist1d'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_old_import_paths_still_work() -> None:
    import widthwise.kernel
    import widthwise.zoo.mlp
    from widthwise.zoo import MLP
    from widthwise.zoo.residual_mlp import ResidualMLP

    import widthwise.probes.kernel
    import widthwise.reproduction.zoo.mlp

    assert widthwise.zoo.mlp is widthwise.reproduction.zoo.mlp
    assert widthwise.kernel is widthwise.probes.kernel
    assert MLP is widthwise.reproduction.zoo.mlp.MLP
    assert ResidualMLP.__module__ == "widthwise.probes.residual_mlp"


def test_a_missing_harness_extra_is_one_line_with_the_install_command(
    monkeypatch, capsys, tmp_path
) -> None:
    import importlib.util as util

    from widthwise.cli import main
    from widthwise.reproduction import data

    real = util.find_spec
    monkeypatch.setattr(
        util, "find_spec", lambda name, *a: None if name == "mnist1d" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r'needs mnist1d.*pip install "widthwise\[reproduce\]"'):
        data.mnist1d(num_samples=10)
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "widthwise[reproduce]" in err, err
