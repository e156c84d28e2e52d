// The weir console's pages. Everything they show comes from /api/… and much of it was written
// by tenants, so it is only ever set as text (never as HTML). No library: the DOM is built by
// `h`, and a page is drawn again whenever what it shows is read again.

const SNAPSHOT_EVERY_MS = 2000;
const DEAD_LETTERS_EVERY_MS = 5000;
const MAX_LOG_LINES = 1000;

const view = document.getElementById("view");
const freshness = document.getElementById("freshness");
const notice = document.getElementById("notice");

// ---------------------------------------------------------------------------------------------
// Building the page

/** An HTML element: `h("a", {href: "#/"}, "text", child, …)`; strings become text nodes. */
const h = (tag, attributes, ...children) =>
  build(document.createElement(tag), attributes, children);

/** An SVG element, as `h` makes HTML ones. */
const svg = (tag, attributes, ...children) =>
  build(document.createElementNS("http://www.w3.org/2000/svg", tag), attributes, children);

function build(element, attributes = {}, children = []) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replaces the page, keeping the keyboard focus on the element of the same `data-focus`. */
function draw(...content) {
  const focused = document.activeElement?.dataset?.focus;
  const scroll = window.scrollY;
  view.replaceChildren(...content.flat().filter(Boolean));
  if (focused) {
    const again = view.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
  window.scrollTo(0, scroll);
}

function say(text, ok = false) {
  notice.textContent = text;
  notice.className = ok ? "ok" : "";
  notice.hidden = !text;
}

const number = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en"));
const short = (version) => (version || "").slice(0, 12);
const STATES = ["running", "active", "paused", "pausing", "standby", "draining", "waiting", "failing", "invalid"];
/** The class of a state's badge: its colour says whether all is well. */
function stateClass(state) {
  const text = String(state).replace("_", " ");
  if (text.startsWith("not running")) return "state not-running";
  const word = text.split(" ")[0];
  return `state ${STATES.includes(word) ? word : "waiting"}`;
}
const deploymentHash = (tenant, handler) =>
  `#/dead-letters?tenant=${encodeURIComponent(tenant)}&handler=${encodeURIComponent(handler)}`;

/** A small line chart of `values` (nulls are gaps), with the latest value in its caption. */
function chart(label, values, unit, kind) {
  const width = 240, height = 48, pad = 3;
  const known = values.filter((v) => v !== null && v !== undefined);
  const top = Math.max(1, ...known);
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, values.length - 1);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  const runs = [];
  let run = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) { if (run.length) runs.push(run); run = []; }
    else run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  });
  if (run.length) runs.push(run);
  const latest = known.length ? known[known.length - 1] : null;
  const summary = `${label}: now ${number(latest)}${unit}, at most ${number(Math.max(0, ...known))}${unit} over the chart`;
  return h("figure", {},
    svg("svg", { class: `chart ${kind}`, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary },
      svg("title", {}, summary),
      runs.map((points) => svg("polyline", { points: points.join(" ") }))),
    h("figcaption", {}, `${label} `, h("strong", {}, `${number(latest)}${unit}`)));
}

// ---------------------------------------------------------------------------------------------
// Reading

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

let snapshot = null;
let snapshotFailure = null;

async function readSnapshot() {
  try {
    snapshot = await api("/api/snapshot");
    snapshotFailure = null;
  } catch (error) {
    snapshotFailure = error.message;
  }
  showFreshness();
}

function showFreshness() {
  let text, stale = true;
  if (snapshotFailure) text = `Cannot reach the console: ${snapshotFailure}`;
  else if (!snapshot?.read_at) text = snapshot?.problem ? `Cannot read the cluster: ${snapshot.problem}` : "Reading the cluster…";
  else {
    const age = Math.max(0, Math.round((Date.now() - Date.parse(snapshot.read_at)) / 1000));
    if (snapshot.problem) text = `Cannot read the cluster (shown as of ${age} s ago): ${snapshot.problem}`;
    else { text = `Read ${age} s ago`; stale = age > 3 * snapshot.every_secs; }
    if (snapshot.tenant) text += ` · tenant ${snapshot.tenant}`;
  }
  freshness.textContent = text;
  freshness.classList.toggle("stale", stale);
}

// ---------------------------------------------------------------------------------------------
// Pages

function deploymentsPage() {
  const deployments = snapshot?.deployments ?? [];
  if (!snapshot?.read_at) return draw(h("h1", {}, "Deployments"), h("p", { class: "empty" }, "Reading the cluster…"));
  if (!deployments.length) {
    return draw(h("h1", {}, "Deployments"),
      h("p", { class: "empty" }, "No deployments. Deploy one with `weir deploy`."));
  }
  draw(h("h1", {}, `Deployments (${deployments.length})`), deployments.map(deploymentCard));
}

