// The Seam console: a small page over the JSON admin API. Signing in exchanges the admin key for
// a session cookie (HttpOnly: no script can read it); the key is dropped from the page at once,
// and every later request carries only the cookie, plus the CSRF token for a change.
const $ = (selector) => document.querySelector(selector);
let session = null;

/** Text nodes only: nothing from a profile is ever parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && session) headers["x-seam-csrf"] = session.csrf;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const json = await response.json().catch(() => null);
  if (response.status === 401 && path !== "/console/session") signedOut();
  return { status: response.status, json };
}

const VIEWS = { overview: "profiles:read", live: "profiles:read", profiles: "profiles:read", segments: "profiles:read", settings: "config:write", audit: "config:write" };

function show(view) {
  for (const id of ["signin", "denied", ...Object.keys(VIEWS)]) $(`#${id}`).hidden = id !== view;
  const signedIn = view !== "signin";
  $("#nav").hidden = !signedIn;
  $("#who").hidden = !signedIn;
  if (view !== "live") stopLive();
}

function signedOut() {
  session = null;
  show("signin");
  $("#admin-key").focus();
}

function signedIn(s) {
  session = s;
  $("#who-label").textContent = `Signed in as ${s.label}`;
  // A page the key may not open is not offered (and refused if opened by its address).
  for (const link of document.querySelectorAll("#nav a")) link.hidden = !s.scopes.includes(link.dataset.scope);
  route();
}

function route() {
  if (!session) return signedOut();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const view = VIEWS[path] ? path : "overview";
  if (!session.scopes.includes(VIEWS[view])) return show("denied");
  show(view);
  if (view === "live") startLive();
  if (view === "audit") loadAudit();
  if (view === "overview") loadOverview();
  if (view === "segments") loadSegments();
  if (view === "settings") loadSettings();
  if (view === "profiles") {
    const q = new URLSearchParams(query ?? "").get("q");
    if (q && $("#search").value !== q) {
      $("#search").value = q;
      search(q);
    }
  }
}

// --- Sign in and out -----------------------------------------------------------------------

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#admin-key");
  const key = input.value;
  input.value = ""; // the key leaves the page with this one request
  const { status, json } = await api("/console/session", { method: "POST", body: { key } });
  if (status === 201) return signedIn(json);
  $("#signin-status").textContent = json?.message ?? "Sign-in failed.";
});

$("#sign-out").addEventListener("click", async () => {
  await api("/console/session", { method: "DELETE" });
  signedOut();
});

// --- Profiles ------------------------------------------------------------------------------

/** Which identifier types a search term may be, most likely first. */
function typesFor(q) {
  if (q.includes("@")) return ["email"];
  if (/^\+?[\d\s().-]{6,}$/.test(q)) return ["phone", "user_id", "anonymous_id"];
  return ["user_id", "anonymous_id", "email"];
}

async function search(q) {
  const status = $("#search-status");
  status.textContent = "Searching…";
  $("#profile").hidden = true;
  for (const type of typesFor(q.trim())) {
    const { status: code, json } = await api(`/v1/profiles/lookup?type=${encodeURIComponent(type)}&value=${encodeURIComponent(q.trim())}`);
    if (code === 200) {
      status.textContent = `Found by ${type.replace("_", " ")}.`;
      return renderProfile(json);
    }
    if (code === 403) {
      status.textContent = json?.message ?? "Not allowed.";
      return;
    }
  }
  status.textContent = "No profile matches.";
}

$("#search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("#search").value;
  history.replaceState(null, "", `#/profiles?q=${encodeURIComponent(q)}`);
  search(q);
});

const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");
const value = (v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));

function pairs(object) {
  const entries = Object.entries(object ?? {});
  if (!entries.length) return el("p", { class: "note" }, "None.");
  return el("dl", {}, entries.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, value(v))]));
}

