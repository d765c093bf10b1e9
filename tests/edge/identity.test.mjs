// Identity stitching and unified profiles in workerd with real local D1 + KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { post, secret, startEdge, trustingSources, WRITE_KEY } from "../support/edge.mjs";

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
});
