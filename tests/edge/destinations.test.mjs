// Destinations end to end: the real Worker in workerd with its real local D1 and Queues, and
// local receivers in place of each provider's API (their base URLs are settings). What must
// hold: every accepted event that matches is delivered exactly once, failures are retried as
// documented, what consent forbids or erasure removed is never sent, and secrets never leave.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { post, secret, startEdge, WRITE_KEY } from "../support/edge.mjs";
import { startReceiver } from "../support/receiver.mjs";

const ADMIN_KEY = secret("ADMIN_KEY");
const SERVER_KEY = secret("SERVER_WRITE_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `d-${run}-${++n}`;
const HOOK_SECRET = "whsec_test_0123456789abcdef";

const send = (edge, batch, key = WRITE_KEY) => post(`${edge.url}/v1/batch`, { writeKey: key, batch });
// A 503 is the API's "storage failed, retry" (locally: SQLite busy while the harness reads the
// same file). Idempotent calls are retried as a client would; a POST is not.
async function admin(edge, method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    });
    if (r.status === 503 && method !== "POST" && attempt < 3) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      continue;
    }
    return { status: r.status, text: await r.clone().text(), json: await r.json().catch(() => undefined) };
  }
}
const order = (fields = {}) => ({
  type: "track", event: "Order Completed", messageId: mid(), anonymousId: `anon-${run}-${n}`,
  properties: { order_id: `o-${n}`, revenue: 42.5, currency: "EUR", products: [{ product_id: "p1", name: "Shoe", price: 42.5, quantity: 1 }] },
  ...fields,
});
const granted = { consent: { gcm: { analytics_storage: "granted", ad_storage: "granted", ad_user_data: "granted", ad_personalization: "granted" } } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("destinations: delivery through the queue", () => {
  let edge;
  let receiver;
  // Per-path scripts: path prefix -> (request, n) => answer.
  const scripts = new Map();
  const webhook = (path, fields = {}) => ({
    type: "webhook",
    settings: { url: `${receiver.url}${path}`, secret: HOOK_SECRET },
    filter: { events: ["Order Completed"] },
    ...fields,
  });

  before(async () => {
    receiver = await startReceiver((request, count) => {
      for (const [prefix, script] of scripts) if (request.path.startsWith(prefix)) return script(request, count);
      return { status: 200 };
    });
    // Retries one second apart instead of thirty, and erasures forwarded after one second
    // instead of fifteen minutes, so these tests take seconds.
    edge = await startEdge("destinations", { vars: { DELIVERY_FIRST_RETRY_SECONDS: "1", DELIVERY_ERASURE_DELAY_SECONDS: "1" } });
  });
  after(async () => {
    await edge?.stop();
    await receiver?.close();
  });

  test("a webhook gets each matching event once, signed, and the admin API never shows its secret", async () => {
    const put = await admin(edge, "PUT", "/v1/admin/destinations/orders", webhook("/orders"));
    assert.equal(put.status, 201, put.text);
    assert.equal(put.json.settings.secret, "********");
    assert.doesNotMatch(put.text, new RegExp(HOOK_SECRET));
    const stored = await edge.query("SELECT value FROM settings WHERE key = 'config:destinations'");
    assert.doesNotMatch(stored[0].value, new RegExp(HOOK_SECRET), "sealed at rest");

    const event = order();
    const r = await send(edge, [event, { type: "track", event: "Product Viewed", anonymousId: "x", messageId: mid() }]);
    assert.equal(r.status, 200);
    const [got] = await receiver.wait("/orders", 1);
    assert.equal(got.method, "POST");
    assert.equal(got.json.messageId, event.messageId);
    assert.equal(got.json.event, "Order Completed");
    const expected = `sha256=${createHmac("sha256", HOOK_SECRET).update(got.raw).digest("hex")}`;
    assert.equal(got.headers["x-seam-signature"], expected, "the signature verifies over the raw body");
    assert.match(got.headers["x-seam-delivery"], /^dlv_[0-9a-f]{32}$/);
    assert.equal(got.headers["x-seam-attempt"], "1");
    await sleep(1500);
    assert.equal(receiver.to("/orders").length, 1, "the Product Viewed did not pass the filter; nothing twice");

    const list = await admin(edge, "GET", "/v1/admin/destinations");
    assert.equal(list.status, 200);
    const orders = list.json.destinations.find((d) => d.name === "orders");
    assert.equal(orders.settings.secret, "********");
    assert.equal(orders.deliveries.byStatus.delivered, 1);
    assert.equal(orders.deliveries.last24h.delivered, 1);
    assert.doesNotMatch(list.text, new RegExp(HOOK_SECRET));

    // Sending the mask back keeps the stored secret.
    const edit = await admin(edge, "PUT", "/v1/admin/destinations/orders", webhook("/orders", { settings: { url: `${receiver.url}/orders`, secret: "********" } }));
    assert.equal(edit.status, 200, edit.text);
    const second = order();
    await send(edge, [second]);
    const [, again] = await receiver.wait("/orders", 2);
    assert.equal(again.headers["x-seam-signature"], `sha256=${createHmac("sha256", HOOK_SECRET).update(again.raw).digest("hex")}`);
  });

  test("bad configurations are refused with the destination and field named", async () => {
    const missing = await admin(edge, "PUT", "/v1/admin/destinations/broken", { type: "webhook", settings: { secret: HOOK_SECRET } });
    assert.equal(missing.status, 400);
    assert.equal(missing.json.code, "invalid_destination_config");
    assert.equal(missing.json.message, "destination broken: settings.url is required");
    const private_ = await admin(edge, "PUT", "/v1/admin/destinations/broken", webhook("/x", { settings: { url: "https://169.254.169.254/latest", secret: HOOK_SECRET } }));
    assert.equal(private_.status, 400);
    assert.equal(private_.json.code, "destination_url_private");
    const masked = await admin(edge, "PUT", "/v1/admin/destinations/broken", webhook("/x", { settings: { url: `${receiver.url}/x`, secret: "********" } }));
    assert.equal(masked.status, 400, "a mask with nothing stored behind it");
    assert.equal((await admin(edge, "GET", "/v1/admin/destinations/broken")).status, 404, "nothing was stored");
    // A kept secret never follows a new URL: whoever edits the destination must know it.
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/moving", webhook("/moving"))).status, 201);
    const moved = await admin(edge, "PUT", "/v1/admin/destinations/moving", webhook("/x", { settings: { url: "https://attacker.example/collect", secret: "********" } }));
    assert.equal(moved.status, 400);
    assert.equal(moved.json.message, "destination moving: settings.secret must be sent again when the URL changes");
    assert.equal((await admin(edge, "DELETE", "/v1/admin/destinations/moving")).status, 200);
    const writeKey = await fetch(`${edge.url}/v1/admin/destinations`, { headers: { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString("base64")}` } });
    assert.ok([401, 403].includes(writeKey.status), "a write key cannot read destinations");
  });

  test("a condition in the segment rule language and a field mapping shape what a webhook gets", async () => {
    const put = await admin(edge, "PUT", "/v1/admin/destinations/big-orders", webhook("/big", {
      filter: { events: ["Order Completed"], where: { gte: [{ field: "properties.revenue" }, 100] } },
      mapping: { order: "properties.order_id", total: "properties.revenue", customer: "userId" },
    }));
    assert.equal(put.status, 201, put.text);
    const small = order({ userId: `small-${run}` });
    const big = order({ userId: `big-${run}`, properties: { order_id: `big-order-${run}`, revenue: 150, currency: "EUR" } });
    await send(edge, [small, big], SERVER_KEY);
    const [got] = await receiver.wait("/big", 1);
    assert.deepEqual(got.json, { order: `big-order-${run}`, total: 150, customer: `big-${run}` });
    await sleep(1000);
    assert.equal(receiver.to("/big").length, 1, "the small order did not pass the condition");
    const bad = await admin(edge, "PUT", "/v1/admin/destinations/big-orders", webhook("/big", { filter: { where: { gte: [{ trait: "x" }, 1] } } }));
    assert.equal(bad.status, 400);
    assert.match(bad.json.message, /^destination big-orders: filter\.where\.gte\[0\]\.trait is not available/);
  });

  test("a receiver failing with 500 then accepting gets exactly one successful delivery per event", async () => {
    scripts.set("/flaky", (_, count) => ({ status: count === 1 ? 500 : 200 }));
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/flaky", webhook("/flaky"))).status, 201);
    const event = order();
    await send(edge, [event]);
    const [first, second] = await receiver.wait("/flaky", 2);
    assert.equal(first.json.messageId, event.messageId);
    assert.equal(second.json.messageId, event.messageId);
    assert.equal(second.headers["x-seam-delivery"], first.headers["x-seam-delivery"], "one delivery ID on every attempt");
    assert.equal(second.headers["x-seam-attempt"], "2");
    await sleep(2500);
    assert.equal(receiver.to("/flaky").length, 2, "nothing after the success");
    const rows = await edge.query("SELECT status, attempts FROM deliveries WHERE destination = 'flaky'");
    assert.deepEqual(rows, [{ status: "delivered", attempts: 2 }]);
  });

  test("Retry-After is honoured", async () => {
    scripts.set("/throttled", (_, count) => (count === 1 ? { status: 429, headers: { "retry-after": "3" } } : { status: 204, body: "" }));
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/throttled", webhook("/throttled"))).status, 201);
    await send(edge, [order()]);
    const [first, second] = await receiver.wait("/throttled", 2);
    assert.ok(second.at - first.at >= 2900, `retried after ${second.at - first.at} ms`);
  });

  test("a 400 goes to the dead-letter list, and a replay delivers it", async () => {
    let accept = false;
    scripts.set("/strict", () => ({ status: accept ? 200 : 400 }));
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/strict", webhook("/strict"))).status, 201);
    const event = order();
    await send(edge, [event]);
    await receiver.wait("/strict", 1);
    let failed;
    for (let i = 0; i < 40; i++) {
      failed = await admin(edge, "GET", "/v1/admin/destinations/strict/deliveries?status=failed");
      if (failed.json.deliveries.length) break;
      await sleep(100);
    }
    assert.equal(failed.status, 200);
    assert.equal(failed.json.deliveries.length, 1);
    assert.equal(failed.json.deliveries[0].messageId, event.messageId);
    assert.equal(failed.json.deliveries[0].lastError, "http_400");
    assert.equal(failed.json.deliveries[0].lastStatus, 400);
    await sleep(2000);
    assert.equal(receiver.to("/strict").length, 1, "a 400 is final: no retry");

    accept = true;
    const replay = await admin(edge, "POST", "/v1/admin/destinations/strict/replay");
    assert.equal(replay.status, 200);
    assert.equal(replay.json.replayed, 1);
    const [, replayed] = await receiver.wait("/strict", 2);
    assert.equal(replayed.json.messageId, event.messageId);
    assert.equal(replayed.headers["x-seam-attempt"], "2");
    await sleep(500);
    const rows = await edge.query("SELECT status FROM deliveries WHERE destination = 'strict'");
    assert.deepEqual(rows, [{ status: "delivered" }]);
    const audit = await admin(edge, "GET", "/v1/admin/audit?limit=50");
    assert.ok(audit.json.entries.some((e) => e.action === "replay_deliveries"));
  });

  test("a destination's delivery log lists its newest rows first, across statuses or of one", async () => {
    // Set-up rows of every status, updated at known times (the log's read is what is tested).
    try {
      const rows = [["pending", 5], ["sending", 9], ["delivered", 7], ["delivered", 11], ["skipped", 3], ["dead", 10], ["dead", 1]];
      for (const [i, [status, at]] of rows.entries()) {
        await edge.exec(
          "INSERT INTO deliveries (destination, source_id, message_id, status, created_at, next_at, updated_at) VALUES ('logged', 'src', ?, ?, 0, ?, ?)",
          `log-${i}`, status, 4_000_000_000_000 + at, 4_000_000_000_000 + at,
        );
      }
      const list = async (query) => (await admin(edge, "GET", `/v1/admin/destinations/logged/deliveries?${query}`)).json.deliveries.map((d) => [d.status, d.updatedAt - 4_000_000_000_000]);
      assert.deepEqual(await list("limit=4"), [["delivered", 11], ["dead", 10], ["sending", 9], ["delivered", 7]]);
      assert.deepEqual(await list("limit=100"), rows.slice().sort((a, b) => b[1] - a[1]));
      assert.deepEqual(await list("status=failed&limit=1"), [["dead", 10]]);
      assert.deepEqual(await list("status=delivered"), [["delivered", 11], ["delivered", 7]]);
    } finally {
      await edge.exec("DELETE FROM deliveries WHERE destination = 'logged'");
    }
  });

  test("concurrent duplicates of one messageId are delivered once", async () => {
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/dupes", webhook("/dupes"))).status, 201);
    const event = order();
    const results = await Promise.all(Array.from({ length: 6 }, () => send(edge, [event])));
    assert.ok(results.every((r) => r.status === 200));
    await receiver.wait("/dupes", 1);
    await sleep(2000);
    assert.equal(receiver.to("/dupes").length, 1);
  });

  test("an erased person's waiting deliveries are never sent", async () => {
    // The first attempt is throttled; the person is erased while the retry waits.
    scripts.set("/erasable", () => ({ status: 503, headers: { "retry-after": "2" } }));
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/erasable", webhook("/erasable"))).status, 201);
    const userId = `erase-me-${run}`;
    await send(edge, [order({ userId, anonymousId: undefined })], SERVER_KEY);
    await receiver.wait("/erasable", 1);
    scripts.set("/erasable", () => ({ status: 200 }));
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "user_id", value: userId }),
    });
    assert.equal(erased.status, 200);
    await sleep(4000);
    assert.equal(receiver.to("/erasable").length, 1, "the retry found nothing to send");
    const rows = await edge.query("SELECT status, last_error FROM deliveries WHERE destination = 'erasable'");
    assert.deepEqual(rows, [{ status: "skipped", last_error: "event_erased" }]);
  });

  test("Meta and GA4 get only what ad and analytics consent allow, in their documented shapes", async () => {
    const meta = await admin(edge, "PUT", "/v1/admin/destinations/meta", {
      type: "meta", settings: { pixelId: "1234567890", accessToken: "EAAtest", baseUrl: `${receiver.url}/meta` },
      filter: { events: ["Order Completed"] },
    });
    assert.equal(meta.status, 201, meta.text);
    const ga4 = await admin(edge, "PUT", "/v1/admin/destinations/ga4", {
      type: "ga4", settings: { measurementId: "G-TEST123", apiSecret: "ga-secret", baseUrl: `${receiver.url}/ga4` },
      filter: { events: ["Order Completed"] },
    });
    assert.equal(ga4.status, 201, ga4.text);
    const email = `meta-${run}@example.com`;
    const allowed = order({ userId: `buyer-${run}`, context: { ...granted, traits: { email } } });
    const noAds = order({ context: { consent: { gcm: { analytics_storage: "granted", ad_user_data: "denied" } } } });
    const noAnalytics = order({ context: { consent: { gcm: { analytics_storage: "denied", ad_user_data: "granted" } } } });
    const gpc = order({ context: { consent: { gcm: { analytics_storage: "granted", ad_user_data: "granted" }, gpc: true } } });
    await send(edge, [allowed, noAds, noAnalytics, gpc], SERVER_KEY);

    const [purchase] = await receiver.wait("/meta", 1);
    assert.equal(purchase.path, "/meta/v21.0/1234567890/events");
    assert.equal(purchase.query.get("access_token"), "EAAtest");
    const [data] = purchase.json.data;
    assert.equal(data.event_name, "Purchase");
    assert.equal(data.event_id, allowed.messageId, "deduplicates with the browser pixel");
    assert.equal(data.user_data.em[0] ?? data.user_data.em, createHash("sha256").update(email).digest("hex"));
    assert.equal(data.custom_data.value, 42.5);
    assert.equal(data.custom_data.currency, "EUR");

    const hits = await receiver.wait("/ga4", 3);
    assert.equal(hits[0].path, "/ga4/mp/collect");
    assert.equal(hits[0].query.get("measurement_id"), "G-TEST123");
    assert.equal(hits[0].query.get("api_secret"), "ga-secret");
    const purchases = hits.map((h) => h.json.events[0]);
    assert.ok(purchases.every((e) => e.name === "purchase"));
    await sleep(2000);
    const metaIds = receiver.to("/meta").map((r) => r.json.data[0].event_id);
    assert.deepEqual(metaIds, [allowed.messageId], "ad consent denied and GPC never reach Meta");
    const gaIds = receiver.to("/ga4").map((r) => r.json.events[0].params.transaction_id);
    assert.equal(gaIds.length, 3, "analytics denied never reaches GA4");
    assert.ok(!gaIds.includes(noAnalytics.properties.order_id));
  });

  test("a delivery whose queue message was lost is sent by the sweep", async () => {
    const event = order();
    await send(edge, [event]); // no destination takes it yet
    assert.equal((await admin(edge, "PUT", "/v1/admin/destinations/lost", webhook("/lost"))).status, 201);
    // The row an ingest commits before its message is sent, as a crash right after the commit
    // would leave it.
    const past = Date.now() - 5 * 60_000;
    await edge.exec(
      "INSERT INTO deliveries (destination, source_id, message_id, status, attempts, created_at, next_at, updated_at) VALUES ('lost', 'demo-site', ?1, 'pending', 0, ?2, ?2, ?2)",
      event.messageId, past,
    );
    const swept = await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`);
    assert.equal(swept.status, 200);
    const [got] = await receiver.wait("/lost", 1);
    assert.equal(got.json.messageId, event.messageId);
    await sleep(1000);
    assert.equal(receiver.to("/lost").length, 1);
  });

  test("Klaviyo gets events on the person's profile with the delivery ID as unique_id", async () => {
    const put = await admin(edge, "PUT", "/v1/admin/destinations/klaviyo", {
      type: "klaviyo", settings: { apiKey: "pk_test_123", baseUrl: `${receiver.url}/klaviyo` },
      filter: { events: ["Order Completed", "Identify"] },
    });
    assert.equal(put.status, 201, put.text);
    const email = `kla-${run}@example.com`;
    const userId = `kla-user-${run}`;
    const identify = { type: "identify", userId, messageId: mid(), traits: { email, first_name: "Ada" } };
    const bought = order({ userId, anonymousId: undefined, context: { traits: { email } } });
    await send(edge, [identify, bought], SERVER_KEY);
    const got = await receiver.wait("/klaviyo", 2);
    for (const r of got) {
      assert.equal(r.headers.authorization, "Klaviyo-API-Key pk_test_123");
      assert.equal(r.headers.revision, "2024-10-15");
    }
    const imported = got.find((r) => r.path === "/klaviyo/api/profile-import");
    assert.equal(imported.json.data.type, "profile");
    assert.equal(imported.json.data.attributes.email, email);
    assert.equal(imported.json.data.attributes.external_id, userId);
    const tracked = got.find((r) => r.path === "/klaviyo/api/events");
    const attributes = tracked.json.data.attributes;
    assert.equal(attributes.metric.data.attributes.name, "Order Completed");
    assert.match(attributes.unique_id, /^dlv_[0-9a-f]{32}$/);
    assert.equal(attributes.profile.data.attributes.email, email);
    assert.equal(attributes.value, 42.5);
  });

  test("segment transitions reach a destination subscribed to them (audience sync)", async () => {
    const put = await admin(edge, "PUT", "/v1/admin/destinations/audiences", webhook("/audiences", { filter: { events: ["Segment Entered", "Segment Exited"] } }));
    assert.equal(put.status, 201, put.text);
    scripts.set("/lists/api/profile-import", () => ({ status: 201, body: { data: { type: "profile", id: "01KLAVIYOPROFILE" } } }));
    const lists = await admin(edge, "PUT", "/v1/admin/destinations/klaviyo-lists", {
      type: "klaviyo", settings: { apiKey: "pk_test_456", baseUrl: `${receiver.url}/lists`, lists: { high_value: "LIST1" } },
      filter: { events: ["Segment Entered", "Segment Exited"] },
    });
    assert.equal(lists.status, 201, lists.text);
    // An ad platform gets a transition only when the person's recorded consent allows ads.
    const ads = await admin(edge, "PUT", "/v1/admin/destinations/ad-audiences", webhook("/ad-audiences", {
      settings: { url: `${receiver.url}/ad-audiences`, secret: HOOK_SECRET, purpose: "advertising" },
      filter: { events: ["Segment Entered"] },
    }));
    assert.equal(ads.status, 201, ads.text);
    const userId = `big-spender-${run}`;
    const consenting = `consenting-spender-${run}`;
    await send(edge, [
      order({ userId, anonymousId: undefined, properties: { order_id: `big-${run}`, revenue: 900, currency: "EUR" } }),
      order({ userId: consenting, anonymousId: undefined, context: granted, properties: { order_id: `big2-${run}`, revenue: 900, currency: "EUR" } }),
    ], SERVER_KEY);
    const [toAds] = await receiver.wait("/ad-audiences", 1);
    assert.equal(toAds.json.userId, consenting);
    assert.equal(toAds.json.context.consent.gcm.ad_user_data, "granted", "the transition carries the person's consent");
    const got = await receiver.wait("/audiences", 2);
    const entered = got.find((r) => r.json.properties?.segment === "high_value" && r.json.userId === userId);
    assert.ok(entered, JSON.stringify(got.map((r) => r.json.properties)));
    assert.equal(entered.json.event, "Segment Entered");
    assert.equal(entered.json.userId, userId);
    await sleep(1000);
    assert.deepEqual(receiver.to("/ad-audiences").map((r) => r.json.userId), [consenting], "no recorded consent, no ads");
    // Klaviyo: the profile is imported, then added to the list by the ID Klaviyo answered with.
    const synced = await receiver.wait("/lists", 4);
    const imported = synced.find((r) => r.path === "/lists/api/profile-import" && r.json.data.attributes.external_id === userId);
    const added = synced.find((r) => r.path.includes("/relationships/"));
    assert.equal(imported.path, "/lists/api/profile-import");
    assert.equal(imported.json.data.attributes.external_id, userId);
    assert.equal(added.method, "POST");
    assert.equal(added.path, "/lists/api/lists/LIST1/relationships/profiles");
    assert.deepEqual(added.json, { data: [{ type: "profile", id: "01KLAVIYOPROFILE" }] });
  });

  test("an erasure is forwarded to Klaviyo and to webhooks that ask for it, and the request is not kept", async () => {
    const put = await admin(edge, "PUT", "/v1/admin/destinations/erasures", webhook("/erasures", {
      settings: { url: `${receiver.url}/erasures`, secret: HOOK_SECRET, forwardErasures: true },
    }));
    assert.equal(put.status, 201, put.text);
    const email = `forget-${run}@example.com`;
    const userId = `forget-${run}`;
    await send(edge, [{ type: "identify", userId, messageId: mid(), traits: { email } }], SERVER_KEY);
    const before = receiver.to("/klaviyo/api/data-privacy-deletion-jobs").length;
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "user_id", value: userId }),
    }).then((r) => r.json());
    assert.equal(erased.forwardedTo, 3, "the webhook that asked and both Klaviyo accounts");
    const [hook] = await receiver.wait("/erasures", 1);
    assert.equal(hook.json.type, "delete");
    assert.deepEqual(hook.json.userIds, [userId]);
    assert.deepEqual(hook.json.emails, [email]);
    assert.equal(hook.headers["x-seam-signature"], `sha256=${createHmac("sha256", HOOK_SECRET).update(hook.raw).digest("hex")}`);
    const jobs = await receiver.wait("/klaviyo/api/data-privacy-deletion-jobs", before + 1);
    const job = jobs.at(-1).json.data;
    assert.equal(job.type, "data-privacy-deletion-job");
    assert.equal(job.attributes.profile.data.attributes.email, email);
    assert.equal(receiver.to("/orders").filter((r) => r.json?.type === "delete").length, 0, "a webhook filtered to orders is not told");
    await sleep(500);
    const rows = await edge.query("SELECT destination, status, payload FROM deliveries WHERE source_id = '$erasure' ORDER BY destination");
    assert.deepEqual(rows.map((r) => [r.destination, r.status, r.payload]), [
      ["erasures", "delivered", null], ["klaviyo", "delivered", null], ["klaviyo-lists", "delivered", null],
    ]);
  });

  test("SendGrid and Twilio send transactional messages to the trusted email and phone", async () => {
    const mail = await admin(edge, "PUT", "/v1/admin/destinations/confirmations", {
      type: "sendgrid", filter: { events: ["Order Completed"] },
      settings: { apiKey: "SG.test", fromEmail: "shop@shop.example", templateId: "d-confirm", baseUrl: `${receiver.url}/sendgrid` },
    });
    assert.equal(mail.status, 201, mail.text);
    assert.equal(mail.json.settings.apiKey, "********");
    const sms = await admin(edge, "PUT", "/v1/admin/destinations/texts", {
      type: "twilio", filter: { events: ["Order Completed"] },
      settings: { accountSid: "AC123", authToken: "twilio-token", from: "+3197010", text: "Thanks for your order!", baseUrl: `${receiver.url}/twilio` },
    });
    assert.equal(sms.status, 201, sms.text);
    assert.doesNotMatch(sms.text, /twilio-token/);
    const email = `mail-${run}@example.com`;
    const bought = order({ userId: `mail-${run}`, anonymousId: undefined, context: { traits: { email, phone: "+31 6 1234 5678" } } });
    await send(edge, [bought], SERVER_KEY);
    const [sent] = await receiver.wait("/sendgrid", 1);
    assert.equal(sent.path, "/sendgrid/v3/mail/send");
    assert.equal(sent.headers.authorization, "Bearer SG.test");
    assert.equal(sent.json.template_id, "d-confirm");
    assert.deepEqual(sent.json.personalizations[0].to, [{ email }]);
    assert.equal(sent.json.personalizations[0].dynamic_template_data.properties.order_id, bought.properties.order_id);
    assert.match(sent.json.custom_args.seam_delivery, /^dlv_/);
    const [texted] = await receiver.wait("/twilio", 1);
    assert.equal(texted.path, "/twilio/2010-04-01/Accounts/AC123/Messages.json");
    assert.equal(texted.headers.authorization, `Basic ${Buffer.from("AC123:twilio-token").toString("base64")}`);
    const form = new URLSearchParams(texted.raw);
    assert.equal(form.get("To"), "+31612345678");
    assert.equal(form.get("Body"), "Thanks for your order!");
    // A page's claimed email gets nothing.
    const before = receiver.to("/sendgrid").length;
    await send(edge, [order({ context: { traits: { email } } })]);
    await sleep(1500);
    assert.equal(receiver.to("/sendgrid").length, before);
  });
});