function card(title, ...content) {
  const id = `card-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return el("section", { class: "card", "aria-labelledby": id }, el("h2", { id }, title), ...content);
}

function renderProfile(p) {
  const view = $("#profile");
  view.replaceChildren();
  view.append(el("h2", { id: "profile-title" }, `Profile ${p.profileId}`));
  view.append(el("p", { class: "note" }, `${p.eventCount} events · first seen ${p.firstSeen ?? "?"} · last seen ${p.lastSeen ?? "?"}`));
  const identifiers = el("ul", { class: "plain", "aria-label": "Identifiers" }, p.identifiers.map((i) => el("li", {}, el("code", {}, i))));
  const merges = (p.merges ?? []).length
    ? el("ul", { class: "plain" }, p.merges.map((m) => el("li", {}, `${when(m.mergedAt)}: ${m.from} joined ${m.into} (${m.cause})`)))
    : el("p", { class: "note" }, "No merges.");
  // Current memberships first, with when they began; past ones with when they ended. A segment
  // the profile is in now that no refresh has recorded yet (time-driven) shows as "now".
  const recorded = new Set((p.memberships ?? []).filter((m) => m.exitedAt === null).map((m) => m.segment));
  const unrecorded = (p.segments ?? []).filter((s) => !recorded.has(s)).map((segment) => ({ segment, enteredAt: null, exitedAt: null }));
  const memberships = [...(p.memberships ?? []), ...unrecorded].sort((a, b) => (a.exitedAt === null) === (b.exitedAt === null) ? b.enteredAt - a.enteredAt : a.exitedAt === null ? -1 : 1);
  const segments = memberships.length
    ? el("ul", { class: "plain", "aria-label": "Segments" }, memberships.map((m) => el("li", {}, el("span", { class: "tag" }, m.segment), m.enteredAt === null ? " now" : m.exitedAt === null ? ` since ${when(m.enteredAt)}` : ` ${when(m.enteredAt)} to ${when(m.exitedAt)}`)))
    : el("p", { class: "note" }, "None.");
  const journeys = (p.journeys ?? []).length
    ? el("ul", { class: "plain" }, p.journeys.map((j) => el("li", {}, `${j.journey}: ${j.status}${j.step ? ` at ${j.step}` : ""}${j.endReason ? ` (${j.endReason})` : ""}, entered ${when(j.enteredAt)}${j.control ? ", holdout" : ""}`)))
    : el("p", { class: "note" }, "None.");
  const recommendations = el("div", { id: "recommendations", "aria-live": "polite" }, el("p", { class: "note" }, "Loading…"));
  view.append(
    el("div", { class: "grid" },
      card("Identifiers", identifiers, el("h3", {}, "How they were joined"), merges),
      card("Traits", pairs(p.traits)),
      card("Computed traits", pairs(p.computedTraits)),
      card("Segments", segments),
      card("Recommended now", recommendations),
      card("Journeys", journeys),
    ),
  );
  loadRecommendations(p.profileId, recommendations);
  if (session.scopes.includes("privacy:write")) view.append(privacyActions(p));
  view.append(table("Deliveries", ["Updated", "Destination", "For", "Status", "Attempts", "Last error"], (p.deliveries ?? []).map((d) => [
    when(d.updatedAt), d.destination, d.about ?? d.messageId, d.status, d.attempts, d.lastError ?? (d.status !== "delivered" && d.lastStatus ? `HTTP ${d.lastStatus}` : ""),
  ])));
  // Events and consent changes on one timeline, newest first. Each list is its newest 50: past
  // the oldest entry of a full list, the other list's entries would hide a gap, so they wait.
  const events = (p.recentEvents ?? []).map((e) => ({ at: Date.parse(e.body?.timestamp), cells: [e.type, e.name ?? "", e.sourceId, el("code", {}, e.body?.userId ?? e.body?.anonymousId ?? "")] }));
  const consent = (p.consent ?? []).map((c) => ({ at: c.timestamp, cells: ["consent", consentSummary(c.state), c.sourceId, el("code", {}, c.identifier)] }));
  const horizon = Math.max(...[events, consent].filter((list) => list.length >= 50).map((list) => Math.min(...list.map((e) => e.at))), -Infinity);
  const entries = [...events, ...consent].filter((e) => e.at >= horizon).sort((a, b) => b.at - a.at);
  view.append(table("Timeline", ["Time", "Type", "Event", "Source", "Identifier"], entries.map((e) => [when(e.at), ...e.cells])));
  if (horizon > -Infinity) view.append(el("p", { class: "note" }, `Older events are not shown: ${p.eventCount} in all.`));
  view.hidden = false;
}

function table(title, headings, rows) {
  const id = `${title.toLowerCase()}-title`;
  return el("section", { class: "timeline", "aria-labelledby": id },
    el("h2", { id }, title),
    rows.length
      ? el("table", { "aria-labelledby": id },
          el("thead", {}, el("tr", {}, headings.map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))),
        )
      : el("p", { class: "note" }, "None."),
  );
}

/** "ad_personalization denied, analytics_storage granted" from a recorded consent state. */
function consentSummary(state) {
  const parts = Object.entries(state?.gcm ?? {}).map(([k, v]) => `${k} ${v}`);
  for (const [k, v] of Object.entries(state?.categoryPreferences ?? {})) parts.push(`${k} ${v ? "granted" : "denied"}`);
  if (state?.gpc) parts.push("Global Privacy Control");
  return parts.length ? parts.join(", ") : "consent recorded";
}

async function loadRecommendations(profileId, into) {
  const { status, json } = await api(`/v1/profiles/${encodeURIComponent(profileId)}/recommendations`).catch(() => ({}));
  if (status !== 200 || !Array.isArray(json?.decisions)) return into.replaceChildren(el("p", { class: "note" }, json?.message ?? "Could not load."));
  const note = json.consentDenied
    ? "Their consent refuses personalisation: they see the defaults."
    : json.personalised ? "Personalised from what they did." : `Not personalised (${json.reason}).`;
  into.replaceChildren(
    el("p", { class: "note" }, note),
    ...json.decisions.map((d) => el("div", {},
      el("h3", {}, d.slot),
      d.items.length
        ? el("ol", { "aria-label": `Recommended in ${d.slot}` }, d.items.map((i) => el("li", {}, i.name ?? i.product_id, el("span", { class: "note" }, ` ${i.reason}`))))
        : el("p", { class: "note" }, "Nothing to recommend yet."),
    )),
  );
}

// --- Overview --------------------------------------------------------------------------------

const COLORS = ["#2d5bd1", "#d1762d", "#2da36b", "#a12dd1", "#d12d5b", "#6b7280", "#1b9aaa"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

async function loadOverview() {
  const { status, json } = await api("/v1/admin/overview");
  if (status !== 200) return;
  // Thirty days, oldest first, each with its count per type.
  const start = Date.parse(`${json.fromDate}T00:00:00Z`);
  const dates = Array.from({ length: 30 }, (_, i) => new Date(start + i * 86_400_000).toISOString().slice(0, 10));
  const types = [...new Set(json.events.map((e) => e.type))].sort();
  const perDay = new Map(dates.map((d) => [d, Object.fromEntries(types.map((t) => [t, 0]))]));
  const perSource = new Map();
  for (const e of json.events) {
    if (perDay.has(e.date)) perDay.get(e.date)[e.type] += e.count;
    perSource.set(e.source_id, (perSource.get(e.source_id) ?? 0) + e.count);
  }
  const total = (d) => types.reduce((a, t) => a + perDay.get(d)[t], 0);
  const max = Math.max(1, ...dates.map(total));
  const [w, h, bar] = [600, 160, 600 / 30];
  const bars = dates.flatMap((d, i) => {
    let y = h;
    return types.map((t, k) => {
      const height = (perDay.get(d)[t] / max) * (h - 10);
      y -= height;
      return svg("rect", { x: i * bar + 2, y, width: bar - 4, height, fill: COLORS[k % COLORS.length] }, svg("title", {}, `${d} ${t}: ${perDay.get(d)[t]}`));
    });
  });
  const chart = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": `Events per day; the busiest day had ${max}`, class: "bars" }, ...bars);
  // Swatches are SVG: the console's CSP allows no style attributes.
  const swatch = (k) => svg("svg", { width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { width: 12, height: 12, rx: 2, fill: COLORS[k % COLORS.length] }));
  const legend = el("p", { class: "legend" }, types.map((t, k) => el("span", {}, swatch(k), ` ${t}`)));
  $("#chart").replaceChildren(chart, legend);
  $("#per-day-head").replaceChildren(el("tr", {}, el("th", { scope: "col" }, "Day"), types.map((t) => el("th", { scope: "col" }, t)), el("th", { scope: "col" }, "Total")));
  $("#per-day").replaceChildren(...[...dates].reverse().map((d) => el("tr", {}, el("th", { scope: "row" }, d), types.map((t) => el("td", {}, perDay.get(d)[t])), el("td", {}, total(d)))));
  const share = json.profiles ? Math.round((100 * json.identified) / json.profiles) : 0;
  const rejected = json.rejected.reduce((a, r) => a + r.count, 0);
  const deliveries = Object.fromEntries(json.deliveries24h.map((d) => [d.outcome, d.count]));
  $("#overview-cards").replaceChildren(
    card("Profiles", el("p", { class: "big" }, json.profiles ?? 0), el("p", { class: "note" }, `${share}% identified (${json.identified ?? 0})${json.profilesCountedAt ? `, counted ${when(json.profilesCountedAt)}` : ""}`)),
    card("Sources, 30 days", pairs(Object.fromEntries(perSource)), el("p", { class: "note" }, `${rejected} rejected`)),
    card("Segment sizes", pairs(Object.fromEntries(json.segments.map((s) => [s.segment, s.size])))),
    card("Deliveries, 24 hours", pairs(deliveries)),
    card("Consent, 30 days", pairs(consentRates(json.consent))),
  );
}

/** Per purpose: the share of the choices recorded that granted it. */
function consentRates(rows) {
  const by = {};
  for (const r of rows) {
    by[r.purpose] ??= { granted: 0, all: 0 };
    by[r.purpose].all += r.count;
    if (r.value === "granted") by[r.purpose].granted += r.count;
  }
  return Object.fromEntries(
    Object.entries(by).sort().map(([p, c]) => [p, `${Math.round((100 * c.granted) / c.all)}% granted (${c.all} choices)`]),
  );
}

// --- Live events ---------------------------------------------------------------------------

let liveTimer = null;
let newest = 0;

function stopLive() {
  clearTimeout(liveTimer);
  liveTimer = null;
}

function startLive() {
  stopLive();
  newest = 0;
  $("#arrived").replaceChildren();
  $("#rejected").replaceChildren();
  poll();
}

async function poll() {
  const params = new URLSearchParams({ since: String(newest), limit: "50" });
  for (const key of ["source", "type", "name"]) {
    const v = $(`#filter-${key}`).value.trim();
    if (v) params.set(key, v);
  }
  const { status, json } = await api(`/v1/admin/events?${params}`);
  if (status === 200) {
    for (const r of json.rejected.reverse()) {
      $("#rejected").prepend(el("tr", {}, el("td", {}, when(r.received_at)), el("td", {}, r.source_id), el("td", {}, el("code", {}, r.message_id ?? "")), el("td", {}, el("code", {}, r.code)), el("td", {}, r.message)));
      newest = Math.max(newest, r.received_at);
    }
    for (const e of json.events.reverse()) {
      const summary = el("summary", {}, `${when(e.received_at)} · ${e.type}${e.name ? ` · ${e.name}` : ""} · ${e.source_id}`);
      const body = el("pre", {}, JSON.stringify(e.body, null, 2));
      $("#arrived").prepend(el("li", {}, el("details", {}, summary, body)));
      newest = Math.max(newest, e.received_at);
    }
  }
  if (!$("#live").hidden) liveTimer = setTimeout(poll, 2000);
}

