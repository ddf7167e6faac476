"""The status page in a real browser: Debian's headless Chromium, driven by Selenium.

uvicorn serves the page from a thread on a free port of 127.0.0.1, over a
real table holding the known history of ``test_web`` (hostile names and
errors included). The tests read the figures off the rendered page and
compare them with what the history itself says, click into ticks, filter,
page through the history, log in with the token, watch a change in the
table appear without a reload, and take screenshots (into pytest's
``tmp_path``). No alert may fire, the console must show no error (a
Content-Security-Policy violation is one), and the table must be exactly as
it was after the browsing.

Chromium and chromedriver come from Debian (``chromium``, ``chromium-driver``;
``.ci/run`` and ``scripts/test`` install them). Without them these tests
are skipped, except under CI (``CI=true``), where that is a failure.

``WORKSYNC_UPDATE_DOCS=1`` also writes the docs' picture, ``docs/web.png``,
from a fixed demonstration history at 1280x800.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from worksync_sa.models import action_table, pause_table, table_named, work_table

from .conftest import ROOT, Db
from .extras import skip_module

try:  # the web extra; test_web skips, naming what is missing, without it or httpx
    from worksync_sa.web import StatusPage, app

    from .test_web import (
        ESCAPED,
        HOSTILE_CLAIMER,
        IMG_TEXT,
        LONG_ERROR,
        LONG_NAME,
        MINUTE,
        MISSED_TEXT,
        NOW,
        RTL_NAME,
        SCRIPT_NAME,
        SUCCESS,
        TOKEN,
        History,
        _row,
        build,
        dump,
        fleet_history,
        hostile_text_history,
        label,
        row_of,
        write,
    )
except ModuleNotFoundError as missing:
    skip_module(missing)

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("WORKSYNC_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("WORKSYNC_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT = 15.0
"""Seconds to wait for the page to change (a refresh comes every second here)."""


def _missing() -> str | None:
    """What this machine lacks to drive a browser, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} not found: apt-get install {package} (scripts/test does)"
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Skip without a browser, but fail under CI: there, a skipped browser test hides a bug."""
    missing = _missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests must run under CI: {missing}")
    pytest.skip(missing)


ALERT_TRAP = """
window.__alerts = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = function (message) { window.__alerts.push(String(message)); };
}
"""
"""Installed before any page script: a fired alert is recorded instead of blocking."""


@pytest.fixture
def driver(browser_ready: None) -> Iterator[Any]:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        "--lang=en-US",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--font-render-hinting=none",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.set_page_load_timeout(30)
    chrome.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_TRAP})
    try:
        yield chrome
    finally:
        chrome.quit()


@contextlib.contextmanager
def serving(asgi: Any) -> Iterator[str]:
    """uvicorn on a free port of 127.0.0.1, in a thread; yields the page's URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(asgi, log_level="warning", lifespan="off", log_config=None)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@dataclass
class Site:
    """The page served over a known history."""

    url: str
    db: Db
    history: History
    page: StatusPage


@contextlib.contextmanager
def site(db: Db, history: History, **options: Any) -> Iterator[Site]:
    status_page = app(
        db.engine,
        db.table,
        clock=lambda: NOW,
        allowed_hosts=["127.0.0.1", "localhost"],
        **options,
    )
    try:
        with serving(status_page) as url:
            yield Site(url, db, history, status_page)
    finally:
        status_page.close()


@pytest.fixture
def known(db: Db) -> Iterator[Site]:
    """The known history, served with no refresh during a test (clicks never meet a stale node)."""
    history = build()
    write(db.engine, db.table, history)
    with site(db, history, refresh=timedelta(hours=1), page_size=7) as served:
        yield served


