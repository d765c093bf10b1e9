// Hostile input against the running Worker (workerd, real local D1 + KV): each attack gets the
// right status and code, nothing crashes, nothing leaks, and nothing else is lost.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { post, secret, startEdge, WRITE_KEY } from "../support/edge.mjs";

const ROOT_KEY = secret("ADMIN_KEY");
const OTHER_KEY = "hostile_other_source_key";
const run = `${process.pid}`;
let n = 0;
const mid = () => `h-${run}-${++n}`;
const ok = (extra = {}) => ({ type: "track", messageId: mid(), anonymousId: `anon-${run}`, event: "Sibling", ...extra });

describe("hostile input", () => {
  let edge;
  const send = (batch, key = WRITE_KEY) => post(`${edge.url}/v1/batch`, { writeKey: key, batch });
  const stored = async (id, source = "demo-site") =>
    (await edge.query("SELECT count(*) AS n FROM events WHERE source_id = ? AND message_id = ?", source, id))[0].n;
  const healthy = async () => assert.equal((await fetch(`${edge.url}/health`)).status, 200, "the Worker still serves");

  before(async () => {
    edge = await startEdge("hostile", {
      sources: {
        // Stores before it answers, so answers can name duplicates and suppressions; the other
        // source queues, as browser sources do by default.
        [WRITE_KEY]: { id: "demo-site", identity: "trust-browser", origins: ["http://localhost:8787"], ingest: "direct" },
        [OTHER_KEY]: { id: "other-source" },
      },
    });
  });
  after(async () => {
    await edge?.stop();
  });

  test("oversize bodies, declared or streamed, are refused with 413 and store nothing", async () => {
    const sibling = ok();
    const big = JSON.stringify({ writeKey: WRITE_KEY, batch: [sibling, ok({ properties: { blob: "x".repeat(600_000) } })] });
    const declared = await post(`${edge.url}/v1/batch`, big);
    assert.deepEqual([declared.status, declared.json.code], [413, "request_too_large"]);
    // Chunked: no Content-Length, so the limit applies while reading.
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const streamed = await fetch(`${edge.url}/v1/batch`, { method: "POST", body, duplex: "half", headers: { "content-type": "application/json" } });
    assert.equal(streamed.status, 413);
    assert.equal((await streamed.json()).code, "request_too_large");
    assert.equal(await stored(sibling.messageId), 0);
    await healthy();
  });

  test("slow and truncated bodies neither crash the Worker nor store partial events", async () => {
    const partial = ok();
    const json = JSON.stringify({ writeKey: WRITE_KEY, batch: [partial] });
    // Announce more bytes than are sent, then hang up.
    await new Promise((resolve) => {
      const { port } = new URL(edge.url);
      const socket = connect(Number(port), "127.0.0.1", () => {
        socket.write(`POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${json.length + 500}\r\n\r\n`);
        socket.write(json);
        setTimeout(() => socket.destroy(), 300);
      });
      socket.on("close", resolve);
      socket.on("error", resolve);
    });
    assert.equal(await stored(partial.messageId), 0, "a truncated request stores nothing");
    // A slow but complete body (10 chunks, 50 ms apart) is read in full.
    const slow = ok();
    const bytes = new TextEncoder().encode(JSON.stringify({ writeKey: WRITE_KEY, batch: [slow] }));
    const step = Math.ceil(bytes.length / 10);
    const trickle = new ReadableStream({
      async start(c) {
        for (let i = 0; i < bytes.length; i += step) {
          c.enqueue(bytes.slice(i, i + step));
          await new Promise((r) => setTimeout(r, 50));
        }
        c.close();
      },
    });
    const r = await fetch(`${edge.url}/v1/batch`, { method: "POST", body: trickle, duplex: "half" });
    assert.equal(r.status, 200);
    assert.equal(await stored(slow.messageId), 1);
    await healthy();
  });

  test("a deeply nested event is rejected alone; its siblings are stored", async () => {
    const [before, after] = [ok(), ok()];
    const deep = `{"type":"track","messageId":"deep-${run}","anonymousId":"a","event":"Deep","properties":${"[".repeat(5000)}${"]".repeat(5000)}}`;
    const body = `{"writeKey":"${WRITE_KEY}","batch":[${JSON.stringify(before)},${deep},${JSON.stringify(after)}]}`;
    const r = await post(`${edge.url}/v1/batch`, body);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "rejected", "accepted"]);
    assert.equal(r.json.results[1].code, "invalid_event");
    assert.equal(await stored(before.messageId), 1);
    assert.equal(await stored(after.messageId), 1);
    await healthy();
  });

  test("10k properties make one event too large; siblings are stored", async () => {
    const properties = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`p${i}`, i]));
    const [sibling, huge] = [ok(), ok({ properties })];
    const r = await send([sibling, huge]);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.results.map((x) => [x.status, x.code]), [["accepted", undefined], ["rejected", "event_too_large"]]);
    assert.equal(await stored(sibling.messageId), 1);
  });

  test("non-UTF-8 bodies get 400 invalid_json; lone surrogates in strings are stored safely", async () => {
    const bad = Buffer.concat([Buffer.from(`{"writeKey":"${WRITE_KEY}","batch":[{"type":"track","anonymousId":"`), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(`","event":"x"}]}`)]);
    const r = await post(`${edge.url}/v1/batch`, new Uint8Array(bad));
    assert.deepEqual([r.status, r.json.code], [400, "invalid_json"]);
    const escaped = ok({ properties: { s: "\ud800" } });
    const s = await send([escaped]);
    assert.equal(s.status, 200);
    await healthy();
  });

  test("prototype-pollution keys are plain data, stored verbatim and harmless", async () => {
    const event = `{"type":"identify","messageId":"proto-${run}","anonymousId":"proto-${run}","traits":{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}},"name":"P"}}`;
    const r = await post(`${edge.url}/v1/batch`, `{"writeKey":"${WRITE_KEY}","batch":[${event}]}`);
    assert.equal(r.json.results[0].status, "accepted");
    const [row] = await edge.query("SELECT body FROM events WHERE message_id = ?", `proto-${run}`);
    assert.match(row.body, /"__proto__":\{"admin":true\}/);
    const profile = await fetch(`${edge.url}/v1/profiles/lookup?type=anonymous_id&value=proto-${run}`, { headers: { authorization: `Bearer ${ROOT_KEY}` } });
    const text = await profile.text();
    assert.equal(profile.status, 200);
    assert.equal(JSON.parse(text).traits.name, "P");
    assert.equal({}.admin, undefined);
  });

  test("script injection in traits comes back only as inert JSON", async () => {
    const payload = `<script>alert(1)</script><img src=x onerror=alert(2)>`;
    const anon = `xss-${run}`;
    await send([{ type: "identify", messageId: mid(), anonymousId: anon, traits: { name: payload } }]);
    const r = await fetch(`${edge.url}/v1/profiles/lookup?type=anonymous_id&value=${anon}`, { headers: { authorization: `Bearer ${ROOT_KEY}` } });
    assert.match(r.headers.get("content-type"), /^application\/json/);
    assert.equal((await r.json()).traits.name, payload, "stored faithfully, served as data");
  });

  test("SQL metacharacters in every field are data, never SQL", async () => {
    const evil = `'; DROP TABLE events; --"\\`;
    const event = { type: "identify", messageId: `${evil}-${run}`, anonymousId: `${evil}a`, userId: `${evil}u`, traits: { [evil]: evil, email: `x'--@example.com` }, context: { [evil]: evil, page: { url: evil } } };
    const r = await send([event, { ...ok(), event: evil }]);
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "accepted"]);
    assert.equal(await stored(event.messageId), 1);
    const [row] = await edge.query("SELECT user_id FROM events WHERE message_id = ?", event.messageId);
    assert.equal(row.user_id, `${evil}u`);
    const lookup = await fetch(`${edge.url}/v1/profiles/lookup?type=user_id&value=${encodeURIComponent(`${evil}u`)}`, { headers: { authorization: `Bearer ${ROOT_KEY}` } });
    assert.equal(lookup.status, 200);
    assert.equal((await lookup.json()).traits[evil], evil);
    const del = await fetch(`${edge.url}/v1/privacy/export?type=email&value=${encodeURIComponent("x'--@example.com")}`, { headers: { authorization: `Bearer ${ROOT_KEY}` } });
    assert.equal((await del.json()).data.found, true);
    assert.ok((await edge.query("SELECT count(*) AS n FROM events"))[0].n > 0, "the table is intact");
  });

  test("a forged messageId collision across sources stays isolated", async () => {
    const shared = `collide-${run}`;
    const mine = await send([{ ...ok(), messageId: shared, event: "Mine" }]);
    const theirs = await send([{ ...ok(), messageId: shared, event: "Theirs" }], OTHER_KEY);
    assert.equal(mine.json.results[0].status, "accepted");
    assert.equal(theirs.json.results[0].status, "accepted", "another source's ID is not a duplicate");
    const rows = await edge.query("SELECT source_id, name FROM events WHERE message_id = ? ORDER BY source_id", shared);
    assert.deepEqual(rows.map((r) => [r.source_id, r.name]), [["demo-site", "Mine"], ["other-source", "Theirs"]]);
    // Queued: answered before the consumer finds the duplicate, and stored once.
    const replay = await send([{ ...ok(), messageId: shared, event: "Overwrite" }], OTHER_KEY);
    assert.equal(replay.json.results[0].status, "accepted");
    const after = await edge.query("SELECT source_id, name FROM events WHERE message_id = ? ORDER BY source_id", shared);
    assert.deepEqual(after.map((r) => [r.source_id, r.name]), [["demo-site", "Mine"], ["other-source", "Theirs"]]);
    const mineAgain = await send([{ ...ok(), messageId: shared, event: "Overwrite" }]);
    assert.equal(mineAgain.json.results[0].status, "duplicate");
  });

  test("replaying a deleted person's events is suppressed, whatever identifier carries them", async () => {
    const victim = { anonymousId: `gone-${run}`, userId: `gone-user-${run}` };
    const original = [{ type: "identify", messageId: mid(), ...victim, traits: { email: `gone-${run}@example.com` } }, { type: "track", messageId: mid(), ...victim, event: "Bought" }];
    await send(original);
    const del = await fetch(`${edge.url}/v1/privacy/delete`, { method: "POST", headers: { authorization: `Bearer ${ROOT_KEY}` }, body: JSON.stringify({ type: "user_id", value: victim.userId }) });
    assert.equal(del.status, 200);
    const replay = await send(original);
    assert.deepEqual(replay.json.results.map((r) => r.code), ["suppressed", "suppressed"]);
    const byEmail = await send([{ type: "identify", messageId: mid(), anonymousId: `new-device-${run}`, traits: { email: `GONE-${run}@example.com` } }]);
    assert.equal(byEmail.json.results[0].code, "suppressed");
    // Through a queued source the answer comes first, and the consumer stores none of them.
    const queued = await send(original.map((e) => ({ ...e, messageId: mid() })), OTHER_KEY);
    assert.equal(queued.json.deferred, true);
    assert.deepEqual(queued.json.results.map((r) => r.status), ["accepted", "accepted"], "on the queue");
    const refused = await edge.query("SELECT count(*) AS n FROM rejected_events WHERE source_id = 'other-source' AND code = 'suppressed'");
    assert.equal(refused[0].n, 2, "the consumer's refusals reach the live view");
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE anonymous_id IN (?, ?)", victim.anonymousId, `new-device-${run}`))[0].n, 0);
  });
});
