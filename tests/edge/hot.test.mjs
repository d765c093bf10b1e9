// D1 keeps only hot events (#18): once archived and past the hot window (0 hours here), an
// event's row leaves D1. Its resend is still a duplicate, the person's timeline and access
// export read it from R2, and an erasure rebuilds its object from the object itself, keeping
// everyone else's lines.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { admin, archiveObjects, directSources, homeOf, post, secret, startEdge, WRITE_KEY } from "../support/edge.mjs";

const run = `${process.pid}`;
let n = 0;
const mid = () => `hot-${run}-${++n}`;
const send = (edge, batch, writeKey = WRITE_KEY) => post(`${edge.url}/v1/batch`, { writeKey, batch });
const sweep = async (edge) => assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("*/5 * * * *")}`)).status, 200);

const archivedLines = async (edge) => (await archiveObjects(edge)).flatMap((o) => o.lines);

/** core::archive::compact::person_key, as the decimal text SQLite's CAST gives. */
const personKey = (cls, value) => createHash("sha256").update(`${cls}\0${value}`).digest().readBigInt64BE(0).toString();

/**
 * A value `${prefix}-${run}-i` whose anonymous ID's (and user ID `u-…`'s) index entries live
 * outside `DB` among `shards`, with the same for `more(i)`'s `[class, value]` keys.
 */
function away(prefix, shards, more = () => []) {
  for (let i = 0; ; i++) {
    const value = `${prefix}-${run}-${i}`;
    const keys = [["a", value], ["u", `u-${value}`], ...more(i)].map(([cls, v]) => personKey(cls, v));
    if (shards === 1 || keys.every((k) => homeOf(k, shards) !== 0)) return { value, i };
  }
}

/** The archive's index entries in each database: `[{person, object}]` per database. */
async function entries(edge, shards) {
  const all = [];
  for (let i = 0; i < shards; i++) all.push(await edge.queryShard(i, "SELECT CAST(person AS TEXT) AS person, object FROM archive_people"));
  return all;
}

/** Waits until D1 marks every stored event archived. */
async function allArchived(edge, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const [{ left }] = await edge.query("SELECT COUNT(*) AS left FROM events WHERE archived_at IS NULL");
    if (left === 0) return;
    if (Date.now() > deadline) throw new Error(`${left} events not archived`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

for (const shards of [1, 3]) describe(`hot state: events leave D1 once archived (${shards === 1 ? "one database" : `${shards} profile shards`})`, () => {
  let edge;
  before(async () => {
    // Claims settle at once here (twenty minutes live): compaction and rebuilds need not wait.
    // Stored before the answer: a resend's answer says whether the compacted key still held.
    const vars = { HOT_EVENT_HOURS: "0", ARCHIVE_SETTLE_SECONDS: "0" };
    edge = await startEdge(shards === 1 ? "hot" : "hot-shards", { sources: directSources(), vars, profileShards: shards });
  });
  after(async () => {
    await edge?.stop();
  });

  test("compaction keeps dedup, timelines, access and erasure working from the archive", async () => {
    // With shards, Ann's entries live outside `DB` (her IDs', email's and device's): her
    // timeline can only find them at home, and her erasure only through the shards.
    const contacts = (i) => [["c", `hot-${run}-${i}@shop.example`], ["d", `ann-device-${run}-${i}`]];
    const { value: ann, i: annAt } = away("ann", shards, contacts);
    const [[, email], [, annDevice]] = contacts(annAt);
    const [bob, eve] = [`bob-${run}`, `eve-${run}`];
    const ordered = { type: "track", event: "Order Completed", anonymousId: ann, messageId: mid(), properties: { revenue: 42 } };
    const identify = { type: "identify", anonymousId: ann, userId: `u-${ann}`, traits: { email }, context: { device: { id: annDevice } }, messageId: mid() };
    const server = await send(edge, [identify, ordered], secret("SERVER_WRITE_KEY"));
    assert.equal(server.status, 200, server.text);
    const viewed = { type: "track", event: "Product Viewed", anonymousId: bob, messageId: mid(), properties: { product_id: "p1" } };
    // Eve's browser claims Ann's email and device: claims, redacted when Ann is erased.
    const claimed = { type: "track", event: "Signed Up", anonymousId: eve, context: { traits: { email }, device: { id: annDevice } }, messageId: mid() };
    const owed = { type: "track", event: "Owed", anonymousId: bob, messageId: mid() };
    assert.equal((await send(edge, [viewed, claimed, owed])).status, 200);
    await allArchived(edge);
    // Dan's browser names Ann's device alone, archived later in an object of its own: once its
    // row has left D1, only the archive's index by device finds it.
    const named = { type: "track", event: "Opened", anonymousId: `dan-${run}`, context: { device: { id: annDevice } }, messageId: mid() };
    assert.equal((await send(edge, [named])).status, 200);
    await allArchived(edge);
    const stored = (await edge.query("SELECT message_id FROM events")).map((r) => r.message_id);
    // A destination still owes this one (dead, so it can be replayed): it stays in D1.
    await edge.exec(
      "INSERT INTO deliveries (destination, source_id, message_id, status, created_at, next_at, updated_at) VALUES ('crm', 'demo-site', ?, 'dead', 0, 0, 0)",
      owed.messageId,
    );

    // Ann's order reached a destination before it left D1: her profile still lists that.
    await edge.exec(
      "INSERT INTO deliveries (destination, source_id, message_id, status, created_at, next_at, updated_at) VALUES ('ga4', 'server', ?, 'delivered', 0, 0, 5)",
      ordered.messageId,
    );
    await sweep(edge);
    const left = (await edge.query("SELECT message_id FROM events")).map((r) => r.message_id);
    assert.deepEqual(left, [owed.messageId], "only the event a destination still owes keeps its row");
    const indexed = await entries(edge, shards);
    indexed.forEach((rows, i) => rows.forEach((r) => assert.equal(homeOf(r.person, shards), i, `entry ${r.person} in database ${i}`)));
    const annKeys = [personKey("a", ann), personKey("u", `u-${ann}`), personKey("c", email), personKey("d", annDevice)];
    const indexedAnn = indexed.flat().filter((r) => annKeys.includes(r.person));
    assert.ok(indexedAnn.length >= 4, `Ann's ID, user ID, email and device are indexed: ${JSON.stringify(indexedAnn)}`);
    if (shards > 1) {
      for (const key of annKeys.slice(0, 2)) assert.ok(indexed.slice(1).flat().some((r) => r.person === key), "in her homes, outside DB");
    }
    const lines = await archivedLines(edge);
    assert.deepEqual(lines.map((l) => l.message_id).sort(), [...stored].sort(), "the archive holds every event once");
    const [{ keys }] = await edge.query("SELECT COUNT(*) AS keys FROM event_keys");
    assert.equal(keys, stored.length - 1, "a dedup key for each event that left");

    // A resend of a compacted event is still a duplicate.
    const again = await send(edge, [viewed, { ...viewed, messageId: mid() }]);
    assert.deepEqual(again.json.results.map((r) => r.status), ["duplicate", "accepted"]);
    assert.equal((await edge.query("SELECT COUNT(*) AS n FROM events WHERE message_id = ?", viewed.messageId))[0].n, 0);
    // The key is 8 bytes of SHA-256 over source and message ID; once its window has ended (as if
    // a week had passed), the same message is a new event again.
    const digest = createHash("sha256").update(`demo-site\0${viewed.messageId}`).digest();
    const key = digest.readBigInt64BE(0).toString();
    assert.equal((await edge.query("SELECT COUNT(*) AS n FROM event_keys WHERE key = CAST(? AS INTEGER)", key))[0].n, 1, "the key as core computes it");
    // A key is kept to the end of the UTC day its window ends: on that day it still holds.
    await edge.exec("UPDATE event_keys SET day = ? WHERE key = CAST(? AS INTEGER)", Math.floor(Date.now() / 86_400_000), key);
    assert.deepEqual((await send(edge, [viewed])).json.results.map((r) => r.status), ["duplicate"], "on the last day of its window");
    await edge.exec("UPDATE event_keys SET day = 1 WHERE key = CAST(? AS INTEGER)", key);
    const laterAt = Date.now();
    const later = { ...(await send(edge, [viewed])), at: laterAt };
    assert.deepEqual(later.json.results.map((r) => r.status), ["accepted"], "past its dedup window");

    // Ann's timeline and her access export read her events from the archive.
    const profile = await (await admin(edge, `/v1/profiles/lookup?type=user_id&value=u-${ann}`)).json();
    assert.deepEqual(
      profile.recentEvents.map((e) => e.messageId).sort(),
      [identify.messageId, ordered.messageId].sort(),
      JSON.stringify(profile.recentEvents),
    );
    assert.equal(profile.recentEvents.find((e) => e.messageId === ordered.messageId).body.properties.revenue, 42);
    assert.equal(profile.eventCount, 2);
    assert.deepEqual(
      profile.deliveries.map((d) => [d.destination, d.messageId, d.status, d.about]),
      [["ga4", ordered.messageId, "delivered", "Order Completed"]],
      "deliveries of events that left D1 stay in the profile's log",
    );
    const access = (await (await admin(edge, `/v1/privacy/export?type=email&value=${encodeURIComponent(email)}`)).json()).data;
    assert.deepEqual(access.events.map((e) => e.messageId).sort(), [identify.messageId, ordered.messageId].sort());
    const bobs = await (await admin(edge, `/v1/profiles/lookup?type=anonymous_id&value=${bob}`)).json();
    assert.ok(!bobs.recentEvents.some((e) => e.messageId === ordered.messageId), "no one else's events");

    await allArchived(edge);
    // Erasing Ann rebuilds the objects from the objects: her lines and her claimed email go,
    // every other line stays though D1 no longer holds it.
    const erased = await admin(edge, "/v1/privacy/delete", { method: "POST", body: { type: "email", value: email } });
    assert.equal(erased.status, 200, await erased.clone().text());
    const receipt = (await erased.json()).deleted;
    assert.ok(receipt.archiveObjects >= 1 && receipt.archiveTombstones >= 3, JSON.stringify(receipt));
    // No entry of Ann's is left anywhere, and every database holds her tombstones: a late
    // compaction or walk cannot index her again.
    assert.deepEqual((await entries(edge, shards)).flat().filter((r) => annKeys.includes(r.person)), []);
    for (let i = 0; i < shards; i++) {
      const stones = (await edge.queryShard(i, "SELECT CAST(person AS TEXT) AS person FROM archive_tombstones")).map((r) => r.person);
      for (const key of annKeys) assert.ok(stones.includes(key), `a tombstone in database ${i}`);
    }
    await sweep(edge);
    const after = await archivedLines(edge);
    assert.ok(!after.some((l) => l.anonymous_id === ann || l.user_id === `u-${ann}`), "Ann's events are gone");
    assert.ok(!JSON.stringify(after).includes(email), "and her email in Eve's event");
    assert.ok(!JSON.stringify(after).includes(annDevice), "and her device ID in Eve's and Dan's events, which only the archive held");
    assert.equal(after.find((l) => l.message_id === named.messageId)?.event, "Opened", "Dan's event stays, redacted");
    assert.deepEqual(
      after.map((l) => l.message_id).sort(),
      stored.filter((id) => id !== identify.messageId && id !== ordered.messageId).concat(again.json.results[1].messageId).sort(),
      "everyone else's events stay",
    );
    // Bob's view, resent after its window, is in D1 again: the rebuilt object (which Eve's
    // event shares) dropped its old line, and the new one is archived on its own.
    const views = after.filter((l) => l.message_id === viewed.messageId);
    assert.equal(views.length, 1);
    assert.ok(Date.parse(views[0].received_at) >= later.at, "the resent one");
    assert.equal(after.find((l) => l.message_id === claimed.messageId).event, "Signed Up");
    const [{ rewrites }] = await edge.query("SELECT COUNT(*) AS rewrites FROM archive_rewrites");
    assert.equal(rewrites, 0, "every rebuild done");
    const gone = (await (await admin(edge, `/v1/privacy/export?type=email&value=${encodeURIComponent(email)}`)).json()).data;
    assert.equal(gone.events.length, 0);
  });

  test("a profile counts an event once while its row and its archived line both exist", async () => {
    const cat = `cat-${run}`;
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString();
    const owed = { type: "track", event: "Owed", anonymousId: cat, messageId: mid(), timestamp: hourAgo };
    const left = { type: "track", event: "Left", anonymousId: cat, messageId: mid(), timestamp: hourAgo };
    assert.equal((await send(edge, [owed, left])).status, 200);
    await allArchived(edge);
    // Owed to a destination, this one keeps its row while the object holding both lines is
    // indexed and the other row leaves.
    await edge.exec(
      "INSERT INTO deliveries (destination, source_id, message_id, status, created_at, next_at, updated_at) VALUES ('crm', 'demo-site', ?, 'dead', 0, 0, 0)",
      owed.messageId,
    );
    await sweep(edge);
    const rows = async () => (await edge.query("SELECT message_id FROM events WHERE anonymous_id = ?", cat)).map((r) => r.message_id);
    assert.deepEqual(await rows(), [owed.messageId]);
    // Fifty newer events: the owed row is no longer among the profile's newest hot rows.
    const newer = Array.from({ length: 50 }, () => ({ type: "track", event: "Later", anonymousId: cat, messageId: mid() }));
    assert.equal((await send(edge, newer)).status, 200);
    assert.equal((await rows()).length, 51);
    const profile = await (await admin(edge, `/v1/profiles/lookup?type=anonymous_id&value=${cat}`)).json();
    assert.equal(profile.eventCount, 52, "51 rows in D1 and the one line only the archive holds");
    const shown = profile.recentEvents.map((e) => e.messageId);
    assert.equal(new Set(shown).size, shown.length, "each event shown once");
  });

  if (shards > 1) {
    test("entries DB held are read there until the walk takes them home; retention deletes them everywhere", async () => {
      const gus = away("gus", shards).value;
      const viewed = { type: "track", event: "Product Viewed", anonymousId: gus, messageId: mid(), properties: { product_id: "p9" } };
      assert.equal((await send(edge, [viewed])).status, 200);
      await allArchived(edge);
      await sweep(edge);
      const key = personKey("a", gus);
      const home = homeOf(key, shards);
      const of = "SELECT CAST(person AS TEXT) AS person, object FROM archive_people WHERE person = CAST(? AS INTEGER)";
      const [entry] = await edge.queryShard(home, of, key);
      assert.ok(entry, "compaction indexed Gus at home");
      // As a Worker from before the shards held the index wrote it: in `DB`.
      await edge.queryShard(home, "DELETE FROM archive_people WHERE person = CAST(? AS INTEGER)", key);
      await edge.exec("INSERT INTO archive_people (person, object) VALUES (CAST(? AS INTEGER), ?)", key, entry.object);
      // The entry of a person whose erasure is under way (a tombstone at its home, from
      // now): it stays where the erasure reads it, and the walk goes round again.
      const ida = away("ida", shards).value;
      const idaKey = personKey("a", ida);
      const idaHome = homeOf(idaKey, shards);
      await edge.exec("INSERT INTO archive_people (person, object) VALUES (CAST(? AS INTEGER), ?)", idaKey, entry.object);
      await edge.queryShard(idaHome, "INSERT INTO archive_tombstones (person, erased_at) VALUES (CAST(? AS INTEGER), ?)", idaKey, Date.now());
      const timeline = async () => (await (await admin(edge, `/v1/profiles/lookup?type=anonymous_id&value=${gus}`)).json()).recentEvents.map((e) => e.messageId);
      assert.deepEqual(await timeline(), [viewed.messageId], "read in DB while its walk is not done");

      const minute = async () => assert.equal((await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("* * * * *")}`)).status, 200);
      const walks = async () => (await edge.query("SELECT name, after FROM walk_cursors WHERE name LIKE 'archive_index_home:%' AND name NOT LIKE '%:left' ORDER BY name")).map((w) => [w.name, w.after]);
      await minute();
      assert.deepEqual(await edge.query(of, key), [], "Gus's entry left DB");
      assert.deepEqual(await edge.queryShard(home, of, key), [entry], "for its home");
      assert.deepEqual((await edge.query(of, idaKey)).length, 1, "Ida's stays where it was");
      assert.deepEqual(await edge.queryShard(idaHome, of, idaKey), []);
      assert.ok(!(await walks()).some(([, after]) => after.endsWith("done")), `not done while it is left: ${JSON.stringify(await walks())}`);
      // Her erasure is long over (an hour and more): an entry since is hers anew, and moves.
      await edge.queryShard(idaHome, "UPDATE archive_tombstones SET erased_at = 1 WHERE person = CAST(? AS INTEGER)", idaKey);
      await minute();
      await minute();
      assert.deepEqual(await walks(), [["archive_index_home:0", "\u{10FFFF}done"], ["archive_index_home:1", "\u{10FFFF}done"]]);
      assert.deepEqual(await edge.query(of, idaKey), [], "Ida's moved too");
      assert.equal((await edge.queryShard(idaHome, of, idaKey)).length, 1);
      assert.deepEqual(await timeline(), [viewed.messageId], "read at home");

      // A person whose erasure is under way (a tombstone in their home, not yet in `DB`):
      // compaction indexes none of their rows and leaves them in `events`, for the erasure's
      // transaction in `DB` to take; everyone else's rows leave.
      const { value: hal } = away("hal", shards);
      const halKey = personKey("a", hal);
      const halHome = homeOf(halKey, shards);
      await edge.queryShard(halHome, "INSERT INTO archive_tombstones (person, erased_at) VALUES (CAST(? AS INTEGER), ?)", halKey, Date.now() + 60_000);
      const hals = { type: "track", event: "Product Viewed", anonymousId: hal, messageId: mid(), properties: { product_id: "p8" } };
      const others = { type: "track", event: "Product Viewed", anonymousId: `jo-${run}`, messageId: mid(), properties: { product_id: "p8" } };
      assert.equal((await send(edge, [hals, others])).status, 200);
      await allArchived(edge);
      await sweep(edge);
      const hot = async (id) => (await edge.query("SELECT COUNT(*) AS n FROM events WHERE message_id = ?", id))[0].n;
      assert.equal(await hot(hals.messageId), 1, "Hal's row stays");
      assert.equal(await hot(others.messageId), 0, "Jo's left");
      assert.deepEqual((await entries(edge, shards)).flat().filter((r) => r.person === halKey), [], "Hal is not indexed");
      // Once the erasure is over, a later round takes the row.
      await edge.queryShard(halHome, "DELETE FROM archive_tombstones WHERE person = CAST(? AS INTEGER)", halKey);
      await sweep(edge);
      assert.equal(await hot(hals.messageId), 0);
      assert.equal((await edge.queryShard(halHome, of, halKey)).length, 1, "indexed at home");

      // Retention deletes the objects of days past the cutoff, and their entries in every database.
      await edge.exec("UPDATE archive_objects SET day = 1 WHERE id = ?", entry.object);
      const daily = await fetch(`${edge.url}/__scheduled?cron=${encodeURIComponent("17 3 * * *")}`);
      assert.equal(daily.status, 200);
      const named = (await entries(edge, shards)).flat().filter((r) => r.object === entry.object);
      assert.deepEqual(named, [], "no entry names the deleted object");
      assert.deepEqual(await edge.query("SELECT id FROM archive_objects WHERE id = ?", entry.object), []);
      const stones = await edge.queryShard(homeOf(idaKey, shards), "SELECT person FROM archive_tombstones WHERE erased_at = 1");
      assert.deepEqual(stones, [], "tombstones older than the archive go too");
    });
  }
});
