"""The layer rule (DESIGN §1), read off the source with ``ast``: every import, at module level or
inside a function, is an edge. No two modules import each other (directly or round a cycle); the
float model builder does not know the apply stage; the planner imports no ONNX."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# export/ and kernels/ install as compress.export / compress.kernels (setup.py)
FOLDERS = {"compress": ROOT / "compress", "compress.export": ROOT / "export", "compress.kernels": ROOT / "kernels"}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            if package == "compress" and relative.parts[0] in ("export", "kernels"):
                continue  # the symlinks of a worktree; read from the real folders
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            modules[".".join((package, *parts))] = path
    return modules


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in ``path`` (``from a import b``: ``a.b`` when
    that is a module, else ``a``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else node.module)
    return names


GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _edges_between_packages_and_parents(name: str) -> set[str]:
    """A package's ``__init__`` importing its own submodules is not a cycle of layers."""
    return {m for m in GRAPH[name] if not m.startswith(f"{name}.")}


def _cycle() -> list[str] | None:
    """One import cycle, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(_edges_between_packages_and_parents(node)):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return None


def _importers(prefix: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    hits = {}
    for name, path in MODULES.items():
        if name == prefix or name.startswith(f"{prefix}."):
            bad = {m for m in _imports(path) if m.split(".")[0] in forbidden or m.startswith(forbidden)}
            if bad:
                hits[name] = bad
    return hits


def test_the_graph_is_read() -> None:
    """The reader finds the modules and edges a known import makes (so the checks below can fail)."""
    assert "compress.cli.main" in MODULES and "compress.export.onnx_qdq" in MODULES
    assert "compress.cli.apply" in GRAPH["compress.cli.main"]
    assert "compress.pipeline.apply" in GRAPH["compress.cli.apply"]


def test_no_import_cycle() -> None:
    cycle = _cycle()
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_models_do_not_import_the_apply_stage_or_checkpoints() -> None:
    hits = _importers("compress.models", ("compress.apply", "compress.checkpoint", "compress.pipeline"))
    assert not hits, f"compress.models imports: {hits}"


def test_cli_and_demo_do_not_reenter_the_cli() -> None:
    hits = {n: GRAPH[n] & {"compress.cli.main"} for n in ("compress.demo", "compress.cli.demo")}
    assert not any(hits.values()), f"the demo re-enters the CLI: {hits}"


def test_plan_imports_no_onnx() -> None:
    hits = _importers("compress.plan", ("onnx", "onnxruntime", "compress.export"))
    assert not hits, f"compress.plan imports: {hits}"