function deploymentCard(d) {
  const key = `${d.tenant}.${d.handler}`;
  const name = `${d.tenant}/${d.handler}`;
  const title = `deployment-${key}`;
  const history = d.history ?? [];
  const inFlight = d.partitions.reduce((sum, p) => sum + p.pending, 0);
  return h("section", { class: "card deployment", "data-deployment": key, "aria-labelledby": title },
    h("header", {},
      h("h2", { id: title }, name),
      h("span", { class: stateClass(d.problem ? "invalid" : d.state) }, d.problem ? "not running" : d.state)),
    d.problem && h("p", { class: "problem" }, d.problem),
    Object.entries(d.errors ?? {}).map(([node, error]) =>
      h("p", { class: "problem" }, `error on ${node}: ${error}`)),
    d.version && h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "version"), h("dd", { class: "mono", title: d.version }, short(d.version))),
      h("div", {}, h("dt", {}, "stream"), h("dd", {}, d.stream)),
      h("div", {}, h("dt", {}, "outputs"), h("dd", { class: "mono" }, d.outputs.length ? d.outputs.join(", ") : "none")),
      h("div", {}, h("dt", {}, "in flight"), h("dd", {}, number(inFlight))),
      h("div", {}, h("dt", {}, "dead letters"), h("dd", {},
        h("a", { href: deploymentHash(d.tenant, d.handler), "data-focus": `dead-${key}` }, number(d.dead_letters)))),
      h("div", {}, h("dt", {}, "logs"), h("dd", {},
        h("a", { href: `#/logs/${encodeURIComponent(d.tenant)}/${encodeURIComponent(d.handler)}`, "data-focus": `logs-${key}` }, "live")))),
    history.length > 0 && h("div", { class: "charts" },
      chart("handled", history.map((p) => p.settled_per_sec), "/s", "rate"),
      chart("lag", history.map((p) => p.lag), "", "lag")),
    d.partitions.length > 0 && h("table", { class: "partitions" },
      h("caption", { class: "muted" }, `${d.partitions.length} partition(s) of ${name}`),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col", class: "number" }, "Partition"),
        h("th", { scope: "col" }, "Owner"),
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col", class: "number" }, "In flight"),
        h("th", { scope: "col", class: "number" }, "Lag"),
        h("th", { scope: "col", class: "number" }, "Redelivered"))),
      h("tbody", {}, d.partitions.map((p) => h("tr", { "data-partition": p.partition },
        h("td", { class: "number" }, p.partition),
        h("td", {}, p.owners.length ? p.owners.join(", ") : "–"),
        h("td", {}, h("span", { class: stateClass(p.state) }, p.state.replace("_", " ")),
          p.failing && h("div", { class: "problem clip" }, p.failing),
          p.waiting && h("div", { class: "muted clip" }, p.waiting)),
        h("td", { class: "number" }, number(p.pending)),
        h("td", { class: "number" }, number(p.lag)),
        h("td", { class: "number" }, number(p.redelivered)))))));
}

function nodesPage() {
  const nodes = snapshot?.nodes ?? [];
  if (!snapshot?.read_at) return draw(h("h1", {}, "Nodes"), h("p", { class: "empty" }, "Reading the cluster…"));
  if (!nodes.length) return draw(h("h1", {}, "Nodes"), h("p", { class: "empty" }, "No live nodes. Start one with `weir node`."));
  draw(h("h1", {}, `Live nodes (${nodes.length})`),
    h("table", { class: "nodes" },
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Node"), h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Started"),
        h("th", { scope: "col" }, "Runs"))),
      h("tbody", {}, nodes.map((n) => h("tr", { "data-node": n.node },
        h("td", { class: "mono" }, n.node),
        h("td", {}, h("span", { class: stateClass(n.state) }, n.state)),
        h("td", {}, n.version),
        h("td", {}, n.started_at.slice(0, 19).replace("T", " ")),
        h("td", {}, Object.keys(n.runs).length
          ? h("ul", {}, Object.entries(n.runs).map(([key, partitions]) =>
            h("li", {}, `${key.replace(".", "/")}: partition${partitions.length > 1 ? "s" : ""} ${partitions.join(", ")}`)))
          : h("span", { class: "muted" }, "nothing")))))));
}

