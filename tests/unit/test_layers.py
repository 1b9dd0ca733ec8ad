"""The layering rule (docs/architecture.md), checked on the source: every import points down.

From the bottom: domain/ → projections/ → streams/ → services/ → api/ → ingest/ and
queries/ (the HTTP adapters; one floor) → infra/ (configuration, clients, wiring).
domain/ imports no driver. Imports under `if TYPE_CHECKING:` count too: a type
named from a higher floor is still knowledge of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FLOORS = {"domain": 0, "projections": 1, "streams": 2, "services": 3, "api": 4, "ingest": 5, "queries": 5, "infra": 6}
DRIVERS = {"kafka", "faust", "clickhouse_connect", "chdb", "fastapi", "starlette", "uvicorn", "httpx"}
LONGEST = 60


def _modules() -> list[Path]:
    return sorted(p for package in FLOORS for p in (ROOT / package).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_import_points_down() -> None:
    upward = []
    for path in _modules():
        package = path.relative_to(ROOT).parts[0]
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in FLOORS and FLOORS[top] > FLOORS[package]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
            if package == "domain" and top in DRIVERS:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports the driver {name}")
    assert upward == [], "imports that run up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_no_function_is_long_without_saying_why(package: str) -> None:
    """A function over 60 lines says in its docstring why it is one piece (e.g. "(Long only by ...)")."""
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LONGEST and "long" not in (ast.get_docstring(node) or "").lower():
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "functions over 60 lines without a reason:\n" + "\n".join(long)
