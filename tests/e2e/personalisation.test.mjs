// End to end: shoppers in real Chromium browse the demo shop served by the Worker, and the pages
// the Worker renders for them change. The assertions read the HTML as the server sends it
// (fetched with the browser's cookies, no JavaScript), because "no flicker" means the decision is
// already in the HTML.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { post, root, settled, startEdge } from "../support/edge.mjs";
import { eventually, launchBrowser } from "../support/browser.mjs";
import { products } from "../../demo-site/products.js";

const ADMIN_KEY = readFileSync(join(root, ".dev.vars"), "utf8").match(/^ADMIN_KEY=(.*)$/m)[1].trim();
const WRITE_KEY = "seam_dev_write_key";
const SHOES = products.filter((p) => p.category === "Running Shoes").map((p) => p.product_id);
// The cart-abandon window of this test deployment (the committed one is an hour).
const ABANDON_SECONDS = 8;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("personalised shop in Chromium: edge-rendered slots", () => {
  let edge;
  const browsers = [];
  const admin = (method, path, body) =>
    fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, json: await r.json() }));

  before(async () => {
    edge = await startEdge("e2e-personal");
    assert.equal((await admin("POST", "/v1/admin/catalog", { items: products })).status, 200);
    // This deployment: nobody held out (so every shopper here is personalised) and a short
    // cart-abandon window, uploaded the way an operator would.
    const segments = JSON.parse(readFileSync(join(root, "config/segments.json"), "utf8"));
    const abandon = segments.segments.find((s) => s.name === "cart_abandoners");
    const minutes = ABANDON_SECONDS / 60;
    abandon.rule = { and: [
      { exists: { computed: "cart" } },
      { not: { within_minutes: [{ computed: "last_cart_activity_at" }, minutes] } },
      { eq: [{ count: { event: "Order Completed", within_minutes: minutes } }, 0] },
    ] };
    const recommendations = { ...JSON.parse(readFileSync(join(root, "config/recommendations.json"), "utf8")), holdoutPercent: 0 };
    const upload = await admin("PUT", "/v1/admin/personalisation", { segments, recommendations });
    assert.equal(upload.status, 200, JSON.stringify(upload.json));
    // Other shoppers make apparel the popular, non-personal default.
    const crowd = ["merino-tee", "wind-shell", "thermal-tights", "race-singlet"].flatMap((id, i) =>
      ["a", "b", "c"].map((who) => ({
        type: "track", event: "Product Viewed", anonymousId: `crowd-shopper-${who}-${process.pid}`,
        messageId: `crowd-${who}-${i}-${process.pid}`, properties: products.find((p) => p.product_id === id),
      })),
    );
    assert.equal((await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: crowd })).status, 200);
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await edge?.stop();
  });

  /** What the Worker logged as failing: a failed assertion says why, not only what. */
  const workerErrors = () => edge.output().split("\n").filter((l) => /failed|skipped/.test(l)).join("\n");

  /** A shopper who has accepted the consent banner. */
  async function shopper() {
    const browser = await launchBrowser();
    browsers.push(browser);
    const page = await browser.context.newPage();
    await page.goto(`${edge.url}/`);
    await page.getByRole("button", { name: "Allow" }).click();
    return { context: browser.context, page };
  }

  /** Waits until the collector stored `n` events named `name` from this browser, and their
   * profile refresh (which runs after the response) is done. */
  async function stored(page, name, n) {
    // Read each time: the SDK adopts the ID of the collector's cookie from its first answer.
    let anon;
    const rows = await eventually(async () => {
      anon = await page.evaluate(() => localStorage.getItem("seam_anonymous_id"));
      const r = await edge.query("SELECT count(*) AS n FROM events WHERE anonymous_id = ? AND name = ?", anon, name).catch(() => [{ n: 0 }]);
      return r[0].n >= n && r;
    }, 40_000, 500);
    assert.ok(rows, `${n} × ${name} stored for ${anon}`);
    await settled(edge.url);
  }

  /** The page as the server sends it to this browser (its cookies, no JavaScript). */
  async function serverSlot(context, name, path = "/") {
    const html = await (await context.request.get(`${edge.url}${path}`)).text();
    const m = html.match(new RegExp(`<div data-seam-slot="${name}"([^>]*)>([\\s\\S]*?)</div>`));
    assert.ok(m, `slot ${name} in ${path}`);
    return {
      variant: m[1].match(/data-seam-rendered="([^"]*)"/)?.[1],
      reason: m[1].match(/data-seam-reason="([^"]*)"/)?.[1],
      items: [...m[2].matchAll(/data-product-id="([^"]+)"/g)].map((x) => x[1]),
      html: m[2],
    };
  }

  async function viewShoes(page, ids) {
    for (const id of ids) {
      await page.goto(`${edge.url}/product?id=${id}`);
      await page.getByRole("heading", { level: 1 }).waitFor();
    }
  }

  async function buy(page, id, coupon) {
    await page.goto(`${edge.url}/product?id=${id}`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.goto(`${edge.url}/checkout`);
    if (coupon) {
      await page.getByLabel("Coupon code").fill(coupon);
      await page.getByRole("button", { name: "Apply" }).click();
      await page.getByText("applied").waitFor();
    }
    await page.getByRole("button", { name: "Place order" }).click();
    await page.getByText("Thank you").waitFor();
  }

  test("three running-shoe views: the server-rendered home page recommends running shoes; denying personalisation gives the generic block", async () => {
    const { context, page } = await shopper();
    const generic = await serverSlot(context, "recommended-for-you");
    assert.equal(generic.variant, "default");
    assert.ok(generic.items.filter((id) => !SHOES.includes(id)).length >= 3, `generic block is the popular apparel: ${generic.items}`);

    await viewShoes(page, SHOES.slice(0, 3));
    await stored(page, "Product Viewed", 3);
    await page.goto(`${edge.url}/`);
    const recs = await serverSlot(context, "recommended-for-you");
    assert.equal(recs.variant, "personalised");
    assert.equal(recs.reason, "personalised");
    assert.ok(recs.items.filter((id) => SHOES.includes(id)).length >= 3, `running shoes first: ${recs.items}`);
    // The same block is what the browser shows, without any client-side fill.
    const shown = await page.locator('[data-seam-slot="recommended-for-you"] [data-product-id]').evaluateAll((els) => els.map((e) => e.dataset.productId));
    assert.deepEqual(shown, recs.items);

    // The visitor turns personalisation off in the consent banner ("Analytics only").
    await page.getByRole("button", { name: "Privacy settings" }).click();
    await page.getByRole("button", { name: "Analytics only" }).click();
    const cookies = await context.cookies(edge.url);
    assert.equal(cookies.find((c) => c.name === "__Host-seam_personalise")?.value, "0", "the SDK tells the edge");
    const denied = await serverSlot(context, "recommended-for-you");
    assert.equal(denied.reason, "consent_denied");
    assert.equal(denied.variant, "default");
    assert.deepEqual(denied.items, generic.items, "the generic block, not the shopper's");
  });

  test("a page the Worker does not render fills its slot with @seam/sdk/decide", async () => {
    const { context, page } = await shopper();
    await viewShoes(page, SHOES.slice(1, 4));
    await stored(page, "Product Viewed", 3);
    const html = `<!doctype html><html><head><script type="importmap">{"imports":{"@seam/sdk":"/vendor/seam-sdk/index.js","@seam/sdk/decide":"/vendor/seam-sdk/decide.js"}}</script></head>
      <body><div data-seam-slot="recommended-for-you">Loading</div><script type="module">
        import { load, consent } from "@seam/sdk";
        import { decide } from "@seam/sdk/decide";
        await load({ writeKey: "${WRITE_KEY}" });
        consent.update(JSON.parse(localStorage.getItem("demo_consent")));
        window.decided = await decide(["recommended-for-you"], { writeKey: "${WRITE_KEY}" });
      </script></body></html>`;
    await page.route(`${edge.url}/static-shop.html`, (route) => route.fulfill({ contentType: "text/html", body: html }));
    await page.goto(`${edge.url}/static-shop.html`);
    const decided = await eventually(() => page.evaluate(() => window.decided), 10_000);
    assert.equal(decided.reason, "personalised", JSON.stringify(decided));
    const ids = decided.decisions[0].items.map((i) => i.product_id);
    assert.ok(ids.filter((id) => SHOES.includes(id)).length >= 3, `${ids}`);
    const filled = await page.locator('[data-seam-slot="recommended-for-you"] [data-product-id]').evaluateAll((els) => els.map((e) => e.dataset.productId));
    assert.deepEqual(filled, ids, "the slot shows the decided items");
    assert.equal(await page.locator('[data-seam-slot="recommended-for-you"]').getAttribute("data-seam-rendered"), "personalised");
    const server = await serverSlot(context, "recommended-for-you");
    assert.deepEqual(server.items, ids, "the same decision the edge renders");
  });

  test("buying a recommended shoe takes it out of the recommendations", async () => {
    const { context, page } = await shopper();
    await viewShoes(page, SHOES.slice(0, 3));
    await stored(page, "Product Viewed", 3);
    const before = await serverSlot(context, "recommended-for-you");
    const bought = before.items.find((id) => SHOES.includes(id));
    assert.ok(bought, `${before.variant} (${before.reason}): ${before.items}\n${workerErrors()}`);
    await buy(page, bought);
    await stored(page, "Order Completed", 1);
    const afterwards = await serverSlot(context, "recommended-for-you");
    assert.equal(afterwards.variant, "personalised");
    assert.ok(!afterwards.items.includes(bought), `${bought} is gone: ${afterwards.items}`);
    assert.ok(afterwards.items.length >= 4, "the block is topped up");
  });

  test("a coupon shopper who leaves a cart sees the discount banner once the abandon window has passed", async () => {
    const { context, page } = await shopper();
    await buy(page, "running-socks", "WELCOME5");
    await buy(page, "head-torch", "WELCOME5");
    await page.goto(`${edge.url}/product?id=wind-shell`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    const added = Date.now();
    await stored(page, "Order Completed", 2);
    await stored(page, "Product Added", 3);
    if (Date.now() - added < (ABANDON_SECONDS - 2) * 1000) {
      const early = await serverSlot(context, "discount-banner");
      assert.equal(early.variant, "none", "the cart was just touched");
      assert.doesNotMatch(early.html, /COMEBACK10/);
    }
    await sleep(Math.max(0, ABANDON_SECONDS * 1000 + 500 - (Date.now() - added)));
    // No event since: time alone puts the shopper in cart_abandoners, evaluated when the page renders.
    const banner = await serverSlot(context, "discount-banner");
    assert.equal(banner.variant, "cart_discount_10");
    assert.match(banner.html, /COMEBACK10/);
    await page.goto(`${edge.url}/`);
    await assert.doesNotReject(page.locator('[data-seam-slot="discount-banner"]').getByText("COMEBACK10").waitFor({ timeout: 5000 }));

    // A shopper without coupon orders, with the same abandoned cart, sees no banner.
    const other = await shopper();
    await buy(other.page, "running-socks");
    await buy(other.page, "head-torch");
    await other.page.goto(`${edge.url}/product?id=wind-shell`);
    await other.page.getByRole("button", { name: "Add to cart" }).click();
    await stored(other.page, "Product Added", 3);
    await sleep(ABANDON_SECONDS * 1000 + 500);
    const none = await serverSlot(other.context, "discount-banner");
    assert.equal(none.variant, "none");
    assert.doesNotMatch(none.html, /COMEBACK10/);
  });
});