# -- what the browser shows -------------------------------------------------------------


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            found = condition()
        except Exception as exc:  # a node replaced by a refresh while reading it
            last, found = exc, None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def texts(driver: Any, selector: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def summary_rows(driver: Any) -> dict[str, list[str]]:
    """The summary as shown, read in one script call (a refresh cannot land halfway)."""
    rows: list[list[str]] = driver.execute_script(
        """return Array.from(document.querySelectorAll("#summary tbody tr"))
             .map((row) => Array.from(row.cells).map((cell) => cell.innerText.trim()));"""
    )
    return {cells[0]: cells for cells in rows}


def cells_of(driver: Any, name: str) -> list[dict[str, str]]:
    script = """
      return Array.from(document.querySelectorAll("#timelines .cell"))
        .filter((cell) => cell.dataset.name === arguments[0])
        .map((cell) => ({class: cell.className, tick: cell.dataset.tick, title: cell.title}));
    """
    found: list[dict[str, str]] = driver.execute_script(script, name)
    return found


def cell_button(driver: Any, name: str, tick: datetime) -> Any:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "#timelines .cell"):
        if (
            button.get_attribute("data-name") == name
            and button.get_attribute("data-tick") == tick.isoformat()
        ):
            return button
    raise AssertionError(f"no cell for {name} at {tick}")


def details(driver: Any) -> list[list[str]]:
    found: list[list[str]] = driver.execute_script(
        """return Array.from(document.querySelectorAll("#details-rows tbody tr"))
             .map((row) => Array.from(row.cells).map((cell) => cell.innerText.trim()));"""
    )
    return found


