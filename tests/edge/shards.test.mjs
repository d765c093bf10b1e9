// Profile shards (docs/scale.md, "Profile shards"): the profiles' personalisation state spread
// over three local D1 databases (`DB`, `PROFILES_1`, `PROFILES_2`) in workerd. Each profile's
// state row and memberships live in the one database its ID hashes to; merges, audiences, the
// segment sweep, profile reads, decisions and erasure find them there.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { homeOf, post, root, secret, settled, startEdge, trustingSources, WRITE_KEY } from "../support/edge.mjs";

const SHARDS = 3;
// The shipped holdout (config/recommendations.json), as seam_core::personalise::recommend::in_holdout computes it.
const { holdoutSalt, holdoutPercent } = JSON.parse(readFileSync(join(root, "config/recommendations.json"), "utf8"));
const inHoldout = (profileId) =>
  BigInt(`0x${createHash("sha256").update(`${holdoutSalt}\n${profileId}`).digest("hex").slice(0, 16)}`) % 10000n < BigInt(Math.round(holdoutPercent * 100));
const NEXT = "x-seam-next-cursor";
const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `sh-${run}-${++n}`;

/** The shard of `key` among this suite's shards. */
const shardOf = (key, shards = SHARDS) => homeOf(key, shards);

/** A value `${prefix}-${run}-i` whose identifier of `kind` hashes to a shard `wanted` accepts. */
function pick(kind, prefix, wanted) {
  for (let i = 0; ; i++) {
    const value = `${prefix}-${run}-${i}`;
    if (wanted(shardOf(`${kind}:${value}`))) return value;
  }
}

/**
 * An identifier's assignment (`identities`), read in every database: the newest by version
 * where several hold one (while it moves). `null` when none does.
 */
async function assignmentOf(edge, identifier, databases = SHARDS) {
  let found = null;
  for (let k = 0; k < databases; k++) {
    for (const r of await edge.queryShard(k, "SELECT profile_id, seq, seq_sum FROM identities WHERE identifier = ?", identifier)) {
      if (!found || r.seq > found.seq || (r.seq === found.seq && r.seq_sum > found.seq_sum)) found = { ...r, shard: k };
    }
  }
  return found;
}

/** Assignments outside the database their identifier hashes to under `shards`. */
async function misplacedAssignments(edge, shards, databases = SHARDS) {
  const found = [];
  for (let k = 0; k < databases; k++) {
    for (const r of await edge.queryShard(k, "SELECT identifier FROM identities")) {
      if (shardOf(r.identifier, shards) !== k) found.push(`${r.identifier} in ${k}`);
    }
  }
  return found;
}

