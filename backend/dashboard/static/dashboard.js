// The dashboard: data browser, function runner, call log, live sessions, schedules. Plain JS, no build step;
// every view refreshes itself every `pollMs` from the JSON API under /_dashboard/api.

const $ = (id) => document.getElementById(id);
const AUDIT = new Set(["createdAt", "createdBy", "updatedAt", "updatedBy", "deleted", "deletedAt", "deletedBy"]);

const state = {
  meta: null, view: "data", tenant: "", tables: [], table: null, cursors: [null], page: null,
  functions: [], fn: null, members: [], lastLog: 0, calls: [],
};

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path, body) {
  const response = await fetch("/_dashboard/api/" + path, body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (response.status === 401) { window.location.href = "/_dashboard/login"; throw new Error("signed out"); }
  const data = await response.json();
  if (!response.ok) throw Object.assign(new Error(data.message || response.statusText), { data });
  return data;
}

function q(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? "?" + text : "";
}

function cell(value) {
  if (value === null || value === undefined) return h("span", { class: "null" }, "—");
  if (typeof value === "object") return h("code", { class: "json" }, JSON.stringify(value));
  if (typeof value === "boolean") return h("span", { class: value ? "yes" : "no" }, String(value));
  if (typeof value === "string" && /^[a-z0-9]{28,40}$/.test(value)) return h("span", { class: "id", title: value }, value);
  return String(value);
}

// -- data browser -------------------------------------------------------------------------------------

function renderTables() {
  $("tables").replaceChildren(...state.tables.map((t) => h("button", {
    type: "button", role: "option", "aria-selected": String(state.table?.name === t.name), "data-table": t.name,
    onclick: () => selectTable(t.name),
  }, t.name, t.tenantKey || t.tenantRoot ? null : h("span", { class: "muted small" }, " global"))));
}

function selectTable(name) {
  state.table = state.tables.find((t) => t.name === name);
  state.cursors = [null];
  renderTables();
  $("table-title").textContent = name;
  const index = $("index");
  index.replaceChildren(...state.table.indexes.map((i) => h("option", { value: i.name }, `${i.name} (${i.fields.join(", ")})`)));
  index.value = state.table.indexes.some((i) => i.name === "by_creation_time") ? "by_creation_time" : state.table.indexes[0].name;
  $("show-deleted").disabled = !state.table.softDelete;
  renderIndexFields();
  loadRows();
}

function renderIndexFields() {
  const spec = state.table.indexes.find((i) => i.name === $("index").value);
  const box = $("index-fields");
  const tenantKey = state.table.tenantKey;
  box.replaceChildren(...spec.fields.filter((f) => !(state.tenant && f === tenantKey) && f !== "_creationTime").map((f) =>
    h("label", {}, `${f} =`, h("input", { "data-field": f, placeholder: "any", size: 14, onchange: () => { state.cursors = [null]; loadRows(); } }))));
}

function filterValues() {
  const eq = {};
  for (const input of $("index-fields").querySelectorAll("input")) {
    if (input.value.trim() === "") break; // an index range: equalities on a prefix of its fields
    eq[input.dataset.field] = input.value.trim();
  }
  return eq;
}

async function loadRows() {
  if (!state.table) return;
  const cursor = state.cursors[state.cursors.length - 1];
  try {
    state.page = await api("rows", {
      table: state.table.name, index: $("index").value, eq: filterValues(), includeDeleted: $("show-deleted").checked,
      order: $("order").value, cursor, numItems: Number($("page-size").value), tenant: state.tenant || null,
    });
    renderRows();
  } catch (error) {
    $("rows").replaceChildren(h("caption", { class: "error", role: "alert" }, error.message));
  }
}

function renderRows() {
  const table = state.table;
  const showAudit = $("show-audit").checked;
  // _id, then the document's own fields, then the engine's (creation time, audit and soft-delete fields).
  const ordered = [...table.fields.filter((f) => f.key === "_id"), ...table.fields.filter((f) => !f.system),
    ...table.fields.filter((f) => f.system && f.key !== "_id")];
  // With a business picked, its id in every row says nothing: the column is left out.
  const fields = ordered.filter((f) => (showAudit || !AUDIT.has(f.key)) && !(state.tenant && f.key === table.tenantKey));
  const rows = state.page.page;
  $("rows").replaceChildren(
    h("caption", { class: "sr-only" }, `Rows of ${table.name}`),
    h("thead", {}, h("tr", {}, fields.map((f) => h("th", { scope: "col", class: AUDIT.has(f.key) ? "audit" : f.system ? "system" : "" }, f.key)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", { "data-id": r._id, class: r.deleted ? "deleted" : "" },
      fields.map((f) => h("td", { class: AUDIT.has(f.key) ? "audit" : "" },
        f.key === "_creationTime" ? new Date(r[f.key]).toISOString() : cell(r[f.key])))))
      : h("tr", {}, h("td", { colspan: fields.length, class: "muted" }, "No rows."))));
  $("page-info").textContent = `page ${state.cursors.length} · ${rows.length} row${rows.length === 1 ? "" : "s"}${state.page.isDone ? " · last page" : ""}`;
  $("next-page").disabled = state.page.isDone;
  $("first-page").disabled = state.cursors.length === 1;
}

$("index").addEventListener("change", () => { state.cursors = [null]; renderIndexFields(); loadRows(); });
for (const id of ["order", "page-size", "show-deleted"]) $(id).addEventListener("change", () => { state.cursors = [null]; loadRows(); });
$("show-audit").addEventListener("change", renderRows);
$("next-page").addEventListener("click", () => { state.cursors.push(state.page.continueCursor); loadRows(); });
$("first-page").addEventListener("click", () => { state.cursors = [null]; loadRows(); });
$("filters").addEventListener("submit", (e) => { e.preventDefault(); loadRows(); });

// -- function runner ----------------------------------------------------------------------------------

function resolve(schema, root) {
  if (schema && schema.$ref) return resolve(root.$defs[schema.$ref.split("/").pop()], root);
  return schema;
}

function optional(schema) {
  const inner = schema.anyOf ? schema.anyOf.filter((s) => s.type !== "null") : null;
  return inner && inner.length === 1 ? inner[0] : null;
}

function argField(name, schema, required, root) {
  const nullable = optional(schema);
  const s = resolve(nullable || schema, root);
  const id = "arg-" + name;
  const hint = [s.format, s.type, s.enum ? s.enum.join(" | ") : null].filter(Boolean)[0] || "JSON";
  let input;
  if (s.enum) {
    input = h("select", { id, "data-arg": name, "data-kind": "enum" },
      required ? null : h("option", { value: "" }, "(none)"), s.enum.map((v) => h("option", { value: JSON.stringify(v) }, String(v))));
  } else if (s.type === "boolean") {
    input = h("select", { id, "data-arg": name, "data-kind": "enum" },
      required ? null : h("option", { value: "" }, "(none)"), h("option", { value: "true" }, "true"), h("option", { value: "false" }, "false"));
  } else if (s.type === "integer" || s.type === "number") {
    input = h("input", { id, "data-arg": name, "data-kind": "number", type: "number", step: s.type === "integer" ? "1" : "any" });
  } else if (s.type === "string") {
    input = h("input", { id, "data-arg": name, "data-kind": "string", placeholder: s.format || "" });
    if (s.format === "id:businesses" && state.tenant) input.value = state.tenant;
  } else {
    input = h("textarea", { id, "data-arg": name, "data-kind": "json", rows: 2, placeholder: "JSON" });
  }
  input.required = required;
  return h("div", { class: "arg" }, h("label", { for: id }, name, required ? " *" : "", h("span", { class: "muted small" }, ` ${hint}`)), input);
}

function renderFunctions() {
  const filter = $("fn-filter").value.trim().toLowerCase();
  $("functions").replaceChildren(...state.functions.filter((f) => f.path.toLowerCase().includes(filter)).map((f) =>
    h("li", {}, h("button", { type: "button", "data-path": f.path, "aria-current": state.fn?.path === f.path ? "true" : undefined,
      onclick: () => selectFunction(f.path) },
    h("span", { class: `kind ${f.kind}` }, f.kind[0].toUpperCase()), f.path, f.internal ? h("span", { class: "badge" }, "internal") : null))));
}

function selectFunction(path) {
  const fn = state.functions.find((f) => f.path === path);
  state.fn = fn;
  renderFunctions();
  $("fn-title").textContent = `${fn.path} — ${fn.kind}${fn.internal ? " (internal)" : ""}`;
  $("fn-doc").textContent = [fn.doc, fn.roles ? `Roles: ${fn.roles.join(", ")}` : ""].filter(Boolean).join("\n\n");
  const root = fn.args;
  const object = resolve(root, root);
  const required = new Set(object.required || []);
  $("fn-args").replaceChildren(h("legend", {}, "Arguments"),
    ...Object.entries(object.properties || {}).map(([name, schema]) => argField(name, schema, required.has(name), root)));
  if (!Object.keys(object.properties || {}).length) $("fn-args").append(h("p", { class: "muted small" }, "No arguments."));
  $("fn-form").hidden = false;
  $("fn-result").hidden = true;
}

function collectArgs() {
  const args = {};
  for (const input of $("fn-args").querySelectorAll("[data-arg]")) {
    const raw = input.value.trim();
    if (raw === "") continue;
    const kind = input.dataset.kind;
    try {
      args[input.dataset.arg] = kind === "string" ? raw : kind === "number" ? Number(raw) : JSON.parse(raw);
    } catch {
      throw new Error(`${input.dataset.arg}: not valid JSON`);
    }
  }
  return args;
}

$("fn-filter").addEventListener("input", renderFunctions);
for (const radio of document.querySelectorAll("input[name=as]")) {
  radio.addEventListener("change", () => { $("as-member").disabled = radio.value !== "member" || !radio.checked; });
}
$("fn-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const as = document.querySelector("input[name=as]:checked").value;
  const identity = as === "member" ? { kind: "member", subject: $("as-member").value } : { kind: as };
  $("run").disabled = true;
  try {
    const result = await api("run", { path: state.fn.path, args: collectArgs(), identity });
    $("fn-status").textContent = result.ok ? "success" : "error";
    $("fn-status").className = "badge " + (result.ok ? "ok" : "bad");
    $("fn-ms").textContent = `${result.ms.toFixed(1)} ms · ${result.actor ? "audited as " + result.actor : "anonymous"}`;
    $("fn-value").textContent = JSON.stringify(result.ok ? result.value : result.error, null, 2);
    $("fn-logs").textContent = result.logLines.join("\n") || "(no log lines)";
  } catch (error) {
    $("fn-status").textContent = "refused";
    $("fn-status").className = "badge bad";
    $("fn-ms").textContent = "";
    $("fn-value").textContent = error.data ? JSON.stringify(error.data, null, 2) : error.message;
    $("fn-logs").textContent = "";
  } finally {
    $("run").disabled = false;
    $("fn-result").hidden = false;
  }
});

