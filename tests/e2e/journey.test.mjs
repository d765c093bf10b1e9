// The site owner's flow from the shop itself, in real Chromium: a shopper signs in (asking for
// offers by email), puts a product in the cart, starts checking out and leaves. After the
// abandonment window the segment sweep enters them into `abandoned_checkout`, and the first
// email, listing the cart, lands at the local receiver standing in for SendGrid. The window is
// shortened by the test's own segment (six seconds instead of an hour) and the journey's wait
// by JOURNEY_TIME_SCALE (an hour in two seconds); everything else is as committed.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { root, settled, startEdge } from "../support/edge.mjs";
import { eventually, launchBrowser } from "../support/browser.mjs";
import { startReceiver } from "../support/receiver.mjs";

const secrets = readFileSync(join(root, ".dev.vars"), "utf8");
const secret = (name) => secrets.match(new RegExp(`^${name}=(.*)$`, "m"))[1].trim();
const committed = (file) => JSON.parse(readFileSync(join(root, "config", file), "utf8"));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe("demo shop: an abandoned checkout starts the journey", () => {
  let edge;
  let receiver;
  let browser;
  const admin = (method, path, body) =>
    fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${secret("ADMIN_KEY")}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, text: await r.text() }));
  const cron = async (schedule) => {
    assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent(schedule)}`)).status, 200);
    await settled(edge.url);
  };

  before(async () => {
    receiver = await startReceiver(() => ({ status: 202 }));
    edge = await startEdge("e2e-journey", { vars: { JOURNEY_TIME_SCALE: "1800" } });
    const mail = { type: "sendgrid", settings: { apiKey: "SG.e2e", fromEmail: "shop@shop.example", baseUrl: receiver.url } };
    assert.equal((await admin("PUT", "/v1/admin/destinations/mail", mail)).status, 201);
    const segments = committed("segments.json");
    const abandoners = segments.segments.find((s) => s.name === "cart_abandoners");
    abandoners.rule.and[1] = { not: { within_minutes: [{ computed: "last_cart_activity_at" }, 0.1] } };
    const personalisation = await admin("PUT", "/v1/admin/personalisation", { segments });
    assert.equal(personalisation.status, 200, personalisation.text);
    const journeys = committed("journeys.json");
    delete journeys.abandoned_checkout.quietHours;
    journeys.abandoned_checkout.holdoutPercent = 0;
    const templates = committed("templates.json");
    templates.cart_reminder.siteUrl = edge.url;
    const flows = await admin("PUT", "/v1/admin/journeys", { journeys, templates });
    assert.equal(flows.status, 200, flows.text);
  });
  after(async () => {
    await browser?.close();
    await edge?.stop();
    await receiver?.close();
  });

  test("sign in, fill the cart, leave at checkout: the reminder email lists the cart", async () => {
    browser = await launchBrowser();
    await browser.context.addInitScript(() =>
      localStorage.setItem("demo_consent", JSON.stringify({ analytics_storage: "granted", personalization_storage: "granted" })),
    );
    const page = await browser.context.newPage();
    const email = `lea-${process.pid}@shop.example`;
    await page.goto(`${edge.url}/signin`);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password").fill(secret("DEMO_PASSWORD"));
    await page.getByLabel("Send me reminders and offers").check();
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Signed in as").waitFor();

    await page.goto(`${edge.url}/product?id=trail-runner`);
    await page.getByRole("button", { name: "Add to cart" }).click();
    await page.getByText("Added to cart.").waitFor();
    await page.goto(`${edge.url}/checkout`);
    const started = await eventually(async () => {
      const rows = await edge.query("SELECT received_at FROM events WHERE name = 'Checkout Started'");
      return rows.length > 0 && rows;
    }, 30_000);
    assert.ok(started, "the checkout reached the collector");
    // And the shopper leaves.
    await page.close();

    // Past the window, the sweep finds the cart abandoned and the journey takes the shopper.
    await sleep(7000);
    await settled(edge.url);
    await cron("*/5 * * * *");
    const run = await eventually(async () => (await edge.query("SELECT profile_id, entered_at FROM journey_runs WHERE journey = 'abandoned_checkout'"))[0], 10_000);
    assert.ok(run, "the shopper entered the journey");
    await cron("* * * * *");
    assert.equal(receiver.to("/v3/mail/send").length, 0, "nothing before the journey's hour");
    await sleep(Math.max(0, run.entered_at + 2000 - Date.now()) + 100);
    await cron("* * * * *");

    const [mail] = await receiver.wait("/v3/mail/send", 1);
    assert.equal(mail.json.personalizations[0].to[0].email, email);
    assert.equal(mail.json.subject.endsWith("you left something in your cart"), true, mail.json.subject);
    assert.match(mail.json.content[0].value, /<a href="http:\/\/127\.0\.0\.1:\d+\/product\.html\?id=trail-runner">Trail Runner<\/a> × 1: 129/);
    assert.equal(mail.json.custom_args.seam_journey, "abandoned_checkout");
  });
});
