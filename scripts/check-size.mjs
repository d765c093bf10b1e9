// Fails when the SDK grows past its budget (sdk/size-budget.json, gzip -9 bytes).
import { readFileSync } from "node:fs";
import { kb, measureSdk } from "./sdk-size.mjs";

const budget = JSON.parse(readFileSync(new URL("../sdk/size-budget.json", import.meta.url), "utf8"));
const size = await measureSdk();
let over = false;
for (const part of ["wasm", "js", "total", "decide"]) {
  const ok = size[part].gzip <= budget[part];
  over ||= !ok;
  console.log(`${ok ? "ok  " : "OVER"} ${part.padEnd(5)} ${kb(size[part].gzip).padStart(8)} gzip  (budget ${kb(budget[part])})`);
}
if (over) {
  console.error("SDK size budget exceeded: shrink the change or raise sdk/size-budget.json with a reason.");
  process.exit(1);
}