def millis(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def assert_clean(driver: Any) -> None:
    """No alert fired, nothing blocked, no script error: the console has nothing severe."""
    from selenium.common.exceptions import NoAlertPresentException

    assert driver.execute_script("return window.__alerts") == []
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    severe = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert severe == [], severe


# -- the tests ----------------------------------------------------------------------------


def test_the_page_shows_the_figures_of_the_known_history(
    driver: Any, known: Site, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    before = dump(known.db.engine, known.db.table)
    driver.get(known.url)
    assert driver.title == f"worksync · {known.db.table}"
    shown = summary_rows(driver)
    assert set(shown) == set(known.history.works)
    for name, expected in known.history.works.items():
        assert shown[name] == expected.row(), name
    for name, expected in known.history.works.items():
        outcomes = [cell["class"].split()[1] for cell in cells_of(driver, name)]
        assert outcomes == expected.outcomes, name
    # Hostile text is on the page as text: the names as typed, no element made of them.
    assert SCRIPT_NAME in shown
    assert IMG_TEXT in shown
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1
    # The history's first page holds the latest ticks; the hostile ones are 30 minutes old.
    driver.get(known.url + "?" + urlencode({"name": SCRIPT_NAME}))
    assert texts(driver, "#history td.error") == [IMG_TEXT]
    assert driver.find_elements(By.TAG_NAME, "img") == []
    driver.get(known.url)
    # The lag charts: one per work, the worst lag of report rounded up to 5 s.
    charts = {
        figure.get_attribute("data-work"): figure
        for figure in driver.find_elements(By.CSS_SELECTOR, "#charts figure")
    }
    assert set(charts) == set(known.history.works)
    assert charts["report"].find_element(By.CSS_SELECTOR, ".top").text == "max 5s"
    points = charts["report"].find_element(By.TAG_NAME, "polyline").get_attribute("points")
    assert points is not None
    assert len(points.split()) == 29  # one per claimed due minute
    driver.save_screenshot(str(tmp_path / "page.png"))
    assert_clean(driver)
    assert dump(known.db.engine, known.db.table) == before


def test_clicking_a_tick_shows_who_ran_it_when_for_how_long_and_why(
    driver: Any, known: Site, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    before = dump(known.db.engine, known.db.table)
    driver.get(known.url)
    tick = NOW - 25 * MINUTE
    written = row_of(known.history, "report", tick)
    button = cell_button(driver, "report", tick)
    ActionChains(driver).move_to_element(button).perform()  # hover: its figures as a tooltip
    assert button.get_attribute("title").startswith(f"{label(tick)} UTC · failed · ")
    button.click()
    panel = driver.find_element(By.ID, "details")
    wait_for(lambda: panel.is_displayed() and details(driver), "the tick's rows")
    assert driver.find_element(By.ID, "details-heading").text == f"report · {label(tick)} UTC"
    (row,) = details(driver)
    assert row == [
        "0",
        "failed",
        written["claimed_by"],
        millis(written["started_at"]),
        millis(written["finished_at"]),
        "2s",
        "1",
        "worker",
        "db timeout at minute 25",
    ]
    assert "selected" in (cell_button(driver, "report", tick).get_attribute("class") or "")
    driver.save_screenshot(str(tmp_path / "tick.png"))

    # A tick of three slots: two runs by two hosts, one slot missed.
    shard_tick = NOW - 10 * MINUTE
    cell_button(driver, "shard", shard_tick).click()
    wait_for(lambda: len(details(driver)) == 3, "the shard tick's three rows")
    claimers = [row[2] for row in details(driver)]
    assert claimers == ["host-a:101", "host-b:202", "-"]
    assert [row[1] for row in details(driver)] == ["success", "success", "failed"]

    # Hostile text in a tick's rows stays text.
    cell_button(driver, SCRIPT_NAME, NOW - 30 * MINUTE).click()
    wait_for(lambda: details(driver) and details(driver)[0][2] == HOSTILE_CLAIMER, "hostile row")
    (row,) = details(driver)
    assert row[-1] == IMG_TEXT
    assert driver.find_element(By.ID, "details-heading").text.startswith(SCRIPT_NAME)
    assert driver.find_elements(By.CSS_SELECTOR, "#details img, #details b") == []

    # The history's tick times open the same details: shard's latest tick (upcoming, the
    # history's first line for shard), three rows still queued.
    for line in driver.find_elements(By.CSS_SELECTOR, "#history tbody tr"):
        if line.find_elements(By.TAG_NAME, "td")[1].text == "shard":
            line.find_element(By.CSS_SELECTOR, ".tick-link").click()
            break
    wait_for(
        lambda: (
            driver.find_element(By.ID, "details-heading").text
            == f"shard · {label(NOW + 5 * MINUTE)} UTC"
        ),
        "a history tick's rows",
    )
    assert [row[1] for row in details(driver)] == ["queued", "queued", "queued"]
    driver.save_screenshot(str(tmp_path / "history-tick.png"))
    assert_clean(driver)
    assert dump(known.db.engine, known.db.table) == before


def test_the_filter_and_the_history_pages(driver: Any, known: Site, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    before = dump(known.db.engine, known.db.table)
    driver.get(known.url)
    Select(driver.find_element(By.NAME, "name")).select_by_value("report")
    since = driver.find_element(By.NAME, "since")
    since.clear()
    since.send_keys("3h")
    driver.find_element(By.CSS_SELECTOR, ".filter button[type=submit]").click()
    wait_for(lambda: "name=report" in driver.current_url, "the filtered page")
    shown = summary_rows(driver)
    assert list(shown) == ["report"]
    assert shown["report"][3] == "34"  # the tick two hours ago is in range now
    # Page through report's 34 ticks, 7 a page, by the page's own links.
    seen: list[str] = []
    for _ in range(10):
        seen += texts(driver, "#history tbody tr td:first-child")
        links = driver.find_elements(By.ID, "next-page")
        if not links:
            break
        links[0].click()
        wait_for(lambda: "before=" in driver.current_url, "the next history page")
    report_ticks = sorted(
        (label(row["tick_at"]) for row in known.history.rows if row["name"] == "report"),
        reverse=True,
    )
    assert seen == report_ticks  # the latest first, paged back to the oldest
    assert driver.find_elements(By.ID, "first-page")
    driver.save_screenshot(str(tmp_path / "filtered.png"))
    assert_clean(driver)
    assert dump(known.db.engine, known.db.table) == before


@pytest.fixture
def live(db: Db) -> Iterator[Site]:
    """The known history, refreshed every second."""
    history = build()
    write(db.engine, db.table, history)
    with site(db, history, refresh=timedelta(seconds=1)) as served:
        yield served


def test_a_change_in_the_table_appears_without_a_reload(
    driver: Any, live: Site, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    known = live
    driver.get(known.url)
    driver.execute_script("window.__marker = 'still the same page';")
    first = summary_rows(driver)
    assert "newcomer" not in first
    wait_for(lambda: driver.execute_script("return document.body.dataset.refreshes"), "a refresh")
    assert summary_rows(driver) == first  # a refresh writes the figures the page had
    running = NOW - MINUTE
    assert cells_of(driver, "report")[29]["class"].split()[1] == "running"
    # Another process finishes the running tick and a new work's tick succeeds.
    t = table_named(known.db.table)
    started = row_of(known.history, "report", running)["started_at"]
    with known.db.engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.name == "report", t.c.tick_at == running)
            .values(status=SUCCESS, finished_at=started + timedelta(seconds=3), closed_by="worker")
        )
        tick = NOW - 2 * MINUTE
        conn.execute(
            sa.insert(t),
            [
                _row(
                    "newcomer",
                    tick,
                    0,
                    SUCCESS,
                    started_at=tick + timedelta(milliseconds=250),
                    finished_at=tick + timedelta(seconds=1),
                    closed_by="worker",
                    attempts=1,
                    claimed_by="late:7",
                )
            ],
        )
    after_change = dump(known.db.engine, known.db.table)
    wait_for(lambda: "newcomer" in summary_rows(driver), "the new work in the summary")
    wait_for(
        lambda: cells_of(driver, "report")[29]["class"].split()[1] == "succeeded",
        "the finished tick's colour",
    )
    newcomer = summary_rows(driver)["newcomer"]
    assert newcomer[3:] == ["1", "1", "1", "0", "0", "0", "100.0%", "250ms", "250ms"]
    assert summary_rows(driver)["report"][5] == "26"  # one more success
    assert driver.find_elements(By.CSS_SELECTOR, "#charts figure[data-work=newcomer]")
    # The same document all along: the marker survived, and there was one navigation.
    assert driver.execute_script("return window.__marker") == "still the same page"
    navigations = driver.execute_script("return performance.getEntriesByType('navigation').length")
    assert navigations == 1
    assert driver.find_element(By.ID, "live").text == "live"
    driver.save_screenshot(str(tmp_path / "refreshed.png"))
    assert_clean(driver)
    assert dump(known.db.engine, known.db.table) == after_change


def test_a_browser_logs_in_with_the_token_as_its_password(
    driver: Any, db: Db, tmp_path: Path
) -> None:
    history = build()
    write(db.engine, db.table, history)
    with site(db, history, auth_token=TOKEN, refresh=timedelta(seconds=1)) as served:
        driver.get(served.url)  # no login: the browser is asked for one, and shown nothing
        assert "report" not in driver.page_source
        assert not summary_rows(driver)
        logged_in = served.url.replace("http://", f"http://me:{TOKEN}@")
        driver.get(logged_in)
        assert set(summary_rows(driver)) == set(history.works)
        # The script's own requests (refresh, details) carry the login too.
        wait_for(lambda: driver.execute_script("return document.body.dataset.refreshes"), "refresh")
        cell_button(driver, "report", NOW - 25 * MINUTE).click()
        wait_for(lambda: details(driver), "the tick's rows")
        driver.save_screenshot(str(tmp_path / "logged-in.png"))
        assert driver.execute_script("return window.__alerts") == []


@pytest.fixture
def odd(db: Db) -> Iterator[Site]:
    """Works with hostile and long names and 16,000-character errors, beside a fleet with
    stale works and works that did not tick in the last hour; refreshed every second."""
    history = hostile_text_history()
    history.rows += fleet_history().rows
    write(db.engine, db.table, history)
    with site(db, history, refresh=timedelta(seconds=1)) as served:
        yield served


SHOWN = """
  const text = (selector) => Array.from(document.querySelectorAll(selector))
    .map((node) => node.innerText.trim());
  return {
    fleet: text("#fleet tbody tr td:first-child"),
    summary: text("#summary tbody tr td:first-child"),
    timelines: text("#timelines h3"),
    charts: text("#charts figcaption .name"),
    history: text("#history tbody tr td:nth-child(2)"),
    stale: Array.from(document.querySelectorAll("#fleet tr.stale")).map((r) => r.dataset.work),
    body: document.body.innerText,
  };
"""

MEASURE = """
  const overflow = [];
  for (const figure of document.querySelectorAll("#charts figure")) {
    const box = figure.getBoundingClientRect();
    for (const node of figure.querySelectorAll("figcaption, figcaption .name, svg")) {
      const r = node.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5) overflow.push(figure.dataset.work);
    }
    const caption = figure.querySelector("figcaption");
    if (caption.scrollWidth > caption.clientWidth + 1) {
      overflow.push("caption " + figure.dataset.work);
    }
  }
  const figures = Array.from(document.querySelectorAll("#charts figure"))
    .map((f) => f.getBoundingClientRect());
  for (const a of figures) for (const b of figures) {
    const sameRow = a !== b && a.top === b.top && a.left < b.left;
    if (sameRow && a.right > b.left + 0.5) overflow.push("overlap");
  }
  const cut = (selector) => Array.from(document.querySelectorAll(selector))
    .filter((n) => n.scrollWidth > n.clientWidth)
    .map((n) => [n.title, n.getBoundingClientRect().width]);
  const timeline = Array.from(document.querySelectorAll("#timelines .timeline")).map((t) => {
    const h = t.querySelector("h3").getBoundingClientRect();
    const cells = t.querySelector(".cells").getBoundingClientRect();
    return h.right <= cells.left + 0.5;
  });
  return {
    overflow: overflow,
    charts: cut("#charts figcaption .name"),
    fleet: cut("#fleet .name"),
    summary: cut("#summary .name"),
    headings: cut("#timelines h3"),
    timeline: timeline,
    page: document.documentElement.scrollWidth <= window.innerWidth,
  };
"""


def check_text_and_layout(driver: Any, expected_stale: set[str]) -> None:
    shown = driver.execute_script(SHOWN)
    escaped = set(ESCAPED.values())
    fleet = set(shown["fleet"])
    assert escaped <= fleet
    assert {"daily", "stopped", "stuck", "healthy", "weekly-00", "weekly-49"} <= fleet
    for part in ("summary", "timelines", "charts"):
        assert escaped <= set(shown[part]), part
    assert escaped <= set(shown["history"])
    body = shown["body"]
    for invisible in ("\u202e", "\u200b", "two\nwords"):
        assert invisible not in body
    assert "rtl-exe.txt" not in body
    assert set(shown["stale"]) == expected_stale
    measured = driver.execute_script(MEASURE)
    assert measured["overflow"] == [], measured["overflow"]
    assert measured["page"], "the page scrolls sideways"
    assert all(measured["timeline"])
    for part in ("charts", "fleet", "summary", "headings"):
        cut = measured[part]
        assert [title for title, _ in cut] == [LONG_NAME], (part, cut)  # only the long one
        assert all(width <= 420 for _, width in cut), (part, cut)


def test_names_are_escaped_cut_and_errors_collapsed_in_chromium(
    driver: Any, odd: Site, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    before = dump(odd.db.engine, odd.db.table)
    driver.get(odd.url)
    check_text_and_layout(driver, {"stopped", "stuck"})  # as the server wrote it
    stopped = driver.find_element(By.CSS_SELECTOR, "#fleet tr[data-work=stopped] td.state")
    assert stopped.get_attribute("title").startswith("Stale: its cron had a tick at ")
    healthy = driver.find_element(By.CSS_SELECTOR, "#fleet tr[data-work=healthy] td.state")
    assert healthy.text == "ok"
    assert healthy.get_attribute("title").startswith("Stale: a tick is still queued")

    # The 16,000-character error: one line, then the whole on a click.
    first = driver.find_element(By.CSS_SELECTOR, "#history td.error details")
    summary = first.find_element(By.TAG_NAME, "summary")
    assert summary.text == "Traceback (most recent call last):\u2026"
    assert first.get_attribute("open") is None
    line_height = summary.size["height"]
    assert first.size["height"] <= line_height + 2  # collapsed: one line
    summary.click()
    wait_for(lambda: first.get_attribute("open") is not None, "the error to open")
    full = first.find_element(By.CSS_SELECTOR, "pre.full").text
    assert len(LONG_ERROR) == 16_000
    assert full.count("frame \\u202e line") == LONG_ERROR.count("frame \u202e line")
    assert "\u202e" not in full
    driver.save_screenshot(str(tmp_path / "error-open.png"))

    # The tick's details, built by the script: escaped heading, the error collapsed too.
    button = driver.find_element(By.CSS_SELECTOR, "#timelines .cell")
    name = button.get_attribute("data-name")
    button.click()
    wait_for(lambda: details(driver), "the tick's rows")
    heading = driver.find_element(By.ID, "details-heading").text
    assert heading.startswith(ESCAPED[name] + " · ")
    cell = driver.find_element(By.CSS_SELECTOR, "#details-rows td.error details")
    assert cell.find_element(By.TAG_NAME, "summary").text.startswith("Traceback")
    assert cell.get_attribute("open") is None

    # After a live refresh the script wrote every part: the same text, the same layout.
    count = int(driver.execute_script("return document.body.dataset.refreshes || '0'"))
    wait_for(
        lambda: int(driver.execute_script("return document.body.dataset.refreshes || '0'")) > count,
        "a refresh",
    )
    check_text_and_layout(driver, {"stopped", "stuck"})
    stopped = driver.find_element(By.CSS_SELECTOR, "#fleet tr[data-work=stopped] td.state")
    assert stopped.get_attribute("title").startswith("Stale: its cron had a tick at ")
    link = driver.find_element(By.CSS_SELECTOR, f"#fleet tr[data-work='{RTL_NAME}'] a.name")
    assert link.text == ESCAPED[RTL_NAME]
    driver.save_screenshot(str(tmp_path / "odd.png"))
    link.click()  # the filter link carries the raw name
    wait_for(lambda: "name=" in driver.current_url, "the work's own page")
    assert texts(driver, "#summary tbody tr td:first-child") == [ESCAPED[RTL_NAME]]
    assert_clean(driver)
    assert dump(odd.db.engine, odd.db.table) == before


# -- the docs' picture -----------------------------------------------------------------


SPECS = {
    "sync-orders": "sequence=utc; max_run=1; cron=* * * * *; timezone=UTC",
    "shard-rebuild": "sequence=utc; max_run=3; cron=*/5 * * * *; timezone=UTC",
    "heartbeat": "sequence=utc; max_run=1; cron=*/10 * * * * *; timezone=UTC",
    "nightly-backup": "sequence=utc; max_run=1; cron=0 3 * * *; timezone=UTC",
    "invoice-export": "sequence=utc; max_run=1; cron=*/15 * * * *; timezone=UTC",
}
QUEUED, RUNNING, FAILED = 1, 2, 4


def demo_row(name: str, tick: datetime, slot: int, lag_ms: int | None, **extra: Any) -> Any:
    """One row of the docs' fleet: claimed ``lag_ms`` late and done 2 s later, unless told."""
    values: dict[str, Any] = {"spec": SPECS[name], "status": SUCCESS}
    if lag_ms is not None:
        started = tick + timedelta(milliseconds=lag_ms)
        values |= {
            "started_at": started,
            "finished_at": started + timedelta(seconds=2),
            "closed_by": "worker",
            "attempts": 1,
            "claimed_by": f"app-{(slot + tick.minute) % 3 + 1}:{4100 + slot}",
        }
    values |= extra
    return _row(name, tick, slot, values.pop("status"), **values)


def demonstration(now: datetime) -> History:
    """A fleet's last hour, fixed, with one of everything: the picture the docs show.

    Beside the hour's three works, two with no tick in it: a nightly one, and one
    whose scheduler stopped two hours ago (stale).
    """
    minute = [now - step * MINUTE for step in range(60, 0, -1)]
    rows = [demo_row("sync-orders", tick, 0, 180 + (tick.minute * 37) % 140) for tick in minute]
    rows[19] = demo_row(
        "sync-orders",
        minute[19],
        0,
        230,
        status=FAILED,
        error="TimeoutError: upstream API did not answer in 30s",
    )
    rows[37] = demo_row(
        "sync-orders",
        minute[37],
        0,
        None,
        status=FAILED,
        closed_by="missed",
        finished_at=minute[37] + MINUTE,
        error=MISSED_TEXT,
    )
    rows[59] = demo_row(
        "sync-orders", minute[59], 0, 210, status=RUNNING, finished_at=None, closed_by=None
    )
    rows += [
        demo_row("sync-orders", now + step * MINUTE, 0, None, status=QUEUED) for step in (1, 2, 3)
    ]
    for tick in minute[4::5]:
        for slot in range(3):
            lost = tick == minute[29] and slot == 2
            rows.append(
                demo_row(
                    "shard-rebuild",
                    tick,
                    slot,
                    300 + slot * 450 + tick.minute * 9,
                    **(
                        {
                            "status": FAILED,
                            "closed_by": "lease",
                            "error": "lease expired (worker lost)",
                        }
                        if lost
                        else {}
                    ),
                )
            )
    rows += [
        demo_row("heartbeat", now - timedelta(seconds=10 * step), 0, 40 + (step * 13) % 60)
        for step in range(360, 0, -1)
    ]
    # Outside the hour: a nightly work that ran at 03:00, and one whose scheduler stopped.
    rows.append(demo_row("nightly-backup", now.replace(hour=3, minute=0), 0, 350))
    rows += [
        demo_row("invoice-export", now - timedelta(hours=2, minutes=15 * step), 0, 420)
        for step in range(4, -1, -1)
    ]
    return History(rows, {}, [])


def test_the_readme_picture(driver: Any, browser_ready: None, tmp_path: Path) -> None:
    """Rendered on every run (into tmp_path); written to docs/ with WORKSYNC_UPDATE_DOCS=1.

    Its own SQLite file and a table named ``works``, so the picture is the
    same on every machine. Seen with the write token, so it shows the buttons.
    """
    from selenium.webdriver.common.by import By

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    for table in (work_table("works"), pause_table("works"), action_table("works")):
        table.create(engine)
    history = demonstration(NOW)
    write(engine, "works", history)
    with engine.begin() as conn:  # one work paused, so the picture shows a pause and its button
        conn.execute(
            pause_table("works").insert(),
            {
                "name": "nightly-backup",
                "paused_until": None,
                "reason": "restore drill",
                "paused_by": "ann@ops-1",
                "paused_at": NOW - 20 * MINUTE,
            },
        )
    writer = "write-token-for-the-picture"
    status_page = app(
        engine,
        "works",
        clock=lambda: NOW,
        refresh=timedelta(hours=1),
        auth_token=TOKEN,
        write_token=writer,
    )
    try:
        with serving(status_page) as url:
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
            )
            driver.get(url.replace("http://", f"http://ann:{writer}@"))
            paused = driver.find_element(By.CSS_SELECTOR, "#fleet tr.paused td.state")
            assert paused.text == "paused"
            cell_button(driver, "sync-orders", NOW - 41 * MINUTE).click()
            wait_for(lambda: details(driver), "the tick's rows")
            driver.execute_script("window.scrollTo(0, 0);")
            picture = tmp_path / "web.png"
            driver.save_screenshot(str(picture))
            assert picture.stat().st_size > 10_000
            assert_clean(driver)
    finally:
        status_page.close()
        engine.dispose()
    if os.environ.get("WORKSYNC_UPDATE_DOCS") == "1":
        shutil.copyfile(picture, ROOT / "docs" / "web.png")