$("#live-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  startLive();
});

// --- Segments --------------------------------------------------------------------------------

let membersOf = null;
let membersNext = null;

async function loadSegments() {
  const { status, json } = await api("/v1/admin/segments");
  if (status !== 200) return;
  const rows = [];
  for (const s of json.segments) {
    const family = s.members ?? [];
    const named = family.length ? family : s.forEach ? [] : [{ name: s.name, size: s.size, history: s.history }];
    for (const m of named) {
      const open = el("button", { type: "button", class: "link" }, m.name);
      open.addEventListener("click", () => loadMembers(m.name, m.size));
      rows.push(el("tr", {}, el("th", { scope: "row" }, open, s.description ? el("div", { class: "note" }, s.description) : ""), el("td", {}, m.size), el("td", {}, sparkline(m.history ?? [])), el("td", {}, el("code", {}, value(s.rule ?? "")))));
    }
  }
  $("#segment-rows").replaceChildren(...rows);
}

/** A segment's daily sizes (recorded by the segment sweep) as a small line. */
function sparkline(history) {
  if (!history.length) return el("span", { class: "note" }, "no history yet");
  const [w, h] = [120, 28];
  const first = history[0].day;
  const max = Math.max(1, ...history.map((d) => d.size));
  const points = history.map((d) => `${((d.day - first) / 29) * w},${h - 2 - (d.size / max) * (h - 4)}`).join(" ");
  const label = `Size over 30 days: ${history[0].size} on the first recorded day, ${history.at(-1).size} on the last`;
  return svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": label },
    svg("polyline", { points, fill: "none", stroke: "#2d5bd1", "stroke-width": 2 }),
    ...history.map((d) => svg("circle", { cx: ((d.day - first) / 29) * w, cy: h - 2 - (d.size / max) * (h - 4), r: 2, fill: "#2d5bd1" })));
}

