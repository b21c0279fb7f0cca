// turnout's status page: reads GET /admin/snapshot every second and draws it.
// No framework and no build step. Each snapshot is drawn as a new tree, which
// is then merged into the page (morph), so that what did not change stays the
// same element: a button being clicked is not swapped for another mid-click.
// Buttons say what they do in data- attributes, and one listener acts on them
// with the latest snapshot.
"use strict";

const REFRESH_MS = 1000;
const TOKEN_KEY = "turnout-admin-token";
const COLOURS = ["#2f6fdf", "#e07b24", "#2a9d6f", "#b04fc4", "#c9a227", "#d1495b", "#5c6b7a"];
const SVG = "http://www.w3.org/2000/svg";

const page = {
  token: sessionStorage.getItem(TOKEN_KEY),
  needsToken: document.documentElement.dataset.auth === "token",
  timer: null,
  refreshing: false,
  again: false,
  generation: 0,
  snapshot: null,
};

// -- DOM helpers ----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attrs);
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

function s(tag, attrs, ...children) {
  const element = document.createElementNS(SVG, tag);
  setAttributes(element, attrs);
  element.append(...children);
  return element;
}

function setAttributes(element, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "text") element.textContent = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

// -- formatting -----------------------------------------------------------------------

function percent(share) {
  const p = share * 100;
  return `${p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)}%`;
}

function number(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1000) return value.toFixed(0);
  return value.toFixed(digits);
}

function duration(seconds) {
  if (seconds < 60) return `${Math.max(0, Math.floor(seconds))}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function since(at) {
  return `for ${duration(page.snapshot.at - at)}`;
}

function clock(at) {
  return new Date(at * 1000).toLocaleTimeString([], { hour12: false });
}

// -- the admin API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (page.token) headers.Authorization = `Bearer ${page.token}`;
  const options = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.error) || `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

function modelPath(model, rest = "") {
  return `/admin/models/${encodeURIComponent(model)}${rest}`;
}

function versionPath(model, version, rest = "") {
  return modelPath(model, `/versions/${encodeURIComponent(version)}${rest}`);
}

// -- refreshing -----------------------------------------------------------------------

// One refresh at a time: one asked for while another is on its way (after an
// action) runs when it ends, so the page never polls twice over.
async function refresh() {
  clearTimeout(page.timer);
  if (page.refreshing) {
    page.again = true;
    return;
  }
  page.refreshing = true;
  let polling = true;
  const generation = page.generation;
  try {
    const snapshot = await api("GET", "/admin/snapshot");
    if (generation !== page.generation) return; // the token was forgotten meanwhile
    page.snapshot = snapshot;
    showProblem(null);
    render(page.snapshot);
    document.getElementById("refreshed").textContent = `updated ${clock(page.snapshot.at)}`;
  } catch (error) {
    if (generation !== page.generation) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      askForToken(error.message);
      polling = false;
    } else {
      showProblem(`Cannot read the status: ${error.message}`);
    }
  } finally {
    page.refreshing = false;
  }
  if (!polling) {
    page.again = false;
    return;
  }
  if (page.again) {
    page.again = false;
    refresh();
  } else {
    page.timer = setTimeout(refresh, REFRESH_MS);
  }
}

function showProblem(message) {
  const problem = document.getElementById("problem");
  // Set only on a change: the element is an alert, read out each time it is written.
  if (problem.textContent === (message || "") && problem.hidden === (message === null)) return;
  problem.hidden = message === null;
  problem.textContent = message || "";
}

function askForToken(message) {
  clearTimeout(page.timer);
  page.generation += 1; // an answer on its way is dropped, not drawn under the form
  page.snapshot = null;
  page.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("forget").hidden = true;
  document.getElementById("models").replaceChildren();
  document.getElementById("fleet").hidden = true;
  document.getElementById("token").focus();
}

