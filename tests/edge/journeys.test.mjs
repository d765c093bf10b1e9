// Journeys end to end: the real Worker in workerd with its real local D1, KV and Queues, local
// receivers in place of SendGrid and Twilio, and the cron triggers run by the test. Journeys run
// at JOURNEY_TIME_SCALE=900 (an hour's wait takes four seconds); the cart's hour is real time,
// reached by dating the cart back. The site owner's flow: a cart left for an hour enters
// `abandoned_checkout`; an hour later an email lists the cart; if it was opened and not
// clicked, ten hours later a WhatsApp with a 10% code goes to discount buyers.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { post, root, secret, settled, startEdge } from "../support/edge.mjs";
import { startReceiver } from "../support/receiver.mjs";

const ADMIN_KEY = secret("ADMIN_KEY");
const SERVER_KEY = secret("SERVER_WRITE_KEY");
const HOOKS_SECRET = secret("HOOKS_SECRET");
const run = `${process.pid}`;
let n = 0;
const mid = () => `j-${run}-${++n}`;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const SCALE = 900;
/** A journey's hour, as the scaled Worker counts it. */
const JOURNEY_HOUR = HOUR / SCALE;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sleepUntil = (ms) => sleep(Math.max(0, ms - Date.now()));
const iso = (ms) => new Date(ms).toISOString();

const committed = (file) => JSON.parse(readFileSync(join(root, "config", file), "utf8"));

