// The console in real Chromium against the running Worker: sign in with an admin key (exchanged
// for an HttpOnly session cookie), find a person by email after they used two devices, and see
// both devices' identifiers and the events from before they signed in. Screenshots of each
// page at phone and desktop widths go to tests/.tmp/screenshots (git-ignored).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { post, root, startEdge, WRITE_KEY } from "../support/edge.mjs";
import { launchBrowser } from "../support/browser.mjs";
import { startReceiver } from "../support/receiver.mjs";
import { products } from "../../demo-site/products.js";

const secrets = readFileSync(join(root, ".dev.vars"), "utf8");
const secret = (name) => secrets.match(new RegExp(`^${name}=(.*)$`, "m"))[1].trim();
const ADMIN_KEY = secret("ADMIN_KEY");
const SERVER_KEY = secret("SERVER_WRITE_KEY");
const shots = join(root, "tests/.tmp/screenshots");
const axeSource = readFileSync(join(root, "node_modules/axe-core/axe.min.js"), "utf8");

/** Screenshots of the page at phone and desktop widths (for a reviewer to look at). */
async function shoot(p, name) {
  for (const width of [390, 1280]) {
    await p.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    await p.screenshot({ path: join(shots, `${name}-${width}.png`), fullPage: true });
  }
}

/** axe-core in the page (run over DevTools, so the console's CSP does not stand in its way):
 *  the serious and critical violations, as `rule: targets` lines. */
async function accessibility(p) {
  await p.evaluate(axeSource);
  const violations = await p.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  return violations;
}
const run = `${process.pid}`;
let n = 0;
const mid = () => `c-${run}-${++n}`;

