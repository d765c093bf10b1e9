// The collector in workerd with real local D1: what a Segment-compatible client sees, and what
// ends up stored.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { directSources, post, root, startEdge, WRITE_KEY } from "../support/edge.mjs";

const fixture = JSON.parse(readFileSync(join(root, "core/tests/fixtures/batch_mixed.json"), "utf8"));
const QUEUED_KEY = "seam_test_queued_server_key";
const basic = (key) => ({ authorization: `Basic ${Buffer.from(`${key}:`).toString("base64")}` });

describe("edge collector", () => {
  let edge;
  before(async () => {
    // A server source that asks for the queue, beside the configured ones.
    // The dev key stores before it answers, so the answers below can name duplicates; the queued
    // key is the queue's (a browser source's default) own subject.
    edge = await startEdge("ingest", { sources: { ...directSources(), [QUEUED_KEY]: { id: "queued", kind: "server", ingest: "queue" } } });
  });
  after(async () => {
    await edge?.stop();
  });

  test("health answers without touching storage", async () => {
    const res = await fetch(`${edge.url}/health`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "ok");
  });

  test("stores valid events of a batch and rejects the malformed ones with codes", async () => {
    const { status, json } = await post(`${edge.url}/v1/batch`, fixture);
    assert.equal(status, 200);
    assert.deepEqual(
      json.results.map((r) => [r.messageId, r.status, r.code]),
      [
        ["mixed-1", "accepted", undefined],
        ["mixed-2", "rejected", "missing_event_name"],
        [undefined, "rejected", "invalid_event"],
        ["mixed-1", "duplicate", undefined],
        ["mixed-4", "accepted", undefined],
      ],
    );
    const rows = await edge.query(
      "SELECT message_id, type, name, anonymous_id, user_id, source_id, body FROM events WHERE message_id LIKE 'mixed-%' ORDER BY message_id",
    );
    assert.deepEqual(rows.map((r) => r.message_id), ["mixed-1", "mixed-4"]);
    assert.equal(rows[0].name, "Product Viewed");
    assert.equal(rows[0].anonymous_id, "anon-fixture-1");
    assert.equal(rows[0].source_id, "demo-site");
    const page = JSON.parse(rows[1].body);
    assert.deepEqual(page.unknownField, { kept: true }, "unknown fields are kept verbatim");
    assert.deepEqual(page.context.library, { name: "fixture", version: "0" }, "batch context is merged in");
    assert.equal(page.writeKey, undefined, "the write key is not stored with the event");
    assert.match(page.receivedAt, /^\d{4}-\d\d-\d\dT/);
  });

  test("a retried batch is answered duplicate and stored once", async () => {
    const { json } = await post(`${edge.url}/v1/batch`, fixture);
    assert.deepEqual(json.results.filter((r) => r.status === "accepted"), []);
    const [{ n }] = await edge.query("SELECT count(*) AS n FROM events WHERE message_id LIKE 'mixed-%'");
    assert.equal(n, 2);
  });

  test("accepts events while D1 is down and stores them once, as sent, when it is back", async () => {
    const batch = {
      writeKey: WRITE_KEY,
      batch: [
        { type: "identify", anonymousId: "anon-outage", userId: "user-outage", traits: { plan: "pro" }, messageId: "outage-1" },
        { type: "track", event: "Order Completed", anonymousId: "anon-outage", properties: { revenue: 42.5 }, messageId: "outage-2" },
        { type: "track", anonymousId: "anon-outage", messageId: "outage-3" },
        { type: "track", event: "Order Completed", anonymousId: "anon-outage", messageId: "outage-2" },
      ],
    };
    const headers = { "user-agent": "OutageTest/1.0" };
    const retried = /ingest queue: storage_unavailable/;
    const release = await edge.lockD1();
    try {
      const { status, json } = await post(`${edge.url}/v1/batch`, batch, headers);
      assert.equal(status, 200);
      assert.equal(json.deferred, true);
      assert.deepEqual(
        json.results.map((r) => [r.messageId, r.status, r.code]),
        [
          ["outage-1", "accepted", undefined],
          ["outage-2", "accepted", undefined],
          ["outage-3", "rejected", "missing_event_name"],
          ["outage-2", "duplicate", undefined],
        ],
      );
      // Held until the queue's first attempt has failed too: a retry is what stores them.
      const deadline = Date.now() + 15_000;
      while (!retried.test(edge.output()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.match(edge.output(), retried);
    } finally {
      await release();
    }
    let rows = [];
    for (const deadline = Date.now() + 60_000; rows.length < 2 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 250));
      rows = await edge.query("SELECT message_id, source_id, body FROM events WHERE message_id LIKE 'outage-%' ORDER BY message_id");
    }
    assert.deepEqual(rows.map((r) => [r.message_id, r.source_id]), [["outage-1", "demo-site"], ["outage-2", "demo-site"]]);
    const [identify, order] = rows.map((r) => JSON.parse(r.body));
    assert.equal(identify.context.seam.identity, "claimed", "the proof made when the request came is kept");
    assert.equal(order.properties.revenue, 42.5);
    assert.equal(order.context.userAgent, "OutageTest/1.0", "the request's facts are kept");
    const linked = await edge.query("SELECT profile_id FROM identities WHERE identifier = 'anonymous_id:anon-outage'");
    assert.equal(linked.length, 1, "the events were stitched like any others");

    const again = await post(`${edge.url}/v1/batch`, batch, headers);
    assert.equal(again.json.deferred, undefined);
    assert.deepEqual(again.json.results.filter((r) => r.status === "accepted"), []);
    const [{ n }] = await edge.query("SELECT count(*) AS n FROM events WHERE message_id LIKE 'outage-%'");
    assert.equal(n, 2);
  });

  test("a source that asks for the queue answers first, then stores several requests' events once", async () => {
    const event = (id, fields = {}) => ({ type: "track", event: "Order Completed", userId: "queued-user", messageId: id, properties: { revenue: 10 }, ...fields });
    const first = await post(`${edge.url}/v1/batch`, { writeKey: QUEUED_KEY, batch: [event("queued-1"), event("queued-2"), { type: "track", userId: "queued-user", messageId: "queued-bad" }] });
    // A client's retry queued beside its first try, with one new event.
    const second = await post(`${edge.url}/v1/batch`, { writeKey: QUEUED_KEY, batch: [event("queued-2"), event("queued-3", { anonymousId: "queued-anon" })] });
    assert.equal(first.status, 200);
    assert.equal(first.json.deferred, true);
    assert.equal(first.json.profileId, undefined, "nothing is stored yet to name");
    assert.deepEqual(first.json.results.map((r) => [r.messageId, r.status, r.code]), [
      ["queued-1", "accepted", undefined],
      ["queued-2", "accepted", undefined],
      ["queued-bad", "rejected", "missing_event_name"],
    ]);
    assert.equal(second.json.deferred, true);
    const stored = () => edge.query("SELECT message_id, source_id, user_id FROM events WHERE source_id = 'queued' ORDER BY message_id");
    let rows = [];
    for (const deadline = Date.now() + 30_000; rows.length < 3 && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 200));
      rows = await stored();
    }
    // Long enough for a second delivery of either message to have shown.
    await new Promise((r) => setTimeout(r, 2000));
    rows = await stored();
    assert.deepEqual(rows.map((r) => [r.message_id, r.user_id]), [["queued-1", "queued-user"], ["queued-2", "queued-user"], ["queued-3", "queued-user"]]);
    const linked = await edge.query("SELECT DISTINCT profile_id FROM identities WHERE identifier IN ('user_id:queued-user', 'anonymous_id:queued-anon')");
    assert.equal(linked.length, 1, "the queued events were stitched into one profile");
  });

  test("accepts text/plain short paths and HTTP Basic write keys", async () => {
    const single = await post(
      `${edge.url}/v1/t`,
      { event: "Signed Up", userId: "user-basic", messageId: "basic-1" },
      { "content-type": "text/plain", ...basic(WRITE_KEY) },
    );
    assert.equal(single.status, 200);
    assert.equal(single.json.results[0].status, "accepted");
    const rows = await edge.query("SELECT type, user_id FROM events WHERE message_id = 'basic-1'");
    assert.deepEqual(rows, [{ type: "track", user_id: "user-basic" }]);
  });

  test("refuses missing and unknown write keys with 401 and stores nothing", async () => {
    const event = { type: "track", event: "x", userId: "u", messageId: "nokey-1" };
    const missing = await post(`${edge.url}/v1/batch`, { batch: [event] });
    assert.equal(missing.status, 401);
    assert.equal(missing.json.code, "missing_write_key");
    const unknown = await post(`${edge.url}/v1/batch`, { batch: [event] }, basic("wrong"));
    assert.equal(unknown.status, 401);
    assert.equal(unknown.json.code, "invalid_write_key");
    assert.deepEqual(await edge.query("SELECT 1 FROM events WHERE message_id = 'nokey-1'"), []);
  });

  test("answers malformed and oversized requests with JSON error codes", async () => {
    const bad = await post(`${edge.url}/v1/batch`, "{not json", basic(WRITE_KEY));
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.json, { code: "invalid_json", message: "request body is not valid JSON" });
    const huge = await post(`${edge.url}/v1/batch`, JSON.stringify({ batch: [], pad: "x".repeat(600 * 1024) }), basic(WRITE_KEY));
    assert.equal(huge.status, 413);
    assert.equal(huge.json.code, "request_too_large");
    const unknownRoute = await post(`${edge.url}/v1/nope`, {});
    assert.equal(unknownRoute.status, 404);
    assert.equal(unknownRoute.json.code, "not_found");
    const wrongMethod = await fetch(`${edge.url}/v1/batch`);
    assert.equal(wrongMethod.status, 405);
  });

  test("serves the demo site and the SDK package from the same origin", async () => {
    const html = await fetch(`${edge.url}/`);
    assert.equal(html.status, 200);
    assert.match(await html.text(), /Seam Shop/);
    const entry = await fetch(`${edge.url}/vendor/seam-sdk/index.js`);
    assert.equal(entry.status, 200);
    const wasm = await fetch(`${edge.url}/vendor/seam-sdk/dist/seam_sdk_bg.wasm`);
    assert.equal(wasm.headers.get("content-type"), "application/wasm");
  });
});