async function loadMembers(name, size, after = "") {
  if (!after) {
    membersOf = name;
    $("#member-list").replaceChildren();
    $("#members-title").textContent = `${name}: ${size} members`;
    $("#members-csv").href = `/v1/admin/segments/${encodeURIComponent(name)}/members?format=csv`;
    $("#members").hidden = false;
  }
  const { status, json } = await api(`/v1/admin/segments/${encodeURIComponent(name)}/members?limit=50&after=${encodeURIComponent(after)}`);
  if (status !== 200) return;
  for (const m of json.members) {
    const link = el("a", { href: "#/profiles" }, m.profile_id);
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      location.hash = "#/profiles";
      const found = await api(`/v1/profiles/${encodeURIComponent(m.profile_id)}`);
      if (found.status === 200) renderProfile(found.json);
    });
    $("#member-list").append(el("li", {}, link, ` since ${when(m.entered_at)}`));
  }
  membersNext = json.next;
  $("#members-more").hidden = !membersNext;
}

$("#members-more").addEventListener("click", () => loadMembers(membersOf, 0, membersNext));

// --- Settings --------------------------------------------------------------------------------

const DOCUMENTS = ["computedTraits", "segments", "recommendations", "slots"];

async function loadSettings() {
  const { status, json } = await api("/v1/admin/personalisation");
  if (status !== 200) return;
  for (const name of DOCUMENTS) $(`#doc-${name}`).value = JSON.stringify(json.documents[name], null, 2);
  $("#settings-status").textContent = `In force: ${json.stamp}`;
  $("#settings-error").textContent = "";
  const slots = Object.keys(json.documents.slots?.slots ?? {});
  $("#preview-slot").replaceChildren(...slots.map((name) => el("option", { value: name }, name)));
}

