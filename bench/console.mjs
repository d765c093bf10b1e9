// The console with a million events: a fresh edge's D1 is seeded in bulk (SQL, not through the
// ingest route, which would take most of an hour at the bench's rate) with a shop's month, then
// every read the console makes is timed, one request at a time. Runs alone with
// `node bench/console.mjs`; `CONSOLE_EVENTS` and `CONSOLE_PEOPLE` size the data.
import { readFileSync } from "node:fs";
import { root, startEdge } from "../tests/support/edge.mjs";

const EVENTS = Number(process.env.CONSOLE_EVENTS ?? 1_000_000);
const PEOPLE = Number(process.env.CONSOLE_PEOPLE ?? 200_000);
const REPEATS = Number(process.env.CONSOLE_REPEATS ?? 15);
const CHUNK = 100_000;
const DAY = 86_400_000;
const SOURCE = "demo-site";

const pad = (i) => String(i).padStart(7, "0");
// An identified person whose single customer view is opened.
const PERSON = 4 * 1236;

// Person i: an anonymous ID, and for every fourth person a user ID and email (identified), all
// on the profile `bench-profile-<i>`. Event j is person j % PEOPLE's, spread evenly over 30 days,
// its type and name cycling per person; an identified person's even events carry the user ID
// (after sign-in). Orders were delivered to one destination.
async function seed(edge, now) {
  const from = now - 30 * DAY;
  const step = (30 * DAY) / EVENTS;
  for (let start = 0; start < EVENTS; start += CHUNK) {
    await edge.exec(
      `WITH RECURSIVE n(j) AS (SELECT ?1 UNION ALL SELECT j + 1 FROM n WHERE j + 1 < ?2),
       v AS (SELECT j, j % ?3 AS i, (j + j / ?3) % 20 AS k, CAST(?4 + j * ?5 AS INTEGER) AS ts FROM n),
       e AS (SELECT j, i, ts,
               CASE WHEN k = 0 THEN 'identify' WHEN k % 5 = 1 THEN 'page' ELSE 'track' END AS type,
               CASE k % 10 WHEN 2 THEN 'Product Added' WHEN 3 THEN 'Checkout Started' WHEN 4 THEN 'Order Completed' ELSE 'Product Viewed' END AS event
             FROM v)
       INSERT INTO events (source_id, message_id, type, name, anonymous_id, user_id, timestamp, received_at, body)
       SELECT ?6, 'seed-' || j, type, CASE type WHEN 'track' THEN event WHEN 'page' THEN 'Product' END,
         printf('bench-anon-%07d', i), CASE WHEN i % 4 = 0 AND j % 2 = 0 THEN printf('bench-user-%07d', i) END,
         ts, ts,
         json_object('type', type, 'event', CASE type WHEN 'track' THEN event END, 'messageId', 'seed-' || j,
           'anonymousId', printf('bench-anon-%07d', i),
           'userId', CASE WHEN i % 4 = 0 AND j % 2 = 0 THEN printf('bench-user-%07d', i) END,
           'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch'),
           'traits', CASE WHEN type = 'identify' AND i % 4 = 0 THEN json_object('email', printf('shopper%07d@example.com', i)) END,
           'properties', json_object('product_id', 'p' || (j % 500), 'price', (j % 200) + 0.99, 'category', 'Running Shoes'),
           'context', json_object('page', json_object('path', '/product/p' || (j % 500)), 'userAgent', 'Mozilla/5.0 (bench)'))
       FROM e`,
      start, Math.min(start + CHUNK, EVENTS), PEOPLE, from, step, SOURCE,
    );
  }
  await edge.exec(
    `INSERT INTO event_counts (day, source_id, type, count)
     SELECT timestamp / ${DAY}, source_id, type, COUNT(*) FROM events GROUP BY 1, 2, 3
     ON CONFLICT (day, source_id, type) DO UPDATE SET count = count + excluded.count`,
  );
  const people = `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ${PEOPLE})`;
  await edge.exec(
    `${people} INSERT INTO identities (identifier, profile_id, seq, updated_at)
     SELECT printf('anonymous_id:bench-anon-%07d', i), printf('bench-profile-%07d', i), 1, ?1 FROM n
     UNION ALL SELECT printf('user_id:bench-user-%07d', i), printf('bench-profile-%07d', i), 1, ?1 FROM n WHERE i % 4 = 0
     UNION ALL SELECT printf('email:shopper%07d@example.com', i), printf('bench-profile-%07d', i), 1, ?1 FROM n WHERE i % 4 = 0`,
    now,
  );
  await edge.exec(
    `${people} INSERT INTO segment_memberships (profile_id, segment, entered_at, exited_at)
     SELECT printf('bench-profile-%07d', i), 'cart_abandoners', ?1 - i, NULL FROM n WHERE i % 10 = 0
     UNION ALL SELECT printf('bench-profile-%07d', i), 'high_discount_affinity', ?1 - i, NULL FROM n WHERE i % 4 = 0`,
    now,
  );
  await edge.exec(
    `${people} INSERT INTO consent_history (identifier, timestamp, message_key, source_id, state)
     SELECT printf('anonymous_id:bench-anon-%07d', i), ?1 - i * 1000, 'demo-site/consent-' || i, 'demo-site',
       '{"gcm":{"ad_personalization":"denied","analytics_storage":"granted"}}' FROM n WHERE i % 4 = 0`,
    from,
  );
  await edge.exec(
    `INSERT INTO deliveries (destination, source_id, message_id, status, attempts, created_at, next_at, updated_at)
     SELECT 'ga4', source_id, message_id, 'delivered', 1, received_at, received_at, received_at + 500
     FROM events WHERE name = 'Order Completed'`,
  );
}