async function deadLettersPage(params) {
  const tenant = params.get("tenant"), handler = params.get("handler");
  const query = new URLSearchParams();
  if (tenant) query.set("tenant", tenant);
  if (handler) query.set("handler", handler);
  const listed = await api(`/api/dead-letters?${query}`);
  const of = tenant ? ` of ${tenant}${handler ? "/" + handler : ""}` : "";
  const filter = h("p", { class: "toolbar" },
    (tenant || handler) && h("a", { href: "#/dead-letters", "data-focus": "all-dead" }, "Show every deployment's"),
    listed.total > listed.letters.length &&
      h("span", { class: "muted" }, `the newest ${listed.letters.length} of ${listed.total}`));
  if (!listed.letters.length) {
    return draw(h("h1", {}, `Dead letters${of}`), filter, h("p", { class: "empty" }, "No dead letters."));
  }
  draw(h("h1", {}, `Dead letters${of} (${listed.total})`), filter,
    h("table", { class: "dead-letters" },
      h("thead", {}, h("tr", {},
        h("th", { scope: "col", class: "number" }, "Id"), h("th", { scope: "col" }, "Dead at"),
        h("th", { scope: "col" }, "Deployment"), h("th", { scope: "col" }, "Reason"),
        h("th", { scope: "col" }, "From"), h("th", { scope: "col", class: "number" }, "Deliveries"),
        h("th", { scope: "col" }, "Last error"), h("th", { scope: "col" }, "Replay"))),
      h("tbody", {}, listed.letters.map((l) => h("tr", { "data-dead-letter": l.id },
        h("td", { class: "number" }, h("a", { href: `#/dead-letters/${l.id}`, "data-focus": `open-${l.id}` }, l.id)),
        h("td", {}, l.dead_at.slice(0, 19).replace("T", " ")),
        h("td", {}, `${l.tenant}/${l.handler}`),
        h("td", {}, l.reason ?? "?", l.term_reason && h("div", { class: "muted clip" }, l.term_reason)),
        h("td", { class: "mono" }, `${l.stream}:${l.stream_seq}`),
        h("td", { class: "number" }, l.deliveries),
        h("td", { class: "clip" }, l.last_error),
        h("td", {}, replayControl(l)))))));
}

function replayControl(letter) {
  const last = letter.replays[letter.replays.length - 1];
  if (letter.original_missing) return h("span", { class: "muted" }, "no message kept");
  return h("span", {},
    last && h("div", { class: "muted" }, `replayed as ${last.stored_as}`),
    h("button", {
      type: "button", "data-focus": `replay-${letter.id}`,
      "aria-label": `Replay dead letter ${letter.id}${last ? " again" : ""}`,
      onclick: (event) => replay(letter.id, event.currentTarget),
    }, last ? "Replay again" : "Replay"));
}

async function replay(id, button) {
  button.disabled = true;
  try {
    const replayed = await api(`/api/dead-letters/${id}/replay`, {
      method: "POST", headers: { "x-weir-console": "replay" },
    });
    say(`Dead letter ${id} replayed to ${replayed.to} as ${replayed.stored_as}.`, true);
  } catch (error) {
    say(`Dead letter ${id} was not replayed: ${error.message}`);
  }
  await show();
}

async function deadLetterPage(id) {
  const l = await api(`/api/dead-letters/${encodeURIComponent(id)}`);
  const field = (name, ...value) => h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, ...value));
  const headers = Object.entries(l.headers ?? {}).flatMap(([name, values]) => values.map((v) => `${name}: ${v}`));
  let payload;
  if (l.original_missing) payload = h("p", { class: "muted" }, `No copy of the message: ${l.original_missing}`);
  else if (l.payload_text !== null) payload = h("pre", { class: "payload" }, l.payload_text);
  else payload = h("div", {}, h("p", { class: "muted" }, "Not UTF-8; the first bytes in hexadecimal:"), h("pre", { class: "payload" }, l.payload_hex));
  draw(h("h1", {}, `Dead letter ${l.id}`),
    h("p", { class: "toolbar" },
      h("a", { href: deploymentHash(l.tenant, l.handler), "data-focus": "back" }, `All of ${l.tenant}/${l.handler}'s dead letters`),
      replayControl(l)),
    h("section", { class: "card" },
      h("table", { class: "letter" }, h("tbody", {},
        field("Deployment", `${l.tenant}/${l.handler}`),
        field("Version", h("span", { class: "mono" }, l.handler_version)),
        field("Dead at", l.dead_at),
        field("Reason", l.reason ?? "?"),
        l.term_reason && field("Term reason", l.term_reason),
        field("Last error", h("span", { class: "clip" }, l.last_error)),
        field("From", `stream ${l.stream}, sequence ${l.stream_seq}`),
        field("Subject", h("span", { class: "mono" }, l.subject ?? "(unknown)")),
        field("Deliveries", l.deliveries),
        l.replays.map((r) => field("Replayed", `${r.at} to ${r.to} as ${r.stored_as}`)),
        field("Headers", headers.length ? h("pre", {}, headers.join("\n")) : h("span", { class: "muted" }, "none"))))),
    h("h2", {}, `Payload (${number(l.payload_bytes)} bytes${l.payload_clipped ? ", the start shown" : ""})`),
    payload);
}

