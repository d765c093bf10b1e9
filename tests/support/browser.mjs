// Debian's Chromium driven by playwright-core (test tools may not download their own browser).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "seam-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_BIN || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until it returns a truthy value or `ms` pass; returns the last value. */
export async function eventually(fn, ms = 20_000, every = 250) {
  const deadline = Date.now() + ms;
  let value;
  while (!(value = await fn()) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, every));
  }
  return value;
}