$("#preview-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const who = $("#preview-who").value.trim();
  let profileId = who;
  if (who.includes("@")) {
    const found = await api(`/v1/profiles/lookup?type=email&value=${encodeURIComponent(who)}`);
    if (found.status !== 200) return ($("#preview").textContent = "No profile matches.");
    profileId = found.json.profileId;
  }
  const { status, json } = await api("/v1/admin/preview", { method: "POST", body: { profileId, slots: [$("#preview-slot").value] } });
  $("#preview").textContent = status === 200 ? JSON.stringify(json, null, 2) : json?.message ?? `No preview (${status}).`;
});

$("#settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {};
  for (const name of DOCUMENTS) {
    const field = $(`#doc-${name}`);
    try {
      body[name] = JSON.parse(field.value);
      field.removeAttribute("aria-invalid");
    } catch (error) {
      field.setAttribute("aria-invalid", "true");
      $("#settings-error").textContent = `${field.labels[0].textContent}: not JSON (${error.message})`;
      return field.focus();
    }
  }
  const { status, json } = await api("/v1/admin/personalisation", { method: "PUT", body });
  if (status === 200) {
    $("#settings-error").textContent = "";
    $("#settings-status").textContent = `Saved: ${json.stamp}`;
  } else {
    $("#settings-error").textContent = json?.message ?? `Not saved (${status}).`;
  }
});

