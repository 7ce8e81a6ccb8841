// Drives the sessions page (kubectl gitops-sessions ui) in Debian's headless
// Chromium. Inputs (environment): UI_URL (the one-time sign-in URL), LIVE
// (a session that stays live), DOOMED and DOOMED_PID (a session this script
// kills with SIGKILL, then sees turn stale and deletes through the page),
// DOOMED_NS, SCREENSHOT.
// Prints one JSON line with what it observed; the Rust test asserts on it.
import { chromium } from "playwright-core";

const { UI_URL, LIVE, DOOMED, DOOMED_PID, DOOMED_NS, SCREENSHOT } = process.env;
const result = {};
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const origin = new URL(UI_URL).origin;
  // Not signed in: 401; a made-up code: 401.
  result.without_cookie = (await page.request.get(origin + "/")).status();
  result.wrong_code = (await page.request.get(origin + "/login?code=nope")).status();

  await page.goto(UI_URL);
  await page.waitForURL(origin + "/");
  const row = (name) => page.locator(`tr[data-name="${name}"]`);
  await row(LIVE).waitFor();
  await row(DOOMED).waitFor();
  result.live_heartbeats = [await row(LIVE).getAttribute("data-heartbeat"), await row(DOOMED).getAttribute("data-heartbeat")];
  result.headers = await page.locator("thead th").allTextContents();
  await page.evaluate(() => { window.__loadedOnce = true; });

  // The filter narrows the table without a reload.
  await page.fill("#filter-text", LIVE);
  result.filtered_visible = await page.locator("tbody tr[data-name]:visible").count();
  await page.fill("#filter-text", "");

  // Kill one session's command: its row turns stale, pushed to the page.
  process.kill(Number(DOOMED_PID), "SIGKILL");
  await page.waitForSelector(`tr[data-name="${DOOMED}"][data-heartbeat="stale"]`, { timeout: 60000 });
  result.stale_without_reload = await page.evaluate(() => window.__loadedOnce === true);

  // Its page offers a delete button; confirm the dialog and follow the redirect.
  await page.click(`tr[data-name="${DOOMED}"] a`);
  await page.waitForSelector("#delete-session");
  page.once("dialog", (d) => d.accept());
  await Promise.all([page.waitForURL(/msg=/, { timeout: 120000 }), page.click("#delete-session")]);
  result.message = await page.locator(".msg").textContent();
  await page.waitForFunction((n) => !document.querySelector(`tr[data-name="${n}"]`), DOOMED, { timeout: 30000 });
  result.doomed_gone_from_table = true;
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  await page.goto(origin + "/sandboxes");
  result.sandboxes = await page.locator("tbody tr").allTextContents();
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