// The open log page's connection.
let logs = null;

function logsPage(tenant, handler, params) {
  const partition = params.get("partition");
  const list = h("ol", { "aria-label": "log lines" });
  const pane = h("div", { class: "logs", tabindex: 0 }, list);
  const state = h("p", { class: "muted", role: "status" }, "Connecting…");
  const choose = h("select", {
    "aria-label": "Partition",
    onchange: (event) => {
      const p = event.currentTarget.value;
      location.hash = `#/logs/${encodeURIComponent(tenant)}/${encodeURIComponent(handler)}${p ? "?partition=" + p : ""}`;
    },
  }, h("option", { value: "" }, "every partition"));
  const deployment = snapshot?.deployments?.find((d) => d.tenant === tenant && d.handler === handler);
  for (const p of deployment?.partitions ?? []) {
    choose.append(h("option", { value: p.partition, selected: String(p.partition) === partition }, `partition ${p.partition}`));
  }
  draw(h("h1", {}, `Logs of ${tenant}/${handler}`),
    h("div", { class: "toolbar" }, choose, state),
    pane);
  const query = partition ? `?partition=${encodeURIComponent(partition)}` : "";
  logs = new EventSource(`/api/logs/${encodeURIComponent(tenant)}/${encodeURIComponent(handler)}${query}`);
  logs.addEventListener("open", () => {
    list.replaceChildren();
    state.textContent = "Live: the last 15 minutes, then new lines as they are written.";
  });
  logs.addEventListener("line", (event) => {
    const line = JSON.parse(event.data);
    const follow = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    list.append(h("li", { class: line.level },
      h("span", { class: "mono muted" }, line.at.slice(0, 23).replace("T", " ")),
      h("span", { class: "mono" }, `p${line.partition}`),
      h("span", { class: "mono muted" }, `#${line.stream_seq}`),
      h("span", { class: "level" }, line.level),
      h("span", { class: "message mono" }, line.message)));
    while (list.childElementCount > MAX_LOG_LINES) list.firstElementChild.remove();
    if (follow) pane.scrollTop = pane.scrollHeight;
  });
  logs.addEventListener("skipped", (event) => {
    list.append(h("li", { class: "warn" }, h("span", {}, ""), h("span", {}, ""), h("span", {}, ""), h("span", {}, ""),
      h("span", { class: "message" }, `${event.data} line(s) skipped: the page fell behind`)));
  });
  logs.addEventListener("problem", (event) => { state.textContent = `Cannot read the logs: ${event.data} (trying again)`; });
  logs.addEventListener("error", () => {
    if (logs.readyState !== EventSource.OPEN) state.textContent = "Disconnected; reconnecting…";
  });
}

// ---------------------------------------------------------------------------------------------
// Routing: `#/page/arguments?query`

let shown = null;
let timer = null;

function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "deployments", args: parts.slice(1), params: new URLSearchParams(search || "") };
}

/** Draws the current page from what was last read. */
async function show() {
  const { page, args, params } = route();
  try {
    switch (page) {
      case "deployments": return deploymentsPage();
      case "nodes": return nodesPage();
      case "dead-letters": return args.length ? await deadLetterPage(args[0]) : await deadLettersPage(params);
      case "logs": return; // drawn once, on arrival; its lines come by themselves
      default: return draw(h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/deployments" }, "Deployments")));
    }
  } catch (error) {
    draw(h("h1", {}, "Cannot show this page"), h("p", { class: "problem" }, error.message));
  }
}

async function arrive() {
  const { page, args, params } = route();
  if (logs) { logs.close(); logs = null; }
  clearInterval(timer);
  say("");
  for (const link of document.querySelectorAll("header nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `weir · ${page.replace("-", " ")}`;
  if (page === "logs" && args.length === 2) {
    if (!snapshot) await readSnapshot();
    logsPage(args[0], args[1], params);
  } else {
    await show();
    if (page === "dead-letters" && !args.length) timer = setInterval(show, DEAD_LETTERS_EVERY_MS);
  }
  if (shown !== null) view.focus({ preventScroll: true });
  shown = page;
}

async function tick() {
  await readSnapshot();
  if (["deployments", "nodes"].includes(route().page)) await show();
}

window.addEventListener("hashchange", arrive);
await readSnapshot();
await arrive();
setInterval(tick, SNAPSHOT_EVERY_MS);
