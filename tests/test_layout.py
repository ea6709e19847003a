"""The package layout: no import cycle, modules small enough to read, every command documented."""

import ast
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sceneclf.cli import cli

PACKAGE = Path(__file__).resolve().parent.parent / "sceneclf"
README = PACKAGE.parent / "README.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """sceneclf modules `path` imports anywhere in it (a function's local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: imports(p, set(files)) - {m} for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_sceneclf():
    edges = graph()
    assert "sceneclf.cli.group" in edges and "sceneclf.search.study" in edges
    # A package's __init__ importing its own modules is how it exports them, not a cycle.
    edges = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in edges.items()}
    assert find_cycle(edges) is None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_modules_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_every_command_is_in_the_readme_and_has_an_example():
    readme = README.read_text()
    for name, command in cli.commands.items():
        assert f"sceneclf {name}" in readme, name
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, name


def test_no_bench_module_shadows_the_standard_library():
    """`python bench/gpu.py` puts bench/ first on sys.path: a bench/profile.py broke torch's import of cProfile."""
    names = {p.stem for p in (PACKAGE.parent / "bench").glob("*.py")}
    assert not names & set(sys.stdlib_module_names)
