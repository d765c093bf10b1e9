// Starts the real Worker under `wrangler dev` (workerd, local D1 + KV) on a free port with its own
// state directory, exactly as `npm run dev` serves it, and gives tests direct D1 access through
// wrangler's platform proxy on the same state.
import { spawn, spawnSync } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { appendFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { gunzipSync, inflateRawSync } from "node:zlib";
import { getPlatformProxy } from "wrangler";

export const root = new URL("../..", import.meta.url).pathname;
const wrangler = join(root, "node_modules/.bin/wrangler");
// CLOUDFLARE_CF_FETCH_ENABLED=false: use Miniflare's placeholder `request.cf` instead of trying
// to download one (the machines reach package registries only).
const env = { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", CLOUDFLARE_CF_FETCH_ENABLED: "false" };
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false"; // for the in-process platform proxy too
const mainConfig = join(root, "wrangler.toml");

export const WRITE_KEY = "seam_dev_write_key";

/**
 * A secret of the local `.dev.vars` (scripts/setup.sh writes it), read when asked: suites that
 * need none run without the file.
 */
export function secret(name) {
  return readFileSync(join(root, ".dev.vars"), "utf8").match(new RegExp(`^${name}=(.*)$`, "m"))[1].trim();
}

/**
 * The `__Host-seam_id` cookie the Worker sets for `id` (core/src/collect/cookie.rs: `<id>.<mac>`, the
 * MAC made with a key derived from SECRETS_KEY), as a `Cookie` header value: what the browser
 * the Worker gave that ID to sends back.
 */
export function idCookie(id) {
  const key = createHmac("sha256", secret("SECRETS_KEY")).update("seam cookie v1").digest();
  return `__Host-seam_id=${id}.${createHmac("sha256", key).update(id).digest("hex").slice(0, 32)}`;
}

/**
 * The dev sources as wrangler.toml configures them, with the dev key opted into
 * `"identity": "trust-browser"`: for suites about stitching, profiles, privacy and
 * personalisation themselves, which send identities as a trusting site would. What a public key
 * may not do under the default (`verify`) is tests/edge/trust.test.mjs's subject.
 * Such a source stores before it answers (`"ingest": "direct"`, a trusted source's default):
 * these suites read a request's profile from its answer.
 */
export function trustingSources(extra = {}) {
  const sources = configuredSources();
  sources[WRITE_KEY] = { ...sources[WRITE_KEY], identity: "trust-browser", ...extra };
  return sources;
}

/**
 * The dev sources with the dev key storing before it answers (`"ingest": "direct"`), for tests
 * that read the per-event answers only such a source gives (a repeat answered `duplicate`, a
 * deleted person's event `suppressed`). The browser default queues; tests/edge/ingest.test.mjs
 * and the e2e suites run it.
 */
export function directSources(extra = {}) {
  const sources = configuredSources();
  sources[WRITE_KEY] = { ...sources[WRITE_KEY], ingest: "direct", ...extra };
  return sources;
}

/** The sources wrangler.toml configures (`SOURCES`), keyed by write key. */
export function configuredSources() {
  const toml = readFileSync(mainConfig, "utf8");
  const json = toml.slice(toml.indexOf('SOURCES = """') + 13, toml.indexOf('"""', toml.indexOf('SOURCES = """') + 13));
  return JSON.parse(json);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs wrangler to completion; throws with its output when it fails. */
export function runWrangler(args) {
  const result = spawnSync(wrangler, args, { cwd: root, env, encoding: "utf8" });
  if (result.status !== 0) {
    throw new Error(`wrangler ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/**
 * wrangler.toml with test-specific sources (`{writeKey: {...}}`) and rate limits
 * (`{ip: n, source: n}` requests per 60 s) and extra `vars` (`{NAME: "value"}`). Written beside wrangler.toml so its relative paths
 * still resolve; git ignores it.
 */
function testConfig(name, { sources, limits, vars, profileShards }) {
  let toml = readFileSync(mainConfig, "utf8");
  if (profileShards > 1) {
    vars = { PROFILE_SHARDS: String(profileShards), ...vars };
    for (const binding of shardBindings(profileShards).slice(1)) {
      const n = binding.slice("PROFILES_".length);
      toml += `\n[[d1_databases]]\nbinding = "${binding}"\ndatabase_name = "seam-profiles-${n}"\n` +
        `database_id = "00000000-0000-0000-0000-${n.padStart(12, "0")}"\nmigrations_dir = "edge/migrations-profiles"\n`;
    }
  }
  if (vars) {
    for (const [k, v] of Object.entries(vars)) {
      const line = `${k} = ${JSON.stringify(v)}`;
      const existing = new RegExp(`^${k} = .*$`, "m");
      toml = existing.test(toml) ? toml.replace(existing, line) : toml.replace("[vars]\n", `[vars]\n${line}\n`);
    }
  }
  if (sources) {
    const start = toml.indexOf('SOURCES = """');
    const end = toml.indexOf('"""', start + 13) + 3;
    toml = `${toml.slice(0, start)}SOURCES = '${JSON.stringify(sources)}'${toml.slice(end)}`;
  }
  if (limits) {
    toml = toml
      .replace(/(name = "IP_LIMITER"[^[]*?limit = )\d+/, `$1${limits.ip}`)
      .replace(/(name = "SOURCE_LIMITER"[^[]*?limit = )\d+/, `$1${limits.source}`)
      .replace(/(name = "SIGN_IN_LIMITER"[^[]*?limit = )\d+/, `$1${limits.signIn ?? 10}`);
  }
  const path = join(root, `.wrangler-test-${name}-${process.pid}.toml`);
  writeFileSync(path, toml);
  return path;
}

/**
 * The database a key's rows live in among `shards` (core::personalise::shard::shard_of): a
 * jump consistent hash of the key's SHA-256 (first 8 bytes, big-endian).
 */
export function homeOf(key, shards) {
  let hashed = BigInt(`0x${createHash("sha256").update(key).digest("hex").slice(0, 16)}`);
  const mask = (1n << 64n) - 1n;
  let [bucket, next] = [0n, 0n];
  while (next < BigInt(shards)) {
    bucket = next;
    hashed = (hashed * 2862933555777941757n + 1n) & mask;
    next = BigInt(Math.floor(Number(bucket + 1n) * (2 ** 31 / Number((hashed >> 33n) + 1n))));
  }
  return Number(bucket);
}

/** The D1 bindings of `n` profile shards: `DB` (shard 0), then `PROFILES_1` … (docs/scale.md). */
export function shardBindings(n = 1) {
  return ["DB", ...Array.from({ length: n - 1 }, (_, i) => `PROFILES_${i + 1}`)];
}

/** Runs `wrangler dev` on `port` until /health answers; throws (with its output) otherwise. */
async function serve(port, config, state) {
  const child = spawn(
    wrangler,
    ["dev", ...config, "--port", String(port), "--ip", "127.0.0.1", "--persist-to", state, "--show-interactive-dev-session=false", "--test-scheduled"],
    { cwd: root, env, detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  // The newest output only: a long run (the bench) must not grow a string without bound.
  // SEAM_EDGE_LOG=<file> keeps all of it in that file.
  let log = "";
  const keep = (d) => {
    log = (log + d).slice(-1_000_000);
    if (process.env.SEAM_EDGE_LOG) appendFileSync(process.env.SEAM_EDGE_LOG, d);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited:\n${log}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return { child, url, output: () => log };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      process.kill(-child.pid, "SIGKILL");
      throw new Error(`wrangler dev did not become healthy:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Tests reach the Worker's SQLite file from a second workerd (the platform proxy). When the
 * Worker is writing after a response (profile refresh, exposure batch) that second process can
 * get SQLITE_BUSY, which D1 surfaces only as "internal error". A failed statement did nothing,
 * so it is retried after a short wait.
 */
async function whenUnlocked(statement) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await statement();
    } catch (error) {
      const busy = /internal error|SQLITE_BUSY|database is locked/i.test(String(error?.message));
      if (!busy || attempt >= 20) throw error;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

/**
 * An installation from before migration `upgrade.migration` of `DB` (e.g. "0029"): the
 * migrations before it are applied, then `upgrade.sql` (statements writing the old shape's
 * rows); startEdge then applies the rest, as `npm run deploy` would.
 */
function upgradeFrom({ migration, sql }, configPath, state) {
  const dir = join(state, "migrations-before");
  mkdirSync(dir, { recursive: true });
  const migrations = join(root, "edge/migrations");
  for (const file of readdirSync(migrations).filter((f) => f.endsWith(".sql") && f < migration)) {
    writeFileSync(join(dir, file), readFileSync(join(migrations, file)));
  }
  // Beside wrangler.toml, so that its relative paths still resolve; git ignores it.
  const before = join(root, `.wrangler-test-before-${process.pid}.toml`);
  writeFileSync(before, readFileSync(configPath, "utf8").replace('migrations_dir = "edge/migrations"', `migrations_dir = ${JSON.stringify(dir)}`));
  try {
    runWrangler(["d1", "migrations", "apply", "DB", "--local", "--persist-to", state, "--config", before]);
    runWrangler(["d1", "execute", "DB", "--local", "--persist-to", state, "--config", before, "--command", sql.join(";\n")]);
  } finally {
    rmSync(before, { force: true });
  }
}

/**
 * Starts a fresh edge. Options: `sources`, `limits`, `vars`, `profileShards` (the profiles'
 * state over that many D1 databases; see testConfig) and `upgrade` (see upgradeFrom). Call
 * `stop()` when done.
 */
export async function startEdge(name, options = {}) {
  const state = join(root, "tests/.tmp", `${name}-${process.pid}`);
  rmSync(state, { recursive: true, force: true });
  mkdirSync(state, { recursive: true });
  const custom = options.sources || options.limits || options.vars || options.profileShards > 1;
  const configPath = custom ? testConfig(name, options) : mainConfig;
  const config = ["--config", configPath];
  const bindings = shardBindings(options.profileShards ?? 1);
  if (options.upgrade) upgradeFrom(options.upgrade, configPath, state);
  for (const binding of bindings) {
    runWrangler(["d1", "migrations", "apply", binding, "--local", "--persist-to", state, ...config]);
  }

  // A port picked free can be taken before wrangler binds it: retry a startup that dies.
  let started;
  for (let attempt = 1; !started; attempt++) {
    try {
      started = await serve(await freePort(), config, state);
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
  let { child, url, output } = started;
  const exited = () => new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));

  const proxy = await getPlatformProxy({ configPath, persist: { path: join(state, "v3") } });
  return {
    url,
    kv: proxy.env.CACHE,
    /** The raw event archive's R2 bucket. */
    archive: proxy.env.ARCHIVE,
    /**
     * Stops the Worker and starts it again on the same state (a deploy or a crash); `url`
     * changes. `vars` (`{NAME: "value"}`) change its configuration from then on.
     */
    async restart(vars) {
      process.kill(-child.pid, "SIGTERM");
      await exited();
      if (vars) {
        if (configPath === mainConfig) throw new Error("restart(vars) needs an edge started with options");
        options = { ...options, vars: { ...options.vars, ...vars } };
        testConfig(name, options);
      }
      ({ child, url, output } = await serve(await freePort(), config, state));
      this.url = url;
    },
    /** Rows of a SQL query against the Worker's D1. */
    async query(sql, ...params) {
      return (await whenUnlocked(() => proxy.env.DB.prepare(sql).bind(...params).all())).results;
    },
    /** Rows of a SQL query against profile shard `shard` (0 is `DB`). */
    async queryShard(shard, sql, ...params) {
      const db = proxy.env[bindings[shard]];
      return (await whenUnlocked(() => db.prepare(sql).bind(...params).all())).results;
    },
    /** Runs a SQL write against the Worker's D1 (test set-up, e.g. ageing a row). */
    async exec(sql, ...params) {
      return whenUnlocked(() => proxy.env.DB.prepare(sql).bind(...params).run());
    },
    /**
     * Takes an exclusive lock on the Worker's D1 file from another process, as an outage would
     * look to the Worker: every query fails with SQLITE_BUSY. Resolves to `release()`.
     */
    async lockD1() {
      const dir = join(state, "v3/d1/miniflare-D1DatabaseObject");
      const [file] = readdirSync(dir).filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite");
      const holder = spawn(
        "python3",
        ["-c", "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.read()\nc.execute('ROLLBACK')", join(dir, file)],
        { stdio: ["pipe", "pipe", "inherit"] },
      );
      await new Promise((resolve, reject) => {
        holder.stdout.once("data", resolve);
        holder.once("exit", (code) => reject(new Error(`the D1 lock exited (${code})`)));
      });
      return async () => {
        holder.stdin.end();
        if (holder.exitCode === null) await new Promise((r) => holder.once("exit", r));
      };
    },
    output: () => output(),
    async stop() {
      await proxy.dispose();
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
      await exited();
      rmSync(state, { recursive: true, force: true });
      if (configPath !== mainConfig) rmSync(configPath, { force: true });
    },
  };
}

/** POSTs `body` (object -> JSON; strings and bytes as they are) and returns status, json, headers. */
export async function post(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  // Computed traits, segments and KV snapshots are refreshed after the ingest response: wait for
  // them, so a test reads what the request led to.
  if (/\/v1\/[a-z]+$/.test(new URL(url).pathname)) await settled(new URL(url).origin);
  return { status: response.status, json, text, headers: response.headers };
}

/**
 * Calls an admin route with the `.dev.vars` admin key (or `key`) and returns the response. `body`
 * objects go as JSON; strings and bytes as they are (`headers` then names their content type).
 */
export function admin(edge, path, { key = secret("ADMIN_KEY"), method = "GET", body, headers = {} } = {}) {
  return fetch(`${edge.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: body === undefined || typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
}

/**
 * Waits until the Worker has no work running after its responses and its queued ingest is
 * stored (`/health` reports both; locally the queue's consumer runs in the same isolate).
 */
export async function settled(origin, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const health = await fetch(`${origin}/health`).then((r) => r.json(), () => null);
    if (!health || typeof health.background !== "number") return;
    if (health.background === 0 && !health.queued) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("background work or queued ingest still running after 10 s");
}

/** Every object of the archive (`events/`) with its lines parsed. */
export async function archiveObjects(edge) {
  const objects = [];
  let cursor;
  do {
    const page = await edge.archive.list({ prefix: "events/", cursor });
    for (const o of page.objects) {
      const body = Buffer.from(await (await edge.archive.get(o.key)).arrayBuffer());
      objects.push({ key: o.key, lines: gunzipSync(body).toString("utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) });
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return objects;
}

/**
 * A `profile_personalisation.state` column as stored (core/src/personalise/stored.rs): format
 * byte 1 and a raw deflate stream that continues from the format's dictionary, read from the
 * Rust source; older rows are JSON text. Returns the parsed state.
 */
export function storedState(column) {
  if (typeof column === "string") return JSON.parse(column);
  const bytes = Buffer.from(column instanceof ArrayBuffer ? new Uint8Array(column) : column);
  if (bytes[0] !== 1) throw new Error(`unknown state format ${bytes[0]}`);
  const source = readFileSync(join(root, "core/src/personalise/stored.rs"), "utf8");
  const dictionary = Buffer.from(source.match(/DICTIONARY_V1: &\[u8\] = br#"(.*)"#;/)[1]);
  const head = Buffer.alloc(5);
  head.writeUInt16LE(dictionary.length, 1);
  head.writeUInt16LE(~dictionary.length & 0xffff, 3);
  const text = inflateRawSync(Buffer.concat([head, dictionary, bytes.subarray(1)])).subarray(dictionary.length);
  return JSON.parse(text.toString("utf8"));
}

/**
 * Checks the row per profile (`profile_members`, edge/migrations 0029) against the assignments
 * it is kept from: each profile with identifiers has one row holding exactly them, its
 * `identified` flag says whether one is an email or a user ID, and the totals count the rows.
 * One statement, so the Worker cannot write between the reads. Returns the number of profiles.
 */
export async function checkProfileRows(edge, shard = 0) {
  const rows = await edge.queryShard(
    shard,
    "SELECT 'assigned' AS kind, profile_id AS a, identifier AS b, NULL AS c FROM identities " +
      "UNION ALL SELECT 'row', profile_id, identifiers, identified FROM profile_members " +
      "UNION ALL SELECT 'totals', profiles, identified, NULL FROM profile_totals",
  );
  const assigned = new Map();
  for (const r of rows.filter((r) => r.kind === "assigned")) {
    if (!assigned.has(r.a)) assigned.set(r.a, []);
    assigned.get(r.a).push(r.b);
  }
  const identifiedBy = (ids) => (ids.some((id) => id.startsWith("email:") || id.startsWith("user_id:")) ? 1 : 0);
  const want = new Map([...assigned].map(([p, ids]) => [p, `${JSON.stringify(ids.sort())}|${identifiedBy(ids)}`]));
  const got = new Map(
    rows
      .filter((r) => r.kind === "row")
      .map((r) => [r.a, `${JSON.stringify(JSON.parse(r.b).sort())}|${r.c}`]),
  );
  if (JSON.stringify([...got].sort()) !== JSON.stringify([...want].sort())) {
    throw new Error(`profile rows differ from the assignments:\nrows ${JSON.stringify([...got].sort())}\nassignments ${JSON.stringify([...want].sort())}`);
  }
  const totals = rows.find((r) => r.kind === "totals");
  const identified = [...assigned.values()].filter(identifiedBy).length;
  if (Number(totals?.a) !== want.size || Number(totals?.b) !== identified) {
    throw new Error(`profile totals ${totals?.a}/${totals?.b}, counted ${want.size}/${identified}`);
  }
  return want.size;
}
