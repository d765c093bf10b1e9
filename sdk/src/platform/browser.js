// Browser hooks that are shorter in JS than through web-sys: cookies, the cross-tab lock, History
// API, dataLayer, the TCF API, GPC and the online state. Bundled into the package's glue by
// scripts/build.sh. Every function swallows errors: the SDK never throws into the host page.

const swallow = (f) => {
  try {
    return f();
  } catch {
    return undefined;
  }
};

// Host-only cookies (no domain configured) are named `__Host-<name>`: browsers take those only
// from this host, so a page on another subdomain cannot plant one. The other name's copy on
// this host (the plain one from before, or planted; a `__Host-` one from before a domain was
// configured) is never read, and is deleted when the SDK writes the cookie.
const named = (name, domain) => (domain ? name : "__Host-" + name);
const pair = (name) => document.cookie.split("; ").find((c) => c.startsWith(name + "="));

export function cookieGet(name, domain) {
  return swallow(() => {
    const found = pair(named(name, domain));
    return found && decodeURIComponent(found.slice(found.indexOf("=") + 1));
  });
}

// maxAge 0 deletes. Secure + SameSite=Lax; host-only unless a domain is configured.
export function cookieSet(name, value, domain, maxAge) {
  const attributes = "; Path=/; SameSite=Lax; Secure";
  swallow(() => {
    const other = named(name, !domain);
    if (pair(other)) document.cookie = other + "=; Max-Age=0" + attributes;
    document.cookie = `${named(name, domain)}=${encodeURIComponent(value)}; Max-Age=${maxAge}${attributes}${domain ? "; Domain=" + domain : ""}`;
  });
}

export function gpc() {
  return swallow(() => navigator.globalPrivacyControl) === true;
}

export function online() {
  return swallow(() => navigator.onLine) !== false;
}

export function onOnline(f) {
  swallow(() => addEventListener("online", () => f()));
}

// Each tab keeps its own stored queue, named after a Web Lock the tab holds for its life: only
// the owner writes a queue, so no tab can overwrite another's events (localStorage is not
// consistent across a browser's processes, so a shared read-modify-write loses events even
// under a lock). A queue whose lock is free belongs to a tab that is gone; f(key) adopts it,
// and the adopter then keeps that lock so no other tab adopts the same queue. Without Web Locks
// every other queue is adopted (a live tab's events may then be sent twice; the collector
// dedups them by messageId).
const forever = () => new Promise(() => {});
export function holdLock(name) {
  swallow(() => navigator.locks.request(name, forever));
}
export function orphans(prefix, own, f) {
  swallow(() => {
    for (const key of Object.keys(localStorage)) {
      if (!key.startsWith(prefix) || key === own) continue;
      const locks = navigator.locks;
      locks
        ? locks.request(key, { ifAvailable: true }, (lock) => lock && (swallow(() => f(key)), forever()))
        : swallow(() => f(key));
    }
  });
}

export function watchHistory(f) {
  swallow(() => {
    for (const method of ["pushState", "replaceState"]) {
      const original = history[method];
      history[method] = function (...args) {
        const result = original.apply(this, args);
        swallow(f);
        return result;
      };
    }
    addEventListener("popstate", () => swallow(f));
  });
}

// gtag('consent', 'default' | 'update', {...}) pushes its `arguments` onto window.dataLayer:
// read the commands already there, then watch new pushes. f([command, params]).
export function watchDataLayer(f) {
  swallow(() => {
    const layer = (window.dataLayer = window.dataLayer || []);
    const see = (item) => swallow(() => item && item[0] === "consent" && f([String(item[1]), item[2]]));
    Array.prototype.forEach.call(layer, see);
    const push = layer.push;
    layer.push = function (...items) {
      items.forEach(see);
      return push.apply(this, items);
    };
  });
}

// IAB TCF v2.2: listen for the CMP's decisions: f([gdprApplies, consents, legitimateInterests,
// tcString]) with purposes 1..11 as bit masks.
export function listenTcf(f) {
  return swallow(() => {
    if (typeof window.__tcfapi !== "function") return false;
    const bits = (o) => {
      let b = 0;
      for (let n = 1; n <= 11; n++) if (o && o[n]) b |= 1 << n;
      return b;
    };
    window.__tcfapi("addEventListener", 2, (d, ok) => {
      if (!ok || !d || (d.eventStatus !== "tcloaded" && d.eventStatus !== "useractioncomplete")) return;
      const p = d.purpose || {};
      swallow(() => f([d.gdprApplies !== false, bits(p.consents), bits(p.legitimateInterests), d.tcString || ""]));
    });
    return true;
  }) === true;
}

export function storageGet(key) {
  // null (no such key) is None to wasm-bindgen, like undefined.
  return swallow(() => localStorage.getItem(key));
}

