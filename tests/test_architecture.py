"""The package layout of SPEC section 2, checked on the source: dependencies between lvg's sub-packages flow
one way, only lvg/cli imports typer, and files and functions (of lvg and of the benchmarks) stay small
enough to read.

Imports are read with ``ast`` from every file, including the imports inside functions (lazy imports are
dependencies too: they only move the moment the cycle bites).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LVG = ROOT / "lvg"

#: What each part of lvg may import (besides itself). config -> core -> kernels -> modeling -> {train,
#: export}, core -> runtime -> integrations (adapters to other engines), everything -> cli; runtime reaches
#: modeling only for the lazily loaded torch backend; the root package exposes the runtime's Grounder.
ALLOWED: dict[str, set[str]] = {
    "_version": set(),
    "_lazy": set(),
    "errors": set(),
    "_progress": set(),
    "config": {"errors"},
    "core": {"config", "errors", "_version"},
    "kernels": {"core", "config", "errors"},
    "modeling": {"kernels", "core", "config", "errors"},
    "train": {"modeling", "kernels", "core", "config", "errors", "_progress"},
    "export": {"modeling", "kernels", "core", "config", "errors", "_lazy"},
    "hub": {"train", "modeling", "core", "config", "errors", "_progress", "_version"},
    "runtime": {"core", "config", "errors", "modeling"},
    "integrations": {"runtime", "core", "config", "errors"},
    "cli": {"hub", "train", "export", "runtime", "modeling", "kernels", "core", "config", "errors", "_progress",
            "_version"},
    "__init__": {"runtime", "core", "errors", "_version", "_lazy"},
}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 100


def _sources() -> list[Path]:
    return sorted(LVG.rglob("*.py"))


def _part(path: Path) -> str:
    """The part of lvg a file belongs to: its first path component below lvg/ (a module's stem)."""
    first = path.relative_to(LVG).parts[0]
    return first[:-3] if first.endswith(".py") else first


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function bodies too), as absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's own package
                package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from lvg import errors` imports the module lvg.errors.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _lvg_parts(names: set[str]) -> set[str]:
    parts = set()
    for name in names:
        pieces = name.split(".")
        if pieces[0] != "lvg":
            continue
        if len(pieces) == 1:
            parts.add("__init__")
        elif (LVG / pieces[1]).is_dir() or (LVG / f"{pieces[1]}.py").is_file():
            parts.add(pieces[1])
    return parts


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources():
        part = _part(path)
        graph.setdefault(part, set()).update(_lvg_parts(_imports(path)) - {part})
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = LVG / "train" / "__init__.py"
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from lvg.runtime import grounder\n    import lvg.export.trt\n")
    assert _lvg_parts(_imports(fake)) == {"runtime", "export"}
    assert _module(pkg) == "lvg.train"
    assert "lvg.train.state" in _imports(LVG / "train" / "trainer.py")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_sub_packages() -> None:
    graph = _graph()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_dependencies_flow_one_way() -> None:
    graph = _graph()
    assert set(graph) <= set(ALLOWED), f"parts without a declared place: {sorted(set(graph) - set(ALLOWED))}"
    wrong = {part: sorted(deps - ALLOWED[part]) for part, deps in graph.items() if deps - ALLOWED[part]}
    assert not wrong, f"imports against the layering (part: what it must not import): {wrong}"


def test_only_the_cli_imports_typer() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _sources()
                 if _part(p) != "cli" and any(n.split(".")[0] in ("typer", "click") for n in _imports(p))]
    assert offenders == []


@pytest.mark.parametrize("path", _sources() + sorted((ROOT / "tests").rglob("*.py"))
                         + [p for d in ("benchmarks", "examples", "docs") for p in sorted((ROOT / d).glob("*.py"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_functions_stay_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"