async function loadMembers() {
  const select = $("as-member");
  state.members = state.tenant ? await api("members" + q({ tenant: state.tenant })) : [];
  select.replaceChildren(...(state.members.length ? state.members.map((m) =>
    h("option", { value: m.subject }, `${m.name || m.subject} (${m.role}, ${m.subject})`))
    : [h("option", { value: "" }, "pick a business first")]));
}

// -- logs, sessions, schedules ------------------------------------------------------------------------

async function loadLogs() {
  if ($("log-pause").checked) return;
  const answer = await api("logs" + q({ after: state.lastLog, tenant: state.tenant }));
  state.lastLog = answer.last;
  state.calls = [...answer.calls.reverse(), ...state.calls].slice(0, 500);
  const filter = $("log-filter").value.trim();
  const showQueries = $("log-queries").checked;
  const shown = state.calls.filter((c) => (showQueries || c.kind !== "query") && (!filter || c.path.includes(filter)));
  $("log-table").replaceChildren(
    h("thead", {}, h("tr", {}, ["time", "kind", "function", "actor", "ms", "outcome", "args", "logs"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, shown.map((c) => h("tr", { class: c.ok ? "" : "failed", "data-path": c.path },
      h("td", {}, new Date(c.at * 1000).toLocaleTimeString()), h("td", {}, h("span", { class: `kind ${c.kind}` }, c.kind[0].toUpperCase())),
      h("td", {}, c.path), h("td", {}, cell(c.actor)), h("td", { class: "num" }, c.ms.toFixed(1)),
      h("td", {}, c.ok ? h("span", { class: "badge ok" }, "ok") : h("span", { class: "badge bad", title: c.error }, c.error)),
      h("td", {}, h("code", { class: "json" }, c.args)), h("td", {}, h("code", { class: "json" }, c.logLines.join(" ")))))));
  if (!answer.enabled) $("log-table").append(h("caption", {}, "The call log is off (BACKEND_DASHBOARD_CALL_LOG_SIZE=0)."));
}

async function loadSessions() {
  const answer = await api("sessions" + q({ tenant: state.tenant }));
  const s = answer.stats;
  $("hub-stats").textContent = `${answer.sessions.length} session(s) · ${answer.instances} live query instance(s) · ` +
    `${s.commits ?? 0} commits, ${s.reruns ?? 0} re-runs, ${s.transitions ?? 0} transitions since start`;
  $("sessions").replaceChildren(...answer.sessions.map((session) => h("article", { class: "session" },
    h("h3", {}, h("code", {}, session.sessionId), " ", h("span", { class: "badge" }, session.state.toLowerCase()), " ",
      h("span", { class: "muted small" }, session.subject ? "as " + session.subject : "anonymous")),
    session.queries.length ? h("table", { class: "rows" },
      h("thead", {}, h("tr", {}, ["id", "query", "args", "runs", "sockets"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, session.queries.map((qr) => h("tr", {}, h("td", {}, qr.queryId), h("td", {}, qr.path),
        h("td", {}, h("code", { class: "json" }, JSON.stringify(qr.args))), h("td", { class: "num" }, qr.runs), h("td", { class: "num" }, qr.subscribers)))))
      : h("p", { class: "muted small" }, "No subscriptions."))));
  if (!answer.sessions.length) $("sessions").append(h("p", { class: "muted" }, "No client is connected."));
}

async function loadJobs() {
  const answer = await api("jobs" + q({ tenant: state.tenant }));
  $("job-counts").textContent = Object.entries(answer.counts).map(([k, v]) => `${v} ${k}`).join(" · ");
  $("crons").replaceChildren(
    h("thead", {}, h("tr", {}, ["name", "function", "schedule", "next run", "last run"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, answer.crons.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.path), h("td", {}, h("code", {}, c.schedule)),
      h("td", {}, cell(c.nextRun)), h("td", {}, cell(c.lastRun))))));
  $("jobs").replaceChildren(
    h("thead", {}, h("tr", {}, ["run at", "function", "status", "attempts", "cron", "error"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, answer.jobs.length ? answer.jobs.map((j) => h("tr", {}, h("td", {}, j.runAt), h("td", {}, j.path),
      h("td", {}, h("span", { class: `badge ${j.status}` }, j.status)), h("td", { class: "num" }, j.attempts), h("td", {}, cell(j.cron)), h("td", {}, cell(j.error))))
      : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No jobs."))));
}

// -- shell --------------------------------------------------------------------------------------------

const LOADERS = { data: loadRows, logs: loadLogs, sessions: loadSessions, jobs: loadJobs, functions: async () => {} };

function show(view) {
  state.view = view;
  for (const button of document.querySelectorAll("nav.side button")) {
    button.toggleAttribute("aria-current", button.dataset.view === view);
    if (button.dataset.view === view) button.setAttribute("aria-current", "page");
  }
  for (const section of document.querySelectorAll("section.view")) section.hidden = section.id !== "view-" + view;
  LOADERS[view]().catch(() => {});
}

for (const button of document.querySelectorAll("nav.side button")) button.addEventListener("click", () => show(button.dataset.view));

$("tenant").addEventListener("change", async () => {
  state.tenant = $("tenant").value;
  state.calls = [];
  state.lastLog = 0;
  if (state.table) { state.cursors = [null]; renderIndexFields(); }
  await loadMembers();
  if (state.fn) selectFunction(state.fn.path);
  LOADERS[state.view]().catch(() => {});
});

async function poll() {
  try {
    await LOADERS[state.view]();
  } catch { /* shown where it happened; try again next round */ }
  setTimeout(poll, state.meta.pollMs);
}

async function boot() {
  state.meta = await api("meta");
  $("admin").textContent = `${state.meta.admin}${state.meta.via === "dev" ? " (dev, loopback)" : ""}`;
  $("logout").hidden = state.meta.via !== "key";
  const [tables, tenants, functions] = await Promise.all([api("tables"), api("tenants"), api("functions")]);
  state.tables = tables;
  state.functions = functions;
  $("tenant").append(...tenants.map((t) => h("option", { value: t._id }, t.name)));
  const params = new URLSearchParams(window.location.search);
  if (params.get("tenant")) { $("tenant").value = params.get("tenant"); state.tenant = $("tenant").value; }
  await loadMembers();
  renderTables();
  renderFunctions();
  selectTable(params.get("table") || (tables.some((t) => t.name === "class_instances") ? "class_instances" : tables[0].name));
  show(params.get("view") || "data");
  setTimeout(poll, state.meta.pollMs);
}

boot();
