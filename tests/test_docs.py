"""The README is a landing page, and what it and the docs pages show still works.

The README stays short (the guides live in docs/, built by scripts/docs), keeps the
Quick start's two commands, and links only to files that exist. Its one complete
example runs here on SQLite; the docs' home page repeats it word for word. Every Python
block in the README and the docs pages is valid Python.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import runpy
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from worksync_sa import Scheduler, SchedulerConfig, Worker

from .conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def fenced(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``text`` in ``language``, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def section(text: str, heading: str) -> str:
    """The text under the ``## heading`` line, up to the next ``## `` heading."""
    start = text.index(f"\n{heading}\n")
    following = text.find("\n## ", start + 1)
    return text[start : following if following != -1 else len(text)]


def test_the_readme_is_a_landing_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; move the rest to docs/"


def test_the_quick_start_is_the_demo_then_the_tests() -> None:
    quick = section(README.read_text(), "## Quick start")
    assert fenced(quick, "sh")[:2] == ["./scripts/demo\n", "./scripts/test\n"]


def test_every_relative_link_of_the_readme_exists() -> None:
    text = README.read_text()
    targets = [target for target in LINK.findall(text) if not urlsplit(target).scheme]
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        path = unquote(urlsplit(target).path)
        if path:  # a bare #anchor points into the README itself
            assert (ROOT / path).exists(), f"README.md links to {target}, which does not exist"


def test_the_docs_home_page_repeats_the_readme() -> None:
    """Quick start, install and the complete example, word for word, links aside."""
    readme, home = README.read_text(), (DOCS / "index.md").read_text()
    for heading in ("## Quick start", "## Install", "## A complete example"):
        ours = section(readme, heading).replace("](docs/", "](")
        assert ours == section(home, heading), heading


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_block_is_valid_python(page: Path) -> None:
    for block in fenced(page.read_text(), "python"):
        ast.parse(block, filename=str(page))


def test_the_readmes_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its module part on SQLite, then a pass and the worker's handlers on due ticks."""
    (example,) = fenced(section(README.read_text(), "## A complete example"), "python")
    path = tmp_path / "jobs.py"
    path.write_text(example)
    monkeypatch.chdir(tmp_path)  # its database, works.db, lands here
    names: dict[str, Any] = runpy.run_path(str(path), run_name="jobs")  # not __main__
    engine, works = names["engine"], names["works"]
    try:
        assert [work.name for work in works] == ["report", "sync"]
        config = SchedulerConfig(lookahead="1m", interval="10s")
        now = datetime.now(timezone.utc)
        scheduler = Scheduler(engine, works, config)
        try:  # rows for the ticks of the last 30 s, so three ticks of `sync` are due now
            assert scheduler.run_pass(now=now - timedelta(seconds=30)) >= 3 * 3
        finally:
            scheduler.close()
        worker = Worker(
            engine, works, {"report": names["send_report"], "sync": names["sync_shard"]}
        )
        try:
            assert worker.run_due() >= 3 * 3  # each due tick's three shards
        finally:
            worker.close()
        assert (tmp_path / "works.db").exists()
    finally:
        engine.dispose()


def test_the_docs_hook_shows_sphinx_roles_and_escaped_pipes_plainly() -> None:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts/docs_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = "<p>Call :meth:<code>tick</code> on a :class:<code>Scheduler</code>::</p>"
    assert (
        hooks.on_page_content(html) == "<p>Call <code>tick</code> on a <code>Scheduler</code>:</p>"
    )
    cell = "<td><code>--auth-token TOKEN \\| --no-auth</code> or a\\|b</td>"
    assert (
        hooks.on_page_content(cell)
        == "<td><code>--auth-token TOKEN | --no-auth</code> or a\\|b</td>"
    )