function useToken(token) {
  page.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("login").hidden = true;
  document.getElementById("forget").hidden = false;
  refresh();
}

// -- rendering ------------------------------------------------------------------------

function render(snapshot) {
  renderFleet(snapshot.fleet);
  const models = h(
    "div",
    { id: "models" },
    snapshot.models.length
      ? snapshot.models.map(renderModel)
      : h("p", { class: "card muted", text: "No model is deployed." }),
  );
  morph(document.getElementById("models"), models);
}

// What an element stands for: the model, version, action or step it is drawn for.
function keyOf(node) {
  if (node.nodeType !== Node.ELEMENT_NODE) return "";
  const d = node.dataset || {};
  return [d.model, d.version, d.action, d.step, d.shadow].join("|");
}

// Make ``from`` look like ``to``, keeping every element whose place, tag and key are
// unchanged. An element drawn for another version or action is replaced, not reused:
// a click landing just after a refresh then reaches the button it was aimed at.
function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName || keyOf(from) !== keyOf(to)) {
    from.replaceWith(to);
    return;
  }
  if (from.nodeType !== Node.ELEMENT_NODE) {
    if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
    return;
  }
  for (const { name } of [...from.attributes]) {
    if (!to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of [...to.attributes]) {
    // Styles through the CSSOM: the page's CSP refuses style attributes set as text.
    if (name === "style") from.style.cssText = to.style.cssText;
    else if (from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
  const before = [...from.childNodes];
  const after = [...to.childNodes];
  after.forEach((child, i) => (i < before.length ? morph(before[i], child) : from.append(child)));
  before.slice(after.length).forEach((child) => child.remove());
}

function renderFleet(fleet) {
  const section = document.getElementById("fleet");
  section.hidden = fleet.length < 2;
  if (section.hidden) return;
  const drawn = h(
    "section",
    { id: "fleet", class: "card" },
    h("h2", { text: `Fleet: ${fleet.length} servers` }),
    h(
      "table",
      { class: "fleet" },
      h("thead", {}, h("tr", {}, ["server", "pid", "leads", "revisions", "heartbeat"].map((t) => h("th", { text: t })))),
      h(
        "tbody",
        {},
        fleet.map((server) =>
          h(
            "tr",
            {},
            h("td", { text: server.name }),
            h("td", { text: server.pid }),
            h("td", { text: server.leads ? "leader" : "" }),
            h("td", {
              text: Object.entries(server.models || {})
                .map(([model, facts]) => `${model} r${facts.revision}`)
                .join(", "),
            }),
            h("td", { text: server.at ? `${duration(page.snapshot.at - server.at)} ago` : "–" }),
          ),
        ),
      ),
    ),
  );
  morph(section, drawn);
}

function colourOf(model) {
  const colours = {};
  model.versions.forEach((v, i) => {
    colours[v.version] = COLOURS[i % COLOURS.length];
  });
  return colours;
}

function renderModel(model) {
  const colours = colourOf(model);
  return h(
    "section",
    { class: "card model", "data-model": model.name },
    h(
      "header",
      {},
      h("h2", { text: model.name }),
      h("span", { class: "chip", "data-strategy": model.routing.strategy, text: model.routing.strategy }),
      h("span", { class: "muted", text: model.active ? `active ${model.active}` : "no active version" }),
      h("button", { type: "button", class: "quiet", "data-action": "change-weights", text: "Change weights" }),
    ),
    renderSplit(model, colours),
    renderVersions(model, colours),
    h(
      "div",
      { class: "panels" },
      renderRollout(model),
      renderComparison(model),
      renderShadows(model),
    ),
  );
}

function renderSplit(model, colours) {
  const declared = model.split.shares;
  const shares = declared || model.observed;
  const entries = Object.entries(shares || {}).filter(([, share]) => share > 0);
  const bar = h(
    "div",
    { class: "split", role: "img", "aria-label": entries.map(([v, share]) => `${v} ${percent(share)}`).join(", ") },
    entries.map(([version, share]) => {
      const segment = h("div", { class: "segment", "data-version": version, title: `${version}: ${percent(share)}` }, h("span", { text: `${version} ${percent(share)}` }));
      segment.style.flexGrow = String(share);
      segment.style.background = colours[version];
      return segment;
    }),
  );
  const notes = [];
  if (!declared) notes.push(h("span", { class: "muted", text: entries.length ? "observed over the last minute" : "no traffic yet" }));
  if (model.routing.strategy === "sticky") notes.push(h("span", { class: "chip", text: "sticky by key" }));
  for (const [version, fraction] of Object.entries(model.split.mirrors)) {
    notes.push(h("span", { class: "chip shadow", "data-shadow": version, text: `shadow → ${version} ${percent(fraction)}` }));
  }
  return h("div", { class: "routing" }, bar, notes.length ? h("div", { class: "notes" }, notes) : null);
}

function badge(kind, value, at) {
  return h("span", { class: `badge ${kind}-${value}`, "data-kind": kind, text: value.replace("_", "-") }, at === undefined ? null : h("small", { text: ` ${since(at)}` }));
}

function renderVersions(model, colours) {
  return h(
    "table",
    { class: "versions" },
    h("thead", {}, h("tr", {}, ["version", "status", "health", "breaker", "requests/s", "errors", "latency p50 / p99", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, model.versions.map((v) => renderVersion(model, v, colours[v.version]))),
  );
}

function renderVersion(model, v, colour) {
  const history = v.history;
  const last = (series) => (series.length ? series[series.length - 1] : null);
  const dot = h("span", { class: "dot" });
  dot.style.background = colour;
  return h(
    "tr",
    { "data-version": v.version },
    h("td", { "data-label": "version" }, dot, h("strong", { text: v.version }), h("small", { class: "muted", text: ` ${v.runtime}` })),
    h("td", { "data-label": "status" }, badge("status", v.status, v.status_since)),
    h(
      "td",
      { "data-label": "health", title: v.health.reasons.join("; ") },
      badge("health", v.health.status, v.health.since),
    ),
    h(
      "td",
      { "data-label": "breaker", title: v.breaker.reason || "" },
      badge("breaker", v.breaker.state, v.breaker.since),
      v.breaker.times_opened ? h("small", { class: "muted", text: ` opened ${v.breaker.times_opened}×` }) : null,
    ),
    h("td", { "data-label": "requests/s" }, sparkline([history.requests_per_second], [colour]), h("span", { class: "value", text: number(last(history.requests_per_second)) })),
    h("td", { "data-label": "errors" }, sparkline([history.error_rate], ["#d1495b"], 1), h("span", { class: "value", text: last(history.error_rate) === null ? "–" : percent(last(history.error_rate)) })),
    h(
      "td",
      { "data-label": "latency" },
      sparkline([history.p50_ms, history.p99_ms], [colour, "#888"]),
      h("span", {
        class: "value",
        // An interval with no request has no latency: say so rather than draw 0 ms.
        text: last(history.requests_per_second) ? `${number(last(history.p50_ms), 2)} / ${number(last(history.p99_ms), 2)} ms` : "idle",
      }),
    ),
    h(
      "td",
      { class: "actions" },
      v.status === "active"
        ? null
        : h("button", { type: "button", "data-action": "set-active", "aria-label": `Set ${v.version} active`, text: "Set active" }),
      h("button", { type: "button", class: "quiet", "data-action": "reset-breaker", "aria-label": `Reset the breaker of ${v.version}`, text: "Reset breaker" }),
    ),
  );
}

// A line per series over the samples of the last 15 minutes, scaled to the
// largest value (or to ``top``, when the scale is fixed, as for rates).
function sparkline(series, colours, top) {
  const width = 120;
  const height = 28;
  const most = top || Math.max(1e-9, ...series.flat().filter((v) => v !== null));
  const longest = Math.max(2, ...series.map((values) => values.length));
  const x = (j, values) => ((j + longest - values.length) * width) / (longest - 1);
  const y = (value) => height - 2 - (Math.min(value, most) / most) * (height - 4);
  // A null (an idle interval's latency) breaks the line rather than drawing a zero.
  const lines = series.flatMap((values, i) => {
    const runs = [[]];
    values.forEach((value, j) => (value === null ? runs.push([]) : runs[runs.length - 1].push(`${x(j, values)},${y(value)}`)));
    return runs
      .filter((run) => run.length)
      .map((run) => s("polyline", { fill: "none", stroke: colours[i], "stroke-width": 1.5, points: run.join(" ") }));
  });
  // The latest value as a dot: with a single sample it is the whole chart.
  const first = series[0];
  const latest = first.length ? first[first.length - 1] : null;
  const now = latest !== null ? s("circle", { cx: x(first.length - 1, first), cy: y(latest), r: 2, fill: colours[0] }) : null;
  const baseline = s("line", { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, stroke: "#ddd" });
  return s("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, width, height, "aria-hidden": "true" }, baseline, ...lines, ...(now ? [now] : []));
}

function renderRollout(model) {
  const canary = model.canary;
  const events = model.rollouts.slice(-12);
  if (!canary && !events.length) return null;
  const children = [h("h3", { text: canary ? `Canary: ${canary.candidate} over ${canary.baseline}` : "Rollouts" })];
  if (canary) {
    const steps = canary.steps || [];
    children.push(
      h(
        "ol",
        { class: "steps" },
        steps.map((weight, i) =>
          h("li", { class: i < canary.step ? "done" : i === canary.step ? "current" : "pending", "data-step": i, text: percent(weight) }),
        ),
      ),
      h("button", { type: "button", "data-action": "abort-canary", text: "Abort canary" }),
    );
  }
  children.push(
    h(
      "ul",
      { class: "events" },
      events
        .slice()
        .reverse()
        .map((e) =>
          h(
            "li",
            { class: `event-${e.event}`, "data-event": e.event },
            h("time", { text: clock(Date.parse(e.at) / 1000) }),
            h("strong", { text: ` ${e.event.replace("_", " ")}` }),
            h("span", { text: ` ${e.candidate} at ${percent(e.weight)} (step ${e.step})` }),
            e.reason ? h("small", { class: "muted", text: ` ${e.reason}` }) : null,
          ),
        ),
    ),
  );
  return h("div", { class: "panel rollout" }, children);
}

function renderComparison(model) {
  const c = model.comparison;
  if (!c) return null;
  const row = (stats) => h("tr", {}, h("td", { text: stats.version }), h("td", { text: stats.count }), h("td", { text: number(stats.mean, 3) }));
  const needed = c.needed_per_version === null ? null : Math.max(0, c.needed_per_version - Math.min(c.a.count, c.b.count));
  return h(
    "div",
    { class: "panel comparison" },
    h("h3", { text: `A/B: ${c.a.version} vs ${c.b.version}` }),
    h("table", {}, h("thead", {}, h("tr", {}, ["version", "outcomes", "mean"].map((t) => h("th", { text: t })))), h("tbody", {}, row(c.a), row(c.b))),
    h("p", { class: c.significant ? "verdict significant" : "verdict", text: c.verdict }),
    h("p", {
      class: "muted",
      text: [
        c.p_value === null ? null : `p = ${c.p_value.toPrecision(3)} (${c.test})`,
        needed ? `${needed} more outcomes per version needed` : null,
      ]
        .filter(Boolean)
        .join(" · "),
    }),
  );
}

function renderShadows(model) {
  if (!model.shadows.length) return null;
  return h(
    "div",
    { class: "panel shadows" },
    h("h3", { text: "Shadows" }),
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ["shadow", "compared", "agreement", "mean / max diff", "errors"].map((t) => h("th", { text: t })))),
      h(
        "tbody",
        {},
        model.shadows.map((sh) =>
          h(
            "tr",
            { "data-shadow": sh.shadow },
            h("td", { text: `${sh.shadow} of ${sh.primary}` }),
            h("td", { text: sh.compared }),
            h("td", { text: sh.label_agreement === null ? "–" : percent(sh.label_agreement) }),
            h("td", { text: `${number(sh.mean_abs_difference, 4)} / ${number(sh.max_abs_difference, 4)}` }),
            h("td", { text: sh.errors }),
          ),
        ),
      ),
    ),
  );
}

// -- actions, each confirmed first ----------------------------------------------------

function confirmAction(text, body) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-body").replaceChildren(...(body ? [body] : []));
  return new Promise((resolve) => {
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const done = (answer) => {
      ok.onclick = cancel.onclick = dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

async function act(text, request, body) {
  if (!(await confirmAction(text, body))) return;
  try {
    await request();
    toast(`Done: ${text}`);
  } catch (error) {
    toast(`Refused: ${error.message}`, true);
  }
  refresh();
}

function toast(message, failed = false) {
  const element = document.getElementById("toast");
  element.textContent = message;
  element.className = failed ? "error" : "";
  element.hidden = false;
  clearTimeout(element.timer);
  element.timer = setTimeout(() => {
    element.hidden = true;
  }, 6000);
}

function setActive(model, version) {
  act(`Make ${version} the active version of ${model}?`, () => api("PUT", modelPath(model, "/active"), { version }));
}

function resetBreaker(model, version) {
  act(`Reset the circuit breaker of ${model} ${version}?`, () => api("POST", versionPath(model, version, "/breaker/reset")));
}

function abortCanary(model) {
  act(`Abort the canary of ${model}? Traffic goes back to the baseline.`, () => api("DELETE", modelPath(model, "/canary")));
}

function changeWeights(model) {
  const shares = model.split.shares || model.observed || {};
  const inputs = model.versions.map((v) =>
    h("input", { type: "number", min: 0, max: 100, step: 1, name: v.version, "aria-label": `weight of ${v.version}`, value: Math.round((shares[v.version] || 0) * 100) }),
  );
  const form = h(
    "div",
    { class: "weights" },
    model.versions.map((v, i) => h("label", {}, h("span", { text: v.version }), inputs[i], h("span", { text: "%" }))),
  );
  act(
    `Route ${model.name} by these weights?`,
    () => {
      const versions = [];
      const weights = [];
      inputs.forEach((input) => {
        const weight = Number(input.value);
        if (weight > 0) {
          versions.push(input.name);
          weights.push(weight / 100);
        }
      });
      const total = weights.reduce((a, b) => a + b, 0);
      return api("PUT", modelPath(model.name, "/routing"), {
        strategy: "weighted",
        params: { versions, weights: weights.map((w) => w / (total || 1)) },
      });
    },
    form,
  );
}

const ACTIONS = {
  "set-active": (model, version) => setActive(model.name, version),
  "reset-breaker": (model, version) => resetBreaker(model.name, version),
  "abort-canary": (model) => abortCanary(model.name),
  "change-weights": (model) => changeWeights(model),
};

document.getElementById("models").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  const card = button && button.closest("[data-model]");
  if (!card || !page.snapshot) return;
  const model = page.snapshot.models.find((m) => m.name === card.dataset.model);
  const row = button.closest("[data-version]");
  if (model) ACTIONS[button.dataset.action](model, row && row.dataset.version);
});

// -- start ----------------------------------------------------------------------------

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  if (token) useToken(token);
});

document.getElementById("forget").addEventListener("click", () => askForToken(""));

if (page.needsToken && !page.token) askForToken("");
else {
  document.getElementById("forget").hidden = !page.token;
  refresh();
}
