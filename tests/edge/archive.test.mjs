// The raw event archive: every stored event reaches R2 exactly once as gzipped NDJSON,
// partitioned by day and source, and DuckDB reads the files as they are.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { admin, archiveObjects, post, root, secret, startEdge, WRITE_KEY } from "../support/edge.mjs";

const run = `${process.pid}`;
let n = 0;
const mid = () => `ar-${run}-${++n}`;
const send = (edge, batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
const SERVER_KEY = secret("SERVER_WRITE_KEY");
const cron = (edge, schedule) => fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent(schedule)}`);

const archived = archiveObjects;

/** Waits until the archive holds every message ID in `ids`; returns its objects. */
async function archivedAll(edge, ids, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const objects = await archived(edge);
    const held = new Set(objects.flatMap((o) => o.lines.map((l) => l.message_id)));
    if (ids.every((id) => held.has(id))) return objects;
    if (Date.now() > deadline) throw new Error(`archive holds ${ids.filter((id) => held.has(id)).length} of ${ids.length}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("the raw event archive", () => {
  let edge;
  before(async () => {
    // Claims settle and erasures' rewrites run after two seconds instead of twenty minutes.
    edge = await startEdge("archive", { vars: { ARCHIVE_SETTLE_SECONDS: "2" } });
  });
  after(async () => {
    await edge?.stop();
  });

  test("every stored event is archived once, none of the rejected; DuckDB reads the files", async () => {
    const orders = [19.99, 250, 5.5, 1000.01].map((revenue, i) => ({
      type: "track", event: "Order Completed", anonymousId: `buyer-${run}-${i}`, messageId: mid(),
      properties: { order_id: `o-${run}-${i}`, revenue, currency: "EUR" },
    }));
    const views = Array.from({ length: 6 }, (_, i) => ({
      type: "track", event: "Product Viewed", anonymousId: `buyer-${run}-${i % 4}`, messageId: mid(), properties: { product_id: `p${i}` },
    }));
    const first = await send(edge, [...orders.slice(0, 2), ...views.slice(0, 3), { type: "track", anonymousId: `bad-${run}`, messageId: `rejected-${run}` }]);
    assert.deepEqual(first.json.results.map((r) => r.status), ["accepted", "accepted", "accepted", "accepted", "accepted", "rejected"]);
    // A retry of the same events (the client never saw the answer) and new ones beside them.
    const second = await send(edge, [...orders, ...views]);
    assert.equal(second.status, 200, second.text);
    const page = await send(edge, [{ type: "page", name: "Home", anonymousId: `buyer-${run}-0`, messageId: mid(), properties: { path: "/" } }]);
    assert.equal(page.status, 200);

    // What the collector stored besides (e.g. Segment Entered for a big order) is archived too.
    const stored = (await edge.query("SELECT message_id FROM events")).map((r) => r.message_id);
    const sent = [...orders, ...views].map((e) => e.messageId);
    assert.ok(sent.every((id) => stored.includes(id)) && !stored.includes(`rejected-${run}`), stored.join());
    const objects = await archivedAll(edge, stored);
    const lines = objects.flatMap((o) => o.lines);
    assert.deepEqual(lines.map((l) => l.message_id).sort(), [...stored].sort(), "each stored event once, and nothing else");
    const today = new Date().toISOString().slice(0, 10);
    for (const o of objects) assert.match(o.key, new RegExp(`^events/dt=${today}/source=demo-site/[0-9a-f]{20}\\.ndjson\\.gz$`));
    const order = lines.find((l) => l.message_id === orders[3].messageId);
    assert.deepEqual(
      [order.type, order.event, order.anonymous_id, order.source_id, order.body.properties.revenue],
      ["track", "Order Completed", `buyer-${run}-3`, "demo-site", 1000.01],
    );
    assert.ok(Date.parse(order.received_at) && Date.parse(order.timestamp), "times in ISO 8601");
    const unmarked = async () => (await edge.query("SELECT COUNT(*) AS n FROM events WHERE archived_at IS NULL"))[0].n;
    for (let i = 0; i < 40 && (await unmarked()) > 0; i++) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await unmarked(), 0, "every stored event is marked archived");
    const claims = await edge.query("SELECT DISTINCT archive_object AS claim FROM events");
    assert.deepEqual(claims.map((c) => c.claim).sort(), objects.map((o) => o.key.split("/").pop().replace(".ndjson.gz", "")).sort(), "one object per claim, named by it");

    // DuckDB reads the files as a warehouse would, partitions from the paths.
    const dir = join(root, "tests/.tmp", `archive-files-${run}`);
    rmSync(dir, { recursive: true, force: true });
    for (const o of objects) {
      const path = join(dir, o.key);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, Buffer.from(await (await edge.archive.get(o.key)).arrayBuffer()));
    }
    const duck = spawnSync("python3", ["-c", `
import duckdb, json, sys
archive = """read_json('${dir}/events/**/*.ndjson.gz', format = 'newline_delimited', hive_partitioning = true, columns = {
    source_id: 'VARCHAR', message_id: 'VARCHAR', type: 'VARCHAR', event: 'VARCHAR', anonymous_id: 'VARCHAR',
    user_id: 'VARCHAR', timestamp: 'TIMESTAMP', received_at: 'TIMESTAMP', body: 'JSON'})"""
totals = """SELECT count(*), sum(CAST(json_extract(body, '$.properties.revenue') AS DOUBLE)) FILTER (WHERE event = 'Order Completed'),
         list(DISTINCT source) FROM {}"""
rows, revenue, sources = duckdb.sql(totals.format(archive)).fetchone()
# docs/archive.md: a day's partition converted to Parquet, for a warehouse that wants it.
duckdb.sql(f"COPY (SELECT * FROM {archive}) TO '${dir}/events.parquet' (FORMAT parquet, COMPRESSION zstd)")
parquet = duckdb.sql(totals.format("read_parquet('${dir}/events.parquet')")).fetchone()
print(json.dumps({"rows": rows, "revenue": revenue, "sources": sources, "parquet": parquet}))
`], { env: { ...process.env, PYTHONPATH: join(root, ".python") }, encoding: "utf8" });
    assert.equal(duck.status, 0, duck.stderr);
    const read = JSON.parse(duck.stdout);
    assert.equal(read.rows, stored.length);
    assert.equal(Math.round(read.revenue * 100), Math.round(orders.reduce((s, o) => s + o.properties.revenue, 0) * 100));
    assert.deepEqual(read.sources, ["demo-site"]);
    assert.deepEqual(read.parquet, [read.rows, read.revenue, read.sources], "the Parquet copy holds the same");
    rmSync(dir, { recursive: true, force: true });
  });

  test("a quiet shop's requests share an object: the consumer merges its batch's messages", async () => {
    // Requests further apart than the isolate's quarter-second gathering (and the ingest
    // consumer's one-second batches) reach the archive queue as a message each, within the
    // archive consumer's five-second batch.
    const ids = [];
    for (let i = 0; i < 2; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1200));
      const event = { type: "track", event: "Product Viewed", anonymousId: `quiet-${run}`, messageId: mid(), properties: { product_id: `q${i}` } };
      ids.push(event.messageId);
      assert.equal((await send(edge, [event])).status, 200);
    }
    const objects = await archivedAll(edge, ids);
    const holding = objects.filter((o) => o.lines.some((l) => ids.includes(l.message_id)));
    assert.equal(holding.length, 1, `one object, not one per request: ${holding.map((o) => o.key).join(", ")}`);
  });

  test("export: the archive's lines page by page, resumable by cursor; profiles paged; only with export:read", async () => {
    const objects = await archived(edge);
    const expected = objects.flatMap((o) => o.lines.map((l) => l.message_id)).sort();
    const today = new Date().toISOString().slice(0, 10);
    // One object a page: each answer names the next, the last names none.
    const got = [];
    let cursor = "";
    let pages = 0;
    for (;;) {
      const r = await admin(edge, `/v1/admin/export/events?from=${today}&to=${today}&limit=1&cursor=${encodeURIComponent(cursor)}`);
      assert.equal(r.status, 200, await r.clone().text());
      assert.match(r.headers.get("content-type"), /application\/x-ndjson/);
      const text = await r.text();
      got.push(...text.split("\n").filter(Boolean).map((l) => JSON.parse(l).message_id));
      pages += 1;
      cursor = r.headers.get("x-seam-next-cursor");
      if (!cursor) break;
      assert.ok(pages <= objects.length + 1, "the pages end");
    }
    assert.ok(pages >= objects.length, `${pages} pages for ${objects.length} objects`);
    assert.deepEqual(got.sort(), expected, "every archived event once");
    // Resuming from a page's cursor gives what followed it, again.
    const all = await (await admin(edge, `/v1/admin/export/events?from=${today}&to=${today}`)).text();
    assert.deepEqual(all.split("\n").filter(Boolean).map((l) => JSON.parse(l).message_id).sort(), expected);
    const other = await (await admin(edge, `/v1/admin/export/events?from=${today}&to=${today}&source=nobody`)).text();
    assert.equal(other, "", "another source's export is empty");

    const bad = await admin(edge, `/v1/admin/export/events?from=${today}&to=2001-01-01`);
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).code, "invalid_range");
    assert.equal((await (await admin(edge, `/v1/admin/export/events?from=${today}&to=${today}&cursor=elsewhere`)).json()).code, "invalid_cursor");

    // Profiles, two a page, each once.
    const people = new Set((await edge.query("SELECT DISTINCT profile_id FROM identities")).map((r) => r.profile_id));
    const seen = [];
    cursor = "";
    do {
      const r = await admin(edge, `/v1/admin/export/profiles?limit=2&cursor=${encodeURIComponent(cursor)}`);
      assert.equal(r.status, 200);
      for (const line of (await r.text()).split("\n").filter(Boolean)) {
        const p = JSON.parse(line);
        assert.ok(Array.isArray(p.identifiers) && p.identifiers.length > 0 && p.computedTraits, line);
        seen.push(p.profileId);
      }
      cursor = r.headers.get("x-seam-next-cursor");
    } while (cursor);
    assert.deepEqual([...seen].sort(), [...people].sort());
    assert.equal(new Set(seen).size, seen.length);

    // A key without export:read is refused; one with it gets in; both exports are audited.
    const issue = async (label, scopes) => (await (await admin(edge, "/v1/admin/keys", { method: "POST", body: { label: `${label}-${run}`, scopes } })).json()).key;
    const reader = await issue("reader", ["profiles:read"]);
    assert.equal((await admin(edge, `/v1/admin/export/events?from=${today}&to=${today}`, { key: reader })).status, 403);
    const loader = await issue("loader", ["export:read"]);
    assert.equal((await admin(edge, "/v1/admin/export/profiles?limit=1", { key: loader })).status, 200);
    const audit = await edge.query("SELECT action FROM privacy_audit WHERE action LIKE 'export_%'");
    assert.ok(audit.some((a) => a.action === "export_events") && audit.some((a) => a.action === "export_profiles"));
  });

  test("the sweep archives what a lost message or an unfinished claim left, each event once", async () => {
    const keysBefore = (await archived(edge)).map((o) => o.key);
    // Stored twenty minutes ago, its queue message lost (an isolate gone before sending it).
    const lost = `lost-${run}`;
    const at = Date.now() - 20 * 60_000;
    await edge.exec(
      "INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body) VALUES ('demo-site', ?, 'track', 'Lost', 'anon-lost', NULL, ?, ?, ?)",
      lost, at, at, JSON.stringify({ type: "track", event: "Lost", messageId: lost, anonymousId: "anon-lost" }),
    );
    // Two sweeps before the consumer runs: the key is queued twice, and claimed once.
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    let objects = await archivedAll(edge, [lost]);
    const once = (objects) => {
      const ids = objects.flatMap((o) => o.lines.map((l) => l.message_id));
      assert.equal(new Set(ids).size, ids.length, "no event twice");
      return ids;
    };
    // Gives up quietly after 20 s: the assertions after it say what is still missing.
    const marked = async (column, value) => {
      for (let i = 0; i < 80; i++) {
        const [{ n }] = await edge.query(`SELECT COUNT(*) AS n FROM events WHERE ${column} = ? AND archived_at IS NULL`, value);
        if (n === 0) return;
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    assert.equal(once(objects).filter((id) => id === lost).length, 1);
    assert.equal(objects.filter((o) => !keysBefore.includes(o.key)).length, 1, "one new object");

    // A consumer that wrote its objects but could not mark them: the sweep has the claim written
    // again, which replaces its objects instead of adding to them.
    const [{ claim }] = await edge.query("SELECT archive_object AS claim FROM events WHERE message_id = ?", lost);
    await edge.exec("UPDATE events SET archived_at = NULL WHERE archive_object = ?", claim);
    await new Promise((r) => setTimeout(r, 2100));
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    await marked("archive_object", claim);
    const after = await archived(edge);
    assert.deepEqual(after.map((o) => o.key).sort(), objects.map((o) => o.key).sort(), "the same objects");
    once(after);

    // Replaced after its dedup window (the insert's upsert moves received_at and clears the
    // claim): its old object is noted, and the sweep leaves one line for it, the new one.
    const [old] = await edge.query("SELECT archive_object AS claim, received_at FROM events WHERE message_id = ?", lost);
    await edge.exec("UPDATE events SET received_at = received_at + 1000, archive_object = NULL, archived_at = NULL WHERE message_id = ?", lost);
    const noted = await edge.query("SELECT claim, day FROM archive_rewrites WHERE claim = ?", old.claim);
    assert.deepEqual(noted, [{ claim: old.claim, day: Math.floor(old.received_at / 86_400_000) }]);
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    await marked("message_id", lost);
    const replaced = await archived(edge);
    assert.equal(once(replaced).filter((id) => id === lost).length, 1);
    const line = replaced.flatMap((o) => o.lines).find((l) => l.message_id === lost);
    assert.equal(Date.parse(line.received_at), old.received_at + 1000, "the new version");
  });

  test("an erasure reaches the archive: the person's lines and their email in others' lines go", async () => {
    const email = `erased-${run}@shop.example`;
    const [mine, theirs] = [`erased-${run}`, `bystander-${run}`];
    // The shop's server knows the person; someone else's browser claims their email.
    await post(`${edge.url}/v1/batch`, { writeKey: SERVER_KEY, batch: [
      { type: "identify", anonymousId: mine, userId: `u-${mine}`, traits: { email }, messageId: mid() },
      { type: "track", event: "Order Completed", anonymousId: mine, messageId: mid(), properties: { revenue: 9 } },
    ] });
    await send(edge, [{ type: "track", event: "Claimed", anonymousId: theirs, context: { traits: { email } }, messageId: mid() }]);
    const ids = (await edge.query("SELECT message_id FROM events WHERE anonymous_id IN (?, ?)", mine, theirs)).map((r) => r.message_id);
    await archivedAll(edge, ids);
    const holds = async (text) => (await archived(edge)).some((o) => o.lines.some((l) => JSON.stringify(l).includes(text)));
    assert.ok(await holds(email));

    const erased = await admin(edge, "/v1/privacy/delete", { method: "POST", body: { type: "email", value: email } });
    assert.equal(erased.status, 200, await erased.clone().text());
    assert.ok((await erased.json()).deleted.archiveObjects >= 1, "the receipt counts the objects to rebuild");
    // Rebuilt by the sweep once the claims have settled (two seconds here, twenty minutes live).
    await new Promise((r) => setTimeout(r, 2100));
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    const objects = await archived(edge);
    const lines = objects.flatMap((o) => o.lines);
    assert.ok(!lines.some((l) => l.anonymous_id === mine), "the person's events are gone");
    assert.ok(!JSON.stringify(lines).includes(email), "and their email in others' events");
    const bystander = lines.find((l) => l.anonymous_id === theirs);
    assert.equal(bystander?.event, "Claimed", "the bystander's event stays, redacted");
    const [{ n }] = await edge.query("SELECT COUNT(*) AS n FROM archive_rewrites");
    assert.equal(n, 0, "every rewrite done");
  });

  test("retention deletes whole days past the event retention, and keeps an event D1 has not archived", async () => {
    const old = new Date(Date.now() - 100 * 86_400_000).toISOString().slice(0, 10);
    const oldKey = `events/dt=${old}/source=demo-site/0000000000000000.ndjson.gz`;
    const gz = gzipSync('{"message_id":"ancient"}\n');
    await edge.archive.put(oldKey, gz.buffer.slice(gz.byteOffset, gz.byteOffset + gz.byteLength));
    const at = Date.now() - 100 * 86_400_000;
    const stuck = `stuck-${run}`;
    await edge.exec(
      "INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body) VALUES ('demo-site', ?, 'track', 'Stuck', 'anon-stuck', NULL, ?, ?, '{}')",
      stuck, at, at,
    );
    const before = (await archived(edge)).length;
    const retention = await cron(edge, "17 3 * * *");
    assert.equal(retention.status, 200);
    const keys = (await archived(edge)).map((o) => o.key);
    assert.ok(!keys.includes(oldKey), "the old day's object is gone");
    assert.equal(keys.length, before - 1, "nothing newer went");
    assert.equal((await edge.query("SELECT COUNT(*) AS n FROM events WHERE message_id = ?", stuck))[0].n, 1, "not archived yet: kept");
    await edge.exec("UPDATE events SET archive_object = 'x', archived_at = ? WHERE message_id = ?", Date.now(), stuck);
    assert.equal((await cron(edge, "17 3 * * *")).status, 200);
    assert.equal((await edge.query("SELECT COUNT(*) AS n FROM events WHERE message_id = ?", stuck))[0].n, 0, "archived: purged");
  });
});