// --- Audit log -------------------------------------------------------------------------------

async function loadAudit() {
  const { status, json } = await api("/v1/admin/audit?limit=200");
  if (status !== 200) return;
  $("#audit-rows").replaceChildren(
    ...json.entries.map((a) => el("tr", {}, el("td", {}, when(a.at)), el("td", {}, a.action), el("td", {}, a.actor), el("td", {}, el("code", {}, value(a.detail ?? ""))))),
  );
}

/** Export, suppress and delete for the person, each answered with its receipt. */
function privacyActions(p) {
  // The request names the person by their strongest identifier; the Worker finds the rest.
  const order = ["user_id", "email", "phone", "anonymous_id", "cookie_id"];
  const text = [...p.identifiers].sort((a, b) => order.indexOf(a.split(":")[0]) - order.indexOf(b.split(":")[0]))[0] ?? "";
  const split = text.indexOf(":");
  const person = { type: text.slice(0, split), value: text.slice(split + 1) };
  const receipt = el("pre", { id: "receipt", role: "status", "aria-label": "Receipt" });
  const button = (label, run) => {
    const b = el("button", { type: "button" }, label);
    b.addEventListener("click", run);
    return b;
  };
  const show = (json) => (receipt.textContent = JSON.stringify(json, null, 2));
  const exportButton = button("Export", async () => {
    const { json } = await api(`/v1/privacy/export?type=${encodeURIComponent(person.type)}&value=${encodeURIComponent(person.value)}`);
    const link = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(json, null, 2)], { type: "application/json" })), download: `${p.profileId}.json` }, "Download the export");
    receipt.replaceChildren(link);
  });
  const suppressButton = button("Suppress", async () => show((await api("/v1/privacy/suppress", { method: "POST", body: person })).json));
  const deleteButton = button("Delete", async () => {
    if (!window.confirm(`Erase everything about ${text}? This cannot be undone.`)) return;
    show((await api("/v1/privacy/delete", { method: "POST", body: person })).json);
  });
  return el("section", { class: "card privacy", "aria-labelledby": "privacy-title" },
    el("h2", { id: "privacy-title" }, "Privacy"),
    el("p", { class: "note" }, `As ${text}: the request covers the whole profile.`),
    el("div", { class: "row" }, exportButton, suppressButton, deleteButton),
    receipt,
  );
}

// --- Start ---------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
const current = await api("/console/session");
if (current.status === 200) signedIn(current.json);
else signedOut();