const cron = (edge, schedule) => fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent(schedule)}`);

async function timed(label, request, check) {
  const times = [];
  let last;
  for (let k = 0; k < REPEATS; k++) {
    const started = performance.now();
    const response = await request();
    const body = await response.text();
    times.push(performance.now() - started);
    if (response.status !== 200) throw new Error(`${label}: ${response.status} ${body.slice(0, 300)}`);
    last = body;
  }
  times.sort((a, b) => a - b);
  const detail = check(last);
  return [`console, ${EVENTS.toLocaleString("en")} events: ${label}`, `p50 ${times[times.length >> 1].toFixed(1)} ms`, `max ${times[times.length - 1].toFixed(1)} ms; ${detail}`];
}

/** Rows timing each console read against a D1 holding EVENTS events of PEOPLE people. */
export async function consoleRows() {
  const adminKey = readFileSync(`${root}/.dev.vars`, "utf8").match(/^ADMIN_KEY=(.*)$/m)?.[1].trim();
  const edge = await startEdge("bench-console");
  try {
    const now = Date.now();
    const seeding = performance.now();
    await seed(edge, now);
    const seeded = ((performance.now() - seeding) / 1000).toFixed(0);
    const [{ n: stored }] = await edge.query("SELECT COUNT(*) AS n FROM events");
    if (stored !== EVENTS) throw new Error(`seeded ${stored} events, not ${EVENTS}`);
    // The seed wrote behind the Worker's back: a restart drops anything it cached.
    await edge.restart();
    const get = (path) => () => fetch(`${edge.url}${path}`, { headers: { authorization: `Bearer ${adminKey}` } });
    // The five-minute sweep counts the profiles for the overview (here once, timed).
    const counting = performance.now();
    const swept = await cron(edge, "*/5 * * * *");
    if (swept.status !== 200) throw new Error(`sweep: ${swept.status}`);
    const counted = performance.now() - counting;
    const rows = [[`console: seeded ${EVENTS.toLocaleString("en")} events, ${PEOPLE.toLocaleString("en")} people`, `${seeded} s`, "bulk SQL into the local D1, then a restart"]];
    rows.push([`console, ${EVENTS.toLocaleString("en")} events: the sweep's profile count`, `${counted.toFixed(0)} ms`, "every five minutes, off the request path"]);
    rows.push(await timed("overview", get("/v1/admin/overview"), (b) => {
      const o = JSON.parse(b);
      const total = o.events.reduce((s, d) => s + d.count, 0);
      return `${total} events in the chart, ${o.profiles} profiles, ${o.identified} identified`;
    }));
    rows.push(await timed("live events, newest 50", get("/v1/admin/events?limit=50"), (b) => `${JSON.parse(b).events.length} events`));
    rows.push(await timed("live events, by name", get("/v1/admin/events?limit=50&name=Order%20Completed"), (b) => `${JSON.parse(b).events.length} events`));
    rows.push(await timed("live events, by source and type", get(`/v1/admin/events?limit=50&source=${SOURCE}&type=identify`), (b) => `${JSON.parse(b).events.length} events`));
    const email = `shopper${pad(PERSON)}@example.com`;
    rows.push(await timed("profile by email (single customer view)", get(`/v1/profiles/lookup?type=email&value=${encodeURIComponent(email)}`), (b) => {
      const p = JSON.parse(b);
      return `${p.eventCount} events, ${p.recentEvents.length} on the timeline, ${(p.consent ?? []).length} consent changes, ${(p.deliveries ?? []).length} deliveries`;
    }));
    rows.push(await timed("privacy export of that person", get(`/v1/privacy/export?type=email&value=${encodeURIComponent(email)}`), (b) => `${JSON.parse(b).data.events.length} events`));
    rows.push(await timed("recommendations for a profile", get(`/v1/profiles/bench-profile-${pad(PERSON)}/recommendations`), (b) => `${JSON.parse(b).decisions?.length ?? 0} slots`));
    rows.push(await timed("segments with sizes", get("/v1/admin/segments"), (b) => `${JSON.parse(b).segments.length} segments`));
    rows.push(await timed("segment members, a page of 100", get("/v1/admin/segments/high_discount_affinity/members?limit=100"), (b) => `${JSON.parse(b).members.length} members`));
    rows.push(await timed("segment CSV", get("/v1/admin/segments/high_discount_affinity/members?format=csv"), (b) => `${b.trim().split("\n").length - 1} rows`));
    // Last, as it changes the data: erasing one person among a million events.
    const erasing = performance.now();
    const erased = await fetch(`${edge.url}/v1/privacy/delete`, { method: "POST", headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" }, body: JSON.stringify({ type: "email", value: email }) });
    const receipt = await erased.json();
    if (erased.status !== 200) throw new Error(`erasure: ${erased.status} ${JSON.stringify(receipt)}`);
    rows.push([`console, ${EVENTS.toLocaleString("en")} events: erase that person`, `${(performance.now() - erasing).toFixed(0)} ms`, `${receipt.deleted?.events ?? "?"} events deleted`]);
    return rows;
  } finally {
    await edge.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const row of await consoleRows()) console.log(`| ${row.join(" | ")} |`);
}