describe("journeys: the abandoned-checkout flow", () => {
  let edge;
  let receiver;
  const admin = (method, path, body) =>
    fetch(`${edge.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, text: await r.clone().text(), json: await r.json().catch(() => undefined) }));
  const server = (batch) => post(`${edge.url}/v1/batch`, { writeKey: SERVER_KEY, batch });
  /** Runs a cron trigger now and waits for what it started. */
  const cron = async (schedule) => {
    const r = await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent(schedule)}`);
    assert.equal(r.status, 200, await r.text());
    await settled(edge.url);
  };
  /** Runs the journeys' cron once `time` has come. */
  const journeysAt = async (time) => {
    await sleepUntil(time + 50);
    await cron("* * * * *");
  };
  const mails = () => receiver.to("/v3/mail/send");
  const whatsapps = () => receiver.to("/2010-04-01/Accounts/AC123/Messages.json");
  const mailTo = (email) => mails().filter((r) => r.json.personalizations[0].to[0].email === email);
  const whatsappTo = (phone) => whatsapps().filter((r) => new URLSearchParams(r.raw).get("To") === `whatsapp:${phone}`);
  const sendgrid = (entries, key = HOOKS_SECRET) => post(`${edge.url}/v1/hooks/sendgrid/${key}`, entries);

  /** A shopper known to the site's server: email, phone, opt-in, and a past we choose. The
   *  cart was last touched just under an hour ago: it counts as abandoned at `cartAt + HOUR`. */
  async function shopper(name, { optIn = true, discountOrders = 2, cart = true } = {}) {
    const userId = `${name}-${run}`;
    const email = `${name}-${run}@shop.example`;
    const phone = `+316${String(10_000_000 + ++n).slice(-8)}`;
    const now = Date.now();
    const cartAt = now - HOUR + 5000;
    const batch = [
      { type: "identify", userId, messageId: mid(), traits: { email, phone, first_name: name[0].toUpperCase() + name.slice(1), email_opt_in: optIn } },
    ];
    for (let i = 0; i < discountOrders; i++) {
      batch.push({ type: "track", event: "Order Completed", userId, messageId: mid(), timestamp: iso(now - (10 + i) * DAY),
        properties: { order_id: `${userId}-o${i}`, revenue: 50, coupon: "SPRING" } });
    }
    if (cart) {
      batch.push({ type: "track", event: "Product Added", userId, messageId: mid(), timestamp: iso(cartAt),
        properties: { product_id: "trail-runner", name: "Trail <Runner>", price: 129, quantity: 1, url: "/product.html?id=trail-runner" } });
    }
    const r = await server(batch);
    assert.equal(r.status, 200, r.text);
    assert.ok(r.json.profileId, r.text);
    return { name, userId, email, phone, profileId: r.json.profileId, cartAt };
  }

  before(async () => {
    receiver = await startReceiver(() => ({ status: 202 }));
    edge = await startEdge("journeys", { vars: { JOURNEY_TIME_SCALE: String(SCALE), HOT_EVENT_HOURS: "0", ARCHIVE_SETTLE_SECONDS: "0" } });
    const destinations = {
      mail: { type: "sendgrid", settings: { apiKey: "SG.test-key", fromEmail: "shop@shop.example", fromName: "Seam Shop", baseUrl: receiver.url } },
      whatsapp: { type: "twilio", settings: { accountSid: "AC123", authToken: "tok", from: "whatsapp:+14155238886", baseUrl: receiver.url } },
    };
    for (const [name, entry] of Object.entries(destinations)) {
      const put = await admin("PUT", `/v1/admin/destinations/${name}`, entry);
      assert.equal(put.status, 201, put.text);
    }
  });
  after(async () => {
    await edge?.stop();
    await receiver?.close();
  });

  test("a mistake in a journey or template is refused with its name, step and field, and nothing changes", async () => {
    const journeys = committed("journeys.json");
    const broken = structuredClone(journeys);
    broken.abandoned_checkout.steps[0] = { id: "wait_1h", wait: { weeks: 1 } };
    const r = await admin("PUT", "/v1/admin/journeys", { journeys: broken });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.code, "invalid_journey_config");
    assert.match(r.json.message, /^journey abandoned_checkout: step wait_1h: wait must be/);
    const missing = structuredClone(journeys);
    missing.abandoned_checkout.steps[1].send.template = "nope";
    const m = await admin("PUT", "/v1/admin/journeys", { journeys: missing });
    assert.equal(m.status, 400);
    assert.match(m.json.message, /step reminder: send.template names no template \(nope\)/);
    const t = await admin("PUT", "/v1/admin/journeys", { templates: { ...committed("templates.json"), discount_10: { channel: "whatsapp", text: "{{#each cart}}" } } });
    assert.equal(t.status, 400);
    assert.equal(t.json.code, "invalid_template");
    assert.match(t.json.message, /^template discount_10: text has an unmatched/);
    const now = await admin("GET", "/v1/admin/journeys");
    assert.equal(now.json.stamp, "committed", "nothing was stored");
  });

  test("the site owner's flow, and every way out of it", async () => {
    // The test's own copy of the flow: no quiet hours (the clock of the run is not ours to
    // pick) and no holdout (the next test measures it).
    const journeys = committed("journeys.json");
    delete journeys.abandoned_checkout.quietHours;
    journeys.abandoned_checkout.holdoutPercent = 0;
    const templates = committed("templates.json");
    templates.cart_reminder.siteUrl = "https://shop.example";
    const up = await admin("PUT", "/v1/admin/journeys", { journeys, templates });
    assert.equal(up.status, 200, up.text);

    const ann = await shopper("ann"); // opens, never clicks, buys with discounts: the WhatsApp
    const bob = await shopper("bob"); // buys after the email: nothing more
    const cid = await shopper("cid"); // opens and clicks: no WhatsApp
    const dee = await shopper("dee"); // erased after entering: nothing at all
    const eve = await shopper("eve", { discountOrders: 0 }); // opens, but no discount history
    const fay = await shopper("fay", { optIn: false }); // never opted in: nothing
    const gus = await shopper("gus"); // opens, then replies STOP on WhatsApp
    const hal = await shopper("hal"); // asks for his data not to be processed: suppressed
    const all = [ann, bob, cid, dee, eve, fay, gus, hal];
    const t0 = Math.max(...all.map((s) => s.cartAt));
    assert.equal((await edge.query("SELECT count(*) AS n FROM journey_runs"))[0].n, 0, "carts not yet abandoned");

    // An hour after the carts were left, the segment sweep finds them abandoned and enters
    // each shopper into the journey.
    await sleepUntil(t0 + HOUR + 200);
    // Archived first, so the sweep's compaction takes the shoppers' events out of D1.
    for (let i = 0; i < 120 && (await edge.query("SELECT count(*) AS n FROM events WHERE archived_at IS NULL"))[0].n > 0; i++) await sleep(250);
    await cron("*/5 * * * *");
    const runs = await edge.query("SELECT profile_id, entered_at, status, control, cause FROM journey_runs WHERE journey = 'abandoned_checkout'");
    assert.deepEqual(runs.map((r) => r.profile_id).sort(), all.map((s) => s.profileId).sort(), JSON.stringify(runs));
    assert.ok(runs.every((r) => r.status === "active" && r.control === 0 && r.cause === "segment:cart_abandoners"));
    const entered = runs[0].entered_at;
    assert.ok(runs.every((r) => r.entered_at === entered), "entered at the sweep's time");
    const exposures = await edge.query("SELECT body FROM events WHERE name = 'Journey Entered'");
    assert.equal(exposures.length, all.length, "one exposure event per entry");
    // With a hot window of 0 hours, the shoppers' own events left D1 for the archive in the
    // sweep before the segment sweep ran: their source came from the archive's index.
    const hot = await edge.query("SELECT DISTINCT name FROM events WHERE user_id IN (SELECT value FROM json_each(?))", JSON.stringify(all.map((s) => s.userId)));
    assert.ok(hot.every((e) => e.name === "Journey Entered" || e.name?.startsWith("Segment ")), JSON.stringify(hot));
    assert.equal(JSON.parse(exposures[0].body).properties.group, "treatment");

    // Dee asks to be forgotten before anything is sent.
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ identifier: { type: "user_id", value: dee.userId } }),
    });
    assert.equal(erased.status, 200, await erased.text());
    // Hal is suppressed: he leaves every journey at once.
    const suppressed = await fetch(`${edge.url}/v1/privacy/suppress`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "user_id", value: hal.userId }),
    });
    assert.equal(suppressed.status, 200, await suppressed.text());
    const [halRun] = await edge.query("SELECT status, end_reason FROM journey_runs WHERE profile_id = ?", hal.profileId);
    assert.deepEqual({ ...halRun }, { status: "ended", end_reason: "suppressed" });

    await journeysAt(entered);
    assert.equal(mails().length, 0, "nothing before the hour");
    await journeysAt(entered + JOURNEY_HOUR);
    await receiver.wait("/v3/mail/send", 5);
    await sleep(1000);
    const reminded = [ann, bob, cid, eve, gus];
    for (const s of reminded) assert.equal(mailTo(s.email).length, 1, `${s.name} gets one reminder`);
    assert.equal(mailTo(dee.email).length, 0, "the erased shopper gets nothing");
    assert.equal(mailTo(fay.email).length, 0, "no opt-in, no email");
    assert.equal(mailTo(hal.email).length, 0, "the suppressed shopper gets nothing");
    const [mail] = mailTo(ann.email);
    assert.equal(mail.headers.authorization, "Bearer SG.test-key");
    assert.equal(mail.json.subject, "Ann, you left something in your cart");
    const html = mail.json.content[0].value;
    assert.match(html, /<a href="https:\/\/shop.example\/product.html\?id=trail-runner">Trail &lt;Runner&gt;<\/a> × 1: 129/);
    assert.deepEqual(Object.keys(mail.json.custom_args).sort(), ["seam_delivery", "seam_journey", "seam_step"]);
    assert.equal(mail.json.custom_args.seam_journey, "abandoned_checkout");
    const decisions = await edge.query("SELECT profile_id, outcome FROM journey_decisions WHERE step = 'reminder'");
    assert.equal(decisions.find((d) => d.profile_id === fay.profileId)?.outcome, "no_consent");
    assert.equal(decisions.filter((d) => d.outcome === "sent").length, 5);
    assert.equal((await edge.query("SELECT count(*) AS n FROM journey_runs WHERE profile_id = ?", dee.profileId))[0].n, 0, "erasure removed the run");

    // A restart mid-journey, and the runs walked again as if a walker had died before settling:
    // nothing is sent twice.
    await edge.restart();
    await edge.exec("UPDATE journey_runs SET next_at = ? WHERE status = 'active'", entered + JOURNEY_HOUR);
    await journeysAt(entered + JOURNEY_HOUR);
    await sleep(1500);
    assert.equal(mails().length, 5, "still one reminder each");

    // Engagement comes back through SendGrid's Event Webhook, signed by the secret in its URL.
    const opened = Math.max(Date.now(), entered + JOURNEY_HOUR + 1000);
    const event = (s, kind, at, extra = {}) => ({ email: s.email, timestamp: Math.floor(at / 1000), event: kind, sg_event_id: `${kind}-${s.name}-${run}`, seam_journey: "abandoned_checkout", ...extra });
    assert.equal((await sendgrid([event(ann, "open", opened)], "wrong-secret-0123456789")).status, 403);
    const hook = await sendgrid([
      event(ann, "delivered", opened - MINUTE),
      event(ann, "open", opened),
      event(cid, "open", opened),
      event(cid, "click", opened + 1000, { url: "https://shop.example/cart" }),
      event(eve, "open", opened),
      event(gus, "open", opened),
      { event: "processed", email: ann.email, timestamp: 1 },
    ]);
    assert.equal(hook.status, 200, hook.text);
    assert.equal(hook.json.received, 6);
    // A retried webhook stores nothing twice.
    assert.equal((await sendgrid([event(ann, "open", opened)])).status, 200);
    const opens = await edge.query("SELECT count(*) AS n FROM events WHERE name = 'Email Opened' AND source_id = '$hooks'");
    assert.equal(opens[0].n, 4, "Ann, Cid, Eve and Gus opened; the retry added nothing");
    // Gus replies STOP on WhatsApp: Twilio's inbound webhook.
    const stop = await fetch(`${edge.url}/v1/hooks/twilio/${HOOKS_SECRET}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ MessageSid: `SM-stop-${run}`, SmsStatus: "received", From: `whatsapp:${gus.phone}`, To: "whatsapp:+14155238886", Body: "STOP", OptOutType: "STOP" }).toString(),
    });
    assert.equal(stop.status, 200, await stop.text());
    await settled(edge.url);
    // Bob buys after the email.
    const bought = await server([{ type: "track", event: "Order Completed", userId: bob.userId, messageId: mid(), timestamp: iso(Date.now()), properties: { order_id: `${bob.userId}-new`, revenue: 129 } }]);
    assert.equal(bought.status, 200);

    // Ann's profile is merged into another (as D1 records a merge: her identifiers, state and
    // a merge row move to the survivor; no event follows, which would re-derive the profile).
    // Her run and decisions follow her; nothing is sent again.
    const survivor = `${ann.profileId}-merged`;
    await edge.exec("UPDATE identities SET profile_id = ? WHERE profile_id = ?", survivor, ann.profileId);
    await edge.exec("UPDATE profile_personalisation SET profile_id = ? WHERE profile_id = ?", survivor, ann.profileId);
    await edge.exec("INSERT INTO merges (from_profile, into_profile, message_key, merged_at) VALUES (?, ?, 'test/merge', ?)", ann.profileId, survivor, Date.now());

    assert.ok(Date.now() < entered + 11 * JOURNEY_HOUR, "the engagement came within the ten hours");
    await journeysAt(entered + 11 * JOURNEY_HOUR);
    await journeysAt(Date.now()); // Ann's run, moved by the first pass, is walked by the next
    await receiver.wait("/2010-04-01/", 1);
    await sleep(1500);
    const named = whatsapps().map((w) => all.find((s) => `whatsapp:${s.phone}` === new URLSearchParams(w.raw).get("To"))?.name);
    assert.deepEqual(named, ["ann"], "only Ann gets the WhatsApp");
    const [message] = whatsappTo(ann.phone);
    assert.ok(message, "Ann gets the WhatsApp");
    const form = new URLSearchParams(message.raw);
    assert.equal(form.get("From"), "whatsapp:+14155238886");
    assert.match(form.get("Body"), /^Hi Ann, still thinking it over\? Here is 10% off your cart with the code SAVE10-[A-Z2-9]{8}\.$/);
    assert.equal(message.headers.authorization, `Basic ${Buffer.from("AC123:tok").toString("base64")}`);
    // Twilio's status callback: Ann read it.
    const read = await fetch(`${edge.url}/v1/hooks/twilio/${HOOKS_SECRET}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ MessageSid: `SM-ann-${run}`, MessageStatus: "read", To: `whatsapp:${ann.phone}`, From: "whatsapp:+14155238886" }).toString(),
    });
    assert.equal(read.status, 200);
    await settled(edge.url);
    const reads = await edge.query("SELECT body FROM events WHERE name = 'Message Read' AND source_id = '$hooks'");
    assert.equal(reads.length, 1);
    assert.deepEqual(JSON.parse(reads[0].body).properties, { channel: "whatsapp", message_sid: `SM-ann-${run}`, status: "read" });

    const ended = Object.fromEntries(
      (await edge.query("SELECT profile_id, status, end_reason, step FROM journey_runs WHERE journey = 'abandoned_checkout'")).map((r) => [r.profile_id, r]),
    );
    assert.equal(ended[survivor].end_reason, "completed", "Ann's run moved to the survivor and completed");
    assert.equal(ended[ann.profileId], undefined);
    const annDecisions = await edge.query("SELECT step, outcome FROM journey_decisions WHERE profile_id = ? ORDER BY at", survivor);
    assert.deepEqual(annDecisions.filter((d) => d.outcome === "sent").map((d) => d.step), ["reminder", "whatsapp"], "her decisions moved with her");
    assert.equal(mailTo(ann.email).length, 1, "the merge sent nothing again");
    assert.deepEqual([ended[bob.profileId].end_reason, ended[bob.profileId].step], ["exit_event", "Order Completed"]);
    assert.deepEqual([ended[cid.profileId].end_reason, ended[cid.profileId].step], ["branched_out", "opened_not_clicked"]);
    assert.deepEqual([ended[eve.profileId].end_reason, ended[eve.profileId].step], ["branched_out", "discount_buyer"]);
    assert.equal(ended[fay.profileId].end_reason, "branched_out", "never opened what she never got");
    assert.equal(ended[gus.profileId].end_reason, "completed");
    const gusWhatsapp = await edge.query("SELECT outcome FROM journey_decisions WHERE profile_id = ? AND step = 'whatsapp'", gus.profileId);
    assert.deepEqual(gusWhatsapp.map((d) => d.outcome), ["unsubscribed"], "STOP is respected");

    // The admin API shows the journey's numbers.
    const stats = await admin("GET", "/v1/admin/journeys/abandoned_checkout");
    assert.equal(stats.status, 200, stats.text);
    const sent = stats.json.decisions.filter((d) => d.outcome === "sent").reduce((a, d) => a + d.decisions, 0);
    assert.equal(sent, 6);
    const list = await admin("GET", `/v1/admin/journeys/abandoned_checkout/runs?profileId=${encodeURIComponent(survivor)}`);
    assert.equal(list.json.runs.length, 1);
    assert.equal(list.json.runs[0].status, "ended");

    // Retention: history older than the events' retention goes; a run still going keeps its own.
    const old = 91 * DAY;
    await edge.exec("UPDATE journey_runs SET ended_at = ended_at - ?, entered_at = entered_at - ?", old, old);
    await edge.exec("UPDATE journey_decisions SET at = at - ?, entered_at = entered_at - ?", old, old);
    // A decision stays while its message is in the delivery log (an erasure finds it there).
    const logged = await edge.query("SELECT count(*) AS n FROM deliveries WHERE source_id = '$journey'");
    assert.ok(logged[0].n >= 6);
    await edge.exec("UPDATE deliveries SET updated_at = updated_at - ? WHERE source_id = '$journey'", old);
    await edge.exec("UPDATE journey_runs SET status = 'active', ended_at = NULL, next_at = ? WHERE profile_id = ?", Date.now() + DAY, eve.profileId);
    const eveDecisions = (await edge.query("SELECT count(*) AS n FROM journey_decisions WHERE profile_id = ?", eve.profileId))[0].n;
    await cron("17 3 * * *");
    const left = await edge.query("SELECT profile_id, status FROM journey_runs WHERE journey = 'abandoned_checkout'");
    assert.deepEqual(left.map((r) => [r.profile_id, r.status]), [[eve.profileId, "active"]]);
    const decisionsLeft = await edge.query("SELECT DISTINCT profile_id FROM journey_decisions WHERE journey = 'abandoned_checkout'");
    assert.deepEqual(decisionsLeft.map((r) => r.profile_id), [eve.profileId]);
    assert.equal((await edge.query("SELECT count(*) AS n FROM journey_decisions WHERE profile_id = ?", eve.profileId))[0].n, eveDecisions);
  });

  test("an event trigger with a holdout: the control group gets nothing, and exposure says who was which", async () => {
    const welcome = {
      trigger: { event: "Signed Up", where: { eq: [{ field: "properties.plan" }, "free"] } },
      reentry: "never",
      holdoutPercent: 50,
      steps: [{ id: "hello", send: { destination: "mail", template: "hello" } }],
    };
    const templates = { ...committed("templates.json"), hello: { channel: "email", subject: "Welcome, {{profile.first_name}}", html: "<p>Welcome to the {{event.properties.plan}} plan. Your code: {{coupon}}</p>", coupon: { code: "WELCOME10" } } };
    const up = await admin("PUT", "/v1/admin/journeys", { journeys: { welcome }, templates });
    assert.equal(up.status, 200, up.text);
    const people = [];
    for (let i = 0; i < 8; i++) {
      const s = await shopper(`new${i}`, { discountOrders: 0, cart: false });
      const r = await server([{ type: "track", event: "Signed Up", userId: s.userId, messageId: mid(), properties: { plan: "free" } }]);
      assert.equal(r.status, 200);
      people.push(s);
    }
    const paid = await shopper("paid", { discountOrders: 0, cart: false });
    await server([{ type: "track", event: "Signed Up", userId: paid.userId, messageId: mid(), properties: { plan: "pro" } }]);
    await settled(edge.url);
    const before = mails().length;
    await journeysAt(Date.now());
    await sleep(2000);
    // The draw core makes: the first 8 hex digits of sha256("holdout\n<journey>\n<profile>") mod 100.
    const control = (p) => parseInt(createHash("sha256").update(`holdout\nwelcome\n${p}`).digest("hex").slice(0, 8), 16) % 100 < 50;
    for (const s of people) {
      const got = mailTo(s.email);
      assert.equal(got.length, control(s.profileId) ? 0 : 1, `${s.name}: ${control(s.profileId) ? "control" : "treatment"}`);
      if (got.length) assert.equal(got[0].json.content[0].value, "<p>Welcome to the free plan. Your code: WELCOME10</p>", "the triggering event's fields");
    }
    assert.equal(mailTo(paid.email).length, 0, "the trigger's condition holds only for free plans");
    assert.equal(mails().length - before, people.filter((s) => !control(s.profileId)).length);
    const groups = await edge.query("SELECT json_extract(body, '$.properties.profile_id') AS p, json_extract(body, '$.properties.group') AS g FROM events WHERE name = 'Journey Entered' AND json_extract(body, '$.properties.journey') = 'welcome'");
    assert.equal(groups.length, people.length);
    for (const { p, g } of groups) assert.equal(g, control(p) ? "control" : "treatment");
    const held = await edge.query("SELECT count(*) AS n FROM journey_decisions WHERE journey = 'welcome' AND outcome = 'holdout'");
    assert.equal(held[0].n, people.filter((s) => control(s.profileId)).length);
    // "never": signing up again enters nobody again.
    await server([{ type: "track", event: "Signed Up", userId: people[0].userId, messageId: mid(), properties: { plan: "free" } }]);
    const runs = await edge.query("SELECT count(*) AS n FROM journey_runs WHERE journey = 'welcome' AND profile_id = ?", people[0].profileId);
    assert.equal(runs[0].n, 1);
  });
});
