// Computed traits, segments and decisions in workerd with real local D1 + KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { post, root, startEdge, WRITE_KEY } from "../support/edge.mjs";

const ADMIN_KEY = readFileSync(join(root, ".dev.vars"), "utf8").match(/^ADMIN_KEY=(.*)$/m)[1].trim();
const run = `${process.pid}`;
let n = 0;
const mid = () => `p-${run}-${++n}`;
// Recent times: segments look at the last 30 days.
const ago = (minutes) => new Date(Date.now() - minutes * 60_000).toISOString();
const send = (edge, batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });

const view = (anonymousId, product_id, category, minutes) => ({
  type: "track", event: "Product Viewed", anonymousId, messageId: mid(), timestamp: ago(minutes),
  properties: { product_id, category, name: `Shoe ${product_id}`, price: 120 },
});

/** A shopper's morning: three running shoes viewed, one bought for 600, socks left in the cart. */
export function shopperBatch(anon) {
  return [
    view(anon, "run-1", "Running Shoes", 20),
    view(anon, "run-2", "Running Shoes", 19),
    view(anon, "run-3", "Running Shoes", 18),
    { type: "track", event: "Product Added", anonymousId: anon, messageId: mid(), timestamp: ago(17), properties: { product_id: "run-1", price: 600, quantity: 1 } },
    { type: "track", event: "Order Completed", anonymousId: anon, messageId: mid(), timestamp: ago(16), properties: { order_id: `o-${anon}`, revenue: 600, products: [{ product_id: "run-1", category: "Running Shoes" }] } },
    { type: "track", event: "Product Added", anonymousId: anon, messageId: mid(), timestamp: ago(15), properties: { product_id: "sock-1", price: 12, quantity: 2, name: "Trail socks" } },
  ];
}

describe("personalisation at ingest", () => {
  let edge;
  const admin = (path) =>
    fetch(`${edge.url}${path}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then(async (r) => ({ status: r.status, json: await r.json() }));

  before(async () => {
    edge = await startEdge("personalisation");
  });
  after(async () => {
    await edge?.stop();
  });

  test("a shopper's events produce computed traits and segments in the profile API and KV; a retry changes nothing", async () => {
    const anon = `shopper-${run}`;
    const batch = shopperBatch(anon);
    const first = await send(edge, batch);
    assert.equal(first.status, 200, first.text);
    const profileId = first.json.profileId;

    const { status, json: profile } = await admin(`/v1/profiles/${profileId}`);
    assert.equal(status, 200);
    const c = profile.computedTraits;
    assert.equal(c.orders_count, 1);
    assert.equal(c.lifetime_value, 600);
    assert.deepEqual(c.cart.map((l) => [l.product_id, l.quantity]), [["sock-1", 2]], "the order emptied the cart; socks added after");
    assert.equal(c.last_viewed_category, "Running Shoes");
    assert.deepEqual(c.viewed_products.slice(0, 3), ["run-3", "run-2", "run-1"]);
    for (const s of ["high_value", "interested_in:Running Shoes"]) assert.ok(profile.segments.includes(s), `${s} in ${profile.segments}`);

    const snapshot = JSON.parse(await edge.kv.get(`profile:${profileId}`));
    assert.equal(snapshot.computedTraits.lifetime_value, 600, "the KV snapshot carries computed traits");
    assert.deepEqual(snapshot.segments, profile.segments);

    const entered = await edge.query("SELECT body FROM events WHERE name = 'Segment Entered' AND anonymous_id = ?", anon);
    const names = entered.map((r) => JSON.parse(r.body).properties.segment).sort();
    assert.deepEqual(names, profile.segments.slice().sort(), "one internal event per segment entered");
    const members = await edge.query("SELECT segment FROM segment_memberships WHERE profile_id = ? AND exited_at IS NULL ORDER BY segment", profileId);
    assert.deepEqual(members.map((r) => r.segment), profile.segments.slice().sort());

    const [before] = await edge.query("SELECT state, version FROM profile_personalisation WHERE profile_id = ?", profileId);
    const stats = await edge.query("SELECT product_id, views, purchases FROM item_stats ORDER BY product_id");
    const retry = await send(edge, batch);
    assert.equal(retry.status, 200);
    assert.ok(retry.json.results.every((r) => r.status === "duplicate"), JSON.stringify(retry.json.results));
    const [afterRetry] = await edge.query("SELECT state, version FROM profile_personalisation WHERE profile_id = ?", profileId);
    assert.deepEqual(afterRetry, before, "the retried batch did not touch the state");
    assert.deepEqual(await edge.query("SELECT product_id, views, purchases FROM item_stats ORDER BY product_id"), stats);
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE name = 'Segment Entered' AND anonymous_id = ?", anon))[0].n, entered.length);
    assert.deepEqual((await admin(`/v1/profiles/${profileId}`)).json.computedTraits, c);
  });

  test("identify-only requests skip personalisation; a later view counts once", async () => {
    const anon = `quiet-${run}`;
    const first = await send(edge, [{ type: "identify", anonymousId: anon, messageId: mid(), traits: { plan: "free" } }]);
    assert.equal(first.status, 200);
    assert.equal((await edge.query("SELECT count(*) AS n FROM profile_personalisation WHERE profile_id = ?", first.json.profileId))[0].n, 0);
    await send(edge, [view(anon, "run-9", "Trail", 1)]);
    const { json } = await admin(`/v1/profiles/${first.json.profileId}`);
    assert.deepEqual(json.computedTraits.category_views, { Trail: 1 });
    assert.equal(json.traits.plan, "free");
  });
});
