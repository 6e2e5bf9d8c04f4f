// The booking web app: a customer's week and a front desk, live over the official `convex` browser client.
// No build step: the client is the npm package's own browser bundle (global `convex`), loaded by index.html.

import { reasonText, bookedText, cancelText } from "./reasons.js";

const { ConvexClient } = window.convex;
const $ = (id) => document.getElementById(id);
const STAFF = ["owner", "admin"];
const ATTENDANCE = ["owner", "admin", "instructor"];
const DAY_MS = 86400000;

const state = {
  me: null, // {subject, name, role, token}
  businessId: null,
  business: null,
  week: 0,
  instances: null,
  mine: null,
  balance: null,
  refusals: {}, // instanceId -> text shown on the class card after a refusal
  rosterFor: null,
  roster: null,
  members: [],
  view: "customer",
};
let client = null;
const unsubscribe = {};

// -- small DOM helpers ---------------------------------------------------------------------------------

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

let noticeTimer = null;
function notice(text, kind = "info") {
  const box = $("notice");
  box.textContent = text;
  box.dataset.kind = kind;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

function localDay(date, timeZone) {
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

function dayHeading(isoDay, timeZone) {
  const [y, m, d] = isoDay.split("-").map(Number);
  const noon = new Date(Date.UTC(y, m - 1, d, 12));
  return new Intl.DateTimeFormat("en-GB", { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" }).format(noon);
}

function clock(iso, timeZone) {
  return new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", timeZone }).format(new Date(iso));
}

function zone() {
  return state.business?.timezone || Intl.DateTimeFormat().resolvedOptions().timeZone;
}

// -- sign-in ------------------------------------------------------------------------------------------

async function loadDemo() {
  try {
    const response = await fetch("/_dev/demo");
    if (!response.ok) return null;
    return await response.json();
  } catch {
    return null;
  }
}

async function devToken(subject) {
  const response = await fetch("/_dev/token", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ subject }),
  });
  if (!response.ok) throw new Error((await response.json()).message || "sign-in failed");
  return await response.json();
}

function saveSession() {
  sessionStorage.setItem("booking.session", JSON.stringify({ me: state.me, businessId: state.businessId }));
}

async function showSignIn() {
  $("signin").hidden = false;
  $("customer").hidden = true;
  $("staff").hidden = true;
  document.querySelector(".views").hidden = true;
  const demo = await loadDemo();
  const list = $("demo-users");
  list.replaceChildren();
  if (demo && demo.businessId) {
    for (const user of demo.users) {
      list.append(h("button", {
        type: "button", class: "person", "data-subject": user.subject,
        onclick: async () => {
          const signed = await devToken(user.subject);
          state.me = { subject: signed.subject, name: signed.name, role: user.role, token: signed.token };
          state.businessId = demo.businessId;
          saveSession();
          start();
        },
      }, h("strong", {}, user.name), h("span", { class: "muted" }, user.role)));
    }
  } else {
    $("signin-hint").textContent = "Paste an access token for this server and the business to open.";
    $("token-form").hidden = false;
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  let claims = {};
  try { claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { /* shown below */ }
  state.me = { subject: claims.sub || "?", name: claims.name || claims.sub || "you", role: null, token };
  state.businessId = $("business-input").value.trim();
  saveSession();
  start();
});

function signOut() {
  sessionStorage.removeItem("booking.session");
  for (const stop of Object.values(unsubscribe)) stop();
  client?.close();
  client = null;
  state.me = null;
  $("who").replaceChildren();
  showSignIn();
}

// -- live data ----------------------------------------------------------------------------------------

function weekRange() {
  // Read a little more than the week around the venue's days; the days shown are picked by local date.
  const from = new Date(Date.now() + state.week * 7 * DAY_MS - DAY_MS);
  const to = new Date(from.getTime() + 9 * DAY_MS);
  return { from: from.toISOString(), to: to.toISOString() };
}

function weekDays() {
  const first = new Date(Date.now() + state.week * 7 * DAY_MS);
  return Array.from({ length: 7 }, (_, i) => localDay(new Date(first.getTime() + i * DAY_MS), zone()));
}

function watch(name, fn, args, onValue) {
  unsubscribe[name]?.();
  unsubscribe[name] = client.onUpdate(fn, args, onValue, (error) => notice(error.message, "error"));
}

function subscribeWeek() {
  const { from, to } = weekRange();
  state.instances = null;
  watch("week", "classes:list_instances", { businessId: state.businessId, from, to }, (value) => {
    state.instances = value;
    renderWeek();
    renderStaff();
  });
}

function subscribeCustomer() {
  const since = new Date(Date.now() - DAY_MS).toISOString();
  watch("mine", "bookings:mine", { businessId: state.businessId, from: since }, (value) => {
    state.mine = value;
    renderWeek();
    renderMine();
  });
  watch("balance", "credits:balance", { businessId: state.businessId }, (value) => {
    state.balance = value;
    renderBalance();
  });
}

function subscribeStaff() {
  if (!ATTENDANCE.includes(state.me.role)) return;
  unsubscribe.members?.();
  unsubscribe.members = client.onUpdate("members:list",
    { businessId: state.businessId, paginationOpts: { numItems: 200, cursor: null } },
    (value) => { state.members = value.page; renderMembers(); },
    () => { /* instructors may read rosters but not grant credits */ });
}

function subscribeRoster(instanceId) {
  state.rosterFor = instanceId;
  state.roster = null;
  renderRoster();
  if (!instanceId) return;
  watch("roster", "bookings:for_instance", { instanceId }, (value) => {
    state.roster = value;
    renderRoster();
  });
}

// -- optimistic updates -------------------------------------------------------------------------------

function optimisticBook(store, args) {
  let seat = null;
  for (const { args: queryArgs, value } of store.getAllQueries("classes:list_instances")) {
    if (!value) continue;
    store.setQuery("classes:list_instances", queryArgs, value.map((c) => {
      if (c._id !== args.instanceId) return c;
      seat = c.booked < c.capacity ? "confirmed" : "waitlisted";
      return seat === "confirmed" ? { ...c, booked: c.booked + 1 } : { ...c, waitlisted: c.waitlisted + 1, _position: c.waitlisted + 1 };
    }));
  }
  const instance = (state.instances || []).find((c) => c._id === args.instanceId);
  for (const { args: queryArgs, value } of store.getAllQueries("bookings:mine")) {
    if (!value || !instance) continue;
    store.setQuery("bookings:mine", queryArgs, [...value, {
      bookingId: "pending:" + args.instanceId, instanceId: args.instanceId, status: seat || "confirmed",
      startsAt: instance.startsAt, endsAt: instance.endsAt, className: instance.name, pending: true,
      position: seat === "waitlisted" ? instance.waitlisted + 1 : undefined,
    }]);
  }
}

function optimisticCancel(store, args) {
  const booking = (state.mine || []).find((b) => b.bookingId === args.bookingId);
  if (!booking) return;
  for (const { args: queryArgs, value } of store.getAllQueries("classes:list_instances")) {
    if (!value) continue;
    store.setQuery("classes:list_instances", queryArgs, value.map((c) => {
      if (c._id !== booking.instanceId) return c;
      return booking.status === "waitlisted" ? { ...c, waitlisted: Math.max(0, c.waitlisted - 1) }
        : { ...c, booked: Math.max(0, c.booked - 1) };
    }));
  }
  for (const { args: queryArgs, value } of store.getAllQueries("bookings:mine")) {
    if (value) store.setQuery("bookings:mine", queryArgs, value.filter((b) => b.bookingId !== args.bookingId));
  }
}

async function book(instance) {
  delete state.refusals[instance._id];
  try {
    const result = await client.mutation("bookings:book", { instanceId: instance._id }, { optimisticUpdate: optimisticBook });
    notice(bookedText(result, instance), "ok");
  } catch (error) {
    const text = reasonText(error, instance);
    state.refusals[instance._id] = text;
    renderWeek();
    notice(text, "error");
  }
}

async function cancel(booking) {
  try {
    const result = await client.mutation("bookings:cancel", { bookingId: booking.bookingId }, { optimisticUpdate: optimisticCancel });
    notice(cancelText(result, booking), "ok");
  } catch (error) {
    notice(reasonText(error, null), "error");
  }
}

async function staffCall(fn, args, done) {
  try {
    const result = await client.mutation(fn, args);
    if (done) notice(done(result), "ok");
  } catch (error) {
    notice(reasonText(error, null), "error");
  }
}

// -- rendering ----------------------------------------------------------------------------------------

function myBookingFor(instanceId) {
  return (state.mine || []).find((b) => b.instanceId === instanceId && ["confirmed", "waitlisted", "checked_in"].includes(b.status));
}

function classCard(c) {
  const mine = myBookingFor(c._id);
  const left = Math.max(0, c.capacity - c.booked);
  const cancelled = c.status !== "scheduled";
  const started = new Date(c.startsAt).getTime() <= Date.now();
  let action = null;
  let badge = null;
  if (cancelled) badge = h("span", { class: "badge cancelled" }, "Cancelled");
  else if (mine && mine.status === "waitlisted") {
    badge = h("span", { class: "badge wait", "data-testid": "my-position" }, `Waitlist #${mine.position ?? "…"}`);
    action = h("button", { type: "button", class: "ghost", disabled: mine.pending || undefined, onclick: () => cancel(mine),
      "aria-label": `Leave the waitlist for ${c.name} at ${c.localTime}` }, "Leave waitlist");
  } else if (mine) {
    badge = h("span", { class: "badge ok" }, mine.status === "checked_in" ? "Checked in" : "Booked");
    if (mine.status === "confirmed" && !started) {
      action = h("button", { type: "button", class: "ghost", disabled: mine.pending || undefined, onclick: () => cancel(mine),
        "aria-label": `Cancel my booking for ${c.name} at ${c.localTime}` }, "Cancel");
    }
  } else if (!started) {
    action = h("button", { type: "button", class: left > 0 ? "primary" : "secondary", onclick: () => book(c),
      "aria-label": `${left > 0 ? "Book" : "Join the waitlist for"} ${c.name} at ${c.localTime}` },
    left > 0 ? "Book" : "Join waitlist");
  } else {
    action = h("span", { class: "muted small" }, "Started");
  }
  const refusal = state.refusals[c._id];
  return h("li", { class: `class-card${cancelled ? " is-cancelled" : ""}${left === 0 ? " is-full" : ""}`, "data-instance": c._id },
    h("div", { class: "time" }, h("strong", {}, clock(c.startsAt, c.timezone)), h("span", { class: "muted" }, clock(c.endsAt, c.timezone))),
    h("div", { class: "what" },
      h("h4", {}, c.name, badge ? " " : null, badge),
      h("p", { class: "seats" },
        h("span", { "data-testid": "seats" }, cancelled ? (c.cancelReason || "cancelled") : left > 0 ? `${left} of ${c.capacity} seats left` : "Full"),
        c.waitlisted > 0 ? h("span", { class: "muted", "data-testid": "waitlist" }, ` · ${c.waitlisted} waiting`) : null),
      refusal ? h("p", { class: "refusal", role: "alert", "data-testid": "refusal" }, refusal) : null),
    h("div", { class: "act" }, action));
}

function renderWeek() {
  const box = $("week");
  if (!state.instances) return;
  box.setAttribute("aria-busy", "false");
  const days = weekDays();
  $("week-title").textContent = state.week === 0 ? "This week" : state.week === 1 ? "Next week" : `Week of ${dayHeading(days[0])}`;
  $("tz-note").textContent = `Times are local to the studio (${zone()}).`;
  const byDay = new Map(days.map((d) => [d, []]));
  for (const c of state.instances) byDay.get(c.localDate)?.push(c);
  box.replaceChildren(...days.map((day) => h("section", { class: "day", "aria-label": dayHeading(day) },
    h("h3", {}, dayHeading(day)),
    byDay.get(day).length ? h("ul", { class: "classes" }, byDay.get(day).map(classCard)) : h("p", { class: "muted small" }, "No classes"))));
}

function renderBalance() {
  const b = state.balance;
  if (!b) return;
  $("credit-balance").textContent = String(b.available);
  const next = b.lots.find((lot) => !lot.expired && lot.remaining > 0);
  $("credit-detail").textContent = next ? `${next.remaining} valid until ${next.expiresOn}` : "No credits yet.";
}

function renderMine() {
  const list = $("my-bookings");
  const upcoming = (state.mine || []).filter((b) => ["confirmed", "waitlisted", "checked_in"].includes(b.status));
  if (!upcoming.length) {
    list.replaceChildren(h("li", { class: "muted small" }, "Nothing booked yet."));
    return;
  }
  list.replaceChildren(...upcoming.map((b) => h("li", { "data-booking": b.bookingId },
    h("strong", {}, b.className || "Class"),
    h("span", { class: "muted" }, ` ${dayHeading(localDay(new Date(b.startsAt), zone()))}, ${clock(b.startsAt, zone())}`),
    h("span", { class: `badge ${b.status === "waitlisted" ? "wait" : "ok"}` },
      b.status === "waitlisted" ? `Waitlist #${b.position ?? "…"}` : b.status === "checked_in" ? "Checked in" : "Booked"))));
}

function renderStaff() {
  if (!ATTENDANCE.includes(state.me?.role) || !state.instances) return;
  const picker = $("class-picker");
  const chosen = state.rosterFor || picker.value;
  const upcoming = state.instances.filter((c) => weekDays().includes(c.localDate));
  picker.replaceChildren(...upcoming.map((c) => h("option", { value: c._id, selected: c._id === chosen || undefined },
    `${dayHeading(c.localDate)} ${c.localTime} — ${c.name} (${c.booked}/${c.capacity}${c.waitlisted ? `, ${c.waitlisted} waiting` : ""})${c.status !== "scheduled" ? " — cancelled" : ""}`)));
  if (!state.rosterFor && upcoming.length) subscribeRoster(upcoming[0]._id);
}

function rosterRow(b, waiting) {
  const label = b.memberName || b.memberId;
  const buttons = waiting ? [] : [
    h("button", { type: "button", class: "ghost", disabled: b.status === "checked_in" || undefined,
      onclick: () => staffCall("bookings:check_in", { bookingId: b.bookingId }, () => `${label} checked in`),
      "aria-label": `Check in ${label}` }, "Check in"),
    h("button", { type: "button", class: "ghost", disabled: b.status === "no_show" || undefined,
      onclick: () => staffCall("bookings:mark_no_show", { bookingId: b.bookingId }, () => `${label} marked as a no-show`),
      "aria-label": `Mark ${label} as a no-show` }, "No-show"),
  ];
  return h("li", { "data-booking": b.bookingId },
    h("span", { class: "name" }, waiting ? `${b.position}. ${label}` : label),
    h("span", { class: `badge ${b.status}` }, b.status.replace("_", " ")),
    h("span", { class: "buttons" }, buttons));
}

function renderRoster() {
  const box = $("roster");
  const r = state.roster;
  if (!state.rosterFor) { box.replaceChildren(h("p", { class: "muted" }, "No classes this week.")); return; }
  if (!r) { box.replaceChildren(h("p", { class: "muted" }, "Loading roster…")); return; }
  box.replaceChildren(
    h("p", { class: "roster-summary", "data-testid": "roster-summary" },
      `${r.booked} of ${r.capacity} booked · ${r.waitlisted} waiting${r.status !== "scheduled" ? " · cancelled" : ""}`),
    h("h3", {}, "Attendees"),
    r.attendees.length ? h("ul", { class: "roster-list", "data-testid": "attendees" }, r.attendees.map((b) => rosterRow(b, false)))
      : h("p", { class: "muted small" }, "Nobody booked yet."),
    h("h3", {}, "Waitlist"),
    r.waitlist.length ? h("ul", { class: "roster-list", "data-testid": "waitlist-roster" }, r.waitlist.map((b) => rosterRow(b, true)))
      : h("p", { class: "muted small" }, "Nobody waiting."));
}

function renderMembers() {
  const select = $("grant-member");
  const keep = select.value;
  const active = state.members.filter((m) => m.status === "active");
  active.sort((a, b) => (a.role === "customer" ? 0 : 1) - (b.role === "customer" ? 0 : 1));
  select.replaceChildren(...active.map((m) =>
    h("option", { value: m._id, selected: m._id === keep || undefined }, `${m.name || m.subject} (${m.role})`)));
}

function renderWho() {
  $("who").replaceChildren(
    h("span", {}, "Signed in as ", h("strong", { "data-testid": "me" }, state.me.name), state.me.role ? ` · ${state.me.role}` : ""),
    h("button", { type: "button", class: "ghost", onclick: signOut }, "Sign out"));
}

function showView(view) {
  state.view = view;
  $("customer").hidden = view !== "customer";
  $("staff").hidden = view !== "staff";
  $("tab-customer").setAttribute("aria-pressed", String(view === "customer"));
  $("tab-staff").setAttribute("aria-pressed", String(view === "staff"));
}

// -- wiring -------------------------------------------------------------------------------------------

$("tab-customer").addEventListener("click", () => showView("customer"));
$("tab-staff").addEventListener("click", () => showView("staff"));
$("prev-week").addEventListener("click", () => { state.week -= 1; subscribeWeek(); });
$("next-week").addEventListener("click", () => { state.week += 1; subscribeWeek(); });
$("this-week").addEventListener("click", () => { state.week = 0; subscribeWeek(); });
$("class-picker").addEventListener("change", (event) => subscribeRoster(event.target.value));
$("cancel-class-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const reason = $("cancel-reason").value.trim();
  if (!state.rosterFor || !reason) return;
  staffCall("classes:cancel_instance", { instanceId: state.rosterFor, reason }, () => "Class cancelled; everyone booked is refunded");
  $("cancel-reason").value = "";
});
$("grant-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const args = { businessId: state.businessId, memberId: $("grant-member").value,
    credits: Number($("grant-credits").value), expiresOn: $("grant-expires").value };
  const note = $("grant-note").value.trim();
  if (note) args.note = note;
  staffCall("credits:grant", args, () => `Granted ${args.credits} credits`);
});

