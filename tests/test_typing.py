"""The type checker is clean: mypy over the whole package, strict on the public API.

The configuration (which modules are strict, which one is exempt) lives in pyproject.toml under
``[tool.mypy]``; these tests check that mypy passes, that the configuration still says what
issue 16 asks for, and that it takes effect (an untyped function in a strict module fails).
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: mypy's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

#: modules issue 16 names as strict: the grouping package, the curve classifier, the wrappers'
#: glue and the command line
MUST_BE_STRICT = (
    "widthwise.groups.finder",
    "widthwise.groups.tracing",
    "widthwise.patterns",
    "widthwise.distributed",
    "widthwise.commands.groups",
)


def _overrides() -> tuple[list[str], list[str]]:
    """(strict module patterns, exempt module patterns) from pyproject.toml."""
    cfg = tomllib.loads(PYPROJECT.read_text())["tool"]["mypy"]
    strict: list[str] = []
    exempt: list[str] = []
    for o in cfg.get("overrides", []):
        mods = o["module"] if isinstance(o["module"], list) else [o["module"]]
        if o.get("ignore_errors"):
            exempt += mods
        if o.get("disallow_untyped_defs") and o.get("disallow_incomplete_defs"):
            strict += mods
    return strict, exempt


def _covered(module: str, patterns: list[str]) -> bool:
    # mypy's "a.b.*" also matches "a.b" itself
    return any(
        module == p or fnmatch.fnmatchcase(module, p) or p == f"{module}.*" for p in patterns
    )


def test_config_keeps_the_public_modules_strict_and_only_the_harness_exempt() -> None:
    strict, exempt = _overrides()
    assert exempt == ["widthwise.reproduction.*"], exempt
    # every public module `import widthwise` re-exports from is strict
    tree = ast.parse((ROOT / "src" / "widthwise" / "__init__.py").read_text())
    public = [
        n.module
        for n in tree.body
        if isinstance(n, ast.ImportFrom)
        and n.module
        and n.module.startswith("widthwise.")
        and not n.module.rpartition(".")[2].startswith("_")
    ]
    assert public, "no public imports found in widthwise/__init__.py"
    for module in [*public, *MUST_BE_STRICT]:
        assert _covered(module, strict), f"{module} is not in the strict override"
        assert not _covered(module, exempt), f"{module} is exempt from type checking"


@pytest.mark.slow
def test_strict_settings_take_effect(tmp_path: Path) -> None:
    """The same configuration, on a copy of the package layout: an untyped function is an error
    in a strict module, and the same code passes in the exempt harness."""
    pytest.importorskip("mypy", reason="mypy is part of the [test] extra")
    untyped = "def scale(x, k=2):\n    return x * k\n"
    for pkg in ("widthwise", "widthwise/groups", "widthwise/reproduction"):
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "widthwise/groups/canary.py").write_text(untyped)
    (tmp_path / "widthwise/reproduction/canary.py").write_text(untyped + "y: int = 'a'\n")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT)),
            *(
                "--no-error-summary",
                "widthwise/groups/canary.py",
                "widthwise/reproduction/canary.py",
            ),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(errors) == 1, errors
    assert errors[0].startswith("widthwise/groups/canary.py:1:"), errors
    assert "no-untyped-def" in errors[0], errors


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is part of the [test] extra")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
