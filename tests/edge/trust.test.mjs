// The trust model, from the attacker's side: someone holding only the public write key (it ships
// in every page) tries to reach further than their own browser. Each attack must fail; the
// legitimate journeys next to them must keep working. Real Worker in workerd, real D1 and KV.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { post, root, settled, startEdge, WRITE_KEY } from "../support/edge.mjs";

const secrets = readFileSync(join(root, ".dev.vars"), "utf8");
const secret = (name) => secrets.match(new RegExp(`^${name}=(.*)$`, "m"))[1].trim();
const ADMIN_KEY = secret("ADMIN_KEY");
const run = `${process.pid}`;
let n = 0;
const mid = () => `t-${run}-${++n}`;
const send = (edge, batch, key = WRITE_KEY, headers = {}) => post(`${edge.url}/v1/batch`, { writeKey: key, batch }, headers);
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
    const anon = `gpc-${run}`;
    await send(edge, [viewed(anon, `g1-${run}`), viewed(anon, `g2-${run}`)]);
    const plain = await decide(edge, { anonymousId: anon });
    assert.notEqual(plain.json.reason, "consent_denied");
    assert.ok(plain.json.profileId);
    const gpc = await decide(edge, { anonymousId: anon }, { "Sec-GPC": "1" });
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
      limits: { ip: 4, source: 100 },
    });
  });
  after(async () => {
    await edge?.stop();
    origin?.close();
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
