"""The package's shape holds: imports point down the planes (the import-linter contracts in pyproject.toml) and
no two siblings of any package import each other, directly or round a longer loop."""

from __future__ import annotations

import grimp
import pytest
from importlinter.cli import lint_imports


def test_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = lint_imports(no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert exit_code == 0, out
    assert "0 broken" in out and " kept" in out, out


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # An import under TYPE_CHECKING names a type for the checker; it runs nothing and makes no loop at import time.
    return grimp.build_graph("freshrec", exclude_type_checking_imports=True)


def sibling_cycle(graph: grimp.ImportGraph, package: str) -> list[str] | None:
    """A loop of imports among the direct children of ``package`` (each child taken with its submodules)."""
    children = sorted(graph.find_children(package))
    edges = {a: [b for b in children if a != b and graph.direct_import_exists(importer=a, imported=b, as_packages=True)]
             for a in children}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for child in children:
        if child not in state and (found := visit(child, [])):
            return found
    return None


def test_no_import_cycle_between_siblings(graph: grimp.ImportGraph) -> None:
    packages = sorted(m for m in graph.modules if m == "freshrec" or graph.find_children(m))
    cycles = {p: c for p in packages if (c := sibling_cycle(graph, p))}
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above can fail: a graph with a loop is reported."""
    g = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        g.add_module(name)
    g.add_import(importer="pkg.a", imported="pkg.b")
    g.add_import(importer="pkg.b", imported="pkg.c")
    assert sibling_cycle(g, "pkg") is None
    g.add_import(importer="pkg.c", imported="pkg.a")
    assert sibling_cycle(g, "pkg") is not None
