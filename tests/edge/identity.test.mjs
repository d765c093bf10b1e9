// Identity stitching and unified profiles in workerd with real local D1 + KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { checkProfileRows, post, secret, startEdge, trustingSources, WRITE_KEY } from "../support/edge.mjs";

const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
const t = (s) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
let n = 0;
const mid = () => `id-${run}-${++n}`;
const send = (edge, batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });

describe("identity and profiles", () => {
  let edge;
  const admin = (path, headers = { authorization: `Bearer ${ADMIN_KEY}` }) =>
    fetch(`${edge.url}${path}`, { headers }).then(async (r) => ({ status: r.status, json: await r.json(), headers: r.headers }));
  const lookup = async (type, value) => (await admin(`/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`)).json;

  before(async () => {
    edge = await startEdge("identity", { sources: trustingSources() });
  });
  after(async () => {
    await edge?.stop();
  });

  test("anonymous browsing on two devices, then login on both: one profile with every event", async () => {
    const [aA, aB, user] = [`devA-${run}`, `devB-${run}`, `user-${run}`];
    await send(edge, [
      { type: "page", name: "Home", anonymousId: aA, messageId: mid(), timestamp: t(1) },
      { type: "track", event: "Product Viewed", anonymousId: aA, messageId: mid(), timestamp: t(2), properties: { product_id: "trail-runner" } },
    ]);
    await send(edge, [{ type: "track", event: "Product Viewed", anonymousId: aB, messageId: mid(), timestamp: t(3), properties: { product_id: "road-racer" } }]);
    const beforeLogin = await lookup("anonymous_id", aA);
    assert.ok(beforeLogin.profileId.startsWith("prof_"));

    const loginA = await send(edge, [{ type: "identify", userId: user, anonymousId: aA, messageId: mid(), timestamp: t(4), traits: { email: ` Ada@Example.COM `, name: "Ada", plan: "free" } }]);
    const loginB = await send(edge, [{ type: "identify", userId: user, anonymousId: aB, messageId: mid(), timestamp: t(5), traits: { plan: "pro" } }]);
    assert.equal(loginA.json.profileId, loginB.json.profileId, "read-your-writes: the merging request names the merged profile");
    const profileId = loginB.json.profileId;

    const { status, json: profile } = await admin(`/v1/profiles/${profileId}`);
    assert.equal(status, 200);
    for (const id of [`user_id:${user}`, `anonymous_id:${aA}`, `anonymous_id:${aB}`, "email:ada@example.com"]) {
      assert.ok(profile.identifiers.includes(id), `${id} in ${profile.identifiers}`);
    }
    assert.equal(profile.identifiers[0], `user_id:${user}`, "best identifier first");
    assert.deepEqual(profile.traits, { email: " Ada@Example.COM ", name: "Ada", plan: "pro" });
    assert.equal(profile.eventCount, 5);
    const names = profile.recentEvents.map((e) => e.name ?? e.type);
    for (const name of ["Home", "Product Viewed", "identify"]) assert.ok(names.includes(name), `${name} in ${names}`);
    assert.equal(profile.recentEvents.filter((e) => e.name === "Product Viewed").length, 2, "pre-login events of both devices");
    assert.equal(profile.firstSeen, t(1).replace(/\.\d+Z$/, ".000Z"));
    assert.ok(profile.merges.some((m) => m.from === beforeLogin.profileId && m.into === profileId), "merge history names the anonymous profile");

    assert.equal((await lookup("email", "ADA@example.com ")).profileId, profileId, "lookup normalises emails");
    const forwarded = await admin(`/v1/profiles/${beforeLogin.profileId}`);
    assert.equal(forwarded.json.profileId, profileId, "an absorbed profile ID resolves to the merged profile");
    assert.equal(forwarded.json.requestedId, beforeLogin.profileId);

    const snapshot = JSON.parse(await edge.kv.get(`profile:${profileId}`));
    assert.equal(snapshot.traits.plan, "pro");
    assert.deepEqual(JSON.parse(await edge.kv.get(`anon:${aB}`)), { profileId });
    assert.deepEqual(JSON.parse(await edge.kv.get(`profile:${beforeLogin.profileId}`)), { mergedInto: profileId });
  });

  test("traits are last-write-wins by event time, not arrival order; $set_once keeps the first value", async () => {
    const user = `lww-${run}`;
    await send(edge, [{ type: "identify", userId: user, messageId: mid(), timestamp: t(20), traits: { plan: "pro", $set_once: { source: "email" } } }]);
    await send(edge, [{ type: "identify", userId: user, messageId: mid(), timestamp: t(10), traits: { plan: "free", $set_once: { source: "ads" } } }]);
    const profile = await lookup("user_id", user);
    assert.equal(profile.traits.plan, "pro");
    assert.equal(profile.traits.source, "ads");
  });

  test("a shared computer never merges two users; the refused merge is recorded", async () => {
    const [shared, u1, u2] = [`shared-${run}`, `alice-${run}`, `bob-${run}`];
    await send(edge, [{ type: "identify", userId: u2, anonymousId: shared, messageId: mid(), timestamp: t(31) }]);
    await send(edge, [{ type: "identify", userId: u1, anonymousId: shared, messageId: mid(), timestamp: t(30) }]);
    const alice = await lookup("user_id", u1);
    const bob = await lookup("user_id", u2);
    assert.notEqual(alice.profileId, bob.profileId);
    assert.equal((await lookup("anonymous_id", shared)).profileId, alice.profileId, "the earlier login keeps the device");
    assert.ok(
      [...alice.refusedMerges, ...bob.refusedMerges].some((c) => c.reason === "user_id_conflict"),
      "the refused merge is in the audit log",
    );
  });

  test("alias joins the previous ID to the user under the same rules", async () => {
    const [anon, user] = [`alias-anon-${run}`, `alias-user-${run}`];
    await send(edge, [{ type: "track", event: "x", anonymousId: anon, messageId: mid(), timestamp: t(40) }]);
    const res = await send(edge, [{ type: "alias", previousId: anon, userId: user, messageId: mid(), timestamp: t(41) }]);
    assert.equal((await lookup("anonymous_id", anon)).profileId, res.json.profileId);
  });

  test("many concurrent requests stitching overlapping identities converge to the serial result", async () => {
    const users = [0, 1, 2, 3].map((i) => `cc-user-${i}-${run}`);
    const anons = Array.from({ length: 24 }, (_, i) => `cc-anon-${i}-${run}`);
    const shared = `cc-shared-${run}`;
    const requests = [];
    anons.forEach((anon, i) => {
      requests.push([{ type: "track", event: "Product Viewed", anonymousId: anon, messageId: mid(), timestamp: t(100 + i) }]);
      requests.push([{ type: "identify", userId: users[i % 4], anonymousId: anon, messageId: mid(), timestamp: t(200 + i) }]);
      // Chains: consecutive anonymous IDs of one user share a cookie ID as well.
      if (i >= 4) {
        requests.push([{ type: "page", anonymousId: anon, messageId: mid(), timestamp: t(300 + i), context: { seam: { cookieId: `cc-cookie-${anons[i - 4]}` } } }]);
      }
      requests.push([{ type: "page", anonymousId: anon, messageId: mid(), timestamp: t(400 + i), context: { seam: { cookieId: `cc-cookie-${anon}` } } }]);
    });
    // One device used by two users: the earlier event decides, whatever arrives first.
    requests.push([{ type: "identify", userId: users[1], anonymousId: shared, messageId: mid(), timestamp: t(501) }]);
    requests.push([{ type: "identify", userId: users[0], anonymousId: shared, messageId: mid(), timestamp: t(500) }]);
    requests.sort(() => Math.random() - 0.5);
    const responses = await Promise.all(requests.map((batch) => send(edge, batch)));
    assert.ok(responses.every((r) => r.status === 200), `statuses ${responses.map((r) => r.status)}`);

    const profileOf = {};
    for (const u of users) profileOf[u] = (await lookup("user_id", u)).profileId;
    assert.equal(new Set(Object.values(profileOf)).size, 4, "four users, four profiles");
    const rows = await edge.query("SELECT identifier, profile_id FROM identities WHERE identifier LIKE ?", `%cc-%-${run}`);
    const assigned = Object.fromEntries(rows.map((r) => [r.identifier, r.profile_id]));
    anons.forEach((anon, i) => {
      assert.equal(assigned[`anonymous_id:${anon}`], profileOf[users[i % 4]], `${anon} belongs to user ${i % 4}`);
      assert.equal(assigned[`cookie_id:cc-cookie-${anon}`], profileOf[users[i % 4]]);
    });
    assert.equal(assigned[`anonymous_id:${shared}`], profileOf[users[0]]);
  });

  test("a sign-in whose links were stored by a try that failed before resolving is resolved by its retry", async () => {
    const [anon, user] = [`retry-a-${run}`, `retry-u-${run}`];
    const seen = await send(edge, [{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    const signedUp = await send(edge, [{ type: "track", event: "Signed Up", userId: user, messageId: mid() }]);
    assert.notEqual(seen.json.profileId, signedUp.json.profileId);
    // The sign-in as its failed try left it: the event and its link stored, no resolution.
    const signIn = { type: "identify", userId: user, anonymousId: anon, messageId: mid(), timestamp: t(9) };
    const key = createHash("sha256").update([`anonymous_id:${anon}`, `user_id:${user}`].sort().join("\n")).digest("hex").slice(0, 32);
    await edge.exec(
      "INSERT INTO identity_links (set_key, seq, timestamp, message_key, identifiers) VALUES (?, (SELECT seq + 1 FROM identity_link_seq), ?, ?, ?)",
      key, Date.parse(t(9)), `demo-site/${signIn.messageId}`, JSON.stringify([`anonymous_id:${anon}`, `user_id:${user}`]),
    );
    for (const identifier of [`anonymous_id:${anon}`, `user_id:${user}`]) await edge.exec("INSERT INTO link_members (identifier, set_key) VALUES (?, ?)", identifier, key);
    const retry = await send(edge, [signIn]);
    assert.equal(retry.status, 200);
    assert.equal(retry.json.profileId, signedUp.json.profileId, "the retry names the user's profile");
    assert.equal((await lookup("anonymous_id", anon)).profileId, signedUp.json.profileId, "the browser joined it");
  });

  test("the profile API needs the admin key; write keys and browsers cannot read profiles", async () => {
    const path = `/v1/profiles/lookup?type=user_id&value=user-${run}`;
    assert.deepEqual([(await admin(path, {})).status, (await admin(path, {})).json.code], [401, "missing_admin_key"]);
    const wrong = await admin(path, { authorization: "Bearer not-the-admin-key-at-all" });
    assert.deepEqual([wrong.status, wrong.json.code], [401, "invalid_admin_key"]);
    const writeKey = await admin(path, { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString("base64")}` });
    assert.deepEqual([writeKey.status, writeKey.json.code], [403, "write_key_forbidden"]);
    const fromBrowser = await admin(path, { authorization: `Bearer ${ADMIN_KEY}`, origin: "http://localhost:8787" });
    assert.equal(fromBrowser.status, 200);
    assert.equal(fromBrowser.headers.get("access-control-allow-origin"), null, "no CORS on admin routes");
    const preflight = await fetch(`${edge.url}${path}`, { method: "OPTIONS", headers: { origin: "http://localhost:8787", "access-control-request-method": "GET" } });
    assert.equal(preflight.headers.get("access-control-allow-origin"), null);
    assert.deepEqual([(await admin("/v1/profiles/prof_doesnotexist")).json.code], ["profile_not_found"]);
    assert.equal((await admin("/v1/profiles/lookup?type=shoe_size&value=42")).json.code, "invalid_identifier");
    assert.equal((await admin("/v1/profiles/lookup?type=email&value=null")).json.code, "invalid_identifier", "blocked values are not looked up");
  });

  test("each profile's row holds exactly its identifiers through merges, a sign-in and an erasure; the totals count them", async () => {
    const [a1, a2, user] = [`rows-a1-${run}`, `rows-a2-${run}`, `rows-u-${run}`];
    await send(edge, [{ type: "page", anonymousId: a1, messageId: mid(), timestamp: t(70) }]);
    await send(edge, [{ type: "page", anonymousId: a2, messageId: mid(), timestamp: t(71) }]);
    const [p1, p2] = [(await lookup("anonymous_id", a1)).profileId, (await lookup("anonymous_id", a2)).profileId];
    const row = async (profile) => (await edge.query("SELECT identifiers, identified FROM profile_members WHERE profile_id = ?", profile))[0];
    assert.deepEqual(await row(p1), { identifiers: JSON.stringify([`anonymous_id:${a1}`]), identified: 0 });
    const before = (await edge.query("SELECT profiles, identified FROM profile_totals"))[0];
    // Signing in on both browsers: one profile, identified; the absorbed profile's row is gone.
    await send(edge, [{ type: "identify", userId: user, anonymousId: a1, messageId: mid(), timestamp: t(72), traits: { email: `rows-${run}@example.com` } }]);
    const merged = (await send(edge, [{ type: "identify", userId: user, anonymousId: a2, messageId: mid(), timestamp: t(73) }])).json.profileId;
    const stored = await row(merged);
    assert.deepEqual(JSON.parse(stored.identifiers).sort(), [`anonymous_id:${a1}`, `anonymous_id:${a2}`, `email:rows-${run}@example.com`, `user_id:${user}`].sort());
    assert.equal(stored.identified, 1);
    for (const absorbed of [p1, p2].filter((p) => p !== merged)) {
      assert.equal(await row(absorbed), undefined, "an absorbed profile keeps no row");
      const [tombstone] = await edge.query("SELECT seq, seq_sum FROM profile_tombstones WHERE profile_id = ?", absorbed);
      const [kept] = await edge.query("SELECT seq, seq_sum FROM profile_members WHERE profile_id = ?", merged);
      assert.ok(tombstone && tombstone.seq > 0, "its ID is refused to older views of the links");
      assert.deepEqual(kept, tombstone, "at the version the merged row was written at");
    }
    const after = (await edge.query("SELECT profiles, identified FROM profile_totals"))[0];
    assert.deepEqual([after.profiles - before.profiles, after.identified - before.identified], [-1, 1], "two anonymous profiles became one identified");
    assert.ok((await checkProfileRows(edge)) >= 1);
    // The person's erasure takes the row and its counts with the identifiers.
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "user_id", value: user }),
    });
    assert.equal(erased.status, 200, await erased.clone().text());
    assert.equal(await row(merged), undefined);
    const gone = (await edge.query("SELECT profiles, identified FROM profile_totals"))[0];
    assert.deepEqual([gone.profiles - after.profiles, gone.identified - after.identified], [-1, -1]);
    await checkProfileRows(edge);
  });
});

describe("an installation from before the profile rows (migration 0029)", () => {
  let edge;
  const [x1, x2, x3, x4, user] = ["x1", "x2", "x3", "x4", "u1"].map((v) => `up-${v}-${run}`);
  before(async () => {
    const assign = (identifier, profile) => `INSERT INTO identities (identifier, profile_id, seq, updated_at) VALUES ('${identifier}', '${profile}', 1, 1)`;
    edge = await startEdge("identity-upgrade", {
      sources: trustingSources(),
      upgrade: {
        migration: "0029",
        sql: [
          assign(`anonymous_id:${x1}`, "prof_a"),
          assign(`anonymous_id:${x2}`, "prof_a"),
          assign(`user_id:${user}`, "prof_b"),
          assign(`anonymous_id:${x3}`, "prof_b"),
          assign(`anonymous_id:${x4}`, "prof_c"),
        ],
      },
    });
  });
  after(async () => {
    await edge?.stop();
  });

  test("the migration writes each profile's row and the totals from the assignments; reads by profile use them", async () => {
    assert.equal(await checkProfileRows(edge), 3);
    assert.deepEqual((await edge.query("SELECT profiles, identified FROM profile_totals"))[0], { profiles: 3, identified: 1 });
    assert.deepEqual(await edge.query("SELECT seq FROM profile_members WHERE profile_id = 'prof_a'"), [{ seq: 1 }], "a row has its assignments' version");
    // The Worker from before 0030 writes assignments without rows between migrate and deploy:
    // the triggers still keep the rows for it.
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, updated_at) VALUES (?, 'prof_c', 5, 5)", `anonymous_id:up-old-${run}`);
    await edge.exec("UPDATE identities SET profile_id = 'prof_c', seq = 2, updated_at = 2 WHERE identifier = ?", `anonymous_id:${x2}`);
    assert.equal(await checkProfileRows(edge), 3);
    await edge.exec("UPDATE identities SET profile_id = 'prof_a', seq = 3, updated_at = 3 WHERE identifier = ?", `anonymous_id:${x2}`);
    assert.equal(await checkProfileRows(edge), 3);
    // Its deletions are no longer kept (migration 0031: with profile shards a walk deletes
    // `DB`'s assignments as it takes them home, and must leave the rows as they are).
    await edge.exec("DELETE FROM identities WHERE identifier = ?", `anonymous_id:up-old-${run}`);
    const [c] = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = 'prof_c'");
    assert.ok(JSON.parse(c.identifiers).includes(`anonymous_id:up-old-${run}`), "the row is left as it was");
    await edge.exec("UPDATE profile_members SET identifiers = (SELECT json_group_array(value) FROM json_each(profile_members.identifiers) WHERE value <> ?) WHERE profile_id = 'prof_c'", `anonymous_id:up-old-${run}`);
    assert.equal(await checkProfileRows(edge), 3);
    // An assignment copied into DB as it was (a shrinking shard count's move, at its older
    // version) for an identifier its profile's row lists already: the row is left as it is.
    const [bBefore] = await edge.query("SELECT identifiers, seq, last_seen FROM profile_members WHERE profile_id = 'prof_b'");
    await edge.exec("DELETE FROM identities WHERE identifier = ?", `anonymous_id:${x3}`);
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES (?, 'prof_b', ?, 0, 9999999999999)", `anonymous_id:${x3}`, bBefore.seq + 7);
    assert.deepEqual(await edge.query("SELECT identifiers, seq, last_seen FROM profile_members WHERE profile_id = 'prof_b'"), [bBefore], "not listed twice");
    assert.equal(await checkProfileRows(edge), 3);
    // The Worker from before 0029 touches identifiers between migrate and deploy: the
    // profile's row sees it.
    await edge.exec("UPDATE identities SET last_seen = 5000 WHERE identifier = ?", `anonymous_id:${x2}`);
    assert.deepEqual(await edge.query("SELECT last_seen FROM profile_members WHERE profile_id = 'prof_a'"), [{ last_seen: 5000 }]);
    const profile = await fetch(`${edge.url}/v1/profiles/prof_b`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then((r) => r.json());
    assert.deepEqual([...profile.identifiers].sort(), [`anonymous_id:${x3}`, `user_id:${user}`]);
    // A visitor after the upgrade gets a row from the triggers; a sign-in moves a backfilled
    // identifier between rows, and an erasure takes a backfilled row.
    await send(edge, [{ type: "page", anonymousId: `up-new-${run}`, messageId: mid(), timestamp: t(80) }]);
    assert.equal(await checkProfileRows(edge), 4);
    const signedIn = (await send(edge, [{ type: "identify", userId: user, anonymousId: x1, messageId: mid(), timestamp: t(81) }])).json.profileId;
    const holder = await edge.query("SELECT profile_id FROM identities WHERE identifier = ?", `anonymous_id:${x1}`);
    assert.deepEqual(holder, [{ profile_id: signedIn }], "x1 left prof_a");
    assert.ok((await checkProfileRows(edge)) >= 4);
    // After a rollback the old Worker moves an assignment this Worker wrote, and assigns one
    // with no links: the triggers keep the rows for it.
    await edge.exec("UPDATE identities SET profile_id = 'prof_c', seq = seq + 1, updated_at = 9 WHERE identifier = ?", `anonymous_id:${x1}`);
    assert.ok((await checkProfileRows(edge)) >= 4);
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, updated_at) VALUES (?, ?, 1, 1)", `anonymous_id:up-x5-${run}`, signedIn);
    assert.ok((await checkProfileRows(edge)) >= 4);
    // This Worker again: a new link of the user's rewrites the row, which keeps the identifier
    // it did not see (as past a component's cut) and takes x1 back from prof_c's row.
    await send(edge, [{ type: "identify", userId: user, anonymousId: `up-x6-${run}`, messageId: mid(), timestamp: t(82) }]);
    assert.ok((await checkProfileRows(edge)) >= 4);
    const [kept] = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", signedIn);
    assert.deepEqual(JSON.parse(kept.identifiers).sort(), [`anonymous_id:up-x1-${run}`, `anonymous_id:up-x5-${run}`, `anonymous_id:up-x6-${run}`, `user_id:${user}`]);
    // A retired profile ID the old Worker assigns an identifier to, with no links: the next
    // resolution retires it again, and its row keeps what that resolution did not see.
    // It also moves x6, which the next resolution sees, there: that resolution takes x6 back,
    // and the retired row loses it but keeps x7.
    const [retired] = await edge.query("SELECT profile_id, seq, seq_sum FROM profile_tombstones ORDER BY at DESC, profile_id LIMIT 1");
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, updated_at) VALUES (?, ?, 1, 1)", `anonymous_id:up-x7-${run}`, retired.profile_id);
    await edge.exec("UPDATE identities SET profile_id = ?, seq = seq + 1, updated_at = 10 WHERE identifier = ?", retired.profile_id, `anonymous_id:up-x6-${run}`);
    const held = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", retired.profile_id);
    assert.deepEqual(JSON.parse(held[0].identifiers).sort(), [`anonymous_id:up-x6-${run}`, `anonymous_id:up-x7-${run}`]);
    await send(edge, [{ type: "identify", userId: user, anonymousId: `up-x8-${run}`, messageId: mid(), timestamp: t(83) }]);
    const [again] = await edge.query("SELECT seq, seq_sum FROM profile_tombstones WHERE profile_id = ?", retired.profile_id);
    assert.ok(again.seq > retired.seq, "retired again, at the newer version");
    assert.deepEqual(await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", retired.profile_id), [{ identifiers: JSON.stringify([`anonymous_id:up-x7-${run}`]) }]);
    assert.ok((await checkProfileRows(edge)) >= 5);
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "user_id", value: user }),
    });
    assert.equal(erased.status, 200);
    assert.deepEqual(await edge.query("SELECT profile_id FROM profile_members WHERE profile_id = ?", signedIn), []);
    await checkProfileRows(edge);
    // The seeded graph had no links, so the sign-in's component was the user ID and x1 alone:
    // prof_b lost its user ID and is anonymous again.
    const [b] = await edge.query("SELECT identifiers, identified FROM profile_members WHERE profile_id = 'prof_b'");
    assert.deepEqual([JSON.parse(b.identifiers), b.identified], [[`anonymous_id:${x3}`], 0]);
    assert.equal((await edge.query("SELECT identified FROM profile_totals"))[0].identified, 0);
  });
});
