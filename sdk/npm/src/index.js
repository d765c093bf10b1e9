// @seam/sdk entry. A tiny stub in front of the wasm module: calls made before the module is
// ready are queued and replayed in order (like Segment's snippet), and nothing here ever throws
// into the host page.
//
// The build (scripts/build.sh) bundles this file with the wasm-bindgen glue into the package's
// one module, sdk/npm/index.js: a page then fetches the wasm one request earlier than with the
// glue as a second module. Paths resolved at run time (`import.meta.url`) are relative to that
// output, sdk/npm/index.js, not to this file.
import init, * as wasm from "../dist/seam_sdk.js";

const queued = [];
let state = "idle"; // idle -> loading -> ready | failed
let ready;
let debug = false;
const TOKEN_KEY = "seam_identity_token";

function tokens(f) {
  try {
    f(localStorage);
  } catch (error) {
    report(error);
  }
}

function report(error) {
  if (debug) console.warn("seam:", error);
}

// `f` is one of the module's exports, named statically so a bundler keeps only what is used.
function call(f, args) {
  if (state === "failed") return undefined;
  if (state !== "ready") {
    queued.push([f, args]);
    return undefined;
  }
  try {
    return f(...args);
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
    call(wasm.load, [options]);
    return ready;
  }
  state = "loading";
  let wasmUrl = options && options.wasmUrl;
  try {
    wasmUrl ??= new URL("./dist/seam_sdk_bg.wasm", import.meta.url);
  } catch (error) {
    report(error);
  }
  ready = init({ module_or_path: wasmUrl, compiled: options && options.wasm })
    .then(() => {
      state = "ready";
      const loaded = call(wasm.load, [options]) === true;
      for (const [f, args] of queued.splice(0)) call(f, args);
      return loaded;
    })
    .catch((error) => {
      state = "failed";
      queued.length = 0;
      report(error);
      return false;
    });
  // The wasm is downloading now and the page is idle until it arrives. wasm.load() reads the
  // cookies and localStorage first thing; reading them once here (values unused) makes the
  // browser's first-access set-up (connecting to its cookie and storage backends, loading the
  // storage area) happen during that wait instead of on the way to ready.
  try {
    document.cookie, localStorage.length;
  } catch {
    // storage blocked: wasm.load() copes
  }
  return ready;
}

/** Records a user action, e.g. track("Product Viewed", { product_id: "p1" }). */
export function track(event, properties) {
  call(wasm.track, [String(event ?? ""), properties]);
}

/** Records a page view: page(), page("Product"), page("Product", { sku }) or page({ sku }). */
export function page(name, properties) {
  if (name !== null && typeof name === "object") [name, properties] = [undefined, name];
  call(wasm.page, [name == null ? undefined : String(name), properties]);
}

/**
 * Says who the user is: identify("u1", { email }) or identify({ plan }) for traits only. Pass
 * the identity token your backend signed for the user, identify("u1", { email }, { identityToken }),
 * so Seam believes the user ID (see the README).
 */
export function identify(userId, traits, options) {
  if (userId !== null && typeof userId === "object") [userId, traits, options] = [undefined, userId, traits];
  const token = options?.identityToken;
  // Kept beside the user ID; a token vouches for one user, so another user's identify drops it.
  tokens((s) =>
    /^v1\.\d+\.[\da-f]{64}$/i.test(token)
      ? s.setItem(TOKEN_KEY, token)
      : userId != null && String(userId) !== s.getItem("seam_user_id") && s.removeItem(TOKEN_KEY),
  );
  call(wasm.identify, [userId == null ? undefined : String(userId), traits]);
}

/** Puts the user in a group (account): group("acme", { plan: "pro" }). */
export function group(groupId, traits) {
  call(wasm.group, [String(groupId ?? ""), traits]);
}

/** Joins previousId (default: the current user or anonymous ID) to userId. */
export function alias(userId, previousId) {
  call(wasm.alias, [String(userId ?? ""), previousId == null ? undefined : String(previousId)]);
}

/** Consent in Google Consent Mode v2 terms. */
export const consent = {
  /** Records the visitor's choice: consent.update({ analytics_storage: "granted" }). */
  update(values) {
    call(wasm.consentUpdate, [values]);
  },
  /** The consent in force ({ categoryPreferences, gcm, tcString?, gpc? }); undefined before ready. */
  get() {
    return state === "ready" ? call(wasm.consentGet, []) : undefined;
  },
};

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
  return state === "ready" ? call(wasm.anonymousId, []) : undefined;
}

/** Forgets the IDs and traits and drops queued events (e.g. on log-out). */
export function reset() {
  tokens((s) => s.removeItem(TOKEN_KEY));
  call(wasm.reset, []);
}

/** Number of events waiting to be sent. */
export function pending() {
  return state === "ready" ? call(wasm.pending, []) : queued.length;
}
