// End to end: visitors in real Chromium use the demo shop served by the Worker; the SDK from the
// packed npm package sends the events; the rows appear in the Worker's local D1.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { root, startEdge } from "../support/edge.mjs";
import { eventually, follow, launchBrowser } from "../support/browser.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("demo shop -> SDK -> edge -> D1", () => {
  let edge;
  const browsers = [];
  before(async () => {
    edge = await startEdge("e2e");
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await edge?.stop();
  });

  /** A fresh browser profile; with `consent`, the visitor chose it on an earlier visit. */
  async function visitor(consent) {
    const browser = await launchBrowser();
    browsers.push(browser);
    if (consent) await browser.context.addInitScript((c) => localStorage.setItem("demo_consent", c), consent);
    return browser;
  }

  /** Every messageId the page sends to the collector, in send order (retries repeat). */
  function recordSends(page, sent = []) {
    page.on("request", (request) => {
      if (!request.url().endsWith("/v1/batch")) return;
      for (const event of JSON.parse(request.postData() ?? "{}").batch ?? []) sent.push(event.messageId);
    });
    return sent;
  }

  // Events the edge logs itself for the visitor (exposures of rendered pages, segment changes).
  const SENT_BY_BROWSER = "coalesce(name, '') NOT IN ('Decision Exposed', 'Segment Entered', 'Segment Exited')";

  // Reads through wrangler's platform proxy share the SQLite file with the running Worker: a read
  // can meet SQLITE_BUSY while the Worker writes (and the reverse), so poll gently and retry.
  async function eventsOf(anonymousId) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await edge.query(`SELECT message_id, type, name, body FROM events WHERE anonymous_id = ? AND ${SENT_BY_BROWSER} ORDER BY timestamp`, anonymousId);
      } catch (error) {
        if (attempt >= 5) throw error;
        await sleep(200);
      }
    }
  }
  const until = (fn, ms = 40_000) => eventually(fn, ms, 1000);
  const storedId = (page) => page.evaluate(() => localStorage.getItem("seam_anonymous_id"));
  // The visitor's ID once the collector's sealed cookie and the SDK agree on it: the Worker
  // chooses it on the first request that may set the cookie, and the SDK adopts it from the answer.
  const adoptedId = (page) => until(async () => {
    const cookie = (await page.context().cookies(edge.url)).find((c) => c.name === "__Host-seam_id");
    const id = cookie?.value.split(".")[0];
    return id && (await storedId(page)) === id && id;
  });
  const count = (rows, name) => rows.filter((r) => r.name === name).length;

  test("before consent nothing is stored or sent; on grant the buffered events arrive once with the ID", async () => {
    const browser = await visitor();
    const page = await browser.context.newPage();
    const failures = [];
    page.on("pageerror", (e) => failures.push(e.message));
    const sent = recordSends(page);
    await page.goto(`${edge.url}/`);
    // The head's snippet compiled the SDK's wasm while the page parsed (its CSP lets it run).
    assert.equal(await page.evaluate(async () => (await window.seamWasm) instanceof WebAssembly.Module), true, "the snippet's module");
    await page.getByRole("button", { name: "Allow" }).waitFor();
    await sleep(2500); // more than the shop's flushInterval
    assert.deepEqual(sent, [], "nothing sent before the visitor chose");
    assert.equal(await storedId(page), null, "no localStorage ID");
    assert.deepEqual((await browser.context.cookies(edge.url)).map((c) => c.name), [], "no cookie");

    await page.getByRole("button", { name: "Allow" }).click();
    assert.match((await eventually(() => storedId(page))) ?? "", /^[0-9a-f-]{36}$/, "consent granted: the SDK persists its anonymous ID");
    const anonymousId = await adoptedId(page);
    assert.ok(anonymousId, "the SDK adopts the ID of the collector's cookie");
    const home = await until(async () => {
      const rows = await eventsOf(anonymousId);
      return count(rows, "Product List Viewed") > 0 && rows;
    });
    assert.ok(home, "the buffered events reached D1 with the ID");
    assert.equal(count(home, "Home"), 1, "the buffered page view arrives once");
    const body = JSON.parse(home.find((r) => r.name === "Home").body);
    assert.equal(body.context.consent.gcm.analytics_storage, "granted");
    assert.equal(body.context.consent.categoryPreferences.analytics_storage, true);

    const cookies = await until(async () => {
      const c = await browser.context.cookies(edge.url);
      return c.some((x) => x.name === "__Host-seam_id") && c;
    });
    const sdkCookie = cookies.find((c) => c.name === "__Host-seam_anonymous_id");
    assert.equal(sdkCookie?.value, anonymousId, "the SDK's first-party cookie");
    assert.equal(sdkCookie.sameSite, "Lax");
    const collectorCookie = cookies.find((c) => c.name === "__Host-seam_id");
    assert.match(collectorCookie.value, new RegExp(`^${anonymousId}\\.[0-9a-f]{32}$`), "the collector's HttpOnly cookie agrees, sealed");
    assert.equal(collectorCookie.httpOnly, true);

    await follow(page, page.getByRole("link", { name: "Trail Runner" }), /\/product\?/);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByText("Added to cart.").waitFor();
    const rows = await until(async () => {
      const r = await eventsOf(anonymousId);
      return r.some((e) => e.name === "Product Added") && r;
    });
    assert.ok(rows, "the Product Added event reached D1");
    const names = rows.map((r) => `${r.type}:${r.name}`);
    assert.ok(names.includes("page:Product"), `page view stored (${names})`);
    assert.ok(names.includes("track:Product Viewed"), `product view stored (${names})`);
    const added = JSON.parse(rows.find((r) => r.name === "Product Added").body);
    assert.equal(added.properties.product_id, "trail-runner");
    assert.equal(added.properties.price, 129);
    assert.equal(added.context.library.name, "seam.js");
    assert.equal(added.context.page.path, "/product");
    assert.match(added.context.page.referrer, /\/$/, "referrer is the home page");
    assert.match(added.context.userAgent, /Chrome/);
    assert.deepEqual(failures, [], "no errors thrown in the page");
  });

  test("an anonymous ID cookie of the plain name (which another subdomain can set) is not the visitor's ID, and this host's copy is deleted", async () => {
    const browser = await visitor("granted");
    const planted = "b1a5ed00-0000-4000-8000-00000000cafe";
    await browser.context.addCookies([{ name: "seam_anonymous_id", value: planted, url: edge.url }]);
    const page = await browser.context.newPage();
    // The IDs the SDK itself names (the collector puts its cookie's ID on a same-site request's
    // events anyway; a collector on another site sets no cookie, and the SDK's ID is all there is).
    const named = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/v1/batch")) for (const e of JSON.parse(request.postData() ?? "{}").batch ?? []) named.push(e.anonymousId);
    });
    await page.goto(`${edge.url}/`);
    const id = await adoptedId(page);
    assert.ok(named.length > 0 && !named.includes(planted), `the SDK's own ID: ${named}`);
    assert.notEqual(id, planted);
    const names = (await browser.context.cookies(edge.url)).map((c) => c.name);
    assert.ok(names.includes("__Host-seam_anonymous_id") && !names.includes("seam_anonymous_id"), `${names}`);
  });

  test("declining consent sends nothing and stores no identifier", async () => {
    const browser = await visitor();
    const page = await browser.context.newPage();
    const sent = recordSends(page);
    await page.goto(`${edge.url}/`);
    await page.getByRole("button", { name: "Decline" }).click();
    await follow(page, page.getByRole("link", { name: "Road Racer" }), /\/product\?/);
    await sleep(2500);
    assert.equal(await storedId(page), null);
    assert.deepEqual(sent, [], "events stay buffered in memory and die with the page");
    const cookies = (await browser.context.cookies(edge.url)).map((c) => c.name);
    assert.ok(!cookies.some((name) => /seam_id|seam_anonymous_id/.test(name)), `${cookies}`);
  });

  test("collector failing with 503/429 while the visitor navigates away and back: every event arrives exactly once", async () => {
    const browser = await visitor("granted");
    let failing = true;
    let failures = 0;
    await browser.context.route("**/v1/batch", (route) => {
      if (!failing) return route.continue();
      failures++;
      return route.fulfill({
        status: failures % 2 ? 503 : 429,
        headers: { "Retry-After": "1", "content-type": "application/json" },
        body: '{"code":"storage_unavailable","message":"try later"}',
      });
    });
    const page = await browser.context.newPage();
    const sent = recordSends(page);
    await page.goto(`${edge.url}/product?id=trail-runner`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByRole("button", { name: "Add to cart" }).click();
    await sleep(1500);
    await page.goto(`${edge.url}/`); // away while the batch is failing: pagehide send fails too
    await sleep(500);
    await page.goto(`${edge.url}/product?id=trail-runner`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    assert.ok(failures > 1, `the collector refused ${failures} requests`);
    failing = false;

    // The first request that gets through sets the cookie; every event is stored under its ID.
    const anonymousId = await adoptedId(page);
    const rows = await until(async () => {
      const r = await eventsOf(anonymousId);
      return count(r, "Product Added") === 3 && count(r, "Product") === 2 && count(r, "Home") === 1 && r;
    });
    assert.ok(rows, "every event arrived");
    const ids = new Set(sent);
    assert.equal(rows.length, new Set(rows.map((r) => r.message_id)).size);
    for (const row of rows) assert.ok(ids.has(row.message_id), `stored under the messageId the SDK sent: ${row.name} ${row.message_id} not in ${[...ids]}`);
    await sleep(1500);
    assert.equal((await eventsOf(anonymousId)).length, rows.length, "nothing arrives twice");
  });

  test("offline for 10 s, then online: every event is delivered", async () => {
    const browser = await visitor("granted");
    const page = await browser.context.newPage();
    await page.goto(`${edge.url}/product?id=road-racer`);
    const anonymousId = await adoptedId(page);
    assert.ok(await until(async () => count(await eventsOf(anonymousId), "Product Viewed") === 1));
    await browser.context.setOffline(true);
    for (let i = 0; i < 3; i++) await page.getByRole("button", { name: "Add to cart" }).click();
    await sleep(10_000);
    assert.equal(count(await eventsOf(anonymousId), "Product Added"), 0, "nothing got through offline");
    await browser.context.setOffline(false);
    const delivered = await until(async () => count(await eventsOf(anonymousId), "Product Added") === 3);
    assert.ok(delivered, "all three arrived after going online");
  });

  test("two tabs tracking at once: no duplicate sends, no loss", async () => {
    const browser = await visitor("granted");
    const sent = [];
    const first = await browser.context.newPage();
    recordSends(first, sent);
    await first.goto(`${edge.url}/product?id=trail-runner`);
    const anonymousId = await adoptedId(first);
    const second = await browser.context.newPage();
    recordSends(second, sent);
    await second.goto(`${edge.url}/product?id=road-racer`);
    assert.equal(await storedId(second), anonymousId, "the tabs share the visitor's ID");
    const clicks = (page) => (async () => {
      for (let i = 0; i < 10; i++) await page.getByRole("button", { name: "Add to cart" }).click();
    })();
    await Promise.all([clicks(first), clicks(second)]);
    const rows = await until(async () => {
      const r = await eventsOf(anonymousId);
      return count(r, "Product Added") === 20 && r;
    });
    assert.ok(rows, `all 20 Product Added events arrived (${count(await eventsOf(anonymousId), "Product Added")}; ${sent.length} sent)`);
    await sleep(2500);
    const counts = new Map();
    for (const id of sent) counts.set(id, (counts.get(id) ?? 0) + 1);
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], "no event was sent by both tabs");
    assert.equal(counts.size, (await eventsOf(anonymousId)).length);
  });

  test("gtag consent commands and a TCF CMP drive the consent state", async () => {
    const browser = await visitor();
    // A CMP stub answering like a real one: storage (1) and measurement (7, 8), no ad profile.
    await browser.context.addInitScript(() => {
      window.__tcfapi = (command, version, callback) => {
        if (command !== "addEventListener") return;
        const consents = { 1: true, 7: true, 8: true };
        setTimeout(() => callback({ eventStatus: "tcloaded", gdprApplies: true, tcString: "CPstub", purpose: { consents, legitimateInterests: {} } }, true), 50);
      };
    });
    const page = await browser.context.newPage();
    await page.goto(`${edge.url}/`);
    assert.ok(await eventually(() => storedId(page)), "the CMP's consent lets the SDK store its ID");
    const anonymousId = await adoptedId(page);
    const rows = await until(async () => {
      const r = await eventsOf(anonymousId);
      return count(r, "Home") === 1 && r;
    });
    assert.ok(rows, "the page view arrived with the ID");
    const consent = JSON.parse(rows.find((r) => r.name === "Home").body).context.consent;
    assert.equal(consent.tcString, "CPstub");
    assert.equal(consent.gcm.analytics_storage, "granted");
    assert.equal(consent.gcm.ad_user_data, "granted");
    assert.equal(consent.gcm.ad_personalization, "denied");

    await page.evaluate(() => window.dataLayer.push(["consent", "update", { analytics_storage: "denied" }]));
    assert.equal(await storedId(page), null, "a gtag update revoking analytics deletes the ID");
    const cookie = (await browser.context.cookies(edge.url)).find((c) => /seam_anonymous_id$/.test(c.name));
    assert.equal(cookie, undefined, "and the SDK's cookie");
  });

  test("signing in through the shop's backend verifies the shopper: their browsing joins their account", async () => {
    const secrets = readFileSync(join(root, ".dev.vars"), "utf8");
    const password = secrets.match(/^DEMO_PASSWORD=(.*)$/m)[1].trim();
    const browser = await visitor(JSON.stringify({ analytics_storage: "granted", personalization_storage: "granted" }));
    const page = await browser.context.newPage();
    await page.goto(`${edge.url}/product?id=trail-runner`);
    const anonymousId = await adoptedId(page);
    await follow(page, page.getByRole("link", { name: "Sign in" }), /\/signin/);
    await page.getByLabel("Email").fill("ada@shop.example");
    await page.getByLabel("Password").fill("not-the-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Wrong email or password.").waitFor();
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Signed in as").waitFor();
    assert.match(await page.evaluate(() => localStorage.getItem("seam_identity_token")), /^v1\.\d+\.[0-9a-f]{64}$/);

    const identify = await until(async () => {
      const rows = await eventsOf(anonymousId);
      return rows.find((r) => r.type === "identify");
    });
    const body = JSON.parse(identify.body);
    assert.match(body.userId, /^shopper-[0-9a-f]{16}$/);
    assert.equal(body.context.seam.identity, "verified", "the collector believed the user ID");
    assert.equal(body.context.seam.identityToken, undefined, "and did not store the token");
    const admin = secrets.match(/^ADMIN_KEY=(.*)$/m)[1].trim();
    const profile = await until(async () => {
      const r = await fetch(`${edge.url}/v1/profiles/lookup?type=user_id&value=${body.userId}`, { headers: { authorization: `Bearer ${admin}` } });
      const p = r.status === 200 && (await r.json());
      return p && p.identifiers.includes(`anonymous_id:${anonymousId}`) && p;
    });
    assert.ok(profile, "the browser's anonymous history is in the account's profile");
    assert.ok(profile.eventCount >= 3, `views before sign-in count for the account (${profile.eventCount})`);

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem("seam_identity_token")), null, "sign-out forgets the token");
    assert.notEqual(await storedId(page), anonymousId, "and starts a new anonymous ID");
    // The collector renews its HttpOnly cookie too: the next person on this browser is not the
    // signed-out shopper.
    await page.goto(`${edge.url}/product?id=road-racer`);
    const next = await adoptedId(page);
    assert.ok(next && next !== anonymousId, `a new cookie ID after sign-out (${next})`);
    const after = await until(async () => count(await eventsOf(next), "Product Viewed") > 0);
    assert.ok(after, "the next visitor's events are stored under the new ID");
    const account = await (await fetch(`${edge.url}/v1/profiles/lookup?type=user_id&value=${body.userId}`, { headers: { authorization: `Bearer ${admin}` } })).json();
    assert.ok(!account.identifiers.includes(`anonymous_id:${next}`), "and join no account");
  });
});
