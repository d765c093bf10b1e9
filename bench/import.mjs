// CSV import throughput and the D1 bytes each stored event costs: a fresh edge imports an order
// export (`IMPORT_ROWS` rows, ~120 bytes each, 500 customers) through `POST /v1/admin/import`,
// timed from the upload to `done`; then D1's page count is read. Runs alone with
// `node bench/import.mjs`.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { root, startEdge } from "../tests/support/edge.mjs";

const ROWS = Number(process.env.IMPORT_ROWS ?? 20_000);

/** Rows for a CSV import of ROWS orders, and D1's bytes per stored event afterwards. */
export async function importRows() {
  const adminKey = readFileSync(`${root}/.dev.vars`, "utf8").match(/^ADMIN_KEY=(.*)$/m)?.[1].trim();
  const edge = await startEdge("bench-import");
  try {
    // D1 refuses PRAGMAs: the local database's files are measured instead (with the WAL).
    const state = join(root, "tests/.tmp", `bench-import-${process.pid}`);
    const d1Bytes = () => {
      let total = 0;
      const walk = (dir) => {
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          const path = join(dir, entry.name);
          if (entry.isDirectory()) walk(path);
          else if (dir.includes("D1DatabaseObject") && /\.sqlite(-wal)?$/.test(entry.name)) total += statSync(path).size;
        }
      };
      walk(state);
      return total;
    };
    const emptyBytes = d1Bytes();
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
    const bytes = d1Bytes() - emptyBytes;
    const mb = (csv.length / 1024 / 1024).toFixed(1);
    return [
      [`import: ${ROWS.toLocaleString("en")} orders (${mb} MB CSV)`, `${(progress.accepted / seconds).toFixed(0)} rows/s`, `${seconds.toFixed(0)} s to done (upload ${uploaded.toFixed(0)} ms), ${progress.accepted} accepted, ${progress.rejected} rejected`],
      ["D1 bytes per stored event (import of orders, 500 customers)", `${(bytes / events).toFixed(0)} B`, `${events.toLocaleString("en")} events incl. the collector's own; target <= 300 (issue #18)`],
    ];
  } finally {
    await edge.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const row of await importRows()) console.log(`| ${row.join(" | ")} |`);
}
