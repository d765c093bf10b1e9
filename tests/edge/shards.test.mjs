// Profile shards (docs/scale.md, "Profile shards"): the profiles' personalisation state spread
// over three local D1 databases (`DB`, `PROFILES_1`, `PROFILES_2`) in workerd. Each profile's
// state row and memberships live in the one database its ID hashes to; merges, audiences, the
// segment sweep, profile reads, decisions and erasure find them there.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { post, secret, settled, startEdge, trustingSources, WRITE_KEY } from "../support/edge.mjs";

const SHARDS = 3;
const NEXT = "x-seam-next-cursor";
const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `sh-${run}-${++n}`;

/** core::personalise::shard::shard_of: a jump consistent hash of the ID's SHA-256 (first 8 bytes, big-endian). */
function shardOf(profileId, shards = SHARDS) {
  let key = BigInt(`0x${createHash("sha256").update(profileId).digest("hex").slice(0, 16)}`);
  const mask = (1n << 64n) - 1n;
  let [bucket, next] = [0n, 0n];
  while (next < BigInt(shards)) {
    bucket = next;
    key = (key * 2862933555777941757n + 1n) & mask;
    next = BigInt(Math.floor(Number(bucket + 1n) * (2 ** 31 / Number((key >> 33n) + 1n))));
  }
  return Number(bucket);
}

const ago = (minutes) => new Date(Date.now() - minutes * 60_000).toISOString();
/** Three running shoes viewed, one bought for 600, socks left in the cart (high_value, due when the cart is abandoned). */
const shopperBatch = (anonymousId) => [
  ...[1, 2, 3].map((i) => ({ type: "track", event: "Product Viewed", anonymousId, messageId: mid(), timestamp: ago(20 - i), properties: { product_id: `run-${i}`, category: "Running Shoes", price: 120 } })),
  { type: "track", event: "Order Completed", anonymousId, messageId: mid(), timestamp: ago(16), properties: { order_id: `o-${anonymousId}`, revenue: 600, products: [{ product_id: "run-1", category: "Running Shoes" }] } },
  { type: "track", event: "Product Added", anonymousId, messageId: mid(), timestamp: ago(15), properties: { product_id: "sock-1", price: 12, quantity: 2 } },
];

