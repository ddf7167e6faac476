"""The page's actions clicked in Chromium, beside a running fleet, on every database.

Two schedulers and two workers run on engines of their own (other hosts, as
far as the table can tell) while a browser signed in with the write token
pauses a work, runs it now, retries that tick's failed run and resumes it.
What each click did is read back from the tables with plain SQL: no tick made
while paused, the run-now tick claimed by the fleet (its first attempt fails),
the retried tick claimed again and run to success, ticks made again after the
resume, and each action in
the ledger with who clicked it. A browser holding only the read token gets
no buttons, only a way to sign in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from worksync_sa import SchedulerConfig, Work, WorkStatus
from worksync_sa.models import as_utc, table_named

from .conftest import Db
from .extras import skip_module

try:
    from worksync_sa.web import app

    from .test_web_browser import assert_clean, browser_ready, driver, serving, wait_for
except ModuleNotFoundError as missing:
    skip_module(missing)

pytestmark = pytest.mark.browser

__all__ = ["browser_ready", "driver"]  # fixtures used by name

READ = "read-token-0123456789"
WRITE = "write-token-0123456789"
FAST = SchedulerConfig(lookahead="4s", interval="1s")
WORK = Work("tick", "@every 1s", max_run=1)


def queued_after(db: Db, moment: datetime) -> int:
    """QUEUED rows of the work's cron ticks after ``moment`` (run-now rows left out)."""
    t = table_named(db.table)
    with db.engine.connect() as conn:
        select = sa.select(sa.func.count()).where(
            t.c.name == WORK.name,
            t.c.status == WorkStatus.QUEUED.value,
            t.c.tick_at > moment,
            t.c.slot >= 0,
        )
        return int(conn.execute(select).scalar_one())


def made_after(db: Db, moment: datetime) -> int:
    """Rows of the work's cron ticks created after ``moment`` by any scheduler."""
    t = table_named(db.table)
    with db.engine.connect() as conn:
        select = sa.select(sa.func.count()).where(
            t.c.name == WORK.name, t.c.created_at > moment, t.c.slot >= 0
        )
        return int(conn.execute(select).scalar_one())


