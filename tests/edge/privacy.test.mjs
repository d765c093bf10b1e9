// Data-subject rights, consent history, access control and retention in workerd with real local
// D1 + KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { checkProfileRows, post, secret, startEdge, trustingSources, WRITE_KEY } from "../support/edge.mjs";

const ROOT_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
const DAY = 86_400_000;
let n = 0;
const mid = () => `pv-${run}-${++n}`;
const consent = (analytics) => ({ consent: { gcm: { analytics_storage: analytics, ad_storage: "denied" } } });

describe("privacy, access control and retention", () => {
  let edge;
  const send = (batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
  const call = async (method, path, { key = ROOT_KEY, body, headers = {} } = {}) => {
    const auth = key === null ? {} : { authorization: `Bearer ${key}` };
    const r = await fetch(`${edge.url}${path}`, {
      method,
      headers: { ...auth, ...(body ? { "content-type": "application/json" } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined, headers: r.headers };
  };
  const count = async (sql, ...params) => (await edge.query(sql, ...params))[0].n;
  const issue = async (label, scopes) => {
    const r = await call("POST", "/v1/admin/keys", { body: { label, scopes } });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    return r.json.key;
  };

  before(async () => {
    edge = await startEdge("privacy", { sources: trustingSources() });
  });
  after(async () => {
    await edge?.stop();
  });

  /** Anonymous browsing, login, purchase: returns the person's identifiers. */
  async function journey(tag) {
    const p = { anon: `anon-${tag}-${run}`, user: `user-${tag}-${run}`, email: `${tag}-${run}@Example.com`, device: `dev-${tag}-${run}` };
    const ctx = { ...consent("granted"), device: { id: p.device } };
    const results = await send([
      { type: "page", messageId: mid(), anonymousId: p.anon, name: "Home", context: ctx },
      { type: "track", messageId: mid(), anonymousId: p.anon, event: "Product Viewed", properties: { product_id: "p1" }, context: ctx },
      { type: "identify", messageId: mid(), anonymousId: p.anon, userId: p.user, traits: { email: p.email, name: `Name ${tag}` }, context: ctx },
      { type: "track", messageId: mid(), userId: p.user, event: "Order Completed", properties: { order_id: `o-${tag}`, total: 42, password: "hunter2" }, context: ctx },
    ]);
    assert.equal(results.status, 200, JSON.stringify(results.json));
    assert.ok(results.json.results.every((r) => r.status === "accepted"), JSON.stringify(results.json));
    return p;
  }

  async function rowsAbout(p) {
    const ids = [`anonymous_id:${p.anon}`, `user_id:${p.user}`, `email:${p.email.toLowerCase()}`, `device_id:${p.device}`];
    const list = JSON.stringify(ids);
    const inIds = "IN (SELECT value FROM json_each(?))";
    return {
      events: await count("SELECT count(*) AS n FROM events WHERE anonymous_id = ? OR user_id = ? OR body LIKE ?", p.anon, p.user, `%${p.email.toLowerCase()}%`),
      identities: await count(`SELECT count(*) AS n FROM identities WHERE identifier ${inIds}`, list),
      linkMembers: await count(`SELECT count(*) AS n FROM link_members WHERE identifier ${inIds}`, list),
      links: await count("SELECT count(*) AS n FROM identity_links WHERE identifiers LIKE ? OR identifiers LIKE ?", `%${p.anon}%`, `%${p.user}%`),
      traits: await count(`SELECT count(*) AS n FROM trait_values WHERE identifier ${inIds}`, list),
      consent: await count(`SELECT count(*) AS n FROM consent_history WHERE identifier ${inIds}`, list),
    };
  }

  const tableCounts = async () => {
    const out = {};
    for (const t of ["events", "identities", "link_members", "identity_links", "trait_values", "consent_history", "merges"]) {
      out[t] = await count(`SELECT count(*) AS n FROM ${t}`);
    }
    return out;
  };

  test("delete by email erases the whole stitched profile everywhere, suppresses it, and leaves others untouched", async () => {
    const jane = await journey("jane");
    const bob = await journey("bob");
    const lookup = (type, value) => call("GET", `/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`);
    const janeProfile = (await lookup("email", jane.email)).json;
    assert.ok(janeProfile.profileId);
    assert.ok(await edge.kv.get(`profile:${janeProfile.profileId}`), "KV snapshot exists before deletion");
    assert.ok(await edge.kv.get(`anon:${jane.anon}`));
    const before = await rowsAbout(jane);
    assert.ok(before.events >= 4 && before.identities >= 4 && before.traits > 0 && before.consent > 0, JSON.stringify(before));
    const bobBefore = await rowsAbout(bob);
    const totalsBefore = await tableCounts();

    const receipt = await call("POST", "/v1/privacy/delete", { body: { type: "email", value: ` ${jane.email.toUpperCase()} ` } });
    assert.equal(receipt.status, 200, JSON.stringify(receipt.json));
    assert.match(receipt.json.requestId, /^privacy-/);
    assert.equal(receipt.json.action, "delete");
    assert.equal(receipt.json.actor, "root");
    assert.deepEqual(receipt.json.profileIds, [janeProfile.profileId]);
    assert.equal(receipt.json.deleted.events, before.events);
    assert.equal(receipt.json.deleted.identities, before.identities);
    assert.equal(receipt.json.deleted.traits, before.traits);
    assert.ok(receipt.json.deleted.kvKeys >= 2, JSON.stringify(receipt.json));
    assert.equal(receipt.json.suppressed, before.identities);
    assert.ok(!JSON.stringify(receipt.json).includes("jane-"), "the receipt names no identifier");

    assert.deepEqual(await rowsAbout(jane), { events: 0, identities: 0, linkMembers: 0, links: 0, traits: 0, consent: 0 });
    for (const [type, value] of [["email", jane.email], ["user_id", jane.user], ["anonymous_id", jane.anon]]) {
      assert.equal((await lookup(type, value)).status, 404, `${type} no longer finds a profile`);
    }
    assert.equal(await edge.kv.get(`profile:${janeProfile.profileId}`), null);
    assert.equal(await edge.kv.get(`anon:${jane.anon}`), null);
    const exported = await call("GET", `/v1/privacy/export?type=email&value=${encodeURIComponent(jane.email)}`);
    assert.equal(exported.json.data.found, false);
    assert.deepEqual([exported.json.data.events, exported.json.data.consentHistory, exported.json.data.identifiers], [[], [], []]);
    assert.equal(exported.json.data.suppressed, true);

    // Other people's data is untouched: only Jane's rows left each table.
    assert.deepEqual(await rowsAbout(bob), bobBefore);
    const totalsAfter = await tableCounts();
    assert.equal(totalsAfter.events, totalsBefore.events - before.events);
    assert.equal(totalsAfter.identities, totalsBefore.identities - before.identities);
    assert.equal(totalsAfter.trait_values, totalsBefore.trait_values - before.traits);

    // Replays and new events carrying any of her identifiers are suppressed and counted.
    const replay = await send([
      { type: "identify", messageId: mid(), anonymousId: `fresh-${run}`, traits: { email: jane.email }, context: consent("granted") },
      { type: "track", messageId: mid(), anonymousId: jane.anon, event: "Product Viewed", context: consent("granted") },
      { type: "track", messageId: mid(), anonymousId: `someone-else-${run}`, event: "Product Viewed" },
    ]);
    assert.deepEqual(replay.json.results.map((r) => [r.status, r.code]), [["rejected", "suppressed"], ["rejected", "suppressed"], ["accepted", undefined]]);
    assert.equal(await count("SELECT count(*) AS n FROM events WHERE anonymous_id IN (?, ?)", `fresh-${run}`, jane.anon), 0);
    assert.equal(await count("SELECT count(*) AS n FROM identities WHERE identifier = ?", `anonymous_id:fresh-${run}`), 0);
    assert.ok((await count("SELECT sum(count) AS n FROM drop_counts WHERE reason = 'suppressed'")) >= 2);

    // Idempotent: a second request succeeds and deletes nothing more.
    const again = await call("POST", "/v1/privacy/delete", { body: { identifier: { type: "email", value: jane.email } } });
    assert.equal(again.status, 200);
    assert.equal(again.json.deleted.events, 0);
    assert.equal(again.json.suppressed, 0);
  });

  test("deletion takes the person's personalisation state and co-occurrence contribution back out", async () => {
    const ann = await journey("ann");
    const cid = await journey("cid");
    const profileOf = async (p) => (await call("GET", `/v1/profiles/lookup?type=user_id&value=${p.user}`)).json.profileId;
    const [annId, cidId] = [await profileOf(ann), await profileOf(cid)];
    const [p1, p2] = [`sku-a-${run}`, `sku-b-${run}`];
    for (const profile of [annId, cidId]) {
      await edge.query("INSERT OR IGNORE INTO item_interactions (profile_id, product_id, kind) VALUES (?, ?, 'view'), (?, ?, 'view')", profile, p1, profile, p2);
      await edge.query("INSERT OR IGNORE INTO item_pair_evidence (kind, item_a, item_b, profile_id) VALUES ('view', ?, ?, ?)", p1, p2, profile);
      await edge.query("INSERT OR REPLACE INTO profile_personalisation (profile_id, state, version, updated_at) VALUES (?, '{}', 1, 1)", profile);
      await edge.query("INSERT OR REPLACE INTO segment_memberships (profile_id, segment, entered_at) VALUES (?, 'high_value', 1)", profile);
    }
    const stats = async () => (await edge.query("SELECT views FROM item_stats WHERE product_id = ?", p1))[0]?.views;
    const coViews = async () => (await edge.query("SELECT co_views FROM item_pairs WHERE item_a = ? AND item_b = ?", p2, p1))[0]?.co_views;
    assert.deepEqual([await stats(), await coViews()], [2, 2]);

    const annRows = async () => [
      await count("SELECT count(*) AS n FROM profile_personalisation WHERE profile_id = ?", annId),
      await count("SELECT count(*) AS n FROM segment_memberships WHERE profile_id = ?", annId),
      await count("SELECT count(*) AS n FROM item_interactions WHERE profile_id = ?", annId),
      await count("SELECT count(*) AS n FROM item_pair_evidence WHERE profile_id = ?", annId),
    ];
    const before = await annRows();
    assert.ok(before[0] === 1 && before[1] >= 1 && before[2] >= 2 && before[3] >= 1, JSON.stringify(before));
    const receipt = await call("POST", "/v1/privacy/delete", { body: { type: "user_id", value: ann.user } });
    assert.deepEqual(
      [receipt.json.deleted.personalisation, receipt.json.deleted.segmentMemberships, receipt.json.deleted.itemInteractions, receipt.json.deleted.itemPairEvidence],
      before,
    );
    assert.deepEqual(await annRows(), [0, 0, 0, 0]);
    assert.deepEqual([await stats(), await coViews()], [1, 1], "only Cid's contribution remains");
    assert.equal(await count("SELECT count(*) AS n FROM segment_memberships WHERE profile_id = ?", cidId), 1);
    assert.equal(await count("SELECT count(*) AS n FROM profile_personalisation WHERE profile_id IN (?, ?)", annId, cidId), 1);
  });

  test("denylisted properties are never stored", async () => {
    assert.equal(await count("SELECT count(*) AS n FROM events WHERE body LIKE '%hunter2%'"), 0);
  });

  test("export hands over profile, events and consent history; suppress and unsuppress delete nothing", async () => {
    const kim = await journey("kim");
    await send([
      { type: "track", messageId: mid(), anonymousId: kim.anon, event: "Consent Changed", timestamp: new Date(Date.now() + 1000).toISOString(), context: consent("denied") },
      { type: "track", messageId: mid(), anonymousId: kim.anon, event: "Consent Changed", timestamp: new Date(Date.now() + 2000).toISOString(), context: consent("granted") },
    ]);
    const exported = await call("GET", `/v1/privacy/export?type=user_id&value=${kim.user}`);
    assert.equal(exported.status, 200);
    const data = exported.json.data;
    assert.equal(data.found, true);
    assert.ok(data.identifiers.includes(`email:${kim.email.toLowerCase()}`));
    assert.equal(data.profile.traits.name, "Name kim");
    assert.ok(data.events.length >= 5, `${data.events.length} events`);
    assert.ok(data.events.every((e) => e.body && e.messageId));
    // Each record sits under the best identifier its event carried (device, user or anonymous ID).
    const states = data.consentHistory.map((c) => c.state.gcm.analytics_storage);
    assert.deepEqual(states.slice(-3), ["granted", "denied", "granted"], JSON.stringify(data.consentHistory));
    assert.ok(data.consentHistory.length <= 5, "repeats of the same state are not recorded");
    assert.equal(data.suppressed, false);

    const eventsBefore = data.events.length;
    const suppressed = await call("POST", "/v1/privacy/suppress", { body: { type: "user_id", value: kim.user } });
    assert.equal(suppressed.status, 200);
    assert.ok(suppressed.json.changed >= 4);
    const blocked = await send([{ type: "track", messageId: mid(), userId: kim.user, event: "X" }]);
    assert.equal(blocked.json.results[0].code, "suppressed");
    const still = (await call("GET", `/v1/privacy/export?type=user_id&value=${kim.user}`)).json.data;
    assert.equal(still.events.length, eventsBefore, "suppression deletes nothing");
    assert.equal(still.suppressed, true);
    const lifted = await call("POST", "/v1/privacy/unsuppress", { body: { type: "email", value: kim.email } });
    assert.equal(lifted.json.changed, suppressed.json.changed);
    const back = await send([{ type: "track", messageId: mid(), userId: kim.user, event: "X" }]);
    assert.equal(back.json.results[0].status, "accepted");

    const audit = (await call("GET", "/v1/admin/audit?limit=50")).json.entries;
    const actions = audit.map((e) => e.action);
    for (const action of ["delete", "export", "suppress", "unsuppress"]) assert.ok(actions.includes(action), `${action} is audited`);
    assert.ok(audit.every((e) => e.actor && e.at && e.requestId));
    assert.ok(!JSON.stringify(audit).includes(kim.email.toLowerCase()) && !JSON.stringify(audit).includes(kim.user), "the log names subjects only by key");
  });

  test("every admin route x every key kind: scopes, revocation, write keys and browsers refused", async () => {
    const keys = {
      reader: await issue(`reader-${run}`, ["profiles:read"]),
      privacy: await issue(`privacy-${run}`, ["privacy:write"]),
      config: await issue(`config-${run}`, ["config:write"]),
      revoked: await issue(`revoked-${run}`, ["profiles:read", "privacy:write", "config:write"]),
    };
    assert.match(keys.reader, /^seam_admin_[0-9a-f]{48}$/);
    assert.equal((await call("DELETE", `/v1/admin/keys/revoked-${run}`)).status, 200);
    const listed = (await call("GET", "/v1/admin/keys")).json.keys;
    assert.ok(listed.find((k) => k.label === `revoked-${run}`).revokedAt);
    assert.ok(!JSON.stringify(listed).includes(keys.reader.slice(11)), "keys are never listed");
    assert.equal(await count("SELECT count(*) AS n FROM admin_keys WHERE key_hash = ?", keys.reader), 0, "stored hashed");
    const dup = await call("POST", "/v1/admin/keys", { body: { label: `reader-${run}`, scopes: ["profiles:read"] } });
    assert.deepEqual([dup.status, dup.json.code], [409, "label_taken"]);
    const bad = await call("POST", "/v1/admin/keys", { body: { label: "x", scopes: ["everything"] } });
    assert.deepEqual([bad.status, bad.json.code], [400, "invalid_scopes"]);

    const target = { type: "user_id", value: `nobody-${run}` };
    // Every admin route, keyed "<scope> <method> <path>"; each call builds a fresh request.
    let label = 0;
    const routes = {
      "profiles:read GET lookup": () => ["GET", `/v1/profiles/lookup?type=user_id&value=nobody-${run}`],
      "profiles:read GET by id": () => ["GET", `/v1/profiles/prof_nobody_${run}`],
      "privacy:write GET export": () => ["GET", `/v1/privacy/export?type=user_id&value=nobody-${run}`],
      "privacy:write POST delete": () => ["POST", "/v1/privacy/delete", target],
      "privacy:write POST suppress": () => ["POST", "/v1/privacy/suppress", target],
      "privacy:write POST unsuppress": () => ["POST", "/v1/privacy/unsuppress", target],
      "config:write GET keys": () => ["GET", "/v1/admin/keys"],
      // A scope the config key holds itself: a key issues no scope it lacks (trust.test.mjs).
      "config:write POST keys": () => ["POST", "/v1/admin/keys", { label: `matrix-${run}-${++label}`, scopes: ["config:write"] }],
      "config:write DELETE key": () => ["DELETE", `/v1/admin/keys/no-such-key-${run}`],
      "config:write GET audit": () => ["GET", "/v1/admin/audit?limit=1"],
      "config:write POST catalog": () => ["POST", "/v1/admin/catalog", { items: [{ product_id: `matrix-${run}`, name: "Matrix", category: "Test", price: 1 }] }],
    };
    const basic = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString("base64")}`;
    const kinds = {
      none: { headers: {}, key: null },
      garbage: { key: "not-a-key-at-all-really" },
      writeKeyBasic: { key: null, headers: { authorization: basic } },
      writeKeyBearer: { key: WRITE_KEY },
      revoked: { key: keys.revoked },
      reader: { key: keys.reader },
      privacy: { key: keys.privacy },
      config: { key: keys.config },
      root: { key: ROOT_KEY },
    };
    const allowed = (kind, route) => kind === "root" || (kind === "reader" && route.startsWith("profiles:read")) || (kind === "privacy" && route.startsWith("privacy:write")) || (kind === "config" && route.startsWith("config:write"));
    const authCodes = ["missing_admin_key", "invalid_admin_key", "revoked_admin_key", "write_key_forbidden", "insufficient_scope"];
    const expectedCode = (kind) => ({ none: "missing_admin_key", garbage: "invalid_admin_key", writeKeyBasic: "write_key_forbidden", writeKeyBearer: "invalid_admin_key", revoked: "revoked_admin_key" })[kind] ?? "insufficient_scope";
    for (const [scope, route] of Object.entries(routes)) {
      for (const [kind, options] of Object.entries(kinds)) {
        const [method, path, body] = route();
        const r = await call(method, path, { ...options, body });
        if (allowed(kind, scope)) {
          // Admitted: the route's own answer (a 404 for the nobody we ask about is fine).
          assert.ok(r.status < 400 || ["profile_not_found", "key_not_found"].includes(r.json.code), `${kind} on ${scope}: ${r.status} ${JSON.stringify(r.json)}`);
          assert.ok(!authCodes.includes(r.json?.code), `${kind} on ${scope}`);
        } else {
          const code = expectedCode(kind);
          const status = ["write_key_forbidden", "insufficient_scope"].includes(code) ? 403 : 401;
          assert.deepEqual([r.status, r.json.code], [status, code], `${kind} on ${scope}`);
        }
        assert.equal(r.headers.get("access-control-allow-origin"), null);
      }
    }
    // No browser reaches an admin route: no CORS, not even for a preflight from the site's origin.
    for (const path of ["/v1/privacy/delete", "/v1/admin/keys", "/v1/profiles/lookup"]) {
      const pre = await fetch(`${edge.url}${path}`, { method: "OPTIONS", headers: { origin: "http://localhost:8787", "access-control-request-method": "POST" } });
      assert.equal(pre.headers.get("access-control-allow-origin"), null, path);
    }
    const issued = (await call("GET", "/v1/admin/audit")).json.entries.filter((e) => e.action === "issue_key" || e.action === "revoke_key");
    assert.ok(issued.some((e) => e.action === "revoke_key" && e.detail.label === `revoked-${run}`));
  });

  test("a retention run removes exactly the expired events and inactive anonymous profiles", async () => {
    const now = Date.now();
    // Already in the archive (an event not yet archived stays: tests/edge/archive.test.mjs).
    const insertEvent = (id, receivedAt, anon) =>
      edge.query(
        "INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body, archive_object, archived_at) VALUES ('demo-site', ?, 'track', 'Old', ?, NULL, ?, ?, '{}', 'old', ?)",
        id, anon, receivedAt, receivedAt, receivedAt,
      );
    const old = [];
    for (let i = 0; i < 7; i++) {
      old.push(`ret-old-${run}-${i}`);
      await insertEvent(old[i], now - 91 * DAY - i * 1000, `ret-anon-old-${run}`);
    }
    await insertEvent(`ret-edge-${run}`, now - 89 * DAY, `ret-anon-recent-${run}`);
    const identity = (identifier, profile, lastSeen) =>
      edge.query("INSERT INTO identities (identifier, profile_id, seq, updated_at, last_seen) VALUES (?, ?, 0, ?, ?)", identifier, profile, lastSeen, lastSeen);
    await identity(`anonymous_id:ret-anon-old-${run}`, `prof_ret_old_${run}`, now - 181 * DAY);
    await identity(`device_id:ret-dev-old-${run}`, `prof_ret_old_${run}`, now - 200 * DAY);
    await identity(`anonymous_id:ret-anon-mixed-${run}`, `prof_ret_mixed_${run}`, now - 181 * DAY);
    await identity(`anonymous_id:ret-anon-mixed2-${run}`, `prof_ret_mixed_${run}`, now - 10 * DAY);
    await identity(`anonymous_id:ret-anon-known-${run}`, `prof_ret_known_${run}`, now - 300 * DAY);
    await identity(`email:ret-${run}@example.com`, `prof_ret_known_${run}`, now - 300 * DAY);
    await edge.query("INSERT INTO trait_values (identifier, key, once, value, timestamp, message_key) VALUES (?, 'plan', 0, '\"free\"', 1, 'x')", `anonymous_id:ret-anon-old-${run}`);
    // A visitor whose profile was last seen 181 days ago comes back today: the visit (no new
    // link, so no resolution) touches the profile's row.
    const visit = () => send([{ type: "page", messageId: mid(), anonymousId: `ret-anon-back-${run}`, context: consent("granted") }]);
    assert.equal((await visit()).status, 200);
    const aged = await edge.query(
      "UPDATE profile_members SET last_seen = ? WHERE profile_id = (SELECT profile_id FROM identities WHERE identifier = ?) RETURNING profile_id",
      now - 181 * DAY, `anonymous_id:ret-anon-back-${run}`,
    );
    assert.equal(aged.length, 1);
    assert.equal((await visit()).status, 200);
    const expiredBefore = await count("SELECT count(*) AS n FROM events WHERE received_at < ?", now - 90 * DAY);
    const totalBefore = await count("SELECT count(*) AS n FROM events");

    // wrangler dev --test-scheduled runs the cron handler at /__scheduled, as of the current time.
    const r = await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("17 3 * * *")}`);
    assert.equal(r.status, 200, `${await r.text()}\n${edge.output().split('\n').filter((l) => !l.includes('wrangler:info')).join('\n').slice(-3000)}`);

    assert.equal(await count("SELECT count(*) AS n FROM events WHERE received_at < ?", now - 90 * DAY), 0);
    assert.equal(await count("SELECT count(*) AS n FROM events"), totalBefore - expiredBefore, "only expired events went");
    assert.equal(await count("SELECT count(*) AS n FROM events WHERE message_id = ?", `ret-edge-${run}`), 1);
    const profiles = (await edge.query("SELECT DISTINCT profile_id FROM identities WHERE profile_id LIKE ?", `prof_ret_%_${run}`)).map((p) => p.profile_id).sort();
    assert.deepEqual(profiles, [`prof_ret_known_${run}`, `prof_ret_mixed_${run}`], "only the inactive anonymous profile is erased");
    assert.equal(await count("SELECT count(*) AS n FROM identities WHERE identifier = ?", `anonymous_id:ret-anon-back-${run}`), 1, "the visitor who came back stays");
    assert.equal(await count("SELECT count(*) AS n FROM trait_values WHERE identifier = ?", `anonymous_id:ret-anon-old-${run}`), 0);
    const audit = (await call("GET", "/v1/admin/audit")).json.entries.find((e) => e.action === "retention");
    assert.equal(audit.actor, "scheduler");
    assert.equal(audit.detail.events, expiredBefore);
    assert.equal(audit.detail.profiles, 1);
  });

  test("after erasures and expiries each profile's row still holds exactly its identifiers, and the totals count them", async () => {
    assert.ok((await checkProfileRows(edge)) >= 1);
  });

  test("pages carry security headers", async () => {
    const page = await fetch(`${edge.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-security-policy"), /default-src 'self'.*frame-ancestors 'none'/);
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    assert.equal(page.headers.get("referrer-policy"), "strict-origin-when-cross-origin");
  });
});

describe("retention's walk for inactive anonymous profiles", () => {
  let edge;
  before(async () => {
    // Four profiles a run, erased two at a time: the walk has to carry on across runs.
    edge = await startEdge("retention-walk", { vars: { RETENTION_WALK: "4", RETENTION_CHUNK: "2" } });
  });
  after(async () => {
    await edge?.stop();
  });

  test("carries on from where the last run stopped, a chunk at a time, and starts over after the last profile", async () => {
    const now = Date.now();
    const identity = (identifier, profile, lastSeen) =>
      edge.query("INSERT INTO identities (identifier, profile_id, seq, updated_at, last_seen) VALUES (?, ?, 0, ?, ?)", identifier, profile, lastSeen, lastSeen);
    // Active visitors first in key order: a walk that did not carry on would never get past them.
    for (let i = 1; i <= 4; i++) await identity(`anonymous_id:a-${i}`, `prof_a_${i}`, now - DAY);
    for (let i = 1; i <= 6; i++) await identity(`anonymous_id:walk-${i}`, `prof_walk_${i}`, now - 181 * DAY);
    await identity("anonymous_id:walk-active", "prof_walk_active", now - DAY);
    await identity("email:walk@example.com", "prof_walk_known", now - 300 * DAY);
    const left = async () =>
      (await edge.query("SELECT identifier FROM identities WHERE identifier NOT LIKE 'anonymous_id:a-%' ORDER BY identifier")).map((r) => r.identifier.replace(/^anonymous_id:/, ""));
    assert.equal((await edge.query("SELECT count(*) AS n FROM identities"))[0].n, 12, "the test's identifiers are the only ones");
    const retention = async () => {
      const r = await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("17 3 * * *")}`);
      assert.equal(r.status, 200, await r.text());
      const saved = await edge.query("SELECT after FROM walk_cursors");
      return saved[0]?.after;
    };
    const all = ["walk-1", "walk-2", "walk-3", "walk-4", "walk-5", "walk-6", "walk-active", "email:walk@example.com"];

    // Each run reads four profiles (by profile ID, in the same order as their identifiers
    // here): first the active ones, then a full chunk of two expired among four read, so the
    // next run resumes after the last one erased. The saved position never names an erased
    // profile: it is the last one still stored before it (prof_a_4), which walks on the same.
    assert.equal(await retention(), "prof_a_4");
    assert.deepEqual(await left(), all);
    assert.equal(await retention(), "prof_a_4");
    assert.deepEqual(await left(), all.slice(2));
    assert.equal(await retention(), "prof_a_4");
    assert.deepEqual(await left(), all.slice(4));
    assert.equal(await retention(), "prof_a_4");
    assert.deepEqual(await left(), ["walk-active", "email:walk@example.com"]);
    // Reading fewer than asked is the end of the table: the next run starts over, and in time
    // finds what arrived behind the walk meanwhile.
    assert.equal(await retention(), "");
    await identity("anonymous_id:walk-0", "prof_walk_0", now - 200 * DAY);
    assert.equal(await retention(), "prof_a_4");
    assert.deepEqual(await left(), ["walk-0", "walk-active", "email:walk@example.com"]);
    assert.equal(await retention(), "");
    assert.deepEqual(await left(), ["walk-active", "email:walk@example.com"], "the active and the known profile stay");
    const audit = await edge.query("SELECT detail FROM privacy_audit WHERE action = 'retention' ORDER BY at DESC LIMIT 1");
    const detail = JSON.parse(audit[0].detail);
    assert.equal(detail.profiles, 1);
    assert.equal(detail.profilesWalked, 3);
  });
});

describe("hashed emails and phones", () => {
  let edge;
  before(async () => {
    edge = await startEdge("hashed", { sources: trustingSources(), vars: { IDENTITY_RULES: '{"hashPii": true}', PII_SALT: "test-salt-not-a-real-secret" } });
  });
  after(async () => {
    await edge?.stop();
  });

  test("with hashPii and a salt, no email or phone is stored in clear, yet lookup, export and delete still find the person", async () => {
    const email = `Hash.Me-${run}@Example.com`;
    const send = (batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
    const r = await send([
      { type: "identify", messageId: mid(), anonymousId: `h-${run}`, traits: { email, phone: "+31 6 1234 5678", name: "H" } },
      { type: "track", messageId: mid(), anonymousId: `h-${run}`, event: "X", context: { traits: { email } } },
    ]);
    assert.ok(r.json.results.every((x) => x.status === "accepted"));
    const clear = email.toLowerCase().split("@")[0];
    for (const table of ["events", "identities", "trait_values", "identity_links", "link_members"]) {
      const rows = JSON.stringify(await edge.query(`SELECT * FROM ${table}`));
      assert.ok(!rows.toLowerCase().includes(clear), `${table} holds no clear email`);
      assert.ok(!rows.includes("1234 5678") && !rows.includes("31612345678"), `${table} holds no clear phone`);
    }
    const auth = { authorization: `Bearer ${ROOT_KEY}` };
    const profile = await fetch(`${edge.url}/v1/profiles/lookup?type=email&value=${encodeURIComponent(email)}`, { headers: auth });
    assert.equal(profile.status, 200);
    assert.equal((await profile.json()).traits.name, "H");
    const del = await fetch(`${edge.url}/v1/privacy/delete`, { method: "POST", headers: auth, body: JSON.stringify({ type: "email", value: email }) });
    assert.equal((await del.json()).deleted.events, 2);
    const again = await send([{ type: "identify", messageId: mid(), anonymousId: `other-${run}`, traits: { email } }]);
    assert.equal(again.json.results[0].code, "suppressed");
  });

  test("a phone typed into someone else's email field is stored unusable, and the phone's erasure finds it", async () => {
    const send = (batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
    const [person, other] = [`ph-${run}`, `typo-${run}`];
    await send([{ type: "identify", messageId: mid(), anonymousId: person, traits: { phone: "+31 6 5555 0101" } }]);
    await send([{ type: "identify", messageId: mid(), anonymousId: other, traits: { email: "+31 6-5555 0101", name: "O" } }]);
    const stored = async () => (await edge.query("SELECT json_extract(body, '$.traits.email') AS email FROM events WHERE anonymous_id = ?", other))[0]?.email;
    const typed = await stored();
    assert.match(typed, /^unusable:[a-p]{64}$/, "not in clear, and no identifier");
    const traits = () => edge.query("SELECT value FROM trait_values WHERE identifier = ? AND key = 'email'", `anonymous_id:${other}`);
    assert.equal((await traits()).length, 1);
    const auth = { authorization: `Bearer ${ROOT_KEY}`, "content-type": "application/json" };
    const del = await fetch(`${edge.url}/v1/privacy/delete`, { method: "POST", headers: auth, body: JSON.stringify({ type: "phone", value: "+31 6 5555 0101" }) });
    assert.equal(del.status, 200);
    assert.equal(await stored(), null, "the other browser's claim of the phone is redacted");
    assert.deepEqual(await traits(), [], "and its trait row goes");
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE anonymous_id = ?", other))[0].n, 1, "the rest of the event stays");
  });
});