// False when storage is unavailable or full.
export function storageSet(key, value) {
  return swallow(() => (localStorage.setItem(key, value), true)) === true;
}

export function storageRemove(key) {
  swallow(() => localStorage.removeItem(key));
}

export function isoTime(ms) {
  return new Date(ms).toISOString();
}

export function pageUrl() {
  return swallow(() => location.href) || "";
}

// context.page as JSON text; the referrer is the SDK's (it follows SPA navigations).
export function pageJson(referrer) {
  return (
    swallow(() =>
      JSON.stringify({ path: location.pathname, referrer, search: location.search, title: document.title, url: location.href }),
    ) || "{}"
  );
}

// `context` members from the navigator, as JSON text without braces.
export function navigatorContext() {
  const json = swallow(() => JSON.stringify({ userAgent: navigator.userAgent, locale: navigator.language })) || "{}";
  return json.slice(1, -1);
}

export function documentReferrer() {
  return swallow(() => document.referrer) || "";
}

// A gtag consent parameter object as [values, wait_for_update, regions]: values has one letter
// per GCM purpose in `keys` order, "g" granted, "d" denied, "-" not said.
export function consentParams(p, keys) {
  const letter = (v) => (v === true || v === "granted" ? "g" : v === false || v === "denied" ? "d" : "-");
  return swallow(() => {
    const region = p.region;
    return [
      keys.split(",").map((k) => letter(p[k])).join(""),
      Number(p.wait_for_update) || 0,
      (Array.isArray(region) ? region : region ? [region] : []).map(String),
    ];
  }) || ["-------", 0, []];
}

// POSTs a text/plain body (a string body is sent as text/plain;charset=UTF-8: no preflight) with
// keepalive (survives unload), then calls done([status, retryAfter, rejectedIds, anonymousId]);
// status 0 when no response arrived.
export function post(url, body, done) {
  const fail = () => done([0, "", "", ""]);
  // The site's identity token for the signed-in user (kept by identify in the JS entry) goes as
  // batch-level context.seam.identityToken, which the collector merges into every event.
  // Spliced into the text (a JSON round trip would round integers past 2^53); only a
  // well-formed token, which needs no escaping, is sent.
  const token = storageGet("seam_identity_token");
  // The batch-level context.seam (when evictions are reported) or the body's last brace.
  if (/^v1\.\d+\.[\da-f]{64}$/i.test(token)) {
    body = body.replace(/("context":\{"seam":\{)|\}$/, (_, seam) =>
      seam ? `${seam}"identityToken":"${token}",` : `,"context":{"seam":{"identityToken":"${token}"}}}`,
    );
  }
  swallow(() =>
    fetch(url, { method: "POST", body, keepalive: true }).then(
      async (r) => {
        const j = (await r.json().catch(() => null)) || {};
        const results = Array.isArray(j.results) ? j.results : [];
        const rejected = results.filter((x) => x && x.status === "rejected").map((x) => String(x.messageId));
        const id = typeof j.anonymousId === "string" ? j.anonymousId : "";
        done([r.status, r.headers.get("Retry-After") || "", rejected.join("\n"), id]);
      },
      fail,
    ),
  ) || fail();
}

// pagehide, or the page becoming hidden: the last reliable moment to send.
export function onHide(f) {
  swallow(() => {
    addEventListener("pagehide", () => f());
    document.addEventListener("visibilitychange", () => document.visibilityState === "hidden" && f());
  });
}

// identify() traits: merges `traits` into the stored JSON object; undefined when not serialisable.
export function mergeTraits(json, traits) {
  return swallow(() => JSON.stringify(Object.assign(JSON.parse(json || "{}") || {}, traits)));
}

// flush() promises, resolved together when the running flush ends.
const flushWaiters = [];
export function flushWaiter() {
  return new Promise((resolve) => flushWaiters.push(resolve));
}
export function flushed() {
  for (const resolve of flushWaiters.splice(0)) resolve();
}

// Property reads for the wasm side (options, callback arguments): never throw.
export function prop(value, key) {
  // `?.`: an absent object (options without `cookie`) is common, and a thrown error costs
  // more than a millisecond the first time, on the way to ready.
  return swallow(() => value?.[key]);
}

// properties/traits as JSON text ({} unless an object); undefined when not serialisable.
export function textProp(value, key) {
  const v = prop(value, key);
  return typeof v === "string" ? v : "";
}

export function stringifyObject(value) {
  return swallow(() => JSON.stringify(value !== null && typeof value === "object" ? value : {}));
}

export function parseJson(text) {
  return swallow(() => JSON.parse(text));
}

// The SDK's IDs: Web Crypto, or Math.random where it is missing (very old or locked-down runtimes).
export function fillRandom(bytes) {
  try {
    crypto.getRandomValues(bytes);
  } catch {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.random() * 256;
  }
}
