"""The package's floors (issue 19): the import-linter ``layers`` contract of pyproject.toml holds, counting
every import (module-level and inside functions), and no set of modules imports itself in a circle."""
import ast
import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra")
grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter")

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def _lint(config: Path, package_parent: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` in a child process (it reconfigures logging, which would silence the other tests)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", LINT, str(config)], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layers_contract_is_kept():
    result = _lint(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_catches_an_import_that_points_up(tmp_path):
    package = tmp_path / "floors_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from . import high  # lazy: still counted\n")
    (package / "high.py").write_text("from . import low\n")
    config = tmp_path / "contract.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "floors_probe"
        [[tool.importlinter.contracts]]
        name = "probe"
        type = "layers"
        containers = ["floors_probe"]
        layers = ["high", "low"]
    """))
    result = _lint(config, tmp_path)
    assert result.returncode == 1 and "floors_probe.low -> floors_probe.high" in result.stdout, result.stdout


def _cycles(graph) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_in_a_circle():
    cycles = _cycles(grimp.build_graph("dvt_ms", cache_dir=None))
    assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [{"p.a", "p.b"}]


# --------------------------------------------------------------------------------------------------
# every import is at module level, but an optional dependency's
# --------------------------------------------------------------------------------------------------
PACKAGE = ROOT / "dvt_ms"
#: own packages whose modules import an optional third-party package at their top: importing them inside
#: a function is the optional dependency's lazy import (test_only_the_torch_reference_may_be_imported_late)
NEEDS_OPTIONAL = {"dvt_ms.reference": "torch"}


@functools.lru_cache(maxsize=None)
def optional_packages() -> Set[str]:
    """The import names of pyproject.toml's extras: third-party packages that are not runtime dependencies
    (tomllib, and sys.stdlib_module_names below, need Python 3.11 and 3.10: skipped before)."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    return {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("-", "_")
            for requirements in extras.values() for requirement in requirements}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(node: ast.AST, module: str, is_package: bool) -> List[str]:
    """The absolute module names an ``import``/``from ... import`` statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module or ""]
    base = module.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    prefix = ".".join(base + ([node.module] if node.module else []))
    return [prefix] if node.module else [f"{prefix}.{alias.name}" for alias in node.names]


def _is_own(name: str) -> bool:
    return name == "dvt_ms" or name.startswith("dvt_ms.")


def _optional(name: str) -> bool:
    return any(name == package or name.startswith(package + ".") for package in NEEDS_OPTIONAL)


def _must_be_top_level(name: str) -> bool:
    """An own module (the optional-dependency packages aside) or a runtime dependency (not the stdlib)."""
    if _is_own(name):
        return not _optional(name)
    root = name.split(".")[0]
    return root not in sys.stdlib_module_names and root not in optional_packages()


def late_imports(source: str, path: Path) -> List[str]:
    """``file:line`` of every import that is not a top-level statement of ``source`` (inside a def, a class
    body, or an ``if``/``try``/``with``) and names a dvt_ms module or a runtime dependency."""
    tree = ast.parse(source, filename=str(path))
    module, is_package = _module_name(path), path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top_level:
            continue
        names = [n for n in _imported_modules(node, module, is_package) if _must_be_top_level(n)]
        if names:
            found.append((node.lineno, f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(names)}"))
    return [hit for _, hit in sorted(found)]


def test_imports_are_at_module_level_but_the_optional_ones():
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             for hit in late_imports(path.read_text(encoding="utf-8"), path)]
    assert not found, "imports that are not at module level:\n" + "\n".join(found)


def test_the_late_import_finder_finds_them():
    path = PACKAGE / "train" / "probe.py"
    source = textwrap.dedent("""
        import os
        from . import step
        from ..models import create_model
        import dvt_ms.data
        from dvt_ms.reference import torch_models
        if os.name:
            from .. import budget
        def f():
            import numpy, json, torch
            from .loss import MultiExitLoss
            from .. import flops
        class C:
            from dvt_ms import checkpoint
        def g():
            try:
                import dvt_ms.plots
            except ImportError:
                pass
            from dvt_ms.reference import torch_models
    """)
    assert late_imports(source, path) == [
        "dvt_ms/train/probe.py:8: dvt_ms.budget", "dvt_ms/train/probe.py:10: numpy",
        "dvt_ms/train/probe.py:11: dvt_ms.train.loss",
        "dvt_ms/train/probe.py:12: dvt_ms.flops", "dvt_ms/train/probe.py:14: dvt_ms",
        "dvt_ms/train/probe.py:17: dvt_ms.plots"]
    package = PACKAGE / "train" / "__init__.py"
    assert late_imports("def f():\n    from .step import TrainStep\n", package) == [
        "dvt_ms/train/__init__.py:2: dvt_ms.train.step"]


def test_only_the_torch_reference_may_be_imported_late():
    """The exempt packages really need their optional dependency at import time."""
    for package, dependency in NEEDS_OPTIONAL.items():
        folder = PACKAGE.joinpath(*package.split(".")[1:])
        tops = {name.split(".")[0] for path in folder.glob("torch_*.py")
                for node in ast.parse(path.read_text(encoding="utf-8")).body
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for name in _imported_modules(node, _module_name(path), False)}
        assert dependency in tops, f"{package} no longer imports {dependency}: drop it from NEEDS_OPTIONAL"
