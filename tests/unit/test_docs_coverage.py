"""The contributor's map and the events table stay complete as the code changes.

Both are read by people deciding where a change goes or what to alert on; a
module or an action missing from them is a sentence that has become false.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import worksync_sa.events

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worksync_sa"


def modules() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "static" not in path.parts and "templates" not in path.parts
    }


def contributing_table() -> set[str]:
    """The module paths named in the first column of CONTRIBUTING's table of modules."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split("## The modules", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            named.update(re.findall(r"`([^`]+\.py)`", first))
    return named


def test_every_module_is_in_contributings_table() -> None:
    missing = modules() - contributing_table()
    assert missing == set(), f"add these to CONTRIBUTING.md's table of modules: {sorted(missing)}"


def test_contributings_table_names_no_module_that_is_gone() -> None:
    gone = contributing_table() - modules()
    assert gone == set(), f"CONTRIBUTING.md's table names modules that do not exist: {sorted(gone)}"


def emitted_actions() -> set[str]:
    """Every ``Event("<action>", ...)`` the package builds, read from its source."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Event"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value))
    return found


def events_table() -> set[str]:
    doc = worksync_sa.events.__doc__ or ""
    rows = doc.split("action ", 1)[1]
    return set(re.findall(r"^([a-z_]+) ", rows, re.M))


def test_every_emitted_action_is_in_the_events_table() -> None:
    emitted = emitted_actions()
    assert {"created", "claimed", "finished"} <= emitted  # the reader sees the calls
    missing = emitted - events_table()
    assert missing == set(), f"add these actions to the table in events.py: {sorted(missing)}"


def test_the_events_table_names_only_emitted_actions() -> None:
    extra = events_table() - emitted_actions()
    assert extra == set(), f"events.py's table names actions nothing emits: {sorted(extra)}"
