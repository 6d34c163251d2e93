"""No module imports a higher layer (``audiopalm.LAYERS``, lowest first).

Every ``import`` / ``from ... import`` in every module of the package is checked: at module level, inside
functions and methods, and under ``if TYPE_CHECKING:`` alike (a deferred import is still a dependency).
Allowed: imports from the module's own layer or a lower one, and from outside the package. The package root
(``audiopalm/__init__.py``) stands above every layer (it re-exports the public entry points, lazily); from
below, only its ``__version__`` may be imported. Relative imports are refused (the project writes absolute ones).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import audiopalm
from audiopalm import LAYERS

PACKAGE = Path(audiopalm.__file__).resolve().parent
ROOT_NAMES_FOR_ALL = {"__version__"}  # names of the package root that any layer may import


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the longest layer prefix of ``module``; None for the package root."""
    matches = [i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    return max(matches, key=lambda i: len(LAYERS[i])) if matches else None


def imports_of(path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, imported name or '')`` of every absolute import of the package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names if a.name.split(".")[0] == "audiopalm"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; write it absolute"
            if node.module and node.module.split(".")[0] == "audiopalm":
                for a in node.names:
                    sub = f"{node.module}.{a.name}"  # `from audiopalm.x import y` may import the module x.y
                    found.append((node.lineno, sub, "") if sub in MODULES else (node.lineno, node.module, a.name))
    return found


def upward_imports(modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, path in modules.items():
        own = layer_of(module)
        if own is None:  # the package root
            continue
        for line, target, name in imports_of(path):
            other = layer_of(target)
            if other is None and name in ROOT_NAMES_FOR_ALL:
                continue
            if other is None or other > own:
                where = LAYERS[other] if other is not None else "the package root"
                bad.append(f"{path}:{line}: {module} ({LAYERS[own]}) imports {target} ({where})")
    return bad


def test_every_module_belongs_to_a_layer():
    assert MODULES, PACKAGE
    orphans = [m for m in MODULES if m != "audiopalm" and layer_of(m) is None]
    assert not orphans, f"modules in no layer of audiopalm.LAYERS: {orphans}; add their package to LAYERS"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(MODULES)
    assert not bad, "imports of a higher layer:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from audiopalm.inference.pipeline import AudioPaLM\n", True),  # module level, upward
        ("def f():\n    from audiopalm.commands import main\n", True),  # function level, upward
        ("from audiopalm import commands\n", True),  # a subpackage named in `from audiopalm import`
        ("from audiopalm import AudioPaLM\n", True),  # the root's entry point: upward for every layer
        ("import audiopalm.evaluation.metrics\n", True),
        ("from audiopalm.data.manifest import read_manifest\n", False),  # same layer
        ("from audiopalm.audio import io\n", False),  # lower layer
        ("from audiopalm import __version__\n", False),
        ("import numpy\n", False),
    ],
)
def test_the_check_flags_upward_imports_only(tmp_path, source, flagged):
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    bad = upward_imports({"audiopalm.data.probe": probe})  # read as a module of the data layer
    assert bool(bad) == flagged, (source, bad)


def test_no_test_module_imports_another():
    """Shared builders live in tests/builders.py and tests/conftest.py, not in a test module."""
    tests = Path(__file__).resolve().parent
    bad = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            bad += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not bad, "test modules importing test modules (move the helper to builders.py):\n" + "\n".join(bad)
