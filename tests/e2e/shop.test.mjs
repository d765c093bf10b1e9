// End to end: a visitor in real Chromium uses the demo shop served by the Worker; the SDK from the
// npm package sends the events; the rows appear in the Worker's local D1.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { startEdge } from "../support/edge.mjs";
import { eventually, launchBrowser } from "../support/browser.mjs";

describe("demo shop -> SDK -> edge -> D1", () => {
  let edge;
  let browser;
  before(async () => {
    edge = await startEdge("e2e");
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await edge?.stop();
  });

  const eventsOf = (anonymousId) =>
    edge.query("SELECT type, name, body FROM events WHERE anonymous_id = ? ORDER BY timestamp", anonymousId);

  test("after consent, a click on Add to cart produces stored events linked to the visitor", async () => {
    const page = await browser.context.newPage();
    const failures = [];
    page.on("pageerror", (e) => failures.push(e.message));
    await page.goto(`${edge.url}/`);
    await page.getByRole("button", { name: "Allow" }).click();
    await page.getByRole("link", { name: "Trail Runner" }).click();
    await page.waitForURL(/\/product\?/);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByText("Added to cart.").waitFor();

    const anonymousId = await eventually(() => page.evaluate(() => localStorage.getItem("seam_anonymous_id")));
    assert.match(anonymousId ?? "", /^[0-9a-f-]{36}$/, "consent granted: the SDK persists its anonymous ID");

    const rows = await eventually(async () => {
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
    assert.equal(added.context.consent.categoryPreferences.analytics_storage, true);
    assert.match(added.context.userAgent, /Chrome/);

    // The home page view was sent before the visitor chose: stored without identifiers.
    const home = await eventually(async () => {
      const r = await edge.query("SELECT anonymous_id, body FROM events WHERE name = 'Home' AND json_extract(body, '$.context.consent.categoryPreferences.analytics_storage') = 0");
      return r.length > 0 && r;
    });
    assert.ok(home, "the pre-consent page view was stored");
    assert.equal(home[0].anonymous_id, null);
    assert.equal(JSON.parse(home[0].body).anonymousId, undefined);

    // The collector's HttpOnly cookie holds the same ID, so it survives script-storage caps.
    const cookie = await eventually(async () => (await browser.context.cookies(edge.url)).find((c) => c.name === "seam_id"));
    assert.ok(cookie, "the collector set its first-party cookie");
    assert.equal(cookie.value, anonymousId);
    assert.equal(cookie.httpOnly, true);
    assert.equal(cookie.sameSite, "Lax");
    assert.deepEqual(failures, [], "no errors thrown in the page");
    await page.close();
  });

  test("without consent, events are still sent but no identifier is stored in the browser", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${edge.url}/`);
    await page.evaluate(() => localStorage.clear());
    await page.reload();
    await page.getByRole("button", { name: "Decline" }).click();
    await page.getByRole("link", { name: "Road Racer" }).click();
    await page.waitForURL(/\/product\?/);

    const stored = await page.evaluate(() => localStorage.getItem("seam_anonymous_id"));
    assert.equal(stored, null);
    const rows = await eventually(async () => {
      const r = await edge.query(
        "SELECT body FROM events WHERE name = 'Product Viewed' AND json_extract(body, '$.properties.product_id') = 'road-racer'",
      );
      return r.length > 0 && r;
    });
    assert.ok(rows, "the product view reached D1");
    const body = JSON.parse(rows[0].body);
    assert.equal(body.context.consent.categoryPreferences.analytics_storage, false);
    assert.equal(body.anonymousId, undefined, "stored without identifiers");
    const cookie = await eventually(async () => !(await browser.context.cookies(edge.url)).some((c) => c.name === "seam_id"));
    assert.ok(cookie, "declining consent deletes the collector's cookie");
    await page.close();
  });
});
