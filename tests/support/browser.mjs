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

/**
 * Clicks a link and waits until the page has navigated to a URL matching `url` and loaded. A click
 * that started no navigation request is made once more: CI saw one such click go nowhere (the
 * sign-in link, once in hundreds of runs, not reproduced). On failure the error says where the page is
 * and which of its requests never finished, so a hang in the server can be told from a lost click.
 */
export async function follow(page, link, url, timeout = 30_000) {
  const open = new Set();
  let navigations = 0;
  const started = (r) => {
    open.add(r);
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations++;
  };
  const ended = (r) => open.delete(r);
  page.on("request", started);
  page.on("requestfinished", ended);
  page.on("requestfailed", ended);
  // A new URL that matches: from one product page to another, the old one matches too.
  const from = page.url();
  const target = (u) => u.href !== from && url.test(u.href);
  const arrived = () => page.waitForURL(target, { waitUntil: "commit", timeout });
  try {
    await link.click();
    try {
      await page.waitForURL(target, { waitUntil: "commit", timeout: timeout / 3 });
    } catch {
      if (navigations === 0) await link.click();
      await arrived();
    }
    await page.waitForLoadState("load", { timeout });
  } catch (error) {
    const pending = [...open].map((r) => `${r.method()} ${r.url()}`).join(", ") || "none";
    throw new Error(`${error.message}\nthe page is at ${page.url()} after ${navigations} navigation request(s); requests never finished: ${pending}`);
  } finally {
    page.off("request", started);
    page.off("requestfinished", ended);
    page.off("requestfailed", ended);
  }
}
