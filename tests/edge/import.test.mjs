// CSV import: orders from a shop system and contacts from a CRM, streamed into R2 and imported a
// chunk at a time by the import queue; bad rows are named by row and column and never stop the
// good ones; uploading the same file again stores nothing twice.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { admin, startEdge } from "../support/edge.mjs";

const run = `${process.pid}`;

const orders = {
  type: "track", event: "Order Completed", key: "order_no", userId: "customer", timestamp: "placed",
  properties: { order_id: "order_no", revenue: { column: "total", type: "number" }, note: "note" },
};

async function upload(edge, csv, mapping, query = "") {
  const r = await admin(edge, `/v1/admin/import${query}`, {
    method: "POST",
    headers: { "content-type": "text/csv", "x-seam-mapping": JSON.stringify(mapping) },
    body: csv,
  });
  return { status: r.status, json: await r.json() };
}

async function finished(edge, id, ms = 120_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await admin(edge, `/v1/admin/import/${id}`);
    const progress = await r.json();
    if (progress.status === "done") return progress;
    if (Date.now() > deadline) throw new Error(`import not done: ${JSON.stringify(progress)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

describe("CSV import", () => {
  let edge;
  before(async () => {
    edge = await startEdge("import");
  });
  after(async () => {
    await edge?.stop();
  });

  test("orders: good rows stored across chunks, bad rows named by row and column, a re-upload stores nothing twice", async () => {
    // 2,400 orders of 40 customers (about 300 KB: two chunks), every 100th with a total that
    // is not a number, plus rows that break in other ways.
    const lines = ["order_no,customer,total,placed,note"];
    const placed = new Date(Date.now() - 3_600_000).toISOString();
    let revenue = 0;
    for (let i = 0; i < 2400; i++) {
      const bad = i % 100 === 99;
      const total = (10 + (i % 50)).toFixed(2);
      if (!bad) revenue += Number(total);
      lines.push(`O-${run}-${i},cust-${run}-${i % 40},${bad ? "n/a" : total},${placed},"gift wrap, ""red"" ribbon\nsecond line ${"x".repeat(40)}"`);
    }
    lines.push(`O-${run}-short,cust-${run}-1,12`); // too few fields
    lines.push(`O-${run}-nobody,,12.00,${placed},x`); // no customer
    lines.push(`O-${run}-bad-time,cust-${run}-2,12.00,yesterday-ish,x`); // refused by ingestion
    const csv = lines.join("\r\n") + "\r\n";
    assert.ok(csv.length > 256 * 1024, `${csv.length} bytes: more than one chunk`);

    const started = await upload(edge, csv, orders);
    assert.equal(started.status, 202, JSON.stringify(started.json));
    assert.equal(started.json.status, "running");
    const done = await finished(edge, started.json.id);
    assert.equal(done.bytesRead, done.bytes);
    assert.equal(done.rows, 2403);
    assert.equal(done.accepted, 2376);
    assert.equal(done.rejected, 27);
    const byRow = Object.fromEntries(done.errors.map((e) => [e.row, e]));
    assert.deepEqual([byRow[101].column, byRow[101].code], ["total", "not_a_number"], "row 101 is the 100th order");
    assert.deepEqual([byRow[2402].column, byRow[2402].code], ["-", "wrong_column_count"]);
    assert.deepEqual([byRow[2403].column, byRow[2403].code], ["customer", "missing_id"]);
    assert.equal(byRow[2404].code, "invalid_timestamp");

    const [stored] = await edge.query(
      "SELECT COUNT(*) AS n, SUM(json_extract(body, '$.properties.revenue')) AS revenue FROM events WHERE source_id = 'server' AND name = 'Order Completed' AND user_id LIKE ?",
      `cust-${run}-%`,
    );
    assert.equal(stored.n, 2376);
    assert.equal(Math.round(stored.revenue * 100), Math.round(revenue * 100));
    const [sample] = await edge.query("SELECT body FROM events WHERE message_id = (SELECT message_id FROM events WHERE json_extract(body, '$.properties.order_id') = ?)", `O-${run}-7`);
    assert.equal(JSON.parse(sample.body).properties.note, `gift wrap, "red" ribbon\nsecond line ${"x".repeat(40)}`);

    // The same file again: every good row is a duplicate.
    const again = await upload(edge, csv, orders);
    const second = await finished(edge, again.json.id);
    assert.deepEqual([second.accepted, second.duplicates, second.rejected], [0, 2376, 27]);
    const [count] = await edge.query("SELECT COUNT(*) AS n FROM events WHERE source_id = 'server' AND name = 'Order Completed' AND user_id LIKE ?", `cust-${run}-%`);
    assert.equal(count.n, 2376, "nothing stored twice");
    const audit = await edge.query("SELECT COUNT(*) AS n FROM privacy_audit WHERE action = 'import'");
    assert.equal(audit[0].n, 2);
  });

  test("contacts from a CRM become identified profiles with their traits", async () => {
    const csv = [
      "crm_id,Email,First name,Newsletter",
      `crm-${run}-1,ANN-${run}@Example.com,Ann,yes`,
      `crm-${run}-2,bo-${run}@example.com,Bo,no`,
    ].join("\n");
    const mapping = {
      type: "identify", key: "crm_id", userId: "crm_id",
      traits: { email: "Email", first_name: "First name", newsletter: { column: "Newsletter", type: "boolean" } },
    };
    const started = await upload(edge, csv, mapping);
    assert.equal(started.status, 202, JSON.stringify(started.json));
    const done = await finished(edge, started.json.id);
    assert.deepEqual([done.accepted, done.rejected], [2, 0]);
    const profile = await admin(edge, `/v1/profiles/lookup?type=email&value=ann-${run}@example.com`).then((r) => r.json());
    assert.ok(profile.identifiers.includes(`user_id:crm-${run}-1`), JSON.stringify(profile.identifiers));
    assert.equal(profile.traits.first_name, "Ann");
    assert.equal(profile.traits.newsletter, true);
  });

  test("a 50 MB CRM export streams in and is imported a chunk at a time, its progress readable while it runs", async () => {
    // CRM exports carry far more than the mapping uses: here a 4 KB history column per contact,
    // unmapped. 12,500 contacts make 50 MB, about 200 chunks; one row in 2,500 has a bad flag.
    const history = "h".repeat(4160);
    const rows = 12_500;
    const lines = ["crm_id,email,vip,history"];
    for (let i = 0; i < rows; i++) lines.push(`big-${run}-${i},big-${i}-${run}@example.com,${i % 2500 === 7 ? "maybe" : i % 2 ? "yes" : "no"},${history}`);
    const csv = Buffer.from(lines.join("\n") + "\n");
    assert.ok(csv.length >= 50 * 1024 * 1024, `${csv.length} bytes`);
    const mapping = { type: "identify", key: "crm_id", userId: "crm_id", traits: { email: "email", vip: { column: "vip", type: "boolean" } } };
    const started = await upload(edge, csv, mapping);
    assert.equal(started.status, 202, JSON.stringify(started.json));
    assert.equal(started.json.bytes, csv.length, "the whole file is in R2");
    // Progress moves while it runs: read part-way, with the rows so far counted.
    let partial;
    for (let i = 0; i < 600 && !partial; i++) {
      const p = await (await admin(edge, `/v1/admin/import/${started.json.id}`)).json();
      if (p.status === "running" && p.rows > 0 && p.bytesRead < p.bytes) partial = p;
      else await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(partial, "progress was readable while the import ran");
    assert.equal(partial.accepted + partial.rejected + partial.duplicates, partial.rows);
    const done = await finished(edge, started.json.id, 600_000);
    assert.deepEqual([done.rows, done.accepted, done.rejected, done.bytesRead], [rows, rows - 5, 5, csv.length]);
    assert.deepEqual(done.errors.map((e) => [e.row, e.column, e.code]), [7, 2507, 5007, 7507, 10007].map((i) => [i + 2, "vip", "not_a_boolean"]));
    const [stored] = await edge.query("SELECT COUNT(*) AS n FROM events WHERE type = 'identify' AND user_id LIKE ?", `big-${run}-%`);
    assert.equal(stored.n, rows - 5);
    const last = await admin(edge, `/v1/profiles/lookup?type=user_id&value=big-${run}-${rows - 1}`).then((r) => r.json());
    assert.equal(last.traits.vip, true, "the last row, 50 MB in, is a profile with its traits");
  });

  test("a mistake in the mapping or header is refused at once, and nothing is imported", async () => {
    const csv = "order_no,customer\n1,c\n";
    const wrongColumn = await upload(edge, csv, { ...orders, timestamp: undefined, properties: { revenue: { column: "amount", type: "number" } } });
    assert.equal(wrongColumn.status, 400);
    assert.equal(wrongColumn.json.code, "invalid_mapping");
    assert.match(wrongColumn.json.message, /no column amount/);
    const duplicateHeader = await upload(edge, "id,id\n1,2\n", { type: "identify", key: "id", userId: "id" });
    assert.equal(duplicateHeader.json.code, "invalid_header");
    const browser = await upload(edge, csv, { type: "identify", key: "order_no", userId: "customer" }, "?source=demo-site");
    assert.equal(browser.json.code, "untrusted_source", "a browser source's public key may not import");
    const [{ n }] = await edge.query("SELECT COUNT(*) AS n FROM imports WHERE status = 'running'");
    assert.equal(n, 0);
    const files = await edge.archive.list({ prefix: "imports/" });
    assert.equal(files.objects.length, 0, "refused files are not kept, nor imported ones");
  });

  test("a byte order mark, a quote never closed, and another export keyed by the same column", async () => {
    // Excel's CSV UTF-8; refunds keyed by the same order numbers as the orders above.
    const csv = `\uFEFForder_no,customer,total\nO-${run}-0,cust-${run}-0,5\nO-${run}-1,cust-${run}-1,"6\nO-${run}-2,cust-${run}-2,7\n`;
    const refunds = { type: "track", event: "Order Refunded", key: "order_no", userId: "customer", properties: { revenue: { column: "total", type: "number" } } };
    const started = await upload(edge, csv, refunds);
    assert.equal(started.status, 202, JSON.stringify(started.json));
    const done = await finished(edge, started.json.id);
    assert.deepEqual([done.rows, done.accepted, done.duplicates, done.rejected], [2, 1, 0, 1], "a refund is not an order's duplicate");
    assert.deepEqual(done.errors.map((e) => [e.row, e.code]), [[3, "unterminated_quote"]]);
    const [{ n }] = await edge.query("SELECT COUNT(*) AS n FROM events WHERE name = 'Order Refunded' AND user_id = ?", `cust-${run}-0`);
    assert.equal(n, 1);
  });
});
