// The raw event archive: every stored event reaches R2 exactly once as gzipped NDJSON,
// partitioned by day and source, and DuckDB reads the files as they are.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { post, root, startEdge, WRITE_KEY } from "../support/edge.mjs";

const run = `${process.pid}`;
let n = 0;
const mid = () => `ar-${run}-${++n}`;
const send = (edge, batch) => post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch });
const cron = (edge, schedule) => fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent(schedule)}`);

/** Every object under `events/` with its lines parsed. */
async function archived(edge) {
  const objects = [];
  let cursor;
  do {
    const page = await edge.archive.list({ prefix: "events/", cursor });
    for (const o of page.objects) {
      const body = Buffer.from(await (await edge.archive.get(o.key)).arrayBuffer());
      objects.push({ key: o.key, lines: gunzipSync(body).toString("utf8").trim().split("\n").map((l) => JSON.parse(l)) });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return objects;
}

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
    edge = await startEdge("archive");
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
    const [{ n: unmarked }] = await edge.query("SELECT COUNT(*) AS n FROM events WHERE archived_at IS NULL");
    assert.equal(unmarked, 0, "every stored event is marked archived");

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
rows, revenue, sources = duckdb.sql("""
  SELECT count(*), sum(CAST(json_extract(body, '$.properties.revenue') AS DOUBLE)) FILTER (WHERE event = 'Order Completed'),
         list(DISTINCT source)
  FROM read_json('${dir}/events/**/*.ndjson.gz', format = 'newline_delimited', hive_partitioning = true, columns = {
    source_id: 'VARCHAR', message_id: 'VARCHAR', type: 'VARCHAR', event: 'VARCHAR', anonymous_id: 'VARCHAR',
    user_id: 'VARCHAR', timestamp: 'TIMESTAMP', received_at: 'TIMESTAMP', body: 'JSON'})
""").fetchone()
print(json.dumps({"rows": rows, "revenue": revenue, "sources": sources}))
`], { env: { ...process.env, PYTHONPATH: join(root, ".python") }, encoding: "utf8" });
    assert.equal(duck.status, 0, duck.stderr);
    const read = JSON.parse(duck.stdout);
    assert.equal(read.rows, stored.length);
    assert.equal(Math.round(read.revenue * 100), Math.round(orders.reduce((s, o) => s + o.properties.revenue, 0) * 100));
    assert.deepEqual(read.sources, ["demo-site"]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("an event whose message was lost is archived by the sweep; one already archived is not written again", async () => {
    const before = await archived(edge);
    const keys = before.map((o) => o.key).sort();
    // Stored twenty minutes ago, its queue message lost (an isolate gone before sending it).
    const lost = `lost-${run}`;
    const at = Date.now() - 20 * 60_000;
    await edge.exec(
      "INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body) VALUES ('demo-site', ?, 'track', 'Lost', 'anon-lost', NULL, ?, ?, ?)",
      lost, at, at, JSON.stringify({ type: "track", event: "Lost", messageId: lost, anonymousId: "anon-lost" }),
    );
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    const objects = await archivedAll(edge, [lost]);
    const lines = objects.flatMap((o) => o.lines.map((l) => l.message_id));
    assert.equal(lines.filter((id) => id === lost).length, 1);
    assert.equal(new Set(lines).size, lines.length, "no event twice");
    assert.deepEqual(objects.map((o) => o.key).filter((k) => !keys.includes(k)).length, 1, "one new object");

    // A second sweep finds nothing to do.
    assert.equal((await cron(edge, "*/5 * * * *")).status, 200);
    await new Promise((r) => setTimeout(r, 6000));
    assert.equal((await archived(edge)).length, objects.length);
  });
});
