// Fails when the SDK grows past its budget (sdk/size-budget.json, gzip -9 bytes).
import { readFileSync } from "node:fs";
import { committedResult, kb, measureSdk, wasmSections } from "./sdk-size.mjs";

const budget = JSON.parse(readFileSync(new URL("../sdk/size-budget.json", import.meta.url), "utf8"));
const size = await measureSdk();
let over = false;
for (const part of ["wasm", "js", "total", "decide"]) {
  const ok = size[part].gzip <= budget[part];
  over ||= !ok;
  console.log(`${ok ? "ok  " : "OVER"} ${part.padEnd(5)} ${kb(size[part].gzip).padStart(8)} gzip  (budget ${kb(budget[part])})`);
}
// Where the wasm's bytes are, and the change against the last committed bench results.
const { sections } = wasmSections();
console.log(`wasm sections (raw): ${sections.map(([k, v]) => `${k} ${kb(v)}`).join(", ")}`);
for (const [measure, now] of [["SDK wasm (wasm-opt -Oz)", size.wasm.gzip], ["SDK JS (entry + glue, minified)", size.js.gzip]]) {
  const was = committedResult(measure);
  const wasBytes = was && Math.round(parseFloat(was) * 1024);
  if (wasBytes) console.log(`${measure}: ${kb(now)} gzip, ${now >= wasBytes ? "+" : ""}${kb(now - wasBytes)} against bench/results.md (${was})`);
}
if (over) {
  console.error("SDK size budget exceeded: shrink the change or raise sdk/size-budget.json with a reason.");
  process.exit(1);
}