async function start() {
  $("signin").hidden = true;
  client = new ConvexClient(window.location.origin, { skipConvexDeploymentUrlCheck: true, unsavedChangesWarning: false });
  client.setAuth(async () => state.me.token);
  renderWho();
  const staff = ATTENDANCE.includes(state.me.role);
  document.querySelector(".views").hidden = !staff;
  $("tab-staff").hidden = !staff;
  $("grant-form").closest(".panel").hidden = !STAFF.includes(state.me.role);
  $("cancel-class-form").hidden = !STAFF.includes(state.me.role);
  const expires = new Date(Date.now() + 90 * DAY_MS);
  $("grant-expires").value = expires.toISOString().slice(0, 10);
  const params = new URLSearchParams(window.location.search);
  showView(staff && params.get("view") !== "customer" ? "staff" : "customer");
  watch("business", "businesses:get", { businessId: state.businessId }, (value) => {
    state.business = value;
    $("studio-name").textContent = value?.name || "Class booking";
    document.title = `${value?.name || "Class booking"} — book a class`;
    renderWeek();
  });
  subscribeWeek();
  subscribeCustomer();
  subscribeStaff();
}

async function boot() {
  const params = new URLSearchParams(window.location.search);
  const as = params.get("as");
  if (as) {
    // ?as=<demo subject> signs in directly on the development server (handy for links and tests).
    const demo = await loadDemo();
    const user = demo?.users.find((u) => u.subject === as);
    if (user) {
      const signed = await devToken(as);
      state.me = { subject: signed.subject, name: signed.name, role: user.role, token: signed.token };
      state.businessId = demo.businessId;
      saveSession();
      return start();
    }
  }
  const saved = JSON.parse(sessionStorage.getItem("booking.session") || "null");
  if (saved?.me) {
    state.me = saved.me;
    state.businessId = saved.businessId;
    return start();
  }
  return showSignIn();
}

boot();
