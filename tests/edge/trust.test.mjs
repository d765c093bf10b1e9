// The trust model, from the attacker's side: someone holding only the public write key (it ships
// in every page) tries to reach further than their own browser. Each attack must fail; the
// legitimate journeys next to them must keep working. Real Worker in workerd, real D1 and KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { checkProfileRows, directSources, idCookie, post, secret, settled, startEdge, WRITE_KEY } from "../support/edge.mjs";

const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `t-${run}-${++n}`;
const send = (edge, batch, key = WRITE_KEY, headers = {}) => post(`${edge.url}/v1/batch`, { writeKey: key, batch }, headers);
const QUEUED_KEY = "trust_queued_browser_key";
const decide = (edge, body, headers = {}) =>
  post(`${edge.url}/v1/decide`, { writeKey: WRITE_KEY, slots: ["recommended-for-you"], ...body }, headers);
const admin = (edge, method, path, body, key = ADMIN_KEY) =>
  fetch(`${edge.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body && JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, json: await r.json() }));
const viewed = (anonymousId, product_id, properties = {}) => ({
  type: "track", event: "Product Viewed", anonymousId, messageId: mid(),
  properties: { product_id, name: `Item ${product_id}`, category: "Trust", ...properties },
});

describe("trust: what the public write key cannot do", () => {
  let edge;
  before(async () => {
    edge = await startEdge("trust");
  });
  after(async () => {
    await edge?.stop();
  });

  test("catalogue links browsers would read as another origin never reach a page", async () => {
    // An attacker's page views its own products with links that look same-site but are not.
    const attacker = `attacker-${run}`;
    const r = await send(edge, [
      viewed(attacker, `bs-${run}`, { url: "/\\evil.example/phish" }),
      viewed(attacker, `tab-${run}`, { url: "/\t/evil.example/phish", image_url: "/\n/evil.example/x.png" }),
    ]);
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "accepted"]);
    // A stranger's cold-start recommendations list the most viewed items: these two.
    const d = await decide(edge, { anonymousId: `stranger-${run}`, slots: [{ id: "recommended-for-you", limit: 20 }] });
    assert.equal(d.status, 200);
    const [slot] = d.json.decisions;
    assert.ok(slot.items.some((i) => i.product_id === `bs-${run}`), JSON.stringify(slot.items));
    assert.doesNotMatch(slot.html, /evil\.example/);
    assert.match(slot.html, new RegExp(`href="/product.html\\?id=bs-${run}"`), "the safe fallback link");
  });

  test("a browser's Product Viewed cannot replace an uploaded catalogue row, whatever date it claims", async () => {
    const id = `up-${run}`;
    const upload = await admin(edge, "POST", "/v1/admin/catalog", { items: [{ product_id: id, name: "Real name", url: "/real", category: "Shoes", price: 50 }] });
    assert.equal(upload.status, 200);
    const attacker = `cat-attacker-${run}`;
    await send(edge, [
      { ...viewed(attacker, id, { name: "Hacked", url: "/phish", price: 1, image_url: "/img.png" }), timestamp: "9999-01-01T00:00:00Z" },
      viewed(attacker, id, { name: "Hacked again", category: "Phish" }),
    ]);
    const body = async (product) => {
      const [row] = await edge.query("SELECT body, category, uploaded FROM catalog_items WHERE product_id = ?", product);
      return { ...JSON.parse(row.body), category: row.category, uploaded: row.uploaded };
    };
    const kept = await body(id);
    assert.equal(kept.name, "Real name");
    assert.equal(kept.url, "/real");
    assert.equal(kept.price, 50);
    assert.equal(kept.category, "Shoes");
    assert.equal(kept.image_url, "/img.png", "a field the upload left unset may be filled");
    assert.equal(kept.uploaded, 1);

    const again = await admin(edge, "POST", "/v1/admin/catalog", { items: [{ product_id: id, name: "New name", url: "/new" }] });
    assert.equal(again.status, 200);
    assert.equal((await body(id)).name, "New name", "a re-upload always wins");

    // Between events, a date far in the future is clamped to when it arrived: it cannot pin a row.
    const eventMade = `ev-${run}`;
    await send(edge, [{ ...viewed(attacker, eventMade, { name: "Pinned" }), timestamp: "9999-01-01T00:00:00Z" }]);
    await new Promise((r) => setTimeout(r, 5));
    await send(edge, [viewed(`shopper-${run}`, eventMade, { name: "Current" })]);
    assert.equal((await body(eventMade)).name, "Current");
  });

  test("an ID padded with spaces is the same ID to export and erasure", async () => {
    const padded = { type: "track", event: "Padded", anonymousId: `  pad-${run} `, messageId: mid() };
    const r = await send(edge, [padded]);
    assert.equal(r.json.results[0].status, "accepted");
    const [row] = await edge.query("SELECT anonymous_id FROM events WHERE message_id = ?", padded.messageId);
    assert.equal(row.anonymous_id, `pad-${run}`, "stored trimmed, as the identity graph has it");
    const exported = await admin(edge, "GET", `/v1/privacy/export?type=anonymous_id&value=pad-${run}`);
    assert.ok(exported.json.data.events.some((e) => e.messageId === padded.messageId));
    const erased = await admin(edge, "POST", "/v1/privacy/delete", { type: "anonymous_id", value: `pad-${run}` });
    assert.equal(erased.status, 200);
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE message_id = ?", padded.messageId))[0].n, 0);
  });

  test("a suppressed visitor's decisions log no exposure", async () => {
    const anon = `supp-${run}`;
    await send(edge, [viewed(anon, `s1-${run}`)]);
    const before = await decide(edge, { anonymousId: anon });
    assert.ok(before.json.exposureId, "an exposure while processing is allowed");
    const suppressed = await admin(edge, "POST", "/v1/privacy/suppress", { type: "anonymous_id", value: anon });
    assert.equal(suppressed.status, 200);
    const exposures = async () =>
      (await edge.query("SELECT count(*) AS n FROM events WHERE anonymous_id = ? AND name = 'Decision Exposed'", anon))[0].n;
    const logged = await exposures();
    const after = await decide(edge, { anonymousId: anon, messageId: mid() });
    assert.equal(after.status, 200);
    assert.equal(after.json.exposureId, undefined);
    await settled(edge.url);
    assert.equal(await exposures(), logged, "nothing new stored for them");
  });

  test("an unreadable consent object is not consent: identify is dropped, the track is anonymised", async () => {
    const anon = `consent-${run}`;
    const r = await send(edge, [
      { type: "identify", anonymousId: anon, userId: `victim-${run}`, messageId: mid(), context: { consent: "granted" } },
      { type: "track", event: "Clicked", anonymousId: anon, messageId: mid(), context: { consent: ["analytics_storage"] } },
    ]);
    assert.equal(r.status, 200);
    assert.equal(r.json.results[0].status, "rejected");
    assert.equal(r.json.results[0].code, "consent_denied");
    assert.equal(r.json.results[1].status, "accepted");
    assert.equal(r.json.results[1].code, "consent_anonymized");
    const rows = await edge.query("SELECT anonymous_id, user_id FROM events WHERE message_id = ?", r.json.results[1].messageId);
    assert.deepEqual(rows, [{ anonymous_id: null, user_id: null }]);
  });

  test("identifiers over 256 bytes are refused with a code while their siblings are stored", async () => {
    const ok = { type: "track", event: "Fine", anonymousId: `fine-${run}`, messageId: mid() };
    const r = await send(edge, [
      { type: "identify", anonymousId: `long-${run}`, userId: "u".repeat(257), messageId: mid() },
      { type: "track", event: "x", anonymousId: "a".repeat(300), messageId: mid() },
      ok,
    ]);
    assert.deepEqual(r.json.results.map((x) => x.code ?? x.status), ["identifier_too_long", "identifier_too_long", "accepted"]);
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE message_id = ?", ok.messageId))[0].n, 1);
    assert.equal((await edge.query("SELECT count(*) AS n FROM identities WHERE length(identifier) > 300"))[0].n, 0);
  });

  test("decide honours Global Privacy Control and caps its body", async () => {
    const anon = `gpc-visitor-${run}-0000`;
    const own = { cookie: idCookie(anon) };
    await send(edge, [viewed(anon, `g1-${run}`), viewed(anon, `g2-${run}`)]);
    const plain = await decide(edge, { anonymousId: anon }, own);
    assert.notEqual(plain.json.reason, "consent_denied");
    assert.ok(plain.json.profileId);
    const gpc = await decide(edge, { anonymousId: anon }, { ...own, "Sec-GPC": "1" });
    assert.equal(gpc.status, 200);
    assert.equal(gpc.json.reason, "consent_denied");
    assert.equal(gpc.json.profileId, null, "the profile is not even read");

    const big = await decide(edge, { anonymousId: anon, context: { pad: "x".repeat(70 * 1024) } });
    assert.equal(big.status, 413);
    assert.equal(big.json.code, "request_too_large");
    const deep = await post(`${edge.url}/v1/decide`, `{"writeKey":"${WRITE_KEY}","slots":["recommended-for-you"],"anonymousId":"a","context":${"[".repeat(2000)}${"]".repeat(2000)}}`);
    assert.equal(deep.status, 400, "deep nesting is a bad request, not a crash");
  });

  test("deeply nested JSON on admin routes is a bad request, never a crash", async () => {
    const deep = `${"[".repeat(3000)}${"]".repeat(3000)}`;
    for (const [method, path, body] of [
      ["PUT", "/v1/admin/personalisation", `{"segments":${deep}}`],
      ["POST", "/v1/admin/catalog", `{"items":${deep}}`],
      ["POST", "/v1/admin/keys", `{"label":"deep","scopes":${deep}}`],
      ["POST", "/v1/privacy/delete", `{"type":"user_id","value":${deep}}`],
    ]) {
      const r = await fetch(`${edge.url}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` }, body });
      assert.equal(r.status, 400, `${method} ${path}`);
      // Refused as a body or as the document it should have been; either way a stable code.
      assert.match((await r.json()).code, /^invalid_/, `${method} ${path}`);
    }
  });

  test("an admin key can only issue keys with scopes it holds itself", async () => {
    const minted = await admin(edge, "POST", "/v1/admin/keys", { label: `config-only-${run}`, scopes: ["config:write"] });
    assert.equal(minted.status, 201);
    const escalate = await admin(edge, "POST", "/v1/admin/keys", { label: `escalated-${run}`, scopes: ["config:write", "privacy:write"] }, minted.json.key);
    assert.equal(escalate.status, 403);
    assert.equal(escalate.json.code, "insufficient_scope");
    assert.equal(escalate.json.scope, "privacy:write");
    const keys = await admin(edge, "GET", "/v1/admin/keys");
    assert.ok(!keys.json.keys.some((k) => k.label === `escalated-${run}`), "nothing was issued");
    const same = await admin(edge, "POST", "/v1/admin/keys", { label: `peer-${run}`, scopes: ["config:write"] }, minted.json.key);
    assert.equal(same.status, 201, "its own scopes it may pass on");
  });

  test("the server key from .dev.vars is a trusted source of its own", async () => {
    const event = { type: "identify", userId: `crm-${run}`, messageId: mid(), traits: { email: `crm-${run}@example.com` } };
    const r = await send(edge, [event], secret("SERVER_WRITE_KEY"));
    assert.equal(r.status, 200);
    assert.equal(r.json.results[0].status, "accepted");
    const [row] = await edge.query("SELECT source_id FROM events WHERE message_id = ?", event.messageId);
    assert.equal(row.source_id, "server");
    // It is no browser key: a page on another origin cannot use it.
    const fromPage = await send(edge, [{ ...event, messageId: mid() }], secret("SERVER_WRITE_KEY"), { origin: "https://evil.example" });
    assert.equal(fromPage.status, 403);
    assert.equal(fromPage.json.code, "origin_not_allowed");
  });
});

describe("trust: rate limits and the page proxy", () => {
  let edge;
  let origin;
  const seen = [];
  const SERVER_KEY = "import_server_key_0123456789";
  before(async () => {
    // The site's origin: a page without a CSP of its own, and a redirect to an internal address.
    origin = createServer((req, res) => {
      seen.push({ url: req.url, authorization: req.headers.authorization });
      if (req.url.startsWith("/moved")) {
        res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end('<!doctype html><title>Shop</title><div data-seam-slot="recommended-for-you">fallback</div>');
    });
    await new Promise((r) => origin.listen(0, "127.0.0.1", r));
    edge = await startEdge("trust-limits", {
      sources: {
        [WRITE_KEY]: { id: "shop", origins: ["*"], siteOrigin: `http://127.0.0.1:${origin.address().port}` },
        [SERVER_KEY]: { id: "import", kind: "server" },
      },
      limits: { ip: 4, source: 100, signIn: 3 },
    });
  });
  after(async () => {
    await edge?.stop();
    origin?.close();
  });

  test("sign-ins are limited per client IP, before any key or password is checked", async () => {
    const signIn = (path, body) => fetch(`${edge.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    // The limiter counts in fixed windows, so a sequence that straddles two may pass up to twice
    // the limit (3 here) before the first refusal.
    const statuses = [];
    while (!statuses.includes(429) && statuses.length < 7) {
      statuses.push((await signIn("/console/session", { key: "not-the-admin-key-0123456789" })).status);
    }
    const first = statuses.indexOf(429);
    assert.ok(first >= 3 && first <= 6, `statuses: ${statuses}`);
    assert.ok(statuses.slice(0, first).every((s) => s === 401), `statuses: ${statuses}`);
    const right = await signIn("/console/session", { key: secret("ADMIN_KEY") });
    assert.equal(right.status, 429, "the right key waits too: guesses cannot be told from it");
    assert.equal(right.headers.get("retry-after"), "60");
    assert.equal((await right.json()).code, "rate_limited");
    const demo = await signIn("/demo/sign-in", { email: "ann@shop.example", password: secret("DEMO_PASSWORD") });
    assert.equal(demo.status, 429, "the demo shop's sign-in shares the IP's budget");
  });

  test("a server import from one host is limited per source, never per IP; browsers per IP", async () => {
    const now = async (key) => {
      const res = await fetch(`${edge.url}/v1/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ writeKey: key, batch: [{ type: "track", event: "Imported", userId: `u-${run}`, messageId: mid() }] }),
      });
      return res.status;
    };
    const server = [];
    for (let i = 0; i < 8; i++) server.push(await now(SERVER_KEY));
    assert.deepEqual(server, Array(8).fill(200), "twice the IP limit, all accepted");
    const browser = [];
    for (let i = 0; i < 6; i++) browser.push(await now(WRITE_KEY));
    assert.deepEqual(browser.slice(0, 4), [200, 200, 200, 200]);
    assert.deepEqual(browser.slice(4), [429, 429], "the public key is limited per client IP");
  });

  test("the page proxy forwards no credentials, follows no redirect and adds a CSP", async () => {
    const page = await fetch(`${edge.url}/product?id=1`, { headers: { authorization: "Bearer secret-meant-for-the-worker" } });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /data-seam-slot="recommended-for-you" data-seam-rendered=/);
    const request = seen.find((s) => s.url === "/product?id=1");
    assert.ok(request, JSON.stringify(seen));
    assert.equal(request.authorization, undefined, "Authorization stays with the Worker");
    assert.match(page.headers.get("content-security-policy"), /default-src 'self'/, "the fallback policy");

    const moved = await fetch(`${edge.url}/moved`, { redirect: "manual" });
    assert.equal(moved.status, 302, "the browser gets the redirect");
    assert.equal(moved.headers.get("location"), "http://169.254.169.254/latest/meta-data/");
    await settled(edge.url);
  });
});

