"""The package's floors (issue 19): the import-linter ``layers`` contract of pyproject.toml holds, counting
every import (module-level and inside functions), and no set of modules imports itself in a circle."""
import os
import textwrap
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra")
grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter")


def _lint(config: Path, cwd: Path) -> int:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return importlinter_cli.lint_imports(config_filename=str(config), no_cache=True, no_logo=True)
    finally:
        os.chdir(here)


def test_the_layers_contract_is_kept():
    assert _lint(ROOT / "pyproject.toml", ROOT) == 0


def test_the_contract_catches_an_import_that_points_up(tmp_path, monkeypatch):
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
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _lint(config, tmp_path) == 1


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
