// CSV import throughput and the D1 bytes each stored event costs: a fresh edge imports an order
// export (`IMPORT_ROWS` rows, ~120 bytes each, 500 customers) through `POST /v1/admin/import`,
// timed from the upload to `done`; then D1's bytes per event, with every event hot and again
// once the sweep has compacted them past the hot window (as the scale bench reads them). Runs
// alone with `node bench/import.mjs`.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { root, startEdge } from "../tests/support/edge.mjs";
import { bytesPerEvent, compact, d1Tables } from "./scale.mjs";

const ROWS = Number(process.env.IMPORT_ROWS ?? 20_000);

/** Rows for a CSV import of ROWS orders, and D1's bytes per stored event afterwards. */
export async function importRows() {
  const adminKey = readFileSync(`${root}/.dev.vars`, "utf8").match(/^ADMIN_KEY=(.*)$/m)?.[1].trim();
  // A hot window of 0 hours, so that compaction afterwards takes every archived event.
  const edge = await startEdge("bench-import", { vars: { HOT_EVENT_HOURS: "0", ARCHIVE_SETTLE_SECONDS: "0" } });
  try {
    const state = join(root, "tests/.tmp", `bench-import-${process.pid}`);
    const empty = d1Tables(state);
    const placed = new Date(Date.now() - 86_400_000).toISOString();
    const lines = ["order_no,customer,email,total,placed,items"];
    for (let i = 0; i < ROWS; i++) {
      lines.push(`B-${i},cust-${i % 500},cust-${i % 500}@shop.example,${(20 + (i % 80)).toFixed(2)},${placed},"sku-${i % 37}; sku-${i % 11}"`);
    }
    const csv = lines.join("\n") + "\n";
    const mapping = {
      type: "track", event: "Order Completed", key: "order_no", userId: "customer", timestamp: "placed",
      properties: { order_id: "order_no", revenue: { column: "total", type: "number" }, items: "items" },
    };
    const started = performance.now();
    const upload = await fetch(`${edge.url}/v1/admin/import`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminKey}`, "x-seam-mapping": JSON.stringify(mapping) },
      body: csv,
    });
    const { id } = await upload.json();
    if (upload.status !== 202) throw new Error(`import upload: ${upload.status}`);
    const uploaded = performance.now() - started;
    let progress;
    for (;;) {
      progress = await (await fetch(`${edge.url}/v1/admin/import/${id}`, { headers: { authorization: `Bearer ${adminKey}` } })).json();
      if (progress.status === "done") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const seconds = (performance.now() - started) / 1000;
    const [{ n: events }] = await edge.query("SELECT COUNT(*) AS n FROM events");
    const hot = bytesPerEvent(d1Tables(state), empty, events);
    await compact(edge);
    const [{ left }] = await edge.query("SELECT COUNT(*) AS left FROM events");
    const cold = bytesPerEvent(d1Tables(state), empty, events);
    const mb = (csv.length / 1024 / 1024).toFixed(1);
    return [
      [`import: ${ROWS.toLocaleString("en")} orders (${mb} MB CSV)`, `${(progress.accepted / seconds).toFixed(0)} rows/s`, `${seconds.toFixed(0)} s to done (upload ${uploaded.toFixed(0)} ms), ${progress.accepted} accepted, ${progress.rejected} rejected`],
      ["import: D1 bytes per stored event, all events hot (orders, 500 customers)", `${hot.perEvent} B`, `${events.toLocaleString("en")} events incl. the collector's own; by table: ${hot.tables}`],
      ["import: D1 bytes per stored event past the hot window (orders, 500 customers)", `${cold.perEvent} B`, `${left} of ${events} events still in D1 after compaction; by table: ${cold.tables}; #18's target is <= 300`],
    ];
  } finally {
    await edge.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const row of await importRows()) console.log(`| ${row.join(" | ")} |`);
}