def ledger(db: Db) -> list[tuple[str, str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT action, actor, reason FROM {db.table}_actions ORDER BY id")
        )
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def first_run_now_fails(claim: Any) -> None:
    """Cron ticks succeed; a run-now tick fails its first attempt, so it has one to retry."""
    if claim.sequence.startswith("run-now ") and claim.attempt == 1:
        raise RuntimeError("the first attempt fails")


@pytest.fixture
def fleet(db: Db) -> Iterator[list[sa.Engine]]:
    """Two schedulers and two workers of ``tick``, each on an engine of its own."""
    engines = [sa.create_engine(db.url) for _ in range(4)]
    services: list[Any] = []
    try:
        for engine in engines[:2]:
            services.append(db.Scheduler(engine, [WORK], FAST, table=db.table))
        for engine in engines[2:]:
            services.append(db.Worker(engine, [WORK], first_run_now_fails, table=db.table))
        for service in services:
            service.start()
        yield engines
    finally:
        for service in services:
            service.close()
        for engine in engines:
            engine.dispose()


def click_action(driver: Any, action: str, reason: str, until: str = "") -> str:
    """Click ``action`` on the work's line, fill the form, confirm; the result line's text."""
    from selenium.webdriver.common.by import By

    def button() -> Any:
        for found in driver.find_elements(By.CSS_SELECTOR, "#fleet button.act"):
            if found.get_attribute("data-action") == action:
                return found
        return None

    wait_for(button, f"a {action} button").click()
    wait_for(lambda: driver.find_element(By.ID, "act").is_displayed(), "the action form")
    if until:
        driver.find_element(By.ID, "act-until").send_keys(until)
    driver.find_element(By.ID, "act-reason").send_keys(reason)
    driver.execute_script('document.getElementById("act-result").textContent = "";')
    driver.find_element(By.ID, "act-confirm").click()
    text: str = wait_for(
        lambda: driver.find_element(By.ID, "act-result").text, f"the result of {action}"
    )
    return text


def test_pause_run_now_retry_and_resume_clicked_in_chromium_are_honoured_by_the_fleet(
    driver: Any, db: Db, fleet: list[sa.Engine]
) -> None:
    from selenium.webdriver.common.by import By

    page = app(
        db.engine, db.table, auth_token=READ, write_token=WRITE, refresh=timedelta(seconds=1)
    )
    try:
        with serving(page) as url:
            wait_for(lambda: queued_after(db, as_utc(db.db_now())) > 0, "the schedulers' ticks")
            driver.get(url.replace("http://", f"http://ann:{WRITE}@"))
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#fleet button.act"), "buttons")

            result = click_action(driver, "pause", "deploy")
            assert "refused" not in result, result
            assert result.startswith("pause tick: paused until resumed"), result
            paused_at = as_utc(db.db_now())
            time.sleep(3.5)  # three passes of each scheduler
            assert queued_after(db, paused_at) == 0
            assert made_after(db, paused_at) == 0
            state = wait_for(
                lambda: driver.find_element(By.CSS_SELECTOR, "#fleet tr.paused td.state").text,
                "the work shown paused",
            )
            assert state == "paused"

            result = click_action(driver, "run-now", "catch up")
            assert "tick run-now " in result, result
            t = table_named(db.table)

            def run_now_rows() -> list[tuple[str, int, int | None]]:
                with db.engine.connect() as conn:
                    rows = conn.execute(
                        sa.select(t.c.sequence, t.c.status, t.c.attempts).where(
                            t.c.sequence.like("run-now %")
                        )
                    ).all()
                return [(row.sequence, row.status, row.attempts) for row in rows]

            wait_for(
                lambda: [row[1:] for row in run_now_rows()] == [(WorkStatus.FAILED, 1)],
                "the run-now tick claimed by a worker, and failed",
            )
            ((label, _, _),) = run_now_rows()

            # Retry it from its details: the history (latest first) lists it on a reload.
            driver.get(url.replace("http://", f"http://ann:{WRITE}@"))

            def tick_link() -> Any:
                for found in driver.find_elements(By.CSS_SELECTOR, "#history button.tick-link"):
                    if found.get_attribute("data-sequence") == label:
                        return found
                return None

            wait_for(tick_link, "the run-now tick in the history").click()
            retry = driver.find_element(By.ID, "details-retry")
            wait_for(retry.is_displayed, "the retry button of a failed tick")
            retry.click()
            wait_for(lambda: driver.find_element(By.ID, "act").is_displayed(), "the form")
            driver.find_element(By.ID, "act-reason").send_keys("flaky")
            driver.execute_script('document.getElementById("act-result").textContent = "";')
            driver.find_element(By.ID, "act-confirm").click()
            result = wait_for(lambda: driver.find_element(By.ID, "act-result").text, "retried")
            assert result.startswith(f"retry tick: tick {label} offered again"), result
            wait_for(
                lambda: run_now_rows() == [(label, WorkStatus.SUCCESS, 2)],
                "the retried tick claimed again by a worker, and run to success",
            )

            result = click_action(driver, "resume", "done")
            assert result.startswith("resume tick: resumed"), result
            resumed_at = as_utc(db.db_now())
            wait_for(lambda: queued_after(db, resumed_at) > 0, "ticks made again")
            assert ledger(db) == [
                ("pause", "ann (web, 127.0.0.1)", "deploy"),
                ("run-now", "ann (web, 127.0.0.1)", "catch up"),
                ("retry", "ann (web, 127.0.0.1)", "flaky"),
                ("resume", "ann (web, 127.0.0.1)", "done"),
            ]
            assert_clean(driver)
    finally:
        page.close()


def test_a_browser_with_the_read_token_gets_no_buttons_only_a_way_to_sign_in(
    driver: Any, db: Db, fleet: list[sa.Engine]
) -> None:
    from selenium.webdriver.common.by import By

    page = app(db.engine, db.table, auth_token=READ, write_token=WRITE)
    try:
        with serving(page) as url:
            wait_for(lambda: queued_after(db, as_utc(db.db_now())) > 0, "the schedulers' ticks")
            driver.get(url.replace("http://", f"http://ann:{READ}@"))
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#fleet tbody tr"), "works")
            assert driver.find_elements(By.CSS_SELECTOR, "button.act") == []
            assert driver.find_elements(By.ID, "act") == []
            assert driver.find_element(By.ID, "sign-in").text == "sign in to act"
            # A script of the page's own origin, with the read token only, is refused.
            status = driver.execute_async_script(
                """const done = arguments[arguments.length - 1];
                   const url = new URL("/api/actions/pause", window.location.origin);
                   fetch(url, {method: "POST", credentials: "same-origin",
                     headers: {"Content-Type": "application/json"},
                     body: JSON.stringify({name: "tick"})})
                     .then((r) => done(r.status), (e) => done(String(e)));"""
            )
            assert status == 403
            assert ledger(db) == []
    finally:
        page.close()
