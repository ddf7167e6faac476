"""The layers the package's tree shows, held by its imports (read with ``ast``, nothing run).

``_sql`` builds statements, ``_run`` carries out a service's calls, ``_core``
decides. A layer may use those below it and never one above, and no core
may know which runner, blocking or asyncio, will drive it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "worksync_sa"
RUNNERS = {"worksync_sa._run.blocking", "worksync_sa._run.async_runner"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, lazy imports in functions included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, *([node.module] if node.module else [])])
            else:
                stem = node.module or ""
            found.add(stem)
            # ``from . import x`` and ``from ._sql import page`` import modules too
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("worksync_sa")}


def layer_modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def in_layer(module: str, layer: str) -> bool:
    return module == f"worksync_sa.{layer}" or module.startswith(f"worksync_sa.{layer}.")


def test_every_private_module_lives_in_a_layer() -> None:
    """Only the public modules and ``__main__`` sit at the top; the private ones are in a layer."""
    loose = [p.name for p in PACKAGE.glob("_*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []


@pytest.mark.parametrize("path", layer_modules("_sql"), ids=lambda p: p.stem)
def test_the_sql_layer_imports_neither_runners_nor_cores(path: Path) -> None:
    wrong = {m for m in imported(path) if in_layer(m, "_run") or in_layer(m, "_core")}
    assert wrong == set(), f"{module_name(path)} reaches up into {sorted(wrong)}"


@pytest.mark.parametrize("path", layer_modules("_sql"), ids=lambda p: p.stem)
def test_the_sql_layer_imports_no_service(path: Path) -> None:
    """Statements know the table (``models``) and its rules, never who sends them."""
    allowed = {"errors", "models", "sequences", "_sql"}
    wrong = {m for m in imported(path) if m != "worksync_sa" and m.split(".")[1] not in allowed}
    assert wrong == set(), f"{module_name(path)} imports {sorted(wrong)}"


@pytest.mark.parametrize("path", layer_modules("_run"), ids=lambda p: p.stem)
def test_the_run_layer_never_imports_a_core(path: Path) -> None:
    wrong = {m for m in imported(path) if in_layer(m, "_core")}
    assert wrong == set(), f"{module_name(path)} reaches up into {sorted(wrong)}"


@pytest.mark.parametrize("path", layer_modules("_core"), ids=lambda p: p.stem)
def test_no_core_imports_a_particular_runner(path: Path) -> None:
    wrong = {m for m in imported(path) if any(m == r or m.startswith(r + ".") for r in RUNNERS)}
    assert wrong == set(), f"{module_name(path)} depends on the runner {sorted(wrong)}"


@pytest.mark.parametrize(
    "path",
    [*layer_modules("_sql"), *layer_modules("_run"), *layer_modules("_core")],
    ids=module_name,
)
def test_no_layer_imports_the_public_services(path: Path) -> None:
    """The services sit on top: a layer importing one would make a cycle of layers."""
    services = {
        "scheduler",
        "async_scheduler",
        "sync",
        "async_sync",
        "worker",
        "async_worker",
        "ledger",
        "metrics",
        "demo",
        "cli",
        "web",
        "schema",
        "config_file",
    }
    wrong = {m for m in imported(path) if m.count(".") >= 1 and m.split(".")[1] in services}
    assert wrong == set(), f"{module_name(path)} imports {sorted(wrong)}"


def test_the_checker_sees_imports() -> None:
    """Against a false pass: the reader finds the imports that do exist."""
    passes = imported(PACKAGE / "_core" / "passes.py")
    assert "worksync_sa._run.steps" in passes
    assert "worksync_sa._core.repositories" in passes
    assert "worksync_sa.web.texts" in imported(PACKAGE / "web" / "render.py")  # from . import x
    assert "worksync_sa._sql.page" in imported(PACKAGE / "repository.py")


STATEMENTS = {
    f"worksync_sa._sql.{m}"
    for m in ("claims", "schedule", "maintenance", "ledger", "page", "actions")
}
"""The feature modules of ``_sql``: the builders of the statements a repository runs."""


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "_sql" not in p.parts and p.name not in ("repository.py", "repositories.py")
    ),
    ids=module_name,
)
def test_only_the_repositories_build_statements(path: Path) -> None:
    """One SQL boundary: a service or the page reads and writes through a repository."""
    wrong = imported(path) & STATEMENTS
    assert wrong == set(), f"{module_name(path)} builds statements itself: {sorted(wrong)}"