describe("trust: identity claims from the public key", () => {
  let edge;
  const IDENTITY_SECRET = secret("IDENTITY_SECRET");
  const SERVER_KEY = secret("SERVER_WRITE_KEY");
  const token = (userId, expires = Math.floor(Date.now() / 1000) + 3600, key = IDENTITY_SECRET) =>
    `v1.${expires}.${createHmac("sha256", key).update(`${userId}.${expires}`).digest("hex")}`;
  const lookup = async (type, value) => {
    const r = await admin(edge, "GET", `/v1/profiles/lookup?type=${type}&value=${encodeURIComponent(value)}`);
    return r.status === 200 ? r.json : null;
  };
  const holds = (profile, type, value) => (profile?.identifiers ?? []).includes(`${type}:${value}`);
  const cookie = (id) => ({ cookie: idCookie(id) });
  // A server identifies the victim; the victim has browsed two products on their own browser.
  const victim = async (tag) => {
    const user = `victim-${tag}-${run}`;
    const email = `${user}@shop.example`;
    const browser = `browser-${tag}-${run}-0000`;
    const r = await send(edge, [
      { type: "identify", userId: user, anonymousId: browser, traits: { email }, messageId: mid() },
      viewed(browser, `secret-${tag}-${run}`),
    ], SERVER_KEY);
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "accepted"]);
    return { user, email, browser, profileId: (await lookup("user_id", user)).profileId };
  };
  before(async () => {
    edge = await startEdge("trust-identity");
  });
  after(async () => {
    await edge?.stop();
  });

  test("an email claimed from a page joins nothing and the response names no profile", async () => {
    const v = await victim("email");
    const mine = `attacker-email-${run}-0000`;
    const r = await send(edge, [{ type: "identify", anonymousId: mine, traits: { email: v.email }, messageId: mid() }]);
    assert.equal(r.json.results[0].status, "accepted", "the claim is kept as an event");
    assert.equal(r.json.profileId, undefined, "no account-exists oracle");
    const me = await lookup("anonymous_id", mine);
    assert.notEqual(me.profileId, v.profileId);
    assert.equal(me.traits.email, v.email, "kept as a trait of the claimant's own profile");
    assert.ok(!holds(await lookup("email", v.email), "anonymous_id", mine));
    // Asking with that email's owner in mind gets the claimant nothing personal either.
    const d = await decide(edge, { anonymousId: mine, userId: v.user }, cookie(mine));
    assert.notEqual(d.json.profileId, v.profileId);
    assert.equal(d.json.profileId, me.profileId, "the claimant's own browser, proven by its cookie");
  });

  test("decide for someone else's user ID is not personal and re-points nothing", async () => {
    const v = await victim("decide");
    const mine = `attacker-decide-${run}-0000`;
    const d = await decide(edge, { anonymousId: mine, userId: v.user, slots: [{ id: "recommended-for-you", limit: 20 }] });
    assert.equal(d.status, 200);
    assert.equal(d.json.personalised, false);
    assert.equal(d.json.profileId, null);
    assert.ok(!JSON.stringify(d.json).includes(`secret-decide-${run}`));
    assert.equal(await edge.kv.get(`anon:${mine}`), null, "no pointer for an unproven identity");
    // The victim's own browser, proven by its cookie, is personal.
    const own = await decide(edge, { anonymousId: v.browser }, cookie(v.browser));
    assert.equal(own.json.profileId, v.profileId);
    // A body anonymous ID without the cookie is a claim too.
    const claimed = await decide(edge, { anonymousId: v.browser });
    assert.equal(claimed.json.profileId, null);
    // The server key may ask for anyone.
    const server = await post(`${edge.url}/v1/decide`, { writeKey: SERVER_KEY, userId: v.user, slots: ["recommended-for-you"] });
    assert.equal(server.json.profileId, v.profileId);
  });

  test("knowing a visitor's ID is not enough: a cookie the Worker did not seal reads nothing, and naming the ID from another browser ties nothing to it", async () => {
    const v = await victim("bearer");
    const sealed = await decide(edge, { anonymousId: v.browser }, { cookie: idCookie(v.browser) });
    assert.equal(sealed.json.profileId, v.profileId, "the browser holding the sealed cookie is personal");
    // The ID travels (destinations get it), so anyone may learn it; the sealed cookie does not.
    for (const value of [v.browser, `${v.browser}.${"0".repeat(32)}`, `${v.browser}.${idCookie(`other-${run}-0000`).split(".")[1]}`]) {
      const d = await decide(edge, { anonymousId: v.browser, slots: [{ id: "recommended-for-you", limit: 20 }] }, { cookie: `__Host-seam_id=${value}` });
      assert.equal(d.status, 200);
      assert.equal(d.json.profileId, null, value);
      assert.equal(d.json.personalised, false, value);
    }
    // The victim's own sealed value under the cookie's old name, which a sibling subdomain can
    // set for the whole site, reads nothing either.
    const old = await decide(edge, { anonymousId: v.browser, slots: [{ id: "recommended-for-you", limit: 20 }] }, { cookie: idCookie(v.browser).replace(/^__Host-/, "") });
    assert.deepEqual([old.json.profileId, old.json.personalised], [null, false]);
    // Another browser sends events naming the victim's ID: same-site, with consent, first
    // without a cookie and then with the one the Worker gives it.
    const event = () => ({ ...viewed(v.browser, `attacker-view-${run}`), context: { consent: { gcm: { analytics_storage: "granted" } } } });
    const first = await send(edge, [event()], WRITE_KEY, { "sec-fetch-site": "same-origin" });
    const given = first.headers.get("set-cookie")?.match(/^__Host-seam_id=([^;.]+)\.[0-9a-f]{32};/)?.[1];
    assert.ok(given && given !== v.browser, `a cookie of its own: ${first.headers.get("set-cookie")}`);
    assert.equal(first.json.anonymousId, given);
    await send(edge, [event()], WRITE_KEY, { "sec-fetch-site": "same-origin", cookie: idCookie(given) });
    await settled(edge.url);
    const theirs = await lookup("anonymous_id", given);
    assert.notEqual(theirs.profileId, v.profileId, "the attacker's browser is not joined to the victim");
    assert.ok(!holds(await lookup("user_id", v.user), "anonymous_id", given));
    const d = await decide(edge, { anonymousId: given, slots: [{ id: "recommended-for-you", limit: 20 }] }, { cookie: idCookie(given) });
    assert.equal(d.json.profileId, theirs.profileId, "its decisions are its own profile's");
    const rows = await edge.query(`SELECT DISTINCT anonymous_id FROM events WHERE json_extract(body, '$.properties.product_id') = 'attacker-view-${run}'`);
    assert.deepEqual(rows, [{ anonymous_id: given }], "its events are stored as its own");
    assert.equal((await lookup("anonymous_id", v.browser)).profileId, v.profileId);
  });

  test("a request without the cookie that names a cookie holder's ID changes nothing of theirs", async () => {
    const granted = { consent: { gcm: { analytics_storage: "granted" } } };
    // The victim's browser: its cookie's ID is one the Worker issued.
    const first = await send(edge, [{ ...viewed(`v4-${run}-00000000`, `held-${run}`), context: granted }], WRITE_KEY, { "sec-fetch-site": "same-origin" });
    const held = first.headers.get("set-cookie").match(/^__Host-seam_id=([^;.]+)\./)[1];
    assert.match(held, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-/, "a version-8 UUID: issued by the Worker");
    await send(edge, [{ type: "identify", anonymousId: held, traits: { first_name: "Vic" }, messageId: mid(), context: granted }], WRITE_KEY, { cookie: idCookie(held) });
    await settled(edge.url);
    const before = await lookup("anonymous_id", held);
    // Someone who learnt the ID (destinations receive it) sends without the cookie.
    const mallory = `mallory-cookieless-${run}`;
    const r = await send(edge, [
      { type: "identify", anonymousId: held, traits: { first_name: "Mallory", unsubscribed_email: false }, messageId: mid() },
      { type: "track", event: "Choice", anonymousId: held, messageId: mid(), context: { consent: { gcm: { analytics_storage: "denied" } } } },
      { type: "identify", userId: mallory, anonymousId: held, messageId: mid(), context: { seam: { identityToken: token(mallory) } } },
    ]);
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "accepted", "accepted"], "stored, as claims");
    await settled(edge.url);
    const after = await lookup("anonymous_id", held);
    assert.equal(after.profileId, before.profileId);
    assert.equal(after.traits.first_name, "Vic", "no traits set on their profile");
    const consent = await edge.query("SELECT state FROM consent_history WHERE identifier = ?", `anonymous_id:${held}`);
    assert.ok(consent.length >= 1 && consent.every((c) => !c.state.includes("denied")), JSON.stringify(consent));
    const account = await lookup("user_id", mallory);
    assert.ok(account, "the verified user ID is the sender's own account");
    assert.ok(!holds(account, "anonymous_id", held), "not merged into the sender's account");
    assert.notEqual(account.profileId, before.profileId);
    const d = await decide(edge, { userId: mallory, context: { seam: { identityToken: token(mallory) } } });
    assert.equal(d.json.profileId, account.profileId, "the sender reads only its own account");
  });

  test("an alias or an external ID naming another visitor's anonymous ID joins nothing", async () => {
    const theirs = randomUUID();
    const user = `victim-alias-${run}`;
    await send(edge, [
      { type: "identify", userId: user, anonymousId: theirs, messageId: mid() },
      viewed(theirs, `secret-alias-${run}`),
    ], SERVER_KEY);
    const victimId = (await lookup("user_id", user)).profileId;
    const mine = `attacker-alias-${run}-0000`;
    const r = await send(edge, [
      { type: "alias", userId: `attacker-user-${run}`, previousId: theirs, anonymousId: mine, messageId: mid() },
      { type: "track", event: "Linked", anonymousId: mine, messageId: mid(), context: { externalIds: [{ id: theirs, type: "anonymous_id", collection: "users" }] } },
    ], WRITE_KEY, { cookie: idCookie(mine) });
    assert.deepEqual(r.json.results.map((x) => x.status), ["accepted", "accepted"]);
    await settled(edge.url);
    const me = await lookup("anonymous_id", mine);
    assert.notEqual(me.profileId, victimId);
    assert.ok(!holds(me, "anonymous_id", theirs), JSON.stringify(me.identifiers));
    assert.equal((await lookup("anonymous_id", theirs)).profileId, victimId);
    const d = await decide(edge, { anonymousId: mine }, { cookie: idCookie(mine) });
    assert.equal(d.json.profileId, me.profileId);
  });

  test("consent sent with a sealed cookie is recorded for the cookie's ID, not the one the events name", async () => {
    const mine = `consent-cookie-${run}-0000`;
    const named = `consent-named-${run}-0000`;
    await send(edge, [{ type: "track", event: "Choice", anonymousId: named, messageId: mid(), context: { consent: { gcm: { analytics_storage: "denied" } } } }],
      WRITE_KEY, { cookie: idCookie(mine) });
    await settled(edge.url);
    const recorded = async (id) => (await edge.query("SELECT count(*) AS n FROM consent_history WHERE identifier = ?", `anonymous_id:${id}`))[0].n;
    assert.equal(await recorded(mine), 1);
    assert.equal(await recorded(named), 0, "no one's consent is set by naming their ID");
  });

  test("a page's decision is logged with only the page and consent of its context", async () => {
    const mine = `exposure-${run}-0000`;
    const context = { page: { path: "/exposed" }, consent: { gcm: { analytics_storage: "granted" } }, traits: { email: `someone-${run}@else.example` }, externalIds: [{ id: "x", type: "email" }] };
    const d = await decide(edge, { anonymousId: mine, context }, { cookie: idCookie(mine) });
    assert.ok(d.json.exposureId, JSON.stringify(d.json));
    await settled(edge.url);
    const [row] = await edge.query("SELECT anonymous_id, body FROM events WHERE message_id = ?", d.json.exposureId);
    assert.equal(row.anonymous_id, mine);
    const logged = JSON.parse(row.body).context;
    assert.deepEqual(logged.page, context.page);
    assert.deepEqual(logged.consent.gcm, context.consent.gcm);
    assert.equal(logged.traits, undefined, "a page's traits never ride on an event the collector made");
    assert.equal(logged.externalIds, undefined);
    assert.equal(logged.seam.identity, "claimed");
  });

  test("two browsers claiming one user ID stay apart", async () => {
    const user = `shared-${run}`;
    const [a, b] = [`claim-a-${run}-0000`, `claim-b-${run}-0000`];
    await send(edge, [{ type: "identify", userId: user, anonymousId: a, messageId: mid() }, viewed(a, `a-only-${run}`)]);
    await send(edge, [{ type: "identify", userId: user, anonymousId: b, messageId: mid() }]);
    const [pa, pb] = [await lookup("anonymous_id", a), await lookup("anonymous_id", b)];
    assert.notEqual(pa.profileId, pb.profileId);
    assert.equal(await lookup("user_id", user), null, "an unverified user ID is no identifier");
    assert.equal(pa.traits.claimedUserId, user, "but kept as the browser's claim");
    const d = await decide(edge, { anonymousId: b }, cookie(b));
    assert.equal(d.json.profileId, pb.profileId, "B's decisions are B's own, never A's history");
  });

  test("anonymous browsing then a verified login on two devices makes one profile", async () => {
    const user = `verified-${run}`;
    const [phone, laptop] = [`phone-${run}-00000`, `laptop-${run}-0000`];
    await send(edge, [viewed(phone, `phone-view-${run}`)], WRITE_KEY, cookie(phone));
    await send(edge, [viewed(laptop, `laptop-view-${run}`)], WRITE_KEY, cookie(laptop));
    for (const device of [phone, laptop]) {
      const r = await send(edge, [{
        type: "identify", userId: user, anonymousId: device, messageId: mid(),
        context: { seam: { identityToken: token(user) } },
      }], WRITE_KEY, cookie(device));
      assert.equal(r.json.results[0].status, "accepted");
    }
    const profile = await lookup("user_id", user);
    assert.ok(profile, "the verified user ID is an identifier");
    assert.ok(holds(profile, "anonymous_id", phone) && holds(profile, "anonymous_id", laptop), JSON.stringify(profile.identifiers));
    // The laptop sees what the phone viewed.
    const d = await decide(edge, { anonymousId: laptop, slots: [{ id: "recommended-for-you", limit: 20 }] }, cookie(laptop));
    assert.equal(d.json.profileId, profile.profileId);
    // A verified decide body works without the cookie. (After the decision above has logged
    // its exposure: in full runs, a decide racing that write once found no profile.)
    await settled(edge.url);
    const byToken = await decide(edge, { userId: user, context: { seam: { identityToken: token(user) } } });
    assert.equal(byToken.json.profileId, profile.profileId, JSON.stringify(byToken.json));
    const [stored] = await edge.query(`SELECT body FROM events WHERE json_extract(body, '$.userId') = '${user}' AND json_extract(body, '$.type') = 'identify' LIMIT 1`);
    const seam = JSON.parse(stored.body).context.seam;
    assert.equal(seam.identity, "verified");
    assert.equal(seam.identityToken, undefined, "tokens are not stored");
  });

  test("a token for one user cannot verify another, and an expired token is refused", async () => {
    const v = await victim("token");
    const mallory = `mallory-${run}`;
    const mine = `attacker-token-${run}-0000`;
    const cases = [
      [token(mallory), "invalid_identity_token"],
      [token(v.user, Math.floor(Date.now() / 1000) - 5), "expired_identity_token"],
      [token(v.user, undefined, "not-the-deployment-secret"), "invalid_identity_token"],
      ["v1.garbage", "malformed_identity_token"],
    ];
    for (const [t, code] of cases) {
      const messageId = mid();
      await send(edge, [{ type: "identify", userId: v.user, anonymousId: mine, messageId, context: { seam: { identityToken: t } } }]);
      const [row] = await edge.query(`SELECT body FROM events WHERE message_id = '${messageId}'`);
      const seam = JSON.parse(row.body).context.seam;
      assert.deepEqual([seam.identity, seam.identityError], ["claimed", code]);
    }
    assert.ok(!holds(await lookup("user_id", v.user), "anonymous_id", mine));
    const d = await decide(edge, { userId: v.user, context: { seam: { identityToken: token(mallory) } } });
    assert.equal(d.json.profileId, null);
  });

  test("a browser's clock is a claim: a trait dated 9999 holds for minutes, history dates from arrival", async () => {
    const anon = `clock-${run}-00000000`;
    const sentAt = Date.now();
    await send(edge, [{ type: "identify", anonymousId: anon, traits: { plan: "forever" }, timestamp: "9999-01-01T00:00:00Z", messageId: mid() }]);
    const [trait] = await edge.query("SELECT timestamp FROM trait_values WHERE identifier = ? AND key = 'plan'", `anonymous_id:${anon}`);
    assert.ok(trait.timestamp <= Date.now() + 5 * 60_000, `at most five minutes ahead (${trait.timestamp}), so a later write wins`);
    const old = mid();
    await send(edge, [{
      type: "track", event: "Backdated", anonymousId: anon, messageId: old, timestamp: "2001-01-01T00:00:00Z",
      context: { consent: { gcm: { analytics_storage: "granted", ad_user_data: "granted" } } },
    }]);
    const [event] = await edge.query("SELECT timestamp FROM events WHERE message_id = ?", old);
    assert.ok(event.timestamp >= sentAt - 7 * 86_400_000 - 1000, `clamped to the dedup window (${event.timestamp})`);
    const history = await edge.query("SELECT timestamp FROM consent_history WHERE identifier = ?", `anonymous_id:${anon}`);
    assert.equal(history.length, 1);
    assert.ok(history[0].timestamp >= sentAt - 1000, "consent is on record from when it arrived");
  });

  test("erasure reaches the person's email in others' claims and their events of deleted sources; a claimant's request covers only their browser", async () => {
    const v = await victim("erase");
    const mine = `attacker-erase-${run}-0000`;
    // The shop's server knows the victim's phone and device; the claimant writes the phone their
    // own way and names the device (a claim: a link marking it claimed, which joins no one).
    const device = `victim-device-${run}`;
    await send(edge, [{ type: "identify", userId: v.user, traits: { phone: "+49 151 2345 6789" }, context: { device: { id: device } }, messageId: mid() }], SERVER_KEY);
    await send(edge, [
      { type: "identify", anonymousId: mine, traits: { email: v.email.toUpperCase(), plan: "mine" }, messageId: mid() },
      { type: "track", event: "Claimed", anonymousId: mine, context: { traits: { email: v.email }, device: { id: device } }, messageId: mid() },
      { type: "identify", anonymousId: mine, traits: { phone: "+49 (151) 2345-6789" }, messageId: mid() },
      { type: "track", event: "Claimed", anonymousId: mine, context: { traits: { phone: "+49.151.2345.6789" } }, messageId: mid() },
      // Each typed into the other's field.
      { type: "track", event: "Crossed", anonymousId: mine, context: { traits: { email: "+49 151 2345 6789", phone: ` ${v.email.toUpperCase()}` } }, messageId: mid() },
      // Padded with a tab or a no-break space, a phone with a slash: the identity graph trims
      // every white space and keeps only a phone's digits, and so must erasure.
      { type: "track", event: "Padded", anonymousId: mine, context: { traits: { email: `\t${v.email}\u00a0`, phone: "+49 151/2345\u00a06789" }, device: { id: `\t${device}` } }, messageId: mid() },
      { type: "identify", anonymousId: mine, traits: { email: `\t${v.email}`, phone: "+49 151/2345 6789" }, messageId: mid() },
    ]);
    const now = Date.now();
    await edge.exec(
      "INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body) VALUES (?, ?, 'track', 'Old', NULL, ?, ?, ?, ?)",
      "removed-source", `old-${run}`, v.user, now, now, JSON.stringify({ type: "track", event: "Old", userId: v.user }),
    );
    // The claimant asks for their own data: they get their browser, not the victim.
    const own = await admin(edge, "GET", `/v1/privacy/export?type=anonymous_id&value=${mine}`);
    assert.equal(own.status, 200);
    assert.ok(!own.json.data.identifiers.includes(`user_id:${v.user}`), JSON.stringify(own.json.data.identifiers));
    assert.ok(own.json.data.events.length > 0 && own.json.data.events.every((e) => e.body.anonymousId === mine));
    const ownDelete = await admin(edge, "POST", "/v1/privacy/delete", { type: "anonymous_id", value: `other-${run}-never-seen` });
    assert.equal(ownDelete.status, 200);
    assert.ok(await lookup("user_id", v.user), "the victim is untouched by someone else's request");

    const theirs = await admin(edge, "GET", `/v1/privacy/export?type=email&value=${encodeURIComponent(v.email)}`);
    assert.ok(theirs.json.data.events.some((e) => e.sourceId === "removed-source"), "an export covers deleted sources");
    const [claim] = await edge.query("SELECT claimed FROM identity_links WHERE instr(identifiers, ?) AND instr(identifiers, ?)", mine, device);
    assert.ok(claim?.claimed?.includes(device), "before the erasure, the claimant's link claims the device");
    // A walk that stopped at one of the person's identifiers or profile IDs keeps it as its
    // position.
    for (const [name, after] of [["test_walk", `user_id:${v.user}`], ["test_profile_walk", v.profileId]]) {
      await edge.exec("INSERT INTO walk_cursors (name, after) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET after = excluded.after", name, after);
    }
    const erased = await admin(edge, "POST", "/v1/privacy/delete", { type: "email", value: v.email });
    assert.equal(erased.status, 200);
    assert.ok(erased.json.deleted.redactedClaims >= 5, JSON.stringify(erased.json.deleted));
    assert.equal(await lookup("user_id", v.user), null);
    const [{ n: left }] = await edge.query("SELECT count(*) AS n FROM events WHERE body LIKE ?", `%${v.email}%`);
    assert.equal(left, 0, "the email is in no stored event, whoever sent it");
    const [{ n: phones }] = await edge.query("SELECT count(*) AS n FROM events WHERE body LIKE '%2345%6789%'");
    assert.equal(phones, 0, "nor the phone, however it was written");
    const [{ n: old }] = await edge.query("SELECT count(*) AS n FROM events WHERE source_id = 'removed-source' AND user_id = ?", v.user);
    assert.equal(old, 0, "events of a source no longer configured are erased too");
    // Nowhere in D1: every text column of every table, the links' claimed lists included.
    const tables = await edge.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'd1_%'");
    const holding = [];
    for (const { name } of tables) {
      const columns = (await edge.query(`SELECT name FROM pragma_table_info('${name}')`)).map((c) => c.name);
      const where = columns.map((c) => `instr(lower(CAST("${c}" AS TEXT)), ?1) OR instr(CAST("${c}" AS TEXT), ?2) OR instr(CAST("${c}" AS TEXT), ?3) OR instr(CAST("${c}" AS TEXT), ?4) OR instr(CAST("${c}" AS TEXT), ?5)`).join(" OR ");
      const [{ n }] = await edge.query(`SELECT count(*) AS n FROM "${name}" WHERE ${where}`, v.email.toLowerCase(), device, v.user, v.browser, v.profileId);
      if (n > 0) holding.push(`${name}: ${n}`);
    }
    assert.deepEqual(holding, [], "no row of any table holds the erased email, device, user, browser or profile ID");
    const me = await lookup("anonymous_id", mine);
    assert.equal(me.traits.email, undefined, "the claimant's profile no longer holds the email");
    assert.equal(me.traits.plan, "mine", "and keeps everything else");
  });

  test("a request racing a suppression undoes its own person, never the profile of a device it only claims", async () => {
    const v = await victim("race");
    const device = `race-device-${run}`;
    await send(edge, [{ type: "identify", userId: v.user, context: { device: { id: device } }, messageId: mid() }], SERVER_KEY);
    await settled(edge.url);
    assert.ok(holds(await lookup("user_id", v.user), "device_id", device));
    const mine = `attacker-race-${run}-0000`;
    const warm = mid();
    await send(edge, [{ type: "track", event: "Warm", anonymousId: mine, messageId: warm }], WRITE_KEY, { cookie: idCookie(mine) });
    await settled(edge.url);
    // Suppressed behind the isolate's cached list, as another isolate's deletion would be: the
    // next request passes the cached check, and its batch's own check undoes it.
    const key = createHash("sha256").update(`seam-suppression\nanonymous_id:${mine}`).digest("hex");
    await edge.exec("INSERT INTO suppressions (key, id_class, created_at, request_id) VALUES (?, 'anonymous_id', ?, 'race')", key, Date.now());
    await send(edge, [{ type: "track", event: "Raced", anonymousId: mine, context: { device: { id: device } }, messageId: mid() }], WRITE_KEY, { cookie: idCookie(mine) });
    await settled(edge.url);
    const [{ n: left }] = await edge.query("SELECT count(*) AS n FROM events WHERE anonymous_id = ?", mine);
    assert.equal(left, 0, "the suppressed browser's events are undone, the earlier one too");
    const after = await lookup("user_id", v.user);
    assert.ok(after, "the victim's profile stays");
    assert.ok(holds(after, "device_id", device), "with the device the browser only claimed");
  });

  test("a flood of backdated identifies naming the victim detaches nothing and fills no cap", async () => {
    const v = await victim("flood");
    const before = (await lookup("user_id", v.user)).identifiers;
    const flood = Array.from({ length: 500 }, (_, i) => ({
      type: "identify", userId: v.user, anonymousId: `flood-${run}-${i}-000000`, traits: { email: v.email },
      timestamp: "2001-01-01T00:00:00Z", messageId: mid(),
    }));
    const r = await send(edge, flood);
    assert.equal(r.json.results.filter((x) => x.status === "accepted").length, 500, "kept as claims");
    assert.deepEqual((await lookup("user_id", v.user)).identifiers, before, "the victim's profile is as it was");
    // The victim's own new device still joins them by a verified login.
    const device = `victim-new-device-${run}-00`;
    await send(edge, [{ type: "identify", userId: v.user, anonymousId: device, messageId: mid(),
      context: { seam: { identityToken: token(v.user) } } }]);
    assert.ok(holds(await lookup("user_id", v.user), "anonymous_id", device));
  });

  test("a page cannot forge the collector's own fields", async () => {
    const v = await victim("forge");
    const mine = `attacker-forge-${run}-0000`;
    await send(edge, [
      { type: "identify", userId: v.user, anonymousId: mine, messageId: mid(), context: { seam: { identity: "verified", cookieId: v.browser } } },
      { type: "identify", userId: v.user, anonymousId: mine, messageId: mid(), context: null },
      { type: "track", event: "X", userId: v.user, anonymousId: mine, messageId: mid(), context: { seam: null } },
    ]);
    const me = await lookup("anonymous_id", mine);
    assert.notEqual(me.profileId, v.profileId);
    assert.ok(!holds(await lookup("user_id", v.user), "cookie_id", v.browser));
  });

  test("after erasures and expiries each profile's row still holds exactly its identifiers, and the totals count them", async () => {
    assert.ok((await checkProfileRows(edge)) >= 1);
  });

  test("server-side identify merges freely, and a trust-browser source believes the page", async () => {
    const user = `server-${run}`;
    const [a, b] = [`srv-a-${run}-0000`, `srv-b-${run}-0000`];
    await send(edge, [
      { type: "identify", userId: user, anonymousId: a, traits: { email: `${user}@shop.example` }, messageId: mid() },
      { type: "identify", userId: user, anonymousId: b, messageId: mid() },
    ], SERVER_KEY);
    const p = await lookup("email", `${user}@shop.example`);
    assert.ok(holds(p, "anonymous_id", a) && holds(p, "anonymous_id", b) && holds(p, "user_id", user));
  });
});

