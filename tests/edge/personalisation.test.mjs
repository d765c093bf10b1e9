// Computed traits, segments and decisions in workerd with real local D1 + KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { idCookie, post, root, secret, settled, startEdge, storedState, trustingSources, WRITE_KEY } from "../support/edge.mjs";

const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `p-${run}-${++n}`;
// Recent times: segments look at the last 30 days.
const ago = (minutes) => new Date(Date.now() - minutes * 60_000).toISOString();
const decideFor = (edge, body, headers = {}) => post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, slots: ["recommended-for-you"], ...body }, headers);
const send = (edge, batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });

// The shipped holdout (config/recommendations.json), computed like seam_core::personalise::recommend::in_holdout.
const { holdoutSalt, holdoutPercent } = JSON.parse(readFileSync(join(root, "config/recommendations.json"), "utf8"));
const inHoldout = (profileId) =>
  BigInt(`0x${createHash("sha256").update(`${holdoutSalt}\n${profileId}`).digest("hex").slice(0, 16)}`) % 10000n < BigInt(Math.round(holdoutPercent * 100));

export const CATALOG = ["Running Shoes", "Socks", "Jackets"].flatMap((category, c) =>
  [1, 2, 3, 4].map((i) => ({ product_id: `${category.slice(0, 3).toLowerCase()}-${i}`, name: `${category} ${i}`, category, price: 20 * (c + 1) + i, url: `/product.html?id=${category.slice(0, 3).toLowerCase()}-${i}` })),
);

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
    edge = await startEdge("personalisation", { sources: trustingSources() });
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
    const [row] = await edge.query("SELECT state, typeof(state) AS kind, length(state) AS bytes FROM profile_personalisation WHERE profile_id = ?", profileId);
    assert.equal(row.kind, "blob", "the state is stored deflated");
    assert.deepEqual(snapshot.state, storedState(row.state), "and the stored state decisions evaluate segments from");
    assert.ok(row.bytes * 2 < JSON.stringify(snapshot.state).length, `${row.bytes} bytes stored for ${JSON.stringify(snapshot.state).length} of JSON`);

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

  test("a refund takes its amount out of lifetime value and the shopper leaves high_value", async () => {
    const anon = `refunded-${run}`;
    const order = { type: "track", event: "Order Completed", anonymousId: anon, messageId: mid(), timestamp: ago(10), properties: { order_id: `r-${run}`, revenue: 600 } };
    const placed = await send(edge, [order]);
    const profileId = placed.json.profileId;
    assert.ok((await admin(`/v1/profiles/${profileId}`)).json.segments.includes("high_value"));
    const refund = { type: "track", event: "Order Refunded", anonymousId: anon, messageId: mid(), timestamp: ago(5), properties: { order_id: `r-${run}`, total: 200 } };
    await send(edge, [refund]);
    const { json } = await admin(`/v1/profiles/${profileId}`);
    assert.equal(json.computedTraits.lifetime_value, 400);
    assert.equal(json.computedTraits.orders_count, 1);
    assert.ok(!json.segments.includes("high_value"), `${json.segments}`);
    const exited = await edge.query("SELECT body FROM events WHERE name = 'Segment Exited' AND anonymous_id = ?", anon);
    assert.deepEqual(exited.map((r) => JSON.parse(r.body).properties.segment), ["high_value"]);
    const snapshot = JSON.parse(await edge.kv.get(`profile:${profileId}`));
    assert.equal(snapshot.computedTraits.lifetime_value, 400, "decisions see the net value");
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

  test("a server-side batch of several users refreshes every user's profile, not only the last one's", async () => {
    const users = ["ada", "bob", "cy"].map((u) => `many-${u}-${run}`);
    const batch = users.flatMap((anon, i) => [view(anon, `many-${i}`, "Trail", 3), view(anon, `many-${i}-b`, "Trail", 2)]);
    const r = await send(edge, batch);
    assert.equal(r.status, 200, r.text);
    await settled(edge.url);
    for (const [i, anon] of users.entries()) {
      const [{ profile_id }] = await edge.query("SELECT profile_id FROM identities WHERE identifier = ?", `anonymous_id:${anon}`);
      const { json } = await admin(`/v1/profiles/${profile_id}`);
      assert.deepEqual(json.computedTraits.viewed_products, [`many-${i}-b`, `many-${i}`], anon);
      const snapshot = JSON.parse(await edge.kv.get(`profile:${profile_id}`));
      assert.deepEqual(snapshot.computedTraits.viewed_products, [`many-${i}-b`, `many-${i}`], `KV snapshot of ${anon}`);
    }
    const [{ n }] = await edge.query("SELECT count(*) AS n FROM item_interactions WHERE product_id LIKE 'many-%'");
    assert.equal(n, 6, "every user's views feed co-occurrence");
  });

  test("a burst of batches for one shopper saves its state once or twice, with every event in it", async () => {
    const anon = `burst-${run}`;
    const first = await send(edge, [view(anon, "burst-0", "Trail", 10)]);
    assert.equal(first.status, 200, first.text);
    const profileId = first.json.profileId;
    const [{ version: before }] = await edge.query("SELECT version FROM profile_personalisation WHERE profile_id = ?", profileId);
    // Six batches at once, straight after the first: without waiting for each other's refresh.
    const burst = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((i) =>
        fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: WRITE_KEY, batch: [view(anon, `burst-${i}`, "Trail", 10 - i)] }) }),
      ),
    );
    assert.ok(burst.every((r) => r.status === 200));
    await settled(edge.url);
    const [{ version }] = await edge.query("SELECT version FROM profile_personalisation WHERE profile_id = ?", profileId);
    // One save at once if the first one's spacing had passed, one trailing save with the rest
    // (a third only if the burst straddled a second spacing on a slow machine).
    assert.ok(version - before <= 3, `${version - before} saves for 6 batches`);
    const expected = [6, 5, 4, 3, 2, 1, 0].map((i) => `burst-${i}`);
    const { json } = await admin(`/v1/profiles/${profileId}`);
    assert.deepEqual(json.computedTraits.viewed_products.slice(0, 7), expected);
    const snapshot = JSON.parse(await edge.kv.get(`profile:${profileId}`));
    assert.deepEqual(snapshot.computedTraits.viewed_products.slice(0, 7), expected, "the KV snapshot has the whole burst");
  });

  test("a refresh that finds D1 locked tries again, and the state still gets the event", async () => {
    const anon = `locked-${run}`;
    const first = await send(edge, [view(anon, "locked-0", "Trail", 5)]);
    assert.equal(first.status, 200, first.text);
    const profileId = first.json.profileId;
    // Within a second of the first refresh: this one is owed for the profile's trailing run,
    // about a second after the first, which the lock below is held across.
    const second = await fetch(`${edge.url}/v1/batch`, { method: "POST", body: JSON.stringify({ writeKey: WRITE_KEY, batch: [view(anon, "locked-1", "Trail", 4)] }) });
    assert.equal(second.status, 200);
    const release = await edge.lockD1();
    await new Promise((r) => setTimeout(r, 1000));
    await release();
    await settled(edge.url);
    const { json } = await admin(`/v1/profiles/${profileId}`);
    assert.deepEqual(json.computedTraits.viewed_products.slice(0, 2), ["locked-1", "locked-0"], edge.output().split("\n").filter((l) => /failed|skipped/.test(l)).join("\n"));
    const snapshot = JSON.parse(await edge.kv.get(`profile:${profileId}`));
    assert.deepEqual(snapshot.computedTraits.viewed_products.slice(0, 2), ["locked-1", "locked-0"], "and the KV snapshot");
  });

  describe("POST /v1/decide", () => {
    const adminPost = (path, body) =>
      post(`${edge.url}${path}`, body, { authorization: `Bearer ${ADMIN_KEY}` });
    /** A visitor who browsed three running shoes, in or out of the holdout as asked. */
    const runner = async (wantHoldout, prefix = "runner") => {
      for (let i = 0; i < 200; i++) {
        const anon = `${prefix}-${wantHoldout}-${run}-${i}`;
        const r = await send(edge, [view(anon, "run-2", "Running Shoes", 5), view(anon, "run-3", "Running Shoes", 4), view(anon, "run-4", "Running Shoes", 3)]);
        if (inHoldout(r.json.profileId) === wantHoldout) return { anon, profileId: r.json.profileId };
      }
      throw new Error("no visitor found");
    };

    before(async () => {
      const upload = await adminPost("/v1/admin/catalog", { items: CATALOG });
      assert.equal(upload.status, 200, upload.text);
      assert.equal(upload.json.stored, 12);
      // Jackets are what other shoppers look at: the popular, non-personal default.
      for (const who of ["a", "b", "c"]) await send(edge, [view(`crowd-${who}-${run}`, "jac-2", "Jackets", 2)]);
    });

    test("catalogue upload: admin only, bad items rejected by index and field", async () => {
      const bad = await adminPost("/v1/admin/catalog", { items: [{ product_id: "x" }, { name: "no id" }] });
      assert.equal(bad.status, 400);
      assert.match(bad.json.message, /item 1: product_id/);
      const asWriter = await post(`${edge.url}/v1/admin/catalog`, { items: CATALOG }, { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString("base64")}` });
      assert.ok([401, 403].includes(asWriter.status), `${asWriter.status}`);
      assert.equal((await edge.query("SELECT count(*) AS n FROM catalog_items WHERE product_id = 'x'"))[0].n, 0);
    });

    test("personalised for a runner, cold start for a stranger, defaults when consent is denied", async () => {
      const { anon, profileId } = await runner(false);
      const r = await decideFor(edge, { anonymousId: anon, context: { consent: { personalization_storage: "granted" } } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.profileId, profileId);
      assert.equal(r.json.reason, "personalised");
      const [slot] = r.json.decisions;
      assert.equal(slot.slot, "recommended-for-you");
      assert.equal(slot.variant, "personalised");
      assert.equal(slot.items.length, 4);
      assert.equal(slot.items[0].category, "Running Shoes", JSON.stringify(slot.items));
      assert.ok(slot.items.filter((i) => i.category === "Running Shoes").length >= 3, JSON.stringify(slot.items));
      assert.ok(slot.items.every((i) => typeof i.name === "string" && i.reason), "catalogue fields and a reason per item");

      const [top] = await edge.query("SELECT product_id FROM item_stats ORDER BY purchases * 3 + views DESC, product_id LIMIT 1");
      const stranger = await decideFor(edge, { anonymousId: `stranger-${run}` });
      assert.equal(stranger.json.reason, "cold_start");
      assert.equal(stranger.json.profileId, null);
      assert.equal(stranger.json.decisions[0].variant, "default");
      assert.equal(stranger.json.decisions[0].items[0].product_id, top.product_id, "most popular first");

      const denied = await decideFor(edge, { anonymousId: anon, context: { consent: { ad_personalization: "denied" } } });
      assert.equal(denied.json.reason, "consent_denied");
      assert.equal(denied.json.personalised, false);
      assert.equal(denied.json.profileId, null, "the profile is not even read");
      // The SDK's consent cookie refuses too (a decide made at load, before the SDK could say),
      // whatever a planted plain-name "1" says.
      const byCookie = await decideFor(edge, { anonymousId: anon }, { cookie: "seam_personalise=1; __Host-seam_personalise=0" });
      assert.deepEqual([byCookie.json.reason, byCookie.json.personalised], ["consent_denied", false]);
      assert.deepEqual(denied.json.decisions[0].items.map((i) => i.product_id), stranger.json.decisions[0].items.map((i) => i.product_id));
    });

    test("the admin API shows a profile's recommendations as their pages would, honouring their recorded consent, logging no exposure", async () => {
      const { anon, profileId } = await runner(false, "looked-at");
      const page = await decideFor(edge, { anonymousId: anon });
      const seen = await admin(`/v1/profiles/${profileId}/recommendations`);
      assert.equal(seen.status, 200);
      assert.deepEqual([seen.json.profileId, seen.json.reason, seen.json.consentDenied], [profileId, "personalised", false]);
      assert.deepEqual(seen.json.decisions[0].items.map((i) => i.product_id), page.json.decisions[0].items.map((i) => i.product_id));
      const exposures = () => edge.query("SELECT COUNT(*) AS n FROM events WHERE name = 'Decision Exposed' AND anonymous_id = ?", anon).then((r) => r[0].n);
      // The page's exposure is logged after its response: wait for it, then for anything else.
      for (let i = 0; i < 100 && (await exposures()) < 1; i++) await new Promise((r) => setTimeout(r, 100));
      await settled(edge.url, 30_000);
      assert.equal(await exposures(), 1, "only the page's decision was a view");

      // They refuse ad personalisation on their next page: the console sees what they now see.
      await send(edge, [{ ...view(anon, "run-2", "Running Shoes", 0), context: { consent: { gcm: { ad_personalization: "denied" } } } }]);
      const refused = await admin(`/v1/profiles/${profileId}/recommendations`);
      assert.deepEqual([refused.json.reason, refused.json.personalised, refused.json.consentDenied], ["consent_denied", false, true]);
      await settled(edge.url, 30_000);
      assert.equal(await exposures(), 1);
      assert.equal((await admin("/v1/profiles/nobody-here/recommendations")).status, 404);
    });

    test("purchased items are never recommended", async () => {
      const anon = `buyer-${run}`;
      const batch = shopperBatch(anon);
      const { json } = await send(edge, batch);
      const r = await decideFor(edge, { anonymousId: anon, slots: [{ id: "recommended-for-you", limit: 12 }] });
      assert.ok(["personalised", "holdout"].includes(r.json.reason), r.text);
      assert.ok(!r.json.decisions[0].items.some((i) => i.product_id === "run-1"), JSON.stringify(r.json.decisions[0].items));
      assert.equal(r.json.profileId, json.profileId);
    });

    test("new evidence shows in the very next decision: the isolate's cached partner lists are dropped by the write", async () => {
      // A sock browser (not held out) is decided for first, so the partners of soc-4 are cached.
      let anon;
      for (let i = 0; !anon; i++) {
        const candidate = `sock-fan-${run}-${i}`;
        const r = await send(edge, [view(candidate, "soc-4", "Socks", 3)]);
        if (!inHoldout(r.json.profileId)) anon = candidate;
      }
      await settled(edge.url);
      const reasonOf = async (id) => {
        const r = await decideFor(edge, { anonymousId: anon, slots: [{ id: "recommended-for-you", limit: 12 }] });
        assert.equal(r.json.reason, "personalised", r.text);
        return r.json.decisions[0].items.find((i) => i.product_id === id)?.reason;
      };
      assert.notEqual(await reasonOf("jac-3"), "co_viewed", "nobody viewed them together yet");
      // Two other shoppers view soc-4 and jac-3 together.
      for (const who of ["x", "y"]) await send(edge, [view(`pairer-${who}-${run}`, "soc-4", "Socks", 2), view(`pairer-${who}-${run}`, "jac-3", "Jackets", 1)]);
      await settled(edge.url);
      assert.equal(await reasonOf("jac-3"), "co_viewed", "well within the cache's 10 s, the decision already sees the pairs");
    });

    test("a held-out profile gets defaults with the reason", async () => {
      const { anon } = await runner(true);
      const r = await decideFor(edge, { anonymousId: anon });
      assert.equal(r.json.reason, "holdout");
      assert.equal(r.json.decisions[0].variant, "control");
      const stranger = await decideFor(edge, { anonymousId: `stranger2-${run}` });
      assert.deepEqual(r.json.decisions[0].items.map((i) => i.product_id), stranger.json.decisions[0].items.map((i) => i.product_id));
    });

    test("a KV miss falls back to D1 and re-publishes the snapshot", async () => {
      const { anon, profileId } = await runner(false);
      const warm = await decideFor(edge, { anonymousId: anon });
      await edge.kv.delete(`anon:${anon}`);
      await edge.kv.delete(`profile:${profileId}`);
      const cold = await decideFor(edge, { anonymousId: anon });
      assert.equal(cold.json.reason, "personalised");
      assert.deepEqual(cold.json.decisions, warm.json.decisions);
      assert.equal(JSON.parse(await edge.kv.get(`anon:${anon}`)).profileId, profileId);
      assert.ok(JSON.parse(await edge.kv.get(`profile:${profileId}`)).computedTraits.viewed_products.length === 3);
    });

    test("every decision logs one Decision Exposed event per messageId; CORS like ingest", async () => {
      const { anon } = await runner(false);
      const headers = { origin: "http://localhost:8787" };
      const first = await decideFor(edge, { anonymousId: anon, messageId: `exp-${run}` }, headers);
      assert.equal(first.headers.get("access-control-allow-origin"), "http://localhost:8787");
      const again = await decideFor(edge, { anonymousId: anon, messageId: `exp-${run}` }, headers);
      assert.deepEqual([first.json.exposureId, again.json.exposureId], [`exp-${run}`, `exp-${run}`]);
      // Exposures are written together shortly after the responses.
      await settled(edge.url);
      // This messageId's rows only: the runner's earlier decisions in this file logged exposures
      // of their own (with IDs derived per minute, so how many depends on the clock).
      const rows = await edge.query("SELECT body FROM events WHERE name = 'Decision Exposed' AND anonymous_id = ? AND message_id = ?", anon, `exp-${run}`);
      assert.equal(rows.length, 1);
      const props = JSON.parse(rows[0].body).properties;
      assert.equal(props.reason, "personalised");
      assert.deepEqual(props.slots[0].items, first.json.decisions[0].items.map((i) => i.product_id));
      const refused = await decideFor(edge, { anonymousId: anon }, { origin: "https://evil.example" });
      assert.equal(refused.status, 403);
      const bad = await post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, anonymousId: anon, slots: "x" });
      assert.equal(bad.status, 400);
      const noKey = await post(`${edge.url}/v1/decide`, { anonymousId: anon, slots: ["a"] });
      assert.equal(noKey.status, 401);
    });
  
    test("pages are edge-rendered: the slot holds the visitor's recommendations without JavaScript, escaped, with security headers", async () => {
      const evil = { product_id: "run-evil", name: "<script>alert(1)</script> Racer", category: "Running Shoes", price: 99, url: "javascript:alert(1)" };
      assert.equal((await adminPost("/v1/admin/catalog", { items: [evil] })).status, 200);
      const { anon } = await runner(false);
      await send(edge, [view(anon, "run-evil", "Running Shoes", 1)]);
      const page = await fetch(`${edge.url}/`, { headers: { cookie: idCookie(anon) } });
      assert.equal(page.status, 200);
      const html = await page.text();
      const slot = html.match(/<div data-seam-slot="recommended-for-you"([^>]*)>([\s\S]*?)<\/div>/);
      assert.ok(slot, html);
      assert.match(slot[1], /data-seam-rendered="personalised"/);
      const ids = [...slot[2].matchAll(/data-product-id="([^"]+)"/g)].map((m) => m[1]);
      const api = await decideFor(edge, { anonymousId: anon });
      assert.deepEqual(ids, api.json.decisions[0].items.map((i) => i.product_id), "same items as /v1/decide");
      await settled(edge.url);
      const exposures = (await edge.query("SELECT source_id, body FROM events WHERE name = 'Decision Exposed' AND anonymous_id = ?", anon))
        .map((r) => ({ source: r.source_id, ...JSON.parse(r.body) }))
        .filter((e) => e.context.seam?.rendered);
      assert.equal(exposures.length, 1, "the rendered page logged its exposure");
      assert.equal(exposures[0].source, "demo-site");
      assert.equal(exposures[0].context.page.path, "/");
      assert.equal(exposures[0].properties.reason, "personalised");
      const shown = exposures[0].properties.slots.find((x) => x.slot === "recommended-for-you");
      assert.deepEqual(shown.items, ids, "the items the page showed");
      assert.ok(ids.includes("run-evil"));
      assert.ok(slot[2].includes("&lt;script&gt;alert(1)&lt;/script&gt; Racer"), slot[2]);
      assert.ok(!html.includes("<script>alert(1)"), "no injected script");
      assert.ok(!slot[2].includes("javascript:"), "unsafe URLs are not linked");
      assert.match(page.headers.get("content-security-policy"), /default-src 'self'/);
      assert.match(page.headers.get("content-security-policy"), /script-src 'self' 'wasm-unsafe-eval' 'sha256-/, "the build's CSP with its inline-script hashes");
      assert.equal(page.headers.get("x-content-type-options"), "nosniff");
      assert.equal(page.headers.get("referrer-policy"), "strict-origin-when-cross-origin");
      assert.match(page.headers.get("cache-control"), /no-store/);

      const anonymous = await (await fetch(`${edge.url}/product.html`)).text();
      assert.match(anonymous, /data-seam-rendered="default"/, "no cookie: non-personal defaults");
      const gpc = await (await fetch(`${edge.url}/`, { headers: { cookie: idCookie(anon), "sec-gpc": "1" } })).text();
      assert.match(gpc, /data-seam-reason="consent_denied"/);
      const cookie = await (await fetch(`${edge.url}/`, { headers: { cookie: `${idCookie(anon)}; seam_personalise=0` } })).text();
      assert.match(cookie, /data-seam-slot="recommended-for-you" data-seam-rendered="default" data-seam-reason="consent_denied"/, "the SDK's consent cookie");
      // A "1" planted under the same name (another subdomain can set one for the whole site,
      // with a path sent first) does not lift the visitor's "0".
      const planted = await (await fetch(`${edge.url}/`, { headers: { cookie: `seam_personalise=1; ${idCookie(anon)}; seam_personalise=0` } })).text();
      assert.match(planted, /data-seam-slot="recommended-for-you" data-seam-rendered="default" data-seam-reason="consent_denied"/, "any refusal counts");
      const hostOnly = await (await fetch(`${edge.url}/`, { headers: { cookie: `seam_personalise=1; ${idCookie(anon)}; __Host-seam_personalise=0` } })).text();
      assert.match(hostOnly, /data-seam-reason="consent_denied"/, "the SDK's host-only cookie");
      const css = await fetch(`${edge.url}/style.css`);
      assert.equal(css.status, 200, "other assets are served as before");
    });

    test("decisions carry the slot's markup from its template", async () => {
      const { anon } = await runner(false);
      const r = await decideFor(edge, { anonymousId: anon, slots: ["recommended-for-you", "sidebar"] });
      const [recs, sidebar] = r.json.decisions;
      assert.match(recs.html, /^<h2>Recommended for you<\/h2><ul class="seam-recs">/);
      assert.deepEqual([...recs.html.matchAll(/data-product-id="([^"]+)"/g)].map((m) => m[1]), recs.items.map((i) => i.product_id));
      assert.equal(sidebar.slot, "sidebar", "an undeclared slot gets recommendations with the default templates");
      assert.equal(sidebar.items.length, 4);
    });
  });

  describe("uploaded configuration and the discount banner", () => {
    const committed = JSON.parse(readFileSync(join(root, "config/segments.json"), "utf8"));
    const adminSend = (method, body) =>
      fetch(`${edge.url}/v1/admin/personalisation`, {
        method,
        headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
        body: body && JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, json: await r.json() }));
    /** The committed segments with the cart-abandon window cut to `seconds`. */
    const shortWindow = (seconds) => {
      const segments = structuredClone(committed);
      const abandon = segments.segments.find((s) => s.name === "cart_abandoners");
      abandon.rule = { and: [
        { exists: { computed: "cart" } },
        { not: { within_minutes: [{ computed: "last_cart_activity_at" }, seconds / 60] } },
        { eq: [{ count: { event: "Order Completed", within_minutes: seconds / 60 } }, 0] },
      ] };
      return segments;
    };
    const order = (anon, minutes, coupon) => ({
      type: "track", event: "Order Completed", anonymousId: anon, messageId: mid(), timestamp: ago(minutes),
      properties: { order_id: mid(), revenue: 90, ...(coupon ? { coupon, discount: 10 } : {}), products: [{ product_id: "soc-1", category: "Socks" }] },
    });
    after(async () => {
      await adminSend("DELETE");
    });

    test("an upload is validated whole: a mistake names the document's field and changes nothing", async () => {
      const before = await adminSend("GET");
      assert.equal(before.status, 200);
      assert.equal(before.json.stamp, "committed");
      assert.deepEqual(before.json.documents.segments, committed);
      const bad = await adminSend("PUT", { slots: { slots: { "discount-banner": { type: "banner", variants: [{ name: "v", when: { all: ["vip"] }, html: "<p>x</p>" }] } } } });
      assert.equal(bad.status, 400);
      assert.equal(bad.json.code, "invalid_slot_config");
      assert.equal(bad.json.message, 'slot discount-banner: variants[0].when.all[0] "vip" is not a declared segment');
      const badRule = await adminSend("PUT", { segments: { segments: [{ name: "x", rule: { gt: [{ computed: "nope" }, 1] } }] } });
      assert.equal(badRule.status, 400);
      assert.match(badRule.json.message, /segment x: rule\.gt\[0\]\.computed/);
      assert.equal((await adminSend("GET")).json.stamp, "committed", "nothing changed");
      const unknown = await adminSend("PUT", { segmentz: {} });
      assert.equal(unknown.status, 400);
      const asWriter = await fetch(`${edge.url}/v1/admin/personalisation`, { headers: { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString("base64")}` } });
      assert.ok([401, 403].includes(asWriter.status));
    });

    test("a discount-sensitive shopper who leaves a cart sees the banner once the (uploaded, short) window passes", async () => {
      const upload = await adminSend("PUT", { segments: shortWindow(3) });
      assert.equal(upload.status, 200, JSON.stringify(upload.json));
      assert.match(upload.json.stamp, /^[0-9a-f]{16}$/);
      const stored = await edge.query("SELECT value FROM settings WHERE key = 'config:personalisation'");
      assert.equal(JSON.parse(stored[0].value).stamp, upload.json.stamp, "D1 holds the upload");
      assert.equal(JSON.parse(await edge.kv.get("config:personalisation")).stamp, upload.json.stamp, "KV caches it");

      // Cookie IDs are at least 16 characters.
      const anon = `bargain-hunter-${run}`;
      const thrifty = `full-price-buyer-${run}`;
      const cart = (who) => ({ type: "track", event: "Product Added", anonymousId: who, messageId: mid(), timestamp: new Date().toISOString(), properties: { product_id: "jac-1", price: 81, quantity: 1 } });
      const left = cart(anon);
      await send(edge, [order(anon, 60, "WELCOME5"), order(anon, 30, "SPRING20"), left]);
      await send(edge, [order(thrifty, 60), order(thrifty, 30), cart(thrifty)]);
      const banner = (who, headers = {}) => fetch(`${edge.url}/`, { headers: { cookie: idCookie(who), ...headers } }).then((r) => r.text());
      const slotOf = (html) => html.match(/<div data-seam-slot="discount-banner"([^>]*)>([\s\S]*?)<\/div>/);

      const early = await decideFor(edge, { anonymousId: anon, slots: ["discount-banner"] });
      const heldOut = early.json.reason === "holdout";
      assert.equal(early.json.decisions[0].variant, heldOut ? "control" : "none", "cart just touched: not abandoned yet");
      assert.equal(early.json.decisions[0].html, "");
      await new Promise((r) => setTimeout(r, 3500));

      // No event since: the segment is entered by time alone, evaluated at decision time.
      const late = await decideFor(edge, { anonymousId: anon, slots: ["discount-banner", "recommended-for-you"] });
      if (!heldOut) {
        assert.equal(late.json.decisions[0].variant, "cart_discount_10", JSON.stringify(late.json));
        assert.equal(late.json.decisions[0].reason, "segments");
        assert.match(late.json.decisions[0].html, /COMEBACK10/);
        const [, attrs, inner] = slotOf(await banner(anon));
        assert.match(attrs, /data-seam-rendered="cart_discount_10"/);
        assert.match(inner, /<aside class="seam-banner"[^>]*>.*COMEBACK10/);
      } else {
        assert.equal(late.json.decisions[0].variant, "control", "the holdout sees no banner");
      }
      const [, fullPriceAttrs, fullPrice] = slotOf(await banner(thrifty));
      assert.doesNotMatch(fullPrice, /COMEBACK10/, "no coupon history: no banner");
      assert.match(fullPriceAttrs, /data-seam-rendered="(none|control)" data-seam-reason="(no_match|holdout)"/);
      const [, deniedAttrs, denied] = slotOf(await banner(anon, { cookie: `${idCookie(anon)}; seam_personalise=0` }));
      assert.doesNotMatch(denied, /COMEBACK10/, "personalisation denied: no banner");
      assert.match(deniedAttrs, /data-seam-reason="consent_denied"/);

      // The segment sweep (cron) records the time-driven entry with no event: membership rows,
      // a Segment Entered event caused by time, and the KV snapshot. A second run finds nothing due.
      const entered = () =>
        edge.query("SELECT anonymous_id, body FROM events WHERE name = 'Segment Entered' AND anonymous_id IN (?, ?)", anon, thrifty)
          .then((rows) => rows.map((r) => [r.anonymous_id, JSON.parse(r.body).properties]).filter(([, p]) => p.segment === "cart_abandoners"));
      assert.deepEqual(await entered(), [], "not before the sweep");
      const sweep = () => fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`);
      assert.equal((await sweep()).status, 200);
      const events = await entered();
      assert.deepEqual(events.map(([who]) => who).sort(), [anon, thrifty].sort(), "both carts were left");
      assert.ok(events.every(([, p]) => p.cause === "time" && p.profile_id), JSON.stringify(events));
      const [bargainProfile] = events.filter(([who]) => who === anon).map(([, p]) => p.profile_id);
      const members = await edge.query("SELECT profile_id FROM segment_memberships WHERE segment = 'cart_abandoners' AND exited_at IS NULL AND profile_id = ?", bargainProfile);
      assert.equal(members.length, 1, "the membership row is written");
      const snapshot = JSON.parse(await edge.kv.get(`profile:${bargainProfile}`));
      assert.ok(snapshot.segments.includes("cart_abandoners") && snapshot.segments.includes("high_discount_affinity"), JSON.stringify(snapshot.segments));
      const [due] = await edge.query("SELECT check_at FROM profile_personalisation WHERE profile_id = ?", bargainProfile);
      // Next: two orders and no visit for 30 days make churn_risk.
      assert.equal(due.check_at, Date.parse(left.timestamp) + 30 * 86_400_000 + 1, "due again when churn_risk could begin");
      assert.equal((await sweep()).status, 200);
      assert.equal((await entered()).length, 2, "a second run stores nothing again");

      const reset = await adminSend("DELETE");
      assert.equal(reset.json.stamp, "committed");
      const hourWindow = await decideFor(edge, { anonymousId: anon, slots: ["discount-banner"] });
      assert.ok(["none", "control"].includes(hourWindow.json.decisions[0].variant), "back to the committed 1 h window");
      assert.equal((await edge.query("SELECT count(*) AS n FROM settings"))[0].n, 0);
    });
  });
});

describe("edge rendering of a site proxied from its own origin", () => {
  let edge;
  let origin;
  const seen = [];
  before(async () => {
    // The site owner's origin server: HTML with a slot, its own cookie and CSP.
    origin = createServer((req, res) => {
      seen.push({ url: req.url, host: req.headers["x-forwarded-host"], cookie: req.headers.cookie });
      if (req.url.startsWith("/missing")) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not here");
        return;
      }
      res.writeHead(200, {
        "content-type": "text/html; charset=utf-8",
        "set-cookie": "origin_session=abc; Path=/",
        "content-security-policy": "default-src 'self' https://cdn.shop.example",
      });
      res.end('<!doctype html><title>Origin shop</title><h1>Origin shop</h1><div data-seam-slot="recommended-for-you">fallback</div>');
    });
    await new Promise((r) => origin.listen(0, "127.0.0.1", r));
    edge = await startEdge("proxy", {
      sources: { [WRITE_KEY]: { id: "proxied-shop", identity: "trust-browser", origins: ["*"], siteOrigin: `http://127.0.0.1:${origin.address().port}` } },
    });
  });
  after(async () => {
    await edge?.stop();
    origin?.close();
  });

  test("pages come from the source's siteOrigin with their own headers, and their slots are filled", async () => {
    // A visitor outside the holdout (whose profile ID decides it), so the slot is personalised.
    let anon;
    for (let i = 0; !anon; i++) {
      const candidate = `proxied-visitor-${run}-${i}`;
      const r = await send(edge, [view(candidate, "run-1", "Running Shoes", 3), view(candidate, "run-2", "Running Shoes", 2)]);
      if (!inHoldout(r.json.profileId)) anon = candidate;
    }
    await settled(edge.url);
    const r = await fetch(`${edge.url}/product?id=run-1`, { headers: { cookie: `${idCookie(anon)}; origin_session=abc` } });
    assert.equal(r.status, 200);
    const html = await r.text();
    assert.match(html, /<h1>Origin shop<\/h1>/, "the origin's page");
    assert.match(html, /data-seam-slot="recommended-for-you" data-seam-rendered="personalised"/);
    assert.doesNotMatch(html, />fallback</, "the slot is filled");
    assert.equal(r.headers.get("content-security-policy"), "default-src 'self' https://cdn.shop.example", "the origin's own policy");
    assert.equal(r.headers.get("set-cookie"), "origin_session=abc; Path=/");
    assert.match(r.headers.get("cache-control"), /private, no-store/);
    const request = seen.find((s) => s.url === "/product?id=run-1");
    assert.ok(request, JSON.stringify(seen));
    assert.equal(request.host, new URL(edge.url).host, "the origin learns the public host");
    assert.match(request.cookie, /origin_session=abc/, "the visitor's cookies reach the origin");

    const missing = await fetch(`${edge.url}/product?id=missing`.replace("/product", "/missing"));
    assert.equal(missing.status, 404, "the origin's errors pass through");
    await settled(edge.url);
    const [exposure] = await edge.query("SELECT source_id FROM events WHERE name = 'Decision Exposed' AND anonymous_id = ?", anon);
    assert.equal(exposure.source_id, "proxied-shop");
  });

  test("when decisions cannot be made (storage failing) the page is still served, slots as the origin sent them", async () => {
    // A visitor the isolate has never seen is looked up in D1; the table is gone for a moment.
    await edge.exec("ALTER TABLE identities RENAME TO identities_away");
    try {
      const r = await fetch(`${edge.url}/product?id=run-2`, { headers: { cookie: idCookie(`unseen-visitor-${run}`) } });
      assert.equal(r.status, 200);
      const html = await r.text();
      assert.match(html, /<h1>Origin shop<\/h1>/);
      assert.match(html, /<div data-seam-slot="recommended-for-you">fallback<\/div>/, "the origin's own slot content");
    } finally {
      await edge.exec("ALTER TABLE identities_away RENAME TO identities");
    }
    const again = await fetch(`${edge.url}/product?id=run-2`, { headers: { cookie: idCookie(`unseen-visitor-${run}`) } });
    assert.match(await again.text(), /data-seam-slot="recommended-for-you" data-seam-rendered="default"/, "and filled again once storage is back");
  });
});
