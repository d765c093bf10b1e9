// @seam/sdk entry. A tiny stub in front of the wasm module: calls made before the module is
// ready are queued and replayed in order (like Segment's snippet), and nothing here ever throws
// into the host page.
import init, * as wasm from "./dist/seam_sdk.js";

const queued = [];
let state = "idle"; // idle -> loading -> ready | failed
let ready;
let debug = false;

function report(error) {
  if (debug) console.warn("seam:", error);
}

function call(name, args) {
  if (state === "failed") return undefined;
  if (state !== "ready") {
    queued.push([name, args]);
    return undefined;
  }
  try {
    return wasm[name](...args);
  } catch (error) {
    report(error);
    return undefined;
  }
}

/**
 * Starts Seam. Resolves to true once the SDK runs (false if it could not start).
 * Safe to call more than once: later calls update the settings.
 */
export function load(options = {}) {
  debug = Boolean(options && options.debug);
  if (ready) {
    call("load", [options]);
    return ready;
  }
  state = "loading";
  let wasmUrl = options && options.wasmUrl;
  try {
    wasmUrl ??= new URL("./dist/seam_sdk_bg.wasm", import.meta.url);
  } catch (error) {
    report(error);
  }
  ready = init({ module_or_path: wasmUrl })
    .then(() => {
      state = "ready";
      const loaded = call("load", [options]) === true;
      for (const [name, args] of queued.splice(0)) call(name, args);
      return loaded;
    })
    .catch((error) => {
      state = "failed";
      queued.length = 0;
      report(error);
      return false;
    });
  return ready;
}

/** Records a user action, e.g. track("Product Viewed", { product_id: "p1" }). */
export function track(event, properties) {
  call("track", [String(event ?? ""), properties]);
}

/** Records a page view: page(), page("Product"), page("Product", { sku }) or page({ sku }). */
export function page(name, properties) {
  if (name !== null && typeof name === "object") [name, properties] = [undefined, name];
  call("page", [name == null ? undefined : String(name), properties]);
}

/** Sends everything queued now; resolves when done (or when the collector is unreachable). */
export async function flush() {
  if (ready) await ready;
  if (state !== "ready") return;
  try {
    await wasm.flush();
  } catch (error) {
    report(error);
  }
}

/** The visitor's anonymous ID, or undefined before the SDK is ready. */
export function anonymousId() {
  return state === "ready" ? call("anonymousId", []) : undefined;
}

/** Forgets the anonymous ID and drops queued events (e.g. on log-out). */
export function reset() {
  call("reset", []);
}

/** Number of events waiting to be sent. */
export function pending() {
  return state === "ready" ? call("pending", []) : queued.length;
}