describe("profile shards: personalisation state over three D1 databases", () => {
  let edge;
  const shoppers = [];
  const call = (method, path, body) =>
    fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then(async (r) => {
      const text = await r.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // NDJSON or CSV
      }
      return { status: r.status, text, json, headers: r.headers };
    });
  const send = (batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
  /** `sql`'s rows in every shard, each tagged with its shard. */
  const everywhere = async (sql, ...params) => {
    const rows = [];
    for (let shard = 0; shard < SHARDS; shard++) {
      for (const row of await edge.queryShard(shard, sql, ...params)) rows.push({ ...row, shard });
    }
    return rows;
  };

  before(async () => {
    edge = await startEdge("shards", { sources: trustingSources(), profileShards: SHARDS });
    // Enough shoppers that every shard holds some (each is empty with odds of 3 × (2/3)^24).
    for (let i = 0; i < 24; i++) {
      const anon = `sharded-shopper-${run}-${i}`;
      const answer = await send(shopperBatch(anon));
      assert.equal(answer.status, 200, answer.text);
      shoppers.push({ anon, profileId: answer.json.profileId });
    }
    await settled(edge.url);
  });
  after(async () => {
    await edge?.stop();
  });

  test("each profile's state row and memberships are in the one shard its ID hashes to, and the profile API reads them there", async () => {
    const states = await everywhere("SELECT profile_id FROM profile_personalisation");
    const memberships = await everywhere("SELECT profile_id, segment FROM segment_memberships WHERE exited_at IS NULL");
    for (const { profileId } of shoppers) {
      const mine = states.filter((r) => r.profile_id === profileId);
      assert.deepEqual(mine.map((r) => r.shard), [shardOf(profileId)], `${profileId}'s state row`);
      const segments = memberships.filter((r) => r.profile_id === profileId);
      assert.ok(segments.some((r) => r.segment === "high_value"), `${profileId}: ${JSON.stringify(segments)}`);
      assert.ok(segments.every((r) => r.shard === shardOf(profileId)), "memberships beside the state");
    }
    const used = new Set(shoppers.map((s) => shardOf(s.profileId)));
    assert.equal(used.size, SHARDS, "the shoppers spread over every shard");

    // A profile outside `DB`: computed traits and memberships come from its shard.
    const far = shoppers.find((s) => shardOf(s.profileId) > 0);
    const profile = await call("GET", `/v1/profiles/${far.profileId}`);
    assert.equal(profile.status, 200, profile.text);
    assert.equal(profile.json.computedTraits.lifetime_value, 600);
    assert.ok(profile.json.segments.includes("high_value"));
    assert.ok(profile.json.memberships.some((m) => m.segment === "high_value" && m.exitedAt === null), JSON.stringify(profile.json.memberships));

    // The profiles export reads each page's states from their shards.
    const exported = [];
    for (let cursor = ""; ; ) {
      const page = await call("GET", `/v1/admin/export/profiles?limit=7&cursor=${encodeURIComponent(cursor)}`);
      assert.equal(page.status, 200, page.text);
      exported.push(...page.text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)));
      cursor = page.headers.get(NEXT);
      if (!cursor) break;
    }
    for (const { profileId } of shoppers) {
      const line = exported.find((p) => p.profileId === profileId);
      assert.equal(line?.computedTraits?.lifetime_value, 600, `${profileId} exported with its state`);
    }
  });

  test("segment sizes add up over the shards, and audience pages merge them in profile order", async () => {
    const current = await everywhere("SELECT profile_id FROM segment_memberships WHERE segment = 'high_value' AND exited_at IS NULL");
    const expected = current.map((r) => r.profile_id).sort();
    assert.ok(new Set(current.map((r) => r.shard)).size > 1, "members in several shards");

    const segments = await call("GET", "/v1/admin/segments");
    assert.equal(segments.status, 200, segments.text);
    assert.equal(segments.json.segments.find((s) => s.name === "high_value").size, expected.length);
    const overview = await call("GET", "/v1/admin/overview");
    assert.equal(overview.json.segments.find((s) => s.segment === "high_value").size, expected.length);

    const paged = [];
    for (let after = ""; ; ) {
      const page = await call("GET", `/v1/admin/segments/high_value/members?limit=5&after=${encodeURIComponent(after)}`);
      assert.equal(page.status, 200, page.text);
      paged.push(...page.json.members.map((m) => m.profile_id));
      if (!page.json.next) break;
      after = page.json.next;
    }
    assert.deepEqual(paged, expected, "every member once, in profile order");
    const csv = await fetch(`${edge.url}/v1/admin/segments/high_value/members?format=csv`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then((r) => r.text());
    assert.deepEqual(csv.trim().split("\n").slice(1).map((l) => l.split(",")[0]), expected);

    // The sweep records the summed size for the console's history.
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
    const [recorded] = await edge.query("SELECT size FROM segment_sizes WHERE segment = 'high_value' ORDER BY day DESC LIMIT 1");
    assert.equal(recorded.size, expected.length);
  });

  test("a merge of profiles in different shards moves the absorbed state into the survivor's shard", async () => {
    // Two visitors whose profiles hash to different shards, then one sign-in names both.
    const visitors = [];
    for (let i = 0; visitors.length < 2 && i < 40; i++) {
      const anon = `merging-visitor-${run}-${i}`;
      const product = `mrg-${i}`;
      const answer = await send([{ type: "track", event: "Product Viewed", anonymousId: anon, messageId: mid(), timestamp: new Date().toISOString(), properties: { product_id: product, category: "Jackets", price: 90 } }]);
      assert.equal(answer.status, 200, answer.text);
      const shard = shardOf(answer.json.profileId);
      if (!visitors.some((v) => v.shard === shard)) visitors.push({ anon, product, shard, profileId: answer.json.profileId });
    }
    assert.equal(visitors.length, 2);
    await settled(edge.url);
    const user = `merged-user-${run}`;
    for (const v of visitors) {
      const answer = await send([{ type: "identify", userId: user, anonymousId: v.anon, messageId: mid(), traits: { plan: "gold" } }]);
      assert.equal(answer.status, 200, answer.text);
    }
    await settled(edge.url);
    const [{ profile_id: survivor }] = await edge.query("SELECT profile_id FROM identities WHERE identifier = ?", `user_id:${user}`);
    // The user's profile absorbed both visitors' (the survivor may be a third ID): at least
    // one of them came from another shard than the survivor's.
    const absorbed = visitors.map((v) => v.profileId).filter((p) => p !== survivor);
    assert.ok(absorbed.length >= 1, "the two profiles merged into one");
    assert.ok(absorbed.some((p) => shardOf(p) !== shardOf(survivor)), "a merge across shards");

    const ids = [survivor, ...absorbed];
    const states = await everywhere(`SELECT profile_id FROM profile_personalisation WHERE profile_id IN (${ids.map(() => "?").join(", ")})`, ...ids);
    assert.deepEqual(states.map((r) => [r.profile_id, r.shard]), [[survivor, shardOf(survivor)]], "the absorbed rows are gone from their shards");
    const profile = await call("GET", `/v1/profiles/${survivor}`);
    assert.deepEqual(profile.json.computedTraits.viewed_products.slice().sort(), visitors.map((v) => v.product).sort(), "both visitors' views");
  });

  test("the segment sweep finds due profiles in every shard", async () => {
    // Every shopper left socks in the cart: due when the abandon window passes. Made due now.
    await Promise.all([0, 1, 2].map((s) => edge.queryShard(s, "UPDATE profile_personalisation SET check_at = 1 WHERE check_at IS NOT NULL")));
    const planted = await everywhere("SELECT profile_id FROM profile_personalisation WHERE check_at = 1");
    assert.equal(new Set(planted.map((r) => r.shard)).size, SHARDS);
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
    const left = await everywhere("SELECT profile_id FROM profile_personalisation WHERE check_at = 1");
    assert.deepEqual(left, [], "each was re-evaluated and given its real next check");
  });

  test("a decision after a KV miss reads the visitor's state from its shard", async () => {
    const far = shoppers.find((s) => shardOf(s.profileId) > 0);
    const keys = (await edge.kv.list()).keys.map((k) => k.name).filter((k) => k.startsWith("profile:") || k.startsWith("anon:"));
    await Promise.all(keys.map((k) => edge.kv.delete(k)));
    const decided = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: far.anon, slots: ["recommended-for-you"] });
    assert.equal(decided.status, 200, decided.text);
    assert.notEqual(decided.json.reason, "cold_start", JSON.stringify(decided.json));
    const snapshot = JSON.parse(await edge.kv.get(`profile:${far.profileId}`));
    assert.equal(snapshot.computedTraits.lifetime_value, 600, "re-published with the shard's state");
  });

  test("erasure deletes the person's state in their shard", async () => {
    const far = shoppers.find((s) => shardOf(s.profileId) > 0);
    const receipt = await call("POST", "/v1/privacy/delete", { type: "anonymous_id", value: far.anon });
    assert.equal(receipt.status, 200, receipt.text);
    assert.deepEqual(receipt.json.profileIds, [far.profileId]);
    assert.equal(receipt.json.deleted.personalisation, 1);
    assert.ok(receipt.json.deleted.segmentMemberships >= 1, JSON.stringify(receipt.json.deleted));
    const rows = await everywhere("SELECT profile_id FROM profile_personalisation WHERE profile_id = ? UNION ALL SELECT profile_id FROM segment_memberships WHERE profile_id = ?", far.profileId, far.profileId);
    assert.deepEqual(rows, []);
    const others = await everywhere("SELECT count(*) AS n FROM profile_personalisation");
    assert.ok(others.reduce((a, r) => a + r.n, 0) >= shoppers.length - 1, "no one else's state");
  });
});
