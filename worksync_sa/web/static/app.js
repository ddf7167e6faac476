// worksync status page: tick details on click, and a live refresh without reloading.
//
// Text from the table only ever reaches the page through textContent, title and
// dataset, never parsed as markup, so a work named "<script>" shows those characters.
// What is shown is the server's escaped text ("shown", "row", "text"); raw names go only
// into data attributes and the links' queries, which the server wrote.
// Only a viewer holding the write token gets the action buttons (body's data-actions-url);
// their POSTs carry a JSON body from this page's own origin, as the server requires.
"use strict";

(function () {
  const body = document.body;
  const stateUrl = body.dataset.stateUrl;
  const tickUrl = body.dataset.tickUrl;
  const refreshMs = Math.max(1000, parseInt(body.dataset.refreshMs, 10) || 5000);
  const actionsUrl = body.dataset.actionsUrl || "";
  const RETRYABLE = new Set(["failed"]);
  const OUTCOMES = new Set([
    "failed", "recovered", "missed", "running", "queued", "succeeded", "surplus",
  ]);
  const POINTS = /^[0-9., ]*$/;
  const SVG = "http://www.w3.org/2000/svg";
  let selected = null; // [name, tick] of the tick whose details are shown
  let refreshes = 0;
  let ruleText = "";

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  async function getJson(path) {
    // Resolved against the origin alone: a page opened as http://user:token@host/ has the
    // login in its own URL, and fetch refuses a URL that carries one (the browser sends
    // the login it already has instead).
    const url = new URL(path, window.location.origin);
    const response = await fetch(url, {
      method: "GET",
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  // -- tick details -----------------------------------------------------------------

  function markSelected() {
    for (const cell of document.querySelectorAll(".cell.selected")) {
      cell.classList.remove("selected");
    }
    if (!selected) return;
    for (const cell of document.querySelectorAll(".cell")) {
      if (cell.dataset.name === selected[0] && cell.dataset.tick === selected[1]) {
        cell.classList.add("selected");
      }
    }
  }

  async function showTick(button) {
    const query = new URLSearchParams({
      name: button.dataset.name,
      tick: button.dataset.tick,
      sequence: button.dataset.sequence || "",
    });
    const panel = document.getElementById("details");
    const rows = document.querySelector("#details-rows tbody");
    selected = [button.dataset.name, button.dataset.tick];
    markSelected();
    document.getElementById("details-summary").textContent = button.title || "";
    let tick;
    try {
      tick = await getJson(tickUrl + "?" + query.toString());
    } catch (error) {
      document.getElementById("details-heading").textContent = "(could not be read)";
      rows.replaceChildren();
      panel.hidden = false;
      return;
    }
    document.getElementById("details-heading").textContent = tick.heading;
    const lines = tick.rows.map(function (row) {
      const line = element("tr", "status-" + row.status);
      for (const key of ["slot", "status", "claimed_by", "started_at", "finished_at", "took",
        "attempts", "closed_by"]) {
        line.appendChild(element("td", "", row.text[key]));
      }
      line.appendChild(errorCell(row.text.error_line, row.text.error));
      return line;
    });
    if (lines.length === 0) {
      const line = element("tr");
      const cell = element("td", "empty", "no rows (pruned?)");
      cell.colSpan = 9;
      line.appendChild(cell);
      lines.push(line);
    }
    rows.replaceChildren(...lines);
    const retry = document.getElementById("details-retry");
    if (retry) {
      retry.dataset.name = button.dataset.name;
      retry.dataset.label = button.dataset.sequence || button.dataset.tick;
      retry.hidden = !tick.rows.some(function (row) { return RETRYABLE.has(row.status); });
    }
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
  }

  // A long error shows its first line; the whole (escaped) text opens below it.
  function errorCell(firstLine, full) {
    const cell = element("td", "error");
    if (!full || full === firstLine) {
      cell.textContent = firstLine || "";
      return cell;
    }
    const more = element("details");
    more.appendChild(element("summary", "", firstLine));
    more.appendChild(element("pre", "full", full));
    cell.appendChild(more);
    return cell;
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-tick]");
    if (button) showTick(button);
    const act = event.target.closest("button.act[data-action]");
    if (act && actionsUrl) openAction(act.dataset.action, act.dataset.name, act.dataset.label);
  });

  // -- actions (write token only) -----------------------------------------------------

  let pending = null; // {action, name, label} the open form is about

  function openAction(action, name, label) {
    pending = { action: action, name: name, label: label || null };
    const words = { pause: "Pause", resume: "Resume", "run-now": "Run now", retry: "Retry" };
    const what = action === "retry" ? name + " tick " + label : name;
    document.getElementById("act-heading").textContent = (words[action] || action) + " " + what;
    document.getElementById("act-until-field").hidden = action !== "pause";
    document.getElementById("act-past-grace-field").hidden = action !== "retry";
    document.getElementById("act-until").value = "";
    document.getElementById("act-reason").value = "";
    document.getElementById("act-past-grace").checked = false;
    const panel = document.getElementById("act");
    panel.hidden = false;
    panel.scrollIntoView({ block: "nearest" });
    document.getElementById("act-reason").focus();
  }

  function showResult(text, refused) {
    const result = document.getElementById("act-result");
    result.textContent = text;
    result.classList.toggle("refused", refused);
    result.hidden = false;
  }

  async function postAction(action, fields) {
    const url = new URL(actionsUrl + "/" + action, window.location.origin);
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(fields),
    });
    let answer = {};
    try {
      answer = await response.json();
    } catch (error) {
      answer = {};
    }
    if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
    return answer;
  }

  if (actionsUrl) {
    document.getElementById("act-cancel").addEventListener("click", function () {
      document.getElementById("act").hidden = true;
      pending = null;
    });
    document.getElementById("act-form").addEventListener("submit", async function (event) {
      event.preventDefault();
      if (!pending) return;
      const asked = pending;
      const fields = { name: asked.name, reason: document.getElementById("act-reason").value };
      if (asked.action === "pause") {
        const until = document.getElementById("act-until").value.trim();
        if (until) fields.until = until;
      }
      if (asked.action === "retry") {
        fields.tick = asked.label;
        fields.past_grace = document.getElementById("act-past-grace").checked;
      }
      try {
        const answer = await postAction(asked.action, fields);
        showResult(asked.action + " " + asked.name + ": " + answer.done, false);
        document.getElementById("act").hidden = true;
        pending = null;
      } catch (error) {
        showResult(asked.action + " " + asked.name + " refused: " + error.message, true);
      }
      refreshNow();
    });
  }

  // -- live refresh -----------------------------------------------------------------

  function summaryRow(work) {
    const line = element("tr");
    line.dataset.work = work.name;
    work.row.forEach(function (text, index) {
      const cell = element("td");
      if (index === 0 && typeof work.link === "string" && work.link.startsWith("?")) {
        const link = element("a", "name", text);
        link.href = work.link;
        link.title = text;
        cell.appendChild(link);
      } else {
        cell.textContent = text;
      }
      line.appendChild(cell);
    });
    return line;
  }

  function actButton(action, name, words) {
    const button = element("button", "act", words);
    button.type = "button";
    button.dataset.action = action;
    button.dataset.name = name;
    return button;
  }

  function fleetRow(work) {
    const line = summaryRow(work);
    if (work.paused) line.className = "paused";
    else if (work.stale) line.className = "stale";
    const cells = line.cells;
    if (work.outcome && OUTCOMES.has(work.outcome) && cells.length > 3) {
      cells[3].className = "outcome";
      cells[3].prepend(element("span", "swatch " + work.outcome));
    }
    const state = cells[cells.length - 1];
    state.className = "state";
    const why = work.paused ? work.paused + ". " : work.stale ? "Stale: " + work.stale_reason + ". " : "";
    state.title = why + ruleText;
    if (actionsUrl) {
      const act = element("td", "act");
      act.appendChild(work.paused ? actButton("resume", work.name, "resume")
        : actButton("pause", work.name, "pause"));
      act.appendChild(document.createTextNode(" "));
      act.appendChild(actButton("run-now", work.name, "run now"));
      line.appendChild(act);
    }
    return line;
  }

  function cell(tick) {
    const outcome = OUTCOMES.has(tick.outcome) ? tick.outcome : "surplus";
    const button = element("button", "cell " + outcome + (tick.upcoming ? " upcoming" : ""));
    button.type = "button";
    button.dataset.name = tick.name;
    button.dataset.tick = tick.tick;
    button.dataset.sequence = tick.sequence;
    button.title = tick.title;
    return button;
  }

  function timeline(work) {
    const box = element("div", "timeline");
    box.dataset.work = work.name;
    const heading = element("h3", "", work.shown);
    heading.title = work.shown;
    box.appendChild(heading);
    const cells = element("div", "cells");
    cells.replaceChildren(...work.timeline.map(cell));
    box.appendChild(cells);
    return box;
  }

  function chart(work) {
    const figure = element("figure", "chart");
    figure.dataset.work = work.name;
    const caption = element("figcaption");
    const name = element("span", "name", work.shown);
    name.title = work.shown;
    caption.appendChild(name);
    caption.appendChild(document.createTextNode(" "));
    caption.appendChild(element("span", "top", "max " + work.lag_chart.top));
    figure.appendChild(caption);
    const drawing = svg("svg", {
      viewBox: "0 0 1000 100", preserveAspectRatio: "none", role: "img",
      "aria-label": "start lag of " + work.shown,
    });
    drawing.appendChild(svg("line", { class: "axis", x1: "0", y1: "100", x2: "1000", y2: "100" }));
    const points = POINTS.test(work.lag_chart.points) ? work.lag_chart.points : "";
    drawing.appendChild(svg("polyline", { points: points, "vector-effect": "non-scaling-stroke" }));
    figure.appendChild(drawing);
    const labels = element("div", "axis-labels");
    labels.appendChild(element("span", "start", work.lag_chart.start));
    labels.appendChild(element("span", "end", work.lag_chart.end));
    figure.appendChild(labels);
    return figure;
  }

  function apply(state) {
    document.getElementById("updated").textContent = state.updated;
    document.getElementById("range").textContent = state.range;
    document.getElementById("notices").replaceChildren(
      ...state.notices.map(function (text) { return element("p", "notice", text); })
    );
    ruleText = state.stale_rule || ruleText;
    document.querySelector("#fleet tbody").replaceChildren(...state.fleet.map(fleetRow));
    document.getElementById("no-fleet").hidden = state.fleet.length > 0;
    document.querySelector("#summary tbody").replaceChildren(...state.works.map(summaryRow));
    document.getElementById("no-works").hidden = state.works.length > 0;
    document.getElementById("timelines").replaceChildren(...state.works.map(timeline));
    document.getElementById("charts").replaceChildren(...state.works.map(chart));
    markSelected();
  }

  let timer = null;

  function refreshNow() {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 0);
  }

  async function refresh() {
    timer = null;
    const live = document.getElementById("live");
    if (!document.hidden) {
      try {
        apply(await getJson(stateUrl + window.location.search));
        refreshes += 1;
        body.dataset.refreshes = String(refreshes);
        live.textContent = "live";
        live.classList.remove("stale");
      } catch (error) {
        live.textContent = "refresh failed; retrying";
        live.classList.add("stale");
      }
      live.hidden = false;
    }
    if (timer === null) timer = window.setTimeout(refresh, refreshMs);
  }

  timer = window.setTimeout(refresh, refreshMs);
})();
