// How the sessions page lets a browser in, and how its logs stay bounded,
// seen from Debian's headless Chromium (for tests/e2e/ui.rs).
// MODE=open: the page was opened by `kubectl gitops-sessions ui` through
//   $BROWSER (tests/ui/browser, headless Chromium with DevTools on
//   CDP_PORT); connects to that browser, waits until it shows the page,
//   reads its URL, its tab's history and its cookies, sees a new session
//   (LEASE_YAML, applied with kubectl on KUBECONFIG) pushed to the page,
//   signs a second browser context in with the printed one-time URL
//   (UI_LOGIN), then tries both spent codes again (LAUNCHER_COPY holds the
//   launcher's). Closes that browser.
// MODE=flood: signs in with UI_LOGIN, then shows the logs of session
//   NAMESPACE/SESSION with animation frames that never fire (as in a
//   background tab), the logs stream replaced by 20,000 lines and a
//   "dropped" marker from the server.
// Prints one JSON object with what it saw; the Rust test asserts on it.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const { MODE, UI_PAGE, UI_LOGIN, CDP_PORT, LAUNCHER_COPY, LEASE_YAML, NEW_SESSION, NAMESPACE, SESSION } = process.env;
const origin = new URL(UI_PAGE).origin;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const result = {};

async function history(ctx, page) {
  const cdp = await ctx.newCDPSession(page);
  const h = await cdp.send("Page.getNavigationHistory");
  await cdp.detach();
  return h.entries.map((e) => e.url);
}

async function open() {
  let browser;
  for (let i = 0; i < 600 && !browser; i++) {
    try {
      browser = await chromium.connectOverCDP(`http://127.0.0.1:${CDP_PORT}`);
    } catch {
      await sleep(100);
    }
  }
  if (!browser) throw new Error(`no browser on DevTools port ${CDP_PORT}`);
  try {
    const ctx = browser.contexts()[0];
    let page;
    for (let i = 0; i < 600 && !page; i++) {
      page = ctx.pages().find((p) => p.url().startsWith(origin));
      if (!page) await sleep(100);
    }
    if (!page) throw new Error("the browser never reached the page: " + ctx.pages().map((p) => p.url()).join(", "));
    await page.waitForURL(origin + "/", { timeout: 30000 });
    await page.waitForSelector("#sessions-body", { timeout: 30000 });
    await page.waitForFunction(() => document.getElementById("live-status").textContent.startsWith("live"), null, { timeout: 30000, polling: 100 });
    result.url = page.url();
    result.history = await history(ctx, page);
    result.document_cookie = await page.evaluate(() => document.cookie);
    result.cookies = (await ctx.cookies()).map(({ name, value, httpOnly, sameSite, domain, path }) => ({ name, value, httpOnly, sameSite, domain, path }));

    // The page's live updates ride on the cookie: a new session appears without a reload.
    await page.evaluate(() => { window.__loadedOnce = true; });
    execFileSync("kubectl", ["apply", "-f", "-"], { input: LEASE_YAML, stdio: ["pipe", "ignore", "inherit"] });
    await page.waitForSelector(`tr[data-name="${NEW_SESSION}"]`, { timeout: 30000 });
    result.pushed_without_reload = await page.evaluate(() => window.__loadedOnce === true);
    // A link inside the page carries no secret.
    result.links = await page.evaluate(() => [...document.querySelectorAll("a[href], form[action]")].map((e) => e.getAttribute("href") || e.getAttribute("action")));

    // The printed one-time URL, in another browser context.
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await p2.goto(UI_LOGIN);
    await p2.waitForURL(origin + "/", { timeout: 30000 });
    await p2.waitForSelector("#sessions-body", { timeout: 30000 });
    result.printed_url = p2.url();
    result.printed_history = await history(other, p2);
    // Both codes are spent now.
    const again = await other.request.get(UI_LOGIN, { maxRedirects: 0 });
    result.printed_again = { status: again.status(), body: await again.text() };
    const code = readFileSync(LAUNCHER_COPY, "utf8").match(/name="code" value="([0-9a-f]+)"/)[1];
    const fresh = await browser.newContext();
    const replay = await fresh.request.post(origin + "/login", { form: { code }, headers: { Origin: "null" }, maxRedirects: 0 });
    result.launcher_again = { status: replay.status(), body: await replay.text(), cookie: replay.headers()["set-cookie"] || null };
    await other.close();
    await fresh.close();
  } finally {
    const b = await browser.newBrowserCDPSession();
    await b.send("Browser.close").catch(() => {});
  }
}

async function flood() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(UI_LOGIN);
    await page.waitForURL(origin + "/", { timeout: 30000 });
    // A background tab: animation frames never come.
    await page.addInitScript(() => { window.requestAnimationFrame = () => 0; });
    const N = 20000;
    const parts = ["retry: 600000\n\nevent: info\ndata: flood\n\n"];
    for (let i = 0; i < N; i++) {
      if (i === N - 10) parts.push("event: dropped\ndata: 1234\n\n");
      parts.push("data: " + JSON.stringify({ pod: "web-1", container: "web", line: "line " + i }) + "\n\n");
    }
    await page.route((u) => u.pathname === `/session/${NAMESPACE}/${SESSION}/logs`, (r) =>
      r.fulfill({ status: 200, headers: { "content-type": "text/event-stream" }, body: parts.join("") }));
    await page.goto(`${origin}/session/${NAMESPACE}/${SESSION}#logs`);
    result.raf_fires = await page.evaluate(() => new Promise((res) => {
      let fired = false;
      requestAnimationFrame(() => { fired = true; });
      setTimeout(() => res(fired), 500);
    }));
    const last = "line " + (N - 1);
    try {
      await page.waitForFunction((l) => (document.querySelector("#log-lines")?.lastElementChild?.textContent || "").endsWith(l), last, { timeout: 30000, polling: 100 });
    } catch (e) {
      result.seen = await page.evaluate(() => ({
        url: location.href,
        status: document.querySelector("#log-status")?.textContent,
        lines: document.querySelectorAll("#log-lines > div").length,
        last: document.querySelector("#log-lines")?.lastElementChild?.textContent,
        panel_hidden: document.querySelector("#panel-logs")?.hidden,
        title: document.title,
      }));
      result.script_errors = errors;
      throw e;
    }
    result.shown = await page.evaluate(() => document.querySelectorAll("#log-lines > div").length);
    result.markers = await page.locator("#log-lines .dropped").allTextContents();
    result.status = await page.locator("#log-status").textContent();
    result.script_errors = errors;
  } finally {
    await browser.close();
  }
}

try {
  if (MODE === "open") await open();
  else if (MODE === "flood") await flood();
  else throw new Error("MODE is open or flood");
} catch (e) {
  result.error = String((e && e.stack) || e);
}
console.log(JSON.stringify(result));