describe("trust: a source that opts into trusting browsers", () => {
  let edge;
  before(async () => {
    edge = await startEdge("trust-browser", {
      // Trusted, so stored before the answer by default: the answer names the profile.
      sources: { [WRITE_KEY]: { id: "demo-site", identity: "trust-browser" } },
    });
  });
  after(async () => {
    await edge?.stop();
  });

  test("believes a page's identify, as documented with its risk", async () => {
    const user = `believed-${run}`;
    const anon = `believed-anon-${run}`;
    const r = await send(edge, [{ type: "identify", userId: user, anonymousId: anon, traits: { email: `${user}@shop.example` }, messageId: mid() }]);
    assert.ok(r.json.profileId, "a trusted source's response names the profile");
    const p = await admin(edge, "GET", `/v1/profiles/lookup?type=email&value=${user}%40shop.example`);
    assert.equal(p.status, 200);
    assert.ok(p.json.identifiers.includes(`anonymous_id:${anon}`), JSON.stringify(p.json.identifiers));
  });
});

describe("trust: a suppression list too long to hold in memory", () => {
  let edge;
  before(async () => {
    // The dev key stores before it answers, so its answers name the suppressed; the queued key
    // is a browser source as configured by default.
    edge = await startEdge("trust-suppressions", { sources: { ...directSources(), [QUEUED_KEY]: { id: "queued-site" } } });
  });
  after(async () => {
    await edge?.stop();
  });

  test("is asked about per request, and still refuses the suppressed", async () => {
    // 25,000 suppressed keys (past what an isolate holds), then one real person.
    await edge.exec(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000) " +
        "INSERT INTO suppressions (key, id_class, created_at, request_id) SELECT printf('%064x', i), 'email', 0, 'bulk' FROM n",
    );
    const email = `suppressed-${run}@shop.example`;
    const r = await admin(edge, "POST", "/v1/privacy/suppress", { type: "email", value: email });
    assert.equal(r.status, 200);
    const sent = await send(edge, [
      { type: "identify", anonymousId: `long-a-${run}`, traits: { email }, messageId: mid() },
      { type: "track", event: "Fine", anonymousId: `long-b-${run}`, messageId: mid() },
    ]);
    assert.deepEqual(sent.json.results.map((x) => x.status), ["rejected", "accepted"]);
    assert.equal(sent.json.results[0].code, "suppressed");
    const again = await send(edge, [{ type: "track", event: "Again", anonymousId: `long-c-${run}`, context: { traits: { email } }, messageId: mid() }]);
    assert.equal(again.json.results[0].code, "suppressed", "the next request (the isolate now knows the list is long)");
    // Queued: answered before the check, and the consumer stores nothing of the suppressed.
    const queued = await send(edge, [
      { type: "identify", anonymousId: `long-q-${run}`, traits: { email }, messageId: mid() },
      { type: "track", event: "Fine", anonymousId: `long-r-${run}`, messageId: mid() },
    ], QUEUED_KEY);
    assert.equal(queued.json.deferred, true);
    const stored = await edge.query("SELECT anonymous_id FROM events WHERE anonymous_id IN (?, ?)", `long-q-${run}`, `long-r-${run}`);
    assert.deepEqual(stored.map((r) => r.anonymous_id), [`long-r-${run}`]);
  });
});