describe("console", () => {
  let edge;
  let browser;
  let receiver;
  before(async () => {
    mkdirSync(shots, { recursive: true });
    edge = await startEdge("console");
    browser = await launchBrowser();
    receiver = await startReceiver();
  });
  after(async () => {
    await browser?.close();
    await edge?.stop();
    await receiver?.close();
  });

  const admin = (method, path, body) =>
    fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, json: await r.json().catch(() => undefined) }));

  /** A page that records every request it makes. */
  async function page(width = 1280) {
    const p = await browser.context.newPage();
    await p.setViewportSize({ width, height: 900 });
    const requests = [];
    p.on("request", (r) => requests.push({ url: r.url(), headers: r.headers(), body: r.postData() ?? "" }));
    return { p, requests };
  }

  async function signIn(p, key) {
    await p.goto(`${edge.url}/console/`);
    await p.getByLabel("Admin key").fill(key);
    await p.getByRole("button", { name: "Sign in" }).click();
  }

  test("sign in, find a shopper by email across two devices, sign out", async () => {
    // The shop's catalogue, and a webhook destination for orders (a local receiver).
    assert.equal((await admin("POST", "/v1/admin/catalog", { items: products })).status, 200);
    const orders = { type: "webhook", settings: { url: `${receiver.url}/orders`, secret: "whsec_console_0123456789" }, filter: { events: ["Order Completed"] } };
    assert.equal((await admin("PUT", "/v1/admin/destinations/orders", orders)).status, 201);
    // Ana browses on her laptop and her phone, then signs in on both (the shop's server says so).
    const email = `ana-${run}@shop.example`;
    const [laptop, phone, user] = [`laptop-${run}`, `phone-${run}`, `ana-${run}`];
    const sent = await post(`${edge.url}/v1/batch`, {
      writeKey: SERVER_KEY,
      batch: [
        { type: "track", event: "Product Viewed", anonymousId: laptop, messageId: mid(), properties: { product_id: "trail-runner", category: "Running Shoes" },
          context: { consent: { gcm: { analytics_storage: "granted", ad_storage: "denied" } } } },
        { type: "identify", userId: user, anonymousId: laptop, messageId: mid(), traits: { email, first_name: "Ana" } },
        { type: "page", name: "Home", anonymousId: phone, messageId: mid() },
        { type: "identify", userId: user, anonymousId: phone, messageId: mid() },
        { type: "track", event: "Order Completed", userId: user, messageId: mid(), properties: { order_id: `o-${run}`, revenue: 640 } },
      ],
    });
    assert.equal(sent.status, 200, sent.text);
    await receiver.wait("/orders", 1);
    // The delivery log says delivered once the receiver's answer is recorded.
    let ana;
    for (let i = 0; i < 100 && ana?.deliveries?.[0]?.status !== "delivered"; i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      ana = (await admin("GET", `/v1/profiles/lookup?type=email&value=${encodeURIComponent(email)}`)).json;
    }
    assert.deepEqual(ana.deliveries.map((d) => [d.destination, d.about, d.status]), [["orders", "Order Completed", "delivered"]]);
    const recommended = (await admin("GET", `/v1/profiles/${ana.profileId}/recommendations`)).json;
    const names = recommended.decisions[0].items.map((i) => i.name);
    assert.ok(names.length > 0, "Ana has recommendations");

    const { p, requests } = await page();
    await p.goto(`${edge.url}/console/`);
    await p.getByRole("heading", { name: "Sign in" }).waitFor();
    await shoot(p, "sign-in");
    assert.deepEqual(await accessibility(p), [], "sign-in");
    await signIn(p, "not-a-key-0123456789");
    await p.getByText("The admin key is not valid").waitFor();
    await signIn(p, ADMIN_KEY);
    await p.getByText("Signed in as root").waitFor();
    // The overview opens first: today's events by type, from the daily counters.
    await p.getByRole("heading", { name: "Overview" }).waitFor();
    const today = new Date().toISOString().slice(0, 10);
    const todayRow = p.getByRole("table", { name: "Events per day", includeHidden: true }).getByRole("row", { name: new RegExp(`^${today}`), includeHidden: true });
    const stored = await edge.query("SELECT count(*) AS n FROM events");
    const cells = await todayRow.getByRole("cell", { includeHidden: true }).allTextContents();
    assert.equal(Number(cells.at(-1)), stored[0].n, `today's total is every stored event (${cells})`);
    assert.equal(await p.getByRole("img", { name: /Events per day/ }).count(), 1, "the chart");
    const consent = p.getByRole("region", { name: "Consent, 30 days" });
    await consent.getByText("100% granted (1 choices)").waitFor();
    const rates = await consent.textContent();
    assert.match(rates, /ad_storage\s*0% granted \(1 choices\)/);
    assert.match(rates, /analytics_storage\s*100% granted \(1 choices\)/);
    await shoot(p, "overview");
    assert.deepEqual(await accessibility(p), [], "overview");
    const signedInAt = requests.length;
    assert.equal(await p.evaluate(() => document.cookie.includes("seam_console")), false, "the session cookie is HttpOnly");
    const [cookie] = (await browser.context.cookies(edge.url)).filter((c) => c.name === "seam_console");
    assert.deepEqual([cookie.httpOnly, cookie.secure, cookie.sameSite], [true, true, "Strict"]);

    await p.getByRole("link", { name: "Profiles" }).click();
    await p.getByLabel("Search profiles").fill(email);
    await p.getByRole("button", { name: "Search" }).click();
    const identifiers = p.getByRole("list", { name: "Identifiers" });
    await identifiers.waitFor();
    const listed = await identifiers.getByRole("listitem").allTextContents();
    for (const id of [`anonymous_id:${laptop}`, `anonymous_id:${phone}`, `user_id:${user}`, `email:${email}`]) {
      assert.ok(listed.includes(id), `${id} in ${listed}`);
    }
    const timeline = p.getByRole("table", { name: "Timeline" });
    await timeline.getByText("Product Viewed").waitFor();
    assert.match(await timeline.textContent(), new RegExp(laptop), "the laptop's event from before sign-in");
    // The consent change is on the timeline, between the events.
    const consentRow = timeline.getByRole("row").filter({ hasText: "ad_storage denied" });
    assert.match(await consentRow.textContent(), new RegExp(`consent.*analytics_storage granted.*anonymous_id:${laptop}`));
    // The order's delivery, and what Ana would be recommended now (the API's answer, no exposure logged).
    const deliveries = p.getByRole("table", { name: "Deliveries" });
    await deliveries.getByRole("row").filter({ hasText: "Order Completed" }).filter({ hasText: "delivered" }).waitFor();
    const shown = p.getByRole("list", { name: "Recommended in recommended-for-you" });
    await shown.waitFor();
    assert.deepEqual((await shown.getByRole("listitem").allTextContents()).map((t) => t.replace(/ \S+$/, "")), names);
    const exposures = await edge.query("SELECT COUNT(*) AS n FROM events WHERE name = 'Decision Exposed' AND (anonymous_id IN (?, ?) OR user_id = ?)", laptop, phone, user);
    assert.equal(exposures[0].n, 0, "looking at a profile is not a view of a page");
    await shoot(p, "profile");
    assert.deepEqual(await accessibility(p), [], "profile");

    // The live view: a batch from the public write key with one good and one broken event.
    const mixed = await post(`${edge.url}/v1/batch`, {
      writeKey: WRITE_KEY,
      batch: [
        { type: "track", event: "Live Check", anonymousId: `live-${run}`, messageId: mid() },
        { type: "track", anonymousId: `live-${run}`, messageId: `broken-${run}` },
      ],
    });
    assert.deepEqual(mixed.json.results.map((r) => r.status), ["accepted", "rejected"]);
    await p.setViewportSize({ width: 1280, height: 900 });
    await p.getByRole("link", { name: "Live events" }).click();
    const rejected = p.getByRole("table", { name: "Rejected" });
    await rejected.getByText(`broken-${run}`).waitFor();
    assert.match(await rejected.textContent(), /missing_event_name/);
    const arrived = p.getByRole("list", { name: "Arrived" });
    await arrived.locator("summary", { hasText: "Live Check" }).click();
    await arrived.getByText(`"anonymousId": "live-${run}"`).waitFor();
    await p.getByLabel("Event name").fill("Product Viewed");
    await p.getByRole("button", { name: "Filter" }).click();
    await arrived.locator("summary", { hasText: "Product Viewed" }).first().waitFor();
    assert.equal(await arrived.locator("summary", { hasText: "Live Check" }).count(), 0, "the filter keeps only Product Viewed");
    await shoot(p, "live");
    assert.deepEqual(await accessibility(p), [], "live events");
    // Segments: the size the page shows is the API's, and the members are the people in it.
    // The segment sweep records the day's sizes for the chart.
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);
    // It also records the profile totals, which the overview reads instead of counting.
    const [{ n: people }] = await edge.query("SELECT COUNT(DISTINCT profile_id) AS n FROM identities");
    await post(`${edge.url}/v1/batch`, { writeKey: WRITE_KEY, batch: [{ type: "page", anonymousId: `late-${run}`, messageId: mid() }] });
    const overview = (await admin("GET", "/v1/admin/overview")).json;
    assert.deepEqual([overview.profiles, overview.identified], [people, 1]);
    assert.ok(overview.profilesCountedAt > Date.now() - 60_000, "counted by this sweep");
    const [{ n: later }] = await edge.query("SELECT COUNT(DISTINCT profile_id) AS n FROM identities");
    assert.equal(later, people + 1, "a profile made since the sweep waits for the next count");
    await p.getByRole("link", { name: "Segments" }).click();
    const row = p.getByRole("row").filter({ has: p.getByRole("button", { name: "high_value", exact: true }) });
    await row.waitFor();
    const api = await fetch(`${edge.url}/v1/admin/segments`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then((r) => r.json());
    const highValue = api.segments.find((x) => x.name === "high_value");
    assert.ok(highValue.size >= 1);
    assert.equal((await row.getByRole("cell").first().textContent()).trim(), String(highValue.size));
    assert.deepEqual(highValue.history.map((d) => d.size), [highValue.size], "today's size is recorded");
    await row.getByRole("img", { name: `Size over 30 days: ${highValue.size} on the first recorded day, ${highValue.size} on the last` }).waitFor();
    await row.getByRole("button", { name: "high_value", exact: true }).click();
    const members = p.getByRole("list", { name: "Members" });
    const { profileId } = await p.evaluate((q) => fetch(`/v1/profiles/lookup?type=email&value=${encodeURIComponent(q)}`).then((r) => r.json()), email);
    assert.ok(profileId);
    await members.getByText(profileId).waitFor();
    const csv = await p.evaluate(() => fetch(document.querySelector("#members-csv").href).then((r) => r.text()));
    assert.match(csv, new RegExp(`^profile_id,entered_at\n(.*\n)*${profileId},[0-9]+\n`));
    await shoot(p, "segments");
    assert.deepEqual(await accessibility(p), [], "segments");

    // Settings: a mistake in a segment rule is shown, and nothing is saved.
    await p.getByRole("link", { name: "Settings" }).click();
    const segmentsDoc = p.getByRole("textbox", { name: "Segments", exact: true });
    await p.getByText("In force: committed").waitFor();
    const doc = JSON.parse(await segmentsDoc.inputValue());
    doc.segments[0].rule = { gte: [{ computed: "no_such_trait" }, 2] };
    await segmentsDoc.fill(JSON.stringify(doc, null, 2));
    await p.getByRole("button", { name: "Save" }).click();
    const error = p.getByRole("alert").filter({ hasText: "no_such_trait" });
    await error.waitFor();
    assert.match(await error.textContent(), /high_discount_affinity/, "the error names the segment");
    const stamp = await fetch(`${edge.url}/v1/admin/personalisation`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } }).then((r) => r.json());
    assert.equal(stamp.stamp, "committed", "nothing was saved");
    // A slot as this shopper would see it now (no exposure is logged for a preview).
    const exposuresBefore = (await edge.query("SELECT count(*) AS n FROM events WHERE name = 'Decision Exposed'"))[0].n;
    await p.getByLabel("Profile (ID or email)").fill(email);
    await p.getByLabel("Slot", { exact: true }).selectOption("recommended-for-you");
    await p.getByRole("button", { name: "Preview" }).click();
    const preview = p.getByRole("status", { name: "Preview" });
    await preview.getByText(`"profileId": "${profileId}"`).waitFor();
    assert.match(await preview.textContent(), /"recommended-for-you"/);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await edge.query("SELECT count(*) AS n FROM events WHERE name = 'Decision Exposed'"))[0].n, exposuresBefore, "a preview is not a view");
    await segmentsDoc.fill("{ not json");
    await p.getByRole("button", { name: "Save" }).click();
    await p.getByRole("alert").filter({ hasText: "Segments: not JSON" }).waitFor();
    await shoot(p, "settings");
    assert.deepEqual(await accessibility(p), [], "settings");

    await p.getByRole("link", { name: "Audit log" }).click();
    await p.getByRole("cell", { name: "console_sign_in" }).first().waitFor();
    await shoot(p, "audit");
    assert.deepEqual(await accessibility(p), [], "audit log");

    // A change without the session's CSRF token is refused, even from the console's own page.
    const forged = await p.evaluate(() =>
      fetch("/v1/admin/keys", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ label: "forged", scopes: ["config:write"] }) })
        .then(async (r) => ({ status: r.status, code: (await r.json()).code })),
    );
    assert.deepEqual(forged, { status: 403, code: "cross_site_request" });

    for (const r of requests.slice(signedInAt)) {
      assert.equal(r.headers.authorization, undefined, `${r.url} carries no key`);
      assert.ok(!r.url.includes(ADMIN_KEY) && !r.body.includes(ADMIN_KEY), `${r.url} carries no key`);
    }

    // Privacy actions from the profile, each with its receipt.
    await p.getByRole("link", { name: "Profiles" }).click();
    await p.getByLabel("Search profiles").fill(email);
    await p.getByRole("button", { name: "Search" }).click();
    await p.getByRole("button", { name: "Suppress" }).click();
    const receipt = p.getByRole("status", { name: "Receipt" });
    await receipt.getByText('"action": "suppress"').waitFor();
    p.once("dialog", (dialog) => dialog.accept());
    await p.getByRole("button", { name: "Delete" }).click();
    await receipt.getByText('"action": "delete"').waitFor();
    const deleted = JSON.parse(await receipt.textContent());
    assert.ok(deleted.deleted.events >= 5, `the receipt counts what went: ${JSON.stringify(deleted.deleted)}`);
    await p.getByRole("button", { name: "Search" }).click();
    await p.getByText("No profile matches.").waitFor();

    await p.getByRole("button", { name: "Sign out" }).click();
    await p.getByLabel("Admin key").waitFor();
    const after = await p.evaluate((q) => fetch(`/v1/profiles/lookup?type=email&value=${encodeURIComponent(q)}`).then((r) => r.status), email);
    assert.equal(after, 401, "the session ended");
    const audit = await edge.query("SELECT action FROM privacy_audit WHERE action LIKE 'console_%' ORDER BY at");
    assert.deepEqual(audit.map((a) => a.action), ["console_sign_in", "console_sign_out"]);
    const erased = await edge.query("SELECT actor FROM privacy_audit WHERE action = 'delete'");
    assert.deepEqual(erased.map((a) => a.actor), ["root"], "the console's erasure is on record as the key's");
  });

  test("a scoped key's session has its scopes, and ends when the key is revoked", async () => {
    const issued = await fetch(`${edge.url}/v1/admin/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ label: `support-${run}`, scopes: ["profiles:read"] }),
    }).then((r) => r.json());
    await browser.context.clearCookies();
    const { p } = await page(390);
    await signIn(p, issued.key);
    await p.getByText(`Signed in as support-${run}`).waitFor();
    const status = (path, method = "GET") =>
      p.evaluate(([path, method]) => fetch(path, { method }).then((r) => r.status), [path, method]);
    assert.equal(await status("/v1/admin/personalisation"), 403, "settings need config:write");
    assert.equal(await p.getByRole("link", { name: "Audit log" }).isVisible(), false, "pages the key may not open are not offered");
    await p.goto(`${edge.url}/console/#/audit`);
    await p.getByRole("heading", { name: "Not allowed" }).waitFor();
    await shoot(p, "denied");
    assert.equal(await status("/v1/profiles/lookup?type=email&value=nobody%40shop.example"), 404, "profiles:read is enough to search");
    await p.goto(`${edge.url}/console/#/settings`);
    await p.getByRole("heading", { name: "Not allowed" }).waitFor();
    // A profile opens, without the privacy actions, which the API refuses too.
    const email = `bo-${run}@shop.example`;
    await post(`${edge.url}/v1/batch`, { writeKey: SERVER_KEY, batch: [{ type: "identify", userId: `bo-${run}`, messageId: mid(), traits: { email } }] });
    await p.goto(`${edge.url}/console/#/profiles`);
    await p.getByLabel("Search profiles").fill(email);
    await p.getByRole("button", { name: "Search" }).click();
    await p.getByRole("list", { name: "Identifiers" }).getByText(`email:${email}`).waitFor();
    assert.equal(await p.getByRole("button", { name: "Export" }).count(), 0, "no privacy actions offered");
    assert.equal(await status(`/v1/privacy/export?type=email&value=${encodeURIComponent(email)}`), 403, "privacy needs privacy:write");
    await fetch(`${edge.url}/v1/admin/keys/support-${run}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(await status("/v1/profiles/lookup?type=email&value=nobody%40shop.example"), 401, "revoking the key ends its sessions");
  });
});