/** Each shard's aggregates are exactly what its own evidence rows add up to (the triggers' invariant). */
async function assertCountsMatchEvidence(edge, shards = SHARDS) {
  for (let k = 0; k < shards; k++) {
    const fromEvidence = await edge.queryShard(k, "SELECT item_a, item_b, sum(kind = 'view') AS v, sum(kind = 'purchase') AS p FROM item_pair_evidence GROUP BY item_a, item_b ORDER BY item_a, item_b");
    const pairs = await edge.queryShard(k, "SELECT item_a, item_b, co_views AS v, co_purchases AS p FROM item_pairs WHERE item_a < item_b ORDER BY item_a, item_b");
    assert.deepEqual(pairs, fromEvidence, `shard ${k}'s pair counts`);
    const fromInteractions = await edge.queryShard(k, "SELECT product_id, sum(kind = 'view') AS v, sum(kind = 'purchase') AS p FROM item_interactions GROUP BY product_id ORDER BY product_id");
    const stats = await edge.queryShard(k, "SELECT product_id, views AS v, purchases AS p FROM item_stats WHERE views > 0 OR purchases > 0 ORDER BY product_id");
    assert.deepEqual(stats, fromInteractions, `shard ${k}'s item counts`);
  }
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

  test("co-occurrence evidence is written beside the state, each shard counts its own, and recommendations add up every shard", async () => {
    // The shoppers' views and orders: evidence rows only in each shopper's shard.
    const interactions = await everywhere("SELECT DISTINCT profile_id FROM item_interactions UNION SELECT DISTINCT profile_id FROM item_pair_evidence");
    for (const { profileId } of shoppers) {
      assert.deepEqual(interactions.filter((r) => r.profile_id === profileId).map((r) => r.shard), [shardOf(profileId)], `${profileId}'s evidence`);
    }
    await assertCountsMatchEvidence(edge);
    const coViews = await everywhere("SELECT co_views FROM item_pairs WHERE item_a = 'run-1' AND item_b = 'run-2'");
    assert.ok(coViews.length > 1, "counted in several shards");
    assert.equal(coViews.reduce((sum, r) => sum + r.co_views, 0), shoppers.length, "each shopper once, wherever counted");

    // Two visitors outside `DB` view two jackets together: only their shards count the pair.
    const viewed = (anonymousId, product_id, minutes) => ({ type: "track", event: "Product Viewed", anonymousId, messageId: mid(), timestamp: ago(minutes), properties: { product_id, category: product_id === "far-a" ? "Jackets" : "Hats", name: `Far ${product_id}`, price: 50 } });
    let pairers = 0;
    for (let i = 0; pairers < 2; i++) {
      assert.ok(i < 40, "two visitors outside DB");
      // A page view (no evidence) says where the visitor's profile is.
      const anon = `far-pairer-${run}-${i}`;
      const seen = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
      assert.equal(seen.status, 200, seen.text);
      if (shardOf(seen.json.profileId) === 0) continue;
      const answer = await send([viewed(anon, "far-a", 3), viewed(anon, "far-b", 2)]);
      assert.equal(answer.status, 200, answer.text);
      pairers++;
    }
    await settled(edge.url);
    assert.deepEqual(await edge.query("SELECT * FROM item_pairs WHERE item_a = 'far-a'"), [], "DB counts nothing of the pair");
    assert.deepEqual(await edge.query("SELECT * FROM item_stats WHERE product_id IN ('far-a', 'far-b')"), []);
    const counted = await everywhere("SELECT co_views FROM item_pairs WHERE item_a = 'far-a' AND item_b = 'far-b'");
    assert.equal(counted.reduce((sum, r) => sum + r.co_views, 0), 2);

    // A shopper who looks at the first jacket is offered the other for it.
    let viewer;
    for (let i = 0; !viewer; i++) {
      const anon = `far-viewer-${run}-${i}`;
      const answer = await send([viewed(anon, "far-a", 1)]);
      if (!inHoldout(answer.json.profileId)) viewer = anon;
    }
    await settled(edge.url);
    const decided = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: viewer, slots: [{ id: "recommended-for-you", limit: 12 }] });
    assert.equal(decided.status, 200, decided.text);
    const partner = decided.json.decisions[0].items.find((i) => i.product_id === "far-b");
    assert.equal(partner?.reason, "co_viewed", JSON.stringify(decided.json.decisions[0].items));
    assert.equal(partner.name, "Far far-b", "its catalogue body read from DB");
    // A stranger's popular list adds up every shard's counts too.
    const stranger = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: `far-stranger-${run}`, slots: [{ id: "recommended-for-you", limit: 12 }] });
    assert.equal(stranger.json.reason, "cold_start", stranger.text);
    // (The only items with a name to show: the shoppers' events named none.) far-b is counted
    // only outside DB; far-a's third viewer may be in any shard, DB included.
    const popular = stranger.json.decisions[0].items.map((i) => i.product_id);
    assert.deepEqual(popular, ["far-a", "far-b"], "viewed three times and twice, over all shards");
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
    const { profile_id: survivor } = await assignmentOf(edge, `user_id:${user}`);
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

  test("the identity graph's links live where their identifiers do, and a component spread over the shards resolves as one", async () => {
    // Every member row in the database its identifier hashes to, and each link copy held
    // there by at least one member row.
    const members = await everywhere("SELECT identifier, set_key FROM link_members");
    assert.ok(members.length >= 24, `${members.length} member rows`);
    const misplaced = members.filter((m) => m.shard !== shardOf(m.identifier));
    assert.deepEqual(misplaced, [], "member rows in their identifier's database");
    assert.ok(new Set(members.map((m) => m.shard)).size === SHARDS, "identifiers in every shard");
    const unheld = await everywhere("SELECT set_key FROM identity_links l WHERE NOT EXISTS (SELECT 1 FROM link_members m WHERE m.set_key = l.set_key)");
    assert.deepEqual(unheld, [], "no copy without a member beside it");

    // Two visitors and the account they sign in to, each identifier in a shard other than DB,
    // the user's in another than either visitor's: the component is only whole across shards.
    const anonA = pick("anonymous_id", "spread-a", (s) => s === 1);
    const anonB = pick("anonymous_id", "spread-b", (s) => s === 1);
    const user = pick("user_id", "spread-u", (s) => s === 2);
    for (const anon of [anonA, anonB]) {
      const seen = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid(), timestamp: new Date().toISOString() }]);
      assert.equal(seen.status, 200, seen.text);
    }
    const signIns = [];
    for (const anon of [anonA, anonB]) {
      const answer = await send([{ type: "identify", userId: user, anonymousId: anon, messageId: mid(), traits: { plan: "spread" } }]);
      assert.equal(answer.status, 200, answer.text);
      signIns.push(answer.json.profileId);
    }
    await settled(edge.url);
    // Each identifier's assignment is in its own shard only, beside its links.
    assert.deepEqual(await misplacedAssignments(edge, SHARDS), [], "assignments in their identifier's database");
    const assigned = [];
    for (const identifier of [`anonymous_id:${anonA}`, `anonymous_id:${anonB}`, `user_id:${user}`]) {
      const found = await assignmentOf(edge, identifier);
      assert.equal(found?.shard, shardOf(identifier), `${identifier} assigned in its shard`);
      assigned.push({ identifier, profile_id: found.profile_id });
    }
    assert.deepEqual(await edge.query("SELECT identifier FROM identities WHERE identifier IN (?, ?, ?)", ...assigned.map((a) => a.identifier)), [], "none in DB");
    assert.equal(new Set(assigned.map((r) => r.profile_id)).size, 1, `one profile: ${JSON.stringify(assigned)}`);
    assert.deepEqual(signIns, [assigned[0].profile_id, assigned[0].profile_id], "each sign-in answered with it");
    // The sign-in links are in shards 1 and 2, none in DB.
    const keys = (await everywhere("SELECT set_key FROM link_members WHERE identifier = ?", `user_id:${user}`)).map((r) => r.set_key);
    assert.equal(keys.length, 2, "two sign-in links");
    for (const key of keys) {
      const copies = (await everywhere("SELECT set_key FROM identity_links WHERE set_key = ?", key)).map((r) => r.shard);
      assert.deepEqual(copies.sort(), [1, 2], "a copy where each member lives");
    }
    const profile = await call("GET", `/v1/profiles/${assigned[0].profile_id}`);
    assert.equal(profile.status, 200, profile.text);
    assert.deepEqual(profile.json.identifiers.slice().sort(), assigned.map((r) => r.identifier).sort());
  });

  test("erasure finds the person's links in every shard: their own go, a shared one keeps the other person's identifier, counted once", async () => {
    // A browser that signed in as one user, then as another: the second user's link names the
    // first user's browser, which the rules keep with the first (one user ID per profile).
    const anon = pick("anonymous_id", "erase-a", (s) => s === 1);
    const first = pick("user_id", "erase-first", (s) => s === 0);
    const second = pick("user_id", "erase-second", (s) => s === 2);
    for (const userId of [first, second]) {
      const answer = await send([{ type: "identify", userId, anonymousId: anon, messageId: mid(), traits: { plan: "x" } }]);
      assert.equal(answer.status, 200, answer.text);
    }
    const alone = await send([{ type: "track", event: "Signed In", userId: second, messageId: mid() }]);
    assert.equal(alone.status, 200, alone.text);
    await settled(edge.url);
    const { profile_id: kept } = await assignmentOf(edge, `anonymous_id:${anon}`);
    const { profile_id: erased } = await assignmentOf(edge, `user_id:${second}`);
    assert.notEqual(kept, erased, "the second user is a profile of its own");
    const shared = await everywhere("SELECT set_key, identifiers FROM identity_links WHERE identifiers LIKE ?", `%user_id:${second}%`);
    assert.deepEqual(shared.map((r) => r.shard).sort(), [1, 2, 2], "the shared link in both shards, the user's own in its shard");

    const receipt = await call("POST", "/v1/privacy/delete", { type: "user_id", value: second });
    assert.equal(receipt.status, 200, receipt.text);
    assert.equal(receipt.json.deleted.identityLinks, 1, `the user's own link, once: ${JSON.stringify(receipt.json.deleted)}`);
    assert.equal(receipt.json.deleted.sharedLinksRedacted, 1, "the shared link, once over its two copies");
    assert.deepEqual(await everywhere("SELECT set_key FROM identity_links WHERE identifiers LIKE ?", `%${second}%`), [], "no copy names the user");
    assert.deepEqual(await everywhere("SELECT identifier FROM link_members WHERE identifier = ?", `user_id:${second}`), []);
    const left = await everywhere("SELECT identifiers FROM identity_links WHERE set_key = ?", shared.find((r) => r.shard === 1).set_key);
    assert.deepEqual(left, [{ identifiers: JSON.stringify([`anonymous_id:${anon}`]), shard: 1 }], "the browser's copy keeps the browser; the user's shard keeps none");
    // No row of any table in any database holds the user ID or their profile's ID.
    const holding = [];
    for (let shard = 0; shard < SHARDS; shard++) {
      const tables = await edge.queryShard(shard, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'd1_%'");
      for (const { name } of tables) {
        const columns = (await edge.queryShard(shard, `SELECT name FROM pragma_table_info('${name}')`)).map((c) => c.name);
        const where = columns.map((c) => `instr(CAST("${c}" AS TEXT), ?1) OR instr(CAST("${c}" AS TEXT), ?2)`).join(" OR ");
        const [{ n }] = await edge.queryShard(shard, `SELECT count(*) AS n FROM "${name}" WHERE ${where}`, second, erased);
        if (n > 0) holding.push(`shard ${shard} ${name}: ${n}`);
      }
    }
    assert.deepEqual(holding, [], "nothing left of the erased user anywhere");
    const still = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    assert.equal(still.json.profileId, kept, "the first user's profile is unchanged");
  });

  // Seeded here, walked home in the test after the links' (whose runs may take them part way).
  const legacyAssignments = {};
  test("assignments DB held for other shards' identifiers (written before assignments moved to the shards) are read until walked home, the newest winning", async () => {
    // As an older Worker left them: X's assignment and its profile's row in DB only; a stale
    // one of Y in DB while Y's home holds a newer one.
    const x = `anonymous_id:${pick("anonymous_id", "legacy-assigned-x", (s) => s === 1)}`;
    const yAnon = pick("anonymous_id", "legacy-assigned-y", (s) => s === 2);
    const y = `anonymous_id:${yAnon}`;
    const xProfile = `prof_legacy_${run}`;
    await edge.exec("INSERT INTO profile_members (profile_id, identified, last_seen, identifiers, seq, seq_sum) VALUES (?, 0, ?, ?, 5, 5)", xProfile, Date.now(), JSON.stringify([x]));
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES (?, ?, 5, 5, 1)", x, xProfile);
    const seen = await send([{ type: "page", name: "Home", anonymousId: yAnon, messageId: mid() }]);
    assert.equal(seen.status, 200, seen.text);
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES (?, 'prof_stale', 1, 1, 1)", y);
    // Z: an older Worker's newer write in DB (during the deploy) wins over the home's; W: one
    // at the home's own version (a rules change recomputed it there) loses to the home's.
    const [zAnon, wAnon] = ["legacy-assigned-z", "legacy-assigned-w"].map((p) => pick("anonymous_id", p, (s) => s === 1));
    const [z, w] = [zAnon, wAnon].map((a) => `anonymous_id:${a}`);
    const homeOf = {};
    for (const anon of [zAnon, wAnon]) {
      const answer = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
      assert.equal(answer.status, 200, answer.text);
      homeOf[anon] = (await edge.queryShard(1, "SELECT profile_id, seq, seq_sum FROM identities WHERE identifier = ?", `anonymous_id:${anon}`))[0];
      assert.equal(homeOf[anon].profile_id, answer.json.profileId);
    }
    const zProfile = `prof_newer_${run}`;
    await edge.exec("INSERT INTO profile_members (profile_id, identified, last_seen, identifiers, seq, seq_sum) VALUES (?, 0, ?, ?, ?, ?)", zProfile, Date.now(), JSON.stringify([z]), homeOf[zAnon].seq + 1, homeOf[zAnon].seq_sum + 1);
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES (?, ?, ?, ?, 1)", z, zProfile, homeOf[zAnon].seq + 1, homeOf[zAnon].seq_sum + 1);
    await edge.exec("INSERT INTO identities (identifier, profile_id, seq, seq_sum, updated_at) VALUES (?, 'prof_tied', ?, ?, 1)", w, homeOf[wAnon].seq, homeOf[wAnon].seq_sum);
    const lookup = (identifier) => call("GET", `/v1/profiles/lookup?type=anonymous_id&value=${encodeURIComponent(identifier.slice("anonymous_id:".length))}`);
    const xFound = await lookup(x);
    assert.equal(xFound.status, 200, xFound.text);
    assert.equal(xFound.json.profileId, xProfile, "read in DB");
    assert.deepEqual(xFound.json.identifiers, [x]);
    assert.equal((await lookup(y)).json.profileId, seen.json.profileId, "the home's newer assignment, not DB's stale one");
    assert.equal((await lookup(z)).json.profileId, zProfile, "DB's newer write");
    assert.equal((await lookup(w)).json.profileId, homeOf[wAnon].profile_id, "the home's, at the same version");
    Object.assign(legacyAssignments, { x, y, z, w, xProfile, yProfile: seen.json.profileId, zProfile, wProfile: homeOf[wAnon].profile_id });
  });

  test("links DB held for other shards' identifiers (written before links moved to the shards) resolve, and are walked home once", async () => {
    const anon = pick("anonymous_id", "legacy-link-a", (s) => s === 1);
    const user = pick("user_id", "legacy-link-u", (s) => s === 2);
    const ids = [`anonymous_id:${anon}`, `user_id:${user}`];
    // As an older Worker wrote it: the link and both member rows in DB, no assignment yet.
    const key = createHash("sha256").update([...ids].sort().join("\n")).digest("hex").slice(0, 32);
    await edge.exec("INSERT INTO identity_links (set_key, seq, timestamp, message_key, identifiers) VALUES (?, 5, 1000, 'web/legacy', ?)", key, JSON.stringify([...ids].sort()));
    for (const identifier of ids) await edge.exec("INSERT INTO link_members (identifier, set_key) VALUES (?, ?)", identifier, key);
    // The browser comes back: its link is new in its shard, and the walk finds the old one in DB.
    const back = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    assert.equal(back.status, 200, back.text);
    const { profile_id: userProfile } = await assignmentOf(edge, `user_id:${user}`);
    assert.equal(back.json.profileId, userProfile, "the browser joined the user's profile through the link in DB");

    // Walked twice, the second pass from a later run (for what an older Worker still wrote
    // behind the first during the deploy).
    await edge.exec("DELETE FROM walk_cursors WHERE name LIKE 'identity_links_home:%'");
    const done = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name = 'identity_links_home:1'"))[0]?.after?.endsWith("done");
    for (let runs = 0; runs < 10 && !(await done()); runs++) {
      assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).status, 200);
    }
    assert.ok(await done(), "the walk finished");
    const members = await everywhere("SELECT identifier FROM link_members WHERE set_key = ?", key);
    assert.deepEqual(members.map((m) => [m.identifier, m.shard]).sort(), ids.map((i) => [i, shardOf(i)]).sort(), "each member row home");
    const copies = (await everywhere("SELECT seq, message_key FROM identity_links WHERE set_key = ?", key));
    assert.deepEqual(copies.map((c) => c.shard).sort(), [1, 2], "a copy where each member lives, none left in DB");
    assert.ok(copies.every((c) => c.seq === 5 && c.message_key === "web/legacy"), "copied as it was");
    const again = await send([{ type: "identify", userId: user, anonymousId: anon, messageId: mid(), traits: { plan: "legacy" } }]);
    assert.equal(again.json.profileId, userProfile, "still one profile after the walk");
  });

  test("the assignments' walk takes DB's other-shard assignments home once, keeping the newer one and the profile's row", async () => {
    const { x, y, z, w, xProfile, yProfile, zProfile, wProfile } = legacyAssignments;
    assert.ok(x, "seeded by the test before");
    const done = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name = 'identity_assignments_home:1'"))[0]?.after?.endsWith("done");
    for (let runs = 0; runs < 20 && !(await done()); runs++) {
      assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).status, 200);
    }
    assert.ok(await done(), "the walk finished");
    assert.deepEqual(await misplacedAssignments(edge, SHARDS), [], "every assignment in its identifier's shard, none left in DB");
    const xNow = await assignmentOf(edge, x);
    assert.deepEqual([xNow.shard, xNow.profile_id, xNow.seq, xNow.seq_sum], [1, xProfile, 5, 5], "copied as it was");
    const yNow = await assignmentOf(edge, y);
    assert.deepEqual([yNow.shard, yNow.profile_id], [2, yProfile], "the stale copy did not overwrite the newer one");
    assert.deepEqual([(await assignmentOf(edge, z)).shard, (await assignmentOf(edge, z)).profile_id], [1, zProfile], "the newer copy did");
    assert.deepEqual(await edge.queryShard(1, "SELECT profile_id FROM identities WHERE identifier = ?", w), [{ profile_id: wProfile }], "the copy at the same version did not");
    // Deleting DB's copies leaves the profiles' rows (in DB) as they were.
    const rows = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", xProfile);
    assert.deepEqual(rows.map((r) => JSON.parse(r.identifiers)), [[x]], "the row keeps the identifier that moved");
    const found = await call("GET", `/v1/profiles/lookup?type=anonymous_id&value=${encodeURIComponent(x.slice("anonymous_id:".length))}`);
    assert.equal(found.json.profileId, xProfile, "read in its shard now");
  });

  test("the segment sweep finds due profiles in every shard", async () => {
    // Every shopper left socks in the cart: due when the abandon window passes. Made due now;
    // a re-evaluation gives each its real next check back (a failed one would be put off).
    const real = new Map((await everywhere("SELECT profile_id, check_at FROM profile_personalisation WHERE check_at IS NOT NULL")).map((r) => [r.profile_id, r.check_at]));
    assert.ok(shoppers.every((s) => real.get(s.profileId) > Date.now()), "each shopper has a check ahead");
    await Promise.all([0, 1, 2].map((s) => edge.queryShard(s, "UPDATE profile_personalisation SET check_at = 1 WHERE check_at IS NOT NULL")));
    const planted = await everywhere("SELECT profile_id FROM profile_personalisation WHERE check_at = 1");
    assert.equal(new Set(planted.map((r) => r.shard)).size, SHARDS);
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
    const after = await everywhere("SELECT profile_id, check_at FROM profile_personalisation WHERE check_at IS NOT NULL");
    assert.deepEqual(new Map(after.map((r) => [r.profile_id, r.check_at])), real, "each was re-evaluated in its shard");
  });

  test("decisions read the visitor's state from its shard: after a KV miss, and for a banner whose snapshot carries none", async () => {
    const far = shoppers.find((s) => shardOf(s.profileId) > 0 && !inHoldout(s.profileId));
    const keys = (await edge.kv.list()).keys.map((k) => k.name).filter((k) => k.startsWith("profile:") || k.startsWith("anon:"));
    await Promise.all(keys.map((k) => edge.kv.delete(k)));
    const decided = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: far.anon, slots: ["recommended-for-you"] });
    assert.equal(decided.status, 200, decided.text);
    assert.notEqual(decided.json.reason, "cold_start", JSON.stringify(decided.json));
    const snapshot = JSON.parse(await edge.kv.get(`profile:${far.profileId}`));
    assert.equal(snapshot.computedTraits.lifetime_value, 600, "re-published with the shard's state");

    // A banner for high-value shoppers, and a snapshot without its state (as older ones are):
    // the banner's segments come from the state row, read in the shard.
    const slots = { slots: { "vip-banner": { type: "banner", variants: [{ name: "vip", when: { all: ["high_value"] }, html: "<p>VIP</p>" }] } } };
    const upload = await call("PUT", "/v1/admin/personalisation", { slots });
    assert.equal(upload.status, 200, upload.text);
    delete snapshot.state;
    await edge.kv.put(`profile:${far.profileId}`, JSON.stringify(snapshot));
    const banner = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: far.anon, slots: ["vip-banner"] });
    assert.equal(banner.status, 200, banner.text);
    const [vip] = banner.json.decisions;
    assert.equal(vip.variant, "vip", JSON.stringify(banner.json));
    assert.match(vip.html, /VIP/);
    assert.equal((await call("DELETE", "/v1/admin/personalisation")).status, 200);
  });

  test("evidence DB held for other shards' profiles (written before evidence moved to the shards) is walked home once", async () => {
    const far = shoppers.findLast((s) => shardOf(s.profileId) > 0);
    const home = shardOf(far.profileId);
    // As an older Worker wrote it: in DB, beside what the shopper's shard already holds (run-1
    // viewed, run-1 with run-2) and what it does not (legacy-1 viewed with run-1).
    for (const [product, kind] of [["run-1", "view"], ["legacy-1", "view"]]) {
      await edge.exec("INSERT INTO item_interactions (profile_id, product_id, kind) VALUES (?, ?, ?)", far.profileId, product, kind);
    }
    for (const [a, b] of [["run-1", "run-2"], ["legacy-1", "run-1"]]) {
      await edge.exec("INSERT INTO item_pair_evidence (profile_id, kind, item_a, item_b) VALUES (?, 'view', ?, ?)", far.profileId, a, b);
    }
    const sum = async (sql) => (await everywhere(sql)).reduce((n, r) => n + r.n, 0);
    const totals = async () => ({
      views: await sum("SELECT coalesce(sum(views), 0) AS n FROM item_stats WHERE product_id = 'run-1'"),
      pairs: await sum("SELECT coalesce(sum(co_views), 0) AS n FROM item_pairs WHERE item_a = 'run-1' AND item_b = 'run-2'"),
      legacy: await sum("SELECT coalesce(sum(co_views), 0) AS n FROM item_pairs WHERE item_a = 'legacy-1' AND item_b = 'run-1'"),
    });
    const before = await totals();
    await edge.exec("DELETE FROM walk_cursors WHERE name LIKE 'profile_evidence_home:%'");
    const done = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name = 'profile_evidence_home:0'"))[0]?.after?.endsWith("done");
    for (let runs = 0; runs < 10 && !(await done()); runs++) {
      assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).status, 200);
    }
    assert.ok(await done(), "the walk finished");
    assert.deepEqual(await edge.query("SELECT product_id FROM item_interactions WHERE profile_id = ?1 UNION ALL SELECT item_a FROM item_pair_evidence WHERE profile_id = ?1", far.profileId), [], "nothing left in DB");
    const moved = await edge.queryShard(home, "SELECT product_id FROM item_interactions WHERE profile_id = ? AND product_id = 'legacy-1'", far.profileId);
    assert.equal(moved.length, 1, "the row the shard lacked moved home");
    const after = await totals();
    assert.deepEqual(after, { views: before.views - 1, pairs: before.pairs - 1, legacy: before.legacy }, "what the shard already held is counted once");
    await assertCountsMatchEvidence(edge);
  });

  test("a sign-in whose DB transaction fails is resolved again by its retry: the shards' assignments wait for DB", async () => {
    const anon = pick("anonymous_id", "half-a", (s) => s === 1);
    const user = pick("user_id", "half-u", (s) => s === 2);
    const visit = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    assert.equal(visit.status, 200, visit.text);
    const signIn = [{ type: "identify", userId: user, anonymousId: anon, messageId: mid(), traits: { plan: "half" } }];
    // The merge's tombstone for the visitor's profile is refused: the resolution's DB
    // transaction fails after the events committed, and the request is queued to be tried
    // again (accepted, deferred).
    await edge.exec("CREATE TRIGGER refuse_tombstones BEFORE INSERT ON profile_tombstones BEGIN SELECT RAISE(ABORT, 'refused'); END");
    const failed = await send(signIn);
    await edge.exec("DROP TRIGGER refuse_tombstones");
    assert.equal(failed.json?.deferred, true, `${failed.status} ${failed.text}`);
    // The client's retry: its link is stored already, and it finds the identifiers apart.
    const retried = await send(signIn);
    assert.equal(retried.status, 200, retried.text);
    assert.equal(retried.json.deferred, undefined);
    const profile = retried.json.profileId;
    assert.equal((await assignmentOf(edge, `anonymous_id:${anon}`)).profile_id, profile);
    assert.equal((await assignmentOf(edge, `user_id:${user}`)).profile_id, profile);
    const [row] = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", profile);
    assert.deepEqual(JSON.parse(row?.identifiers ?? "[]").sort(), [`anonymous_id:${anon}`, `user_id:${user}`], "the profile's row holds both");
    assert.deepEqual(await edge.query("SELECT profile_id FROM profile_members WHERE profile_id = ?", visit.json.profileId), [], "the visitor's row is retired");
  });

  test("a deletion whose DB transaction fails leaves the person whole for its retry; the assignments in the shards go after DB commits", async () => {
    const anon = pick("anonymous_id", "erase-retry-a", (s) => s === 1);
    const user = pick("user_id", "erase-retry-u", (s) => s === 2);
    const signedIn = await send([{ type: "identify", userId: user, anonymousId: anon, messageId: mid(), traits: { plan: "retry" } }]);
    assert.equal(signedIn.status, 200, signedIn.text);
    // DB's transaction fails (its follow-up record is refused).
    await edge.exec("CREATE TRIGGER refuse_followups BEFORE INSERT ON followups WHEN NEW.kind = 'erase' BEGIN SELECT RAISE(ABORT, 'refused'); END");
    const failed = await call("POST", "/v1/privacy/delete", { type: "user_id", value: user });
    await edge.exec("DROP TRIGGER refuse_followups");
    assert.ok(failed.status >= 500, `${failed.status} ${failed.text}`);
    assert.equal((await assignmentOf(edge, `anonymous_id:${anon}`))?.profile_id, signedIn.json.profileId, "the browser is still found as the user's");
    const receipt = await call("POST", "/v1/privacy/delete", { type: "user_id", value: user });
    assert.equal(receipt.status, 200, receipt.text);
    assert.equal(receipt.json.deleted.identities, 2, JSON.stringify(receipt.json.deleted));
    for (const identifier of [`anonymous_id:${anon}`, `user_id:${user}`]) assert.equal(await assignmentOf(edge, identifier), null, `${identifier} unassigned everywhere`);
    assert.deepEqual(await edge.query("SELECT profile_id FROM profile_members WHERE profile_id = ?", signedIn.json.profileId), []);
    await settled(edge.url);
    assert.deepEqual(await edge.query("SELECT kind, identifiers FROM followups"), [], "nothing left to follow up");
  });

  test("the sweep finishes an erasure's assignments in the shards that the erasure could not", async () => {
    const anon = pick("anonymous_id", "followup-a", (s) => s === 2);
    const seen = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    assert.equal(seen.status, 200, seen.text);
    await settled(edge.url);
    const ids = JSON.stringify([`anonymous_id:${anon}`]);
    await edge.exec("INSERT INTO followups (token, kind, identifiers, at) VALUES ('t-due', 'erase', ?, ?)", ids, Date.now() - 120_000);
    await edge.exec("INSERT INTO followups (token, kind, identifiers, at) VALUES ('t-young', 'erase', ?, ?)", JSON.stringify(["anonymous_id:not-yet"]), Date.now());
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
    assert.equal(await assignmentOf(edge, `anonymous_id:${anon}`), null, "its assignment went");
    assert.deepEqual(await edge.query("SELECT identifiers FROM followups"), [{ identifiers: JSON.stringify(["anonymous_id:not-yet"]) }], "a follow-up younger than a minute waits (its erasure may be running)");
    await edge.exec("DELETE FROM followups");
  });

  /**
   * A browser (in DB) with an email (in shard 1), then a sign-in (the user in shard 2) whose
   * write of the email's assignment is refused in shard 1 after DB committed: the email stays
   * with the browser's old profile, and the request's own identifiers look settled to its
   * retry.
   */
  const halfSignIn = async (prefix) => {
    const anon = pick("anonymous_id", `${prefix}-a`, (s) => s === 0);
    const user = pick("user_id", `${prefix}-u`, (s) => s === 2);
    let email;
    for (let i = 0; !email; i++) if (shardOf(`email:${prefix}-${run}-${i}@example.com`) === 1) email = `${prefix}-${run}-${i}@example.com`;
    const before = await send([{ type: "identify", anonymousId: anon, messageId: mid(), traits: { email } }]);
    assert.equal(before.status, 200, before.text);
    await settled(edge.url);
    const refuse = (op) => `CREATE TRIGGER refuse_email_${op} BEFORE ${op} ON identities WHEN NEW.identifier = 'email:${email}' BEGIN SELECT RAISE(ABORT, 'refused'); END`;
    await edge.queryShard(1, refuse("INSERT"));
    await edge.queryShard(1, refuse("UPDATE"));
    const signIn = await send([{ type: "identify", userId: user, anonymousId: anon, messageId: mid() }]);
    await edge.queryShard(1, "DROP TRIGGER refuse_email_INSERT");
    await edge.queryShard(1, "DROP TRIGGER refuse_email_UPDATE");
    assert.equal(signIn.json?.deferred, true, `${signIn.status} ${signIn.text}`);
    const survivor = (await assignmentOf(edge, `user_id:${user}`)).profile_id;
    assert.equal((await assignmentOf(edge, `anonymous_id:${anon}`)).profile_id, survivor, "DB and shard 2 committed");
    assert.equal((await assignmentOf(edge, `email:${email}`)).profile_id, before.json.profileId, "the email was left behind");
    const pending = await edge.query("SELECT identifiers FROM followups WHERE kind = 'resolve'");
    assert.ok(pending.some((p) => JSON.parse(p.identifiers).includes(`email:${email}`)), JSON.stringify(pending));
    return { anon, user, email, survivor };
  };
  const sweepDue = async () => {
    await edge.exec("UPDATE followups SET at = at - 120000 WHERE kind = 'resolve'");
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
  };

  test("a sign-in whose write in one shard fails after DB committed is resolved again by the sweep", async () => {
    const { anon, user, email, survivor } = await halfSignIn("split");
    await sweepDue();
    assert.equal((await assignmentOf(edge, `email:${email}`)).profile_id, survivor, "the sweep resolved it again");
    assert.deepEqual(await edge.query("SELECT identifiers FROM followups WHERE kind = 'resolve'"), [], "and deleted the follow-up");
    const [row] = await edge.query("SELECT identifiers FROM profile_members WHERE profile_id = ?", survivor);
    assert.deepEqual(JSON.parse(row.identifiers).sort(), [`anonymous_id:${anon}`, `email:${email}`, `user_id:${user}`].sort());
  });

  test("a deletion by an identifier left behind finds the person's profile through the merge records; the sweep then assigns nothing", async () => {
    const { anon, user, email, survivor } = await halfSignIn("split-erased");
    const receipt = await call("POST", "/v1/privacy/delete", { type: "email", value: email });
    assert.equal(receipt.status, 200, receipt.text);
    assert.deepEqual(await edge.query("SELECT profile_id FROM profile_members WHERE profile_id = ?", survivor), [], "the person's profile row went");
    for (const identifier of [`anonymous_id:${anon}`, `email:${email}`, `user_id:${user}`]) {
      assert.equal(await assignmentOf(edge, identifier), null, `${identifier} unassigned`);
    }
    await sweepDue();
    assert.equal(await assignmentOf(edge, `email:${email}`), null, "resolving again brings nothing back");
    assert.deepEqual(await edge.query("SELECT identifiers FROM followups"), []);
  });

  test("retention erases an inactive anonymous visitor's assignment in its identifier's shard", async () => {
    const anon = pick("anonymous_id", "retained", (s) => s === 2);
    const seen = await send([{ type: "page", name: "Home", anonymousId: anon, messageId: mid() }]);
    assert.equal(seen.status, 200, seen.text);
    assert.equal((await assignmentOf(edge, `anonymous_id:${anon}`))?.shard, 2);
    const aged = await edge.query("UPDATE profile_members SET last_seen = ? WHERE profile_id = ? RETURNING profile_id", Date.now() - 400 * 86_400_000, seen.json.profileId);
    assert.equal(aged.length, 1);
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("17 3 * * *")}`)).status, 200);
    assert.equal(await assignmentOf(edge, `anonymous_id:${anon}`), null, "no shard assigns the visitor");
    assert.deepEqual(await edge.query("SELECT profile_id FROM profile_members WHERE profile_id = ?", seen.json.profileId), [], "the profile's row went");
  });

  test("erasure deletes the person's state and evidence in their shard", async () => {
    const far = shoppers.find((s) => shardOf(s.profileId) > 0);
    const count = async () => Promise.all([0, 1, 2].map(async (k) => (await edge.queryShard(k, "SELECT count(*) AS n FROM profile_personalisation"))[0].n));
    const before = await count();
    const coViewsBefore = (await everywhere("SELECT co_views FROM item_pairs WHERE item_a = 'run-1' AND item_b = 'run-2'")).reduce((sum, r) => sum + r.co_views, 0);
    const receipt = await call("POST", "/v1/privacy/delete", { type: "anonymous_id", value: far.anon });
    assert.equal(receipt.status, 200, receipt.text);
    assert.deepEqual(receipt.json.profileIds, [far.profileId]);
    assert.equal(receipt.json.deleted.personalisation, 1);
    assert.ok(receipt.json.deleted.segmentMemberships >= 1, JSON.stringify(receipt.json.deleted));
    // Three running shoes viewed (three pairs) and one bought: their evidence, in their shard.
    assert.equal(receipt.json.deleted.itemInteractions, 4, JSON.stringify(receipt.json.deleted));
    assert.equal(receipt.json.deleted.itemPairEvidence, 3);
    const rows = await everywhere(
      "SELECT profile_id FROM profile_personalisation WHERE profile_id = ?1 UNION ALL SELECT profile_id FROM segment_memberships WHERE profile_id = ?1 UNION ALL SELECT profile_id FROM item_interactions WHERE profile_id = ?1 UNION ALL SELECT profile_id FROM item_pair_evidence WHERE profile_id = ?1",
      far.profileId,
    );
    assert.deepEqual(rows, []);
    const coViews = (await everywhere("SELECT co_views FROM item_pairs WHERE item_a = 'run-1' AND item_b = 'run-2'")).reduce((sum, r) => sum + r.co_views, 0);
    assert.equal(coViews, coViewsBefore - 1, "the person's co-view taken back out of their shard's count");
    await assertCountsMatchEvidence(edge);
    const expected = before.map((n, k) => (k === shardOf(far.profileId) ? n - 1 : n));
    assert.deepEqual(await count(), expected, "no one else's state");
  });
});

describe("profile shards: changing the count on a live deployment", () => {
  let edge;
  const shoppers = [];
  // Signed-in people, each merged from two shoppers: { survivor, pair }.
  const couples = [];
  const absorbed = () => couples.flatMap((c) => c.pair.filter((p) => p !== c.survivor));
  let signedIn;
  /** Member rows outside the database their identifier hashes to under `shards`, and link copies no member row holds. */
  const misplacedLinks = async (shards) => {
    const found = [];
    for (let k = 0; k < 3; k++) {
      for (const m of await edge.queryShard(k, "SELECT identifier FROM link_members")) {
        if (shardOf(m.identifier, shards) !== k) found.push(`${m.identifier} in ${k}`);
      }
      for (const l of await edge.queryShard(k, "SELECT set_key FROM identity_links l WHERE NOT EXISTS (SELECT 1 FROM link_members m WHERE m.set_key = l.set_key)")) {
        found.push(`unheld ${l.set_key} in ${k}`);
      }
    }
    return found;
  };
  const admin = (path) => fetch(`${edge.url}${path}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then((r) => r.json());
  const where = async (profileId) => {
    const found = [];
    for (let k = 0; k < 3; k++) {
      if ((await edge.queryShard(k, "SELECT 1 FROM profile_personalisation WHERE profile_id = ?", profileId)).length) found.push(k);
    }
    return found;
  };

  before(async () => {
    // Three databases bound, two in use: then the count grows to three.
    edge = await startEdge("shards-move", { sources: trustingSources(), profileShards: 3, vars: { PROFILE_SHARDS: "2" } });
    for (let i = 0; i < 30; i++) {
      const anon = `moving-shopper-${run}-${i}`;
      const answer = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: shopperBatch(anon) });
      assert.equal(answer.status, 200, answer.text);
      shoppers.push({ anon, profileId: answer.json.profileId });
    }
    await settled(edge.url);
    // Sign-ins that each join two more shoppers (three couples, more until a merged-away
    // profile is one that moves): the absorbed profiles keep only closed memberships, and
    // move too.
    for (let i = 0; couples.length < 3 || !absorbed().some((p) => shardOf(p, 3) !== shardOf(p, 2)); i++) {
      assert.ok(i < 30, "a merged-away profile that moves");
      const pair = [];
      for (let j = 0; j < 2; j++) {
        const anon = `moving-couple-${run}-${i}-${j}`;
        const answer = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: shopperBatch(anon) });
        assert.equal(answer.status, 200, answer.text);
        pair.push({ anon, profileId: answer.json.profileId });
      }
      await settled(edge.url);
      const user = `moving-user-${run}-${i}`;
      for (const s of pair) {
        const answer = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "identify", userId: user, anonymousId: s.anon, messageId: mid() }] });
        assert.equal(answer.status, 200, answer.text);
      }
      await settled(edge.url);
      const { profile_id: survivor } = await assignmentOf(edge, `user_id:${user}`, 3);
      couples.push({ survivor, pair: pair.map((p) => p.profileId) });
    }
    // A browser signed in as one user, whose identifier's links move from shard 1 to the new
    // shard: until they move, only the old shard knows the browser is that user's.
    for (let i = 0; !signedIn; i++) {
      const anon = `moving-browser-${run}-${i}`;
      if (shardOf(`anonymous_id:${anon}`, 2) === 1 && shardOf(`anonymous_id:${anon}`, 3) === 2) signedIn = { anon, user: `moving-owner-${run}` };
    }
    const answer = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "identify", userId: signedIn.user, anonymousId: signedIn.anon, messageId: mid() }] });
    assert.equal(answer.status, 200, answer.text);
    signedIn.profileId = answer.json.profileId;
  });
  after(async () => {
    await edge?.stop();
  });

  test("state follows its profiles to the new shard: read where it was until moved, moved by a write or the move's walk, counted once", async () => {
    for (const s of shoppers) assert.deepEqual(await where(s.profileId), [shardOf(s.profileId, 2)], "placed by two shards");
    assert.deepEqual(await misplacedLinks(2), [], "links placed by two shards");
    const checks = new Map();
    for (let k = 0; k < 2; k++) {
      for (const r of await edge.queryShard(k, "SELECT profile_id, check_at FROM profile_personalisation")) checks.set(r.profile_id, r.check_at);
    }
    const size = async () => (await admin("/v1/admin/segments")).segments.find((s) => s.name === "high_value").size;
    // The sign-ins' merges settle with their refreshes: wait until the audience stops changing.
    let members = await size();
    for (let stable = 0, tries = 0; stable < 2 && tries < 30; tries++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = await size();
      stable = now === members ? stable + 1 : 0;
      members = now;
    }
    assert.equal(members, shoppers.length + couples.length, "the shoppers and the signed-in people");
    // The archive's index as two shards placed it: entries of forty person keys in their homes.
    const indexed = Array.from({ length: 40 }, (_, i) => ({
      person: createHash("sha256").update(`indexed-${run}-${i}`).digest().readBigInt64BE(0).toString(),
      object: 1000 + (i % 3),
    }));
    for (const e of indexed) {
      await edge.queryShard(shardOf(e.person, 2), "INSERT INTO archive_people (person, object) VALUES (CAST(? AS INTEGER), ?)", e.person, e.object);
    }
    // A small budget (pages of four, two moves a run), so the move's walk spans runs.
    await edge.restart({ PROFILE_SHARDS: "3", PROFILE_SHARDS_FROM: "2", PROFILE_MOVE_STEP: "4", PROFILE_MOVES_PER_RUN: "2" });
    const moving = shoppers.filter((s) => shardOf(s.profileId, 3) !== shardOf(s.profileId, 2));
    assert.ok(moving.length >= 2 && moving.length < shoppers.length, `${moving.length} of ${shoppers.length} move`);
    assert.ok(moving.every((s) => shardOf(s.profileId, 3) === 2), "growing moves profiles only into the new shard");

    // Another user signs in on the browser whose links are still in its old shard: the walk
    // reads them there, so the browser stays its first user's (one user ID per profile).
    // (The second user's links in the new shard too: a walk in the old one would come upon
    // the browser's old links by following the browser from the second user.)
    const other = pick("user_id", "moving-other", (s) => s === 2);
    const intruder = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "identify", userId: other, anonymousId: signedIn.anon, messageId: mid() }] });
    assert.equal(intruder.status, 200, intruder.text);
    assert.notEqual(intruder.json.profileId, signedIn.profileId, "the second user is not the first");
    const { profile_id: browserNow } = await assignmentOf(edge, `anonymous_id:${signedIn.anon}`, 3);
    assert.equal(browserNow, signedIn.profileId, "the browser stays with the user its old shard names");

    // Before anything moved: the profile reads its state where it was; audiences count it once.
    const [first, ...rest] = moving;
    const profile = await admin(`/v1/profiles/${first.profileId}`);
    assert.equal(profile.computedTraits.lifetime_value, 600, JSON.stringify(profile.computedTraits));
    assert.ok(profile.memberships.some((m) => m.segment === "high_value" && m.exitedAt === null));
    assert.equal(await size(), members, "counted once while nothing moved");

    // Co-occurrence counts summed over the shards: the same before, during and after the move.
    const totals = async () => {
      let [views, pairs] = [0, 0];
      for (let k = 0; k < 3; k++) {
        views += (await edge.queryShard(k, "SELECT coalesce(sum(views), 0) AS n FROM item_stats WHERE product_id = 'run-2'"))[0].n;
        pairs += (await edge.queryShard(k, "SELECT coalesce(sum(co_views), 0) AS n FROM item_pairs WHERE item_a = 'run-1' AND item_b = 'run-2'"))[0].n;
      }
      return { views, pairs };
    };
    const counted = await totals();
    assert.deepEqual(counted, { views: shoppers.length + 2 * couples.length, pairs: shoppers.length + 2 * couples.length }, "every shopper once");
    await assertCountsMatchEvidence(edge);

    // A new event: the refresh reads the state where it was, saves it home, and moves the rest.
    const seen = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "track", event: "Product Viewed", anonymousId: first.anon, messageId: mid(), timestamp: new Date().toISOString(), properties: { product_id: "moved-1", category: "Running Shoes", price: 90 } }] });
    assert.equal(seen.status, 200, seen.text);
    await settled(edge.url);
    assert.deepEqual(await where(first.profileId), [2], "moved by its write");
    const moved = await admin(`/v1/profiles/${first.profileId}`);
    assert.equal(moved.computedTraits.lifetime_value, 600, "the state carried over, not started empty");
    assert.equal(moved.computedTraits.viewed_products[0], "moved-1");
    const rows = await edge.queryShard(2, "SELECT segment, exited_at FROM segment_memberships WHERE profile_id = ?", first.profileId);
    assert.ok(rows.some((r) => r.segment === "high_value" && r.exited_at === null), JSON.stringify(rows));
    assert.deepEqual(await edge.queryShard(shardOf(first.profileId, 2), "SELECT segment FROM segment_memberships WHERE profile_id = ?", first.profileId), [], "nothing left behind");
    const evidence = (k) => edge.queryShard(k, "SELECT product_id, kind FROM item_interactions WHERE profile_id = ? ORDER BY product_id, kind", first.profileId);
    assert.deepEqual(await evidence(shardOf(first.profileId, 2)), [], "its evidence left the old shard");
    assert.deepEqual(
      (await evidence(2)).map((r) => `${r.kind} ${r.product_id}`),
      ["view moved-1", "purchase run-1", "view run-1", "view run-2", "view run-3"],
      "the old evidence beside the new",
    );
    assert.deepEqual(await totals(), counted, "moved, not counted twice or lost");

    // The move's walk (the every-minute cron) moves the rest, keeping when each is due, going on
    // from its saved positions run after run.
    const everyMinute = () => fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`);
    const walksDone = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name LIKE 'profile_shard_move:2:3:%' AND name NOT LIKE '%:left'")).filter((w) => w.after.endsWith("done")).length;
    // Profiles with rows (state, memberships or evidence) in an old shard that is no longer
    // theirs, merged-away ones included.
    const away = async () => {
      let n = 0;
      for (let k = 0; k < 2; k++) {
        const rows = await edge.queryShard(k, "SELECT profile_id FROM profile_personalisation UNION SELECT profile_id FROM segment_memberships UNION SELECT profile_id FROM item_interactions UNION SELECT profile_id FROM item_pair_evidence");
        n += rows.filter((r) => shardOf(r.profile_id, 3) !== k).length;
      }
      return n;
    };
    const before = await away();
    assert.ok(before >= 3, `${before} profiles to move: enough for the walk to span runs`);
    assert.equal((await everyMinute()).status, 200);
    assert.equal(before - (await away()), 2, "one run moves as many as its budget, no more");
    // A long-time shopper's evidence, more than one move carries (2,000 rows of a kind): the
    // walk moves it in parts, finding the profile by its pair rows alone the second time.
    let heavy;
    for (const s of rest) {
      if ((await where(s.profileId)).includes(shardOf(s.profileId, 2))) {
        heavy = s;
        break;
      }
    }
    assert.ok(heavy, "a profile still to move");
    await edge.queryShard(
      shardOf(heavy.profileId, 2),
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) INSERT INTO item_pair_evidence (profile_id, kind, item_a, item_b) SELECT ?, 'view', printf('bulk-%04d', i), 'bulk-zz' FROM n",
      heavy.profileId,
    );
    let runs = 1;
    for (; runs < 60 && (await walksDone()) < 2; runs++) assert.equal((await everyMinute()).status, 200);
    assert.ok(runs >= Math.ceil(before / 2), `the walk took ${runs} runs for ${before} profiles`);
    assert.equal(await away(), 0, "none left behind");
    const [{ n: bulk }] = await edge.queryShard(2, "SELECT count(*) AS n FROM item_pair_evidence WHERE profile_id = ? AND item_b = 'bulk-zz'", heavy.profileId);
    assert.equal(bulk, 2500, "moved in parts, none lost");
    for (const s of rest) {
      assert.deepEqual(await where(s.profileId), [2], `${s.profileId} moved`);
      const [row] = await edge.queryShard(2, "SELECT check_at FROM profile_personalisation WHERE profile_id = ?", s.profileId);
      assert.equal(row.check_at, checks.get(s.profileId), "still due when it was");
    }
    for (const s of shoppers) assert.deepEqual(await where(s.profileId), [shardOf(s.profileId, 3)], "every profile in its shard under three");
    for (let k = 0; k < 3; k++) {
      const misplaced = (await edge.queryShard(k, "SELECT DISTINCT profile_id FROM segment_memberships")).filter((r) => shardOf(r.profile_id, 3) !== k);
      assert.deepEqual(misplaced, [], `memberships in shard ${k}, merged-away profiles' included`);
      const strays = (await edge.queryShard(k, "SELECT DISTINCT profile_id FROM item_interactions UNION SELECT DISTINCT profile_id FROM item_pair_evidence")).filter((r) => shardOf(r.profile_id, 3) !== k);
      assert.deepEqual(strays, [], `evidence in shard ${k}, merged-away profiles' included`);
    }
    assert.deepEqual(await totals(), counted, "the move's counts add up to the same");
    await assertCountsMatchEvidence(edge);
    // The links' walks follow the profiles' with what each run's budget leaves.
    const linkWalksDone = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name LIKE 'identity_link_move:2:3:%' AND name NOT LIKE '%:left'")).filter((w) => w.after.endsWith("done")).length;
    const misplaced = (await misplacedLinks(3)).length;
    assert.ok(misplaced >= 2, `${misplaced} identifiers' links to move`);
    const toMove = (await misplacedAssignments(edge, 3)).length;
    assert.ok(toMove >= 2, `${toMove} assignments to move`);
    for (let more = 0; more < 60 && (await linkWalksDone()) < 2; more++) assert.equal((await everyMinute()).status, 200);
    assert.deepEqual(await misplacedLinks(3), [], "every identifier's links in its shard under three");
    // The assignments' walks too.
    const assignmentWalksDone = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name LIKE 'identity_assignment_move:2:3:%' AND name NOT LIKE '%:left'")).filter((w) => w.after.endsWith("done")).length;
    for (let more = 0; more < 60 && (await assignmentWalksDone()) < 2; more++) assert.equal((await everyMinute()).status, 200);
    assert.deepEqual(await misplacedAssignments(edge, 3), [], "every assignment in its identifier's shard under three");
    // The archive index's walks, a page at a time.
    const ours = new Set(indexed.map((e) => e.person));
    const entriesAt = async (k) => (await edge.queryShard(k, "SELECT CAST(person AS TEXT) AS person, object FROM archive_people")).filter((e) => ours.has(e.person));
    assert.ok(indexed.some((e) => shardOf(e.person, 3) !== shardOf(e.person, 2)), "some entries move");
    const indexWalksDone = async () => (await edge.query("SELECT after FROM walk_cursors WHERE name LIKE 'archive_index_move:2:3:%'")).filter((w) => w.after.endsWith("done")).length;
    for (let more = 0; more < 60 && (await indexWalksDone()) < 2; more++) assert.equal((await everyMinute()).status, 200);
    const placed = [];
    for (let k = 0; k < 3; k++) {
      for (const e of await entriesAt(k)) {
        assert.equal(shardOf(e.person, 3), k, `entry ${e.person} in its shard under three`);
        placed.push(e);
      }
    }
    const key = (e) => `${e.person}/${e.object}`;
    assert.deepEqual(placed.map(key).sort(), indexed.map(key).sort(), "every entry once, none lost");
    const later = await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "identify", userId: signedIn.user, anonymousId: signedIn.anon, messageId: mid() }] });
    assert.equal(later.json.profileId, signedIn.profileId, "resolved from the moved links as before");
    for (const p of absorbed().filter((p) => shardOf(p, 3) !== shardOf(p, 2))) {
      const rows = await edge.queryShard(2, "SELECT segment, exited_at FROM segment_memberships WHERE profile_id = ?", p);
      assert.ok(rows.some((r) => r.segment === "high_value" && r.exited_at !== null), `${p}'s closed memberships moved, not dropped: ${JSON.stringify(rows)}`);
    }
    for (const { survivor } of couples) {
      const rows = await edge.queryShard(shardOf(survivor, 3), "SELECT segment FROM segment_memberships WHERE profile_id = ? AND exited_at IS NULL", survivor);
      assert.ok(rows.some((r) => r.segment === "high_value"), `${survivor} is a member after the merge`);
    }
    const walks = await edge.query("SELECT name, after FROM walk_cursors WHERE name LIKE 'profile_shard_move:2:3:%' AND name NOT LIKE '%:left' ORDER BY name");
    assert.equal(walks.length, 2, "the old count's two shards walked");
    assert.ok(walks.every((w) => w.after.endsWith("done")), JSON.stringify(walks));
    assert.equal(await size(), members, "counted once after the move");

    // The move is over: without PROFILE_SHARDS_FROM every profile reads from its shard, and
    // the finished walks are forgotten (a later move with the same counts walks again).
    await edge.restart({ PROFILE_SHARDS: "3", PROFILE_SHARDS_FROM: "3" });
    for (const s of [first, ...rest.slice(0, 3)]) {
      assert.equal((await admin(`/v1/profiles/${s.profileId}`)).computedTraits.lifetime_value, 600);
    }
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).status, 200);
    assert.deepEqual(await edge.query("SELECT name FROM walk_cursors WHERE name LIKE 'profile_shard_move:%' OR name LIKE 'identity_link_move:%' OR name LIKE 'identity_assignment_move:%' OR name LIKE 'archive_index_move:%'"), []);
  });
});
