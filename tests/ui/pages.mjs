// Looks at the pages of `kubectl gitops-sessions ui` in Debian's headless
// Chromium, at a desktop width (light scheme) and a narrow one (dark
// scheme), as tests/e2e/ui.rs moves a real session through its states.
// Inputs (environment): UI_URL (the one-time sign-in URL), UI_STATE (a file
// keeping the signed-in cookie from one run to the next), MODE (list |
// rollout | failing | scale),
// SESSION, NAMESPACE, SANDBOX, SHOTS (directory for the screenshots),
// KUBECONFIG and BENCH_NS (scale). Prints one JSON object with what it saw,
// per width; the Rust test asserts on it.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const { UI_URL, UI_STATE, MODE, SESSION, NAMESPACE, SANDBOX, SHOTS, BENCH_NS } = process.env;
const origin = new URL(UI_URL).origin;
const home = origin + "/";
const sessionUrl = `${origin}/session/${NAMESPACE}/${SESSION}`;
const widths = [
  { name: "desktop", viewport: { width: 1400, height: 900 }, colorScheme: "light" },
  { name: "narrow", viewport: { width: 390, height: 844 }, colorScheme: "dark" },
];
const result = {};
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const text = async (page, sel) => (await page.locator(sel).first().textContent({ timeout: 5000 }))?.replace(/\s+/g, " ").trim();
const texts = async (page, sel) => (await page.locator(sel).allTextContents()).map((t) => t.replace(/\s+/g, " ").trim());
// Controls without a label, images without alternative text.
const unlabelled = (page) => page.evaluate(() =>
  [...document.querySelectorAll("input, select, button, svg[role=img]")]
    .filter((el) => el.offsetParent !== null || el.closest("[hidden]") === null)
    .filter((el) => el.tagName === "svg"
      ? !el.getAttribute("aria-label")
      : el.tagName === "BUTTON" ? !el.textContent.trim() && !el.getAttribute("aria-label") : !(el.labels && el.labels.length))
    .map((el) => el.outerHTML.slice(0, 80)));
// The page's content fits the window (no sideways scrolling of the page itself).
const fits = (page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);

async function list(page, w) {
  const r = {};
  await page.goto(home);
  const row = page.locator(`tr[data-name="${SESSION}"]`);
  await row.waitFor({ timeout: 30000 });
  // Flux may still be finishing the first reconciliation: the row turns Ready by itself.
  await page.waitForSelector(`tr[data-name="${SESSION}"][data-status="Ready"]`, { timeout: 60000 });
  r.headers = await texts(page, "table.sessions thead th");
  r.status = await row.getAttribute("data-status");
  r.heartbeat = await row.getAttribute("data-heartbeat");
  r.heartbeat_text = await text(page, `tr[data-name="${SESSION}"] .hb`);
  r.status_badge = await text(page, `tr[data-name="${SESSION}"] td[data-label="Status"] .badge`);
  r.mode = await text(page, "#cluster-mode");
  r.counts = await text(page, "#session-counts");
  // Relative times tick in the page.
  const time = page.locator(`tr[data-name="${SESSION}"] td[data-label="Age"] time`);
  r.age_before = await time.textContent();
  await page.waitForTimeout(2100);
  r.age_after = await time.textContent();
  r.live_status = await text(page, "#live-status");
  r.unlabelled = await unlabelled(page);
  r.fits = await fits(page);
  // Keyboard: "/" goes to the search box, which filters at once.
  await page.locator("body").press("/");
  r.slash_focuses_search = await page.evaluate(() => document.activeElement.id);
  await page.keyboard.type(SESSION);
  r.filtered_visible = await page.locator("tbody tr[data-name]:visible").count();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Backspace");
  await page.screenshot({ path: `${SHOTS}/list-${w}.png`, fullPage: true });

  await page.goto(`${origin}/sandboxes`);
  const sb = page.locator(`tr[data-sandbox="${SANDBOX}"]`);
  await sb.waitFor({ timeout: 30000 });
  // The quota controller counts the pods a little after they exist.
  await page.waitForFunction((s) => /pods\s*[1-9]/.test(document.querySelector(`tr[data-sandbox="${s}"] .quota[data-resource="pods"]`)?.textContent || ""), SANDBOX, { timeout: 30000 });
  r.sandbox_quota = await texts(page, `tr[data-sandbox="${SANDBOX}"] .quota`);
  r.sandbox_expires = await text(page, `tr[data-sandbox="${SANDBOX}"] td[data-label="Expires"]`);
  r.sandbox_sessions = await text(page, `tr[data-sandbox="${SANDBOX}"] td[data-label="Sessions"]`);
  r.sandbox_fits = await fits(page);
  await page.screenshot({ path: `${SHOTS}/sandboxes-${w}.png`, fullPage: true });
  return r;
}

async function session(page, w, want) {
  const r = {};
  await page.goto(sessionUrl);
  await page.waitForSelector(want, { timeout: 90000 });
  await page.waitForSelector("#history .sync", { timeout: 30000 });
  // kwok's crash loop reports its BackOff (a Warning event) every 10 s; the list updates live.
  if (MODE === "failing") await page.waitForSelector("#events li.warning", { timeout: 60000 });
  // Let the pushed sections settle (pods' statuses arrive one by one).
  await page.waitForTimeout(1500);
  r.head = await text(page, "#session-head");
  r.mode = await text(page, "#cluster-mode");
  r.summary = await text(page, "#summary");
  r.history = await texts(page, "#history .sync");
  r.history_bars = await page.locator("#history svg.bars rect").count();
  r.history_labels = await page.locator("#history svg.bars").evaluateAll((s) => s.map((e) => e.getAttribute("aria-label")));
  r.kinds = await page.locator("#objects details.kind").evaluateAll((d) => d.map((e) => e.dataset.kind));
  r.objects = await page.locator("#objects li.obj").evaluateAll((l) => l.map((e) => ({
    object: e.dataset.object, tone: e.dataset.tone,
    text: e.querySelector(".obj-line").textContent.replace(/\s+/g, " ").trim(),
    reason: e.querySelector(":scope > .reason")?.textContent || null,
    pods: [...e.querySelectorAll("li.pod")].map((p) => ({ tone: p.dataset.tone, text: p.textContent.replace(/\s+/g, " ").trim() })),
  })));
  r.conditions = await page.locator("#conditions tbody tr").evaluateAll((rows) => rows.map((tr) =>
    [...tr.cells].map((c) => c.textContent.replace(/\s+/g, " ").trim()).join(" | ")));
  r.events = await texts(page, "#events li");
  r.unlabelled = await unlabelled(page);
  r.fits = await fits(page);
  await page.screenshot({ path: `${SHOTS}/session-${MODE}-${w}.png`, fullPage: true });
  return r;
}

async function logs(page, w) {
  const r = {};
  // Keyboard: the tabs move with the arrow keys.
  await page.locator("#tab-overview").focus();
  await page.keyboard.press("ArrowRight");
  r.logs_tab_selected = await page.locator("#tab-logs").getAttribute("aria-selected");
  r.logs_panel_visible = await page.locator("#panel-logs").isVisible();
  await page.waitForFunction(() => {
    const c = new Set([...document.querySelectorAll("#log-lines .ll")].map((l) => l.dataset.container));
    return c.has("web") && c.has("api");
  }, null, { timeout: 60000 });
  await page.waitForTimeout(1000);
  r.status = await text(page, "#log-status");
  r.lines = await texts(page, "#log-lines .ll");
  r.pods = await page.locator("#log-pod option").evaluateAll((o) => o.map((e) => e.value).filter(Boolean));
  r.containers = await page.locator("#log-container option").evaluateAll((o) => o.map((e) => e.value).filter(Boolean));
  await page.selectOption("#log-container", "api");
  r.api_only = await texts(page, "#log-lines .ll:visible");
  await page.selectOption("#log-container", "");
  await page.fill("#log-filter", "ready to serve");
  r.filtered = await texts(page, "#log-lines .ll:visible");
  await page.fill("#log-filter", "");
  r.follow_checked = await page.locator("#log-follow").isChecked();
  r.unlabelled = await unlabelled(page);
  await page.screenshot({ path: `${SHOTS}/logs-${w}.png`, fullPage: w === "desktop" });
  return r;
}

async function scale(page) {
  const r = {};
  const t0 = Date.now();
  await page.goto(home);
  await page.waitForFunction((ns) => document.querySelectorAll(`tr[data-namespace="${ns}"]`).length >= 200, BENCH_NS, { timeout: 60000 });
  r.load_ms = Date.now() - t0;
  r.rows = await page.locator("tr[data-name]").count();
  // From here on, the longest main-thread task (filtering, updates pushed by the watch).
  await page.evaluate(() => {
    window.__longest = 0;
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
      .observe({ type: "longtask" });
  });
  // Filtering 200+ rows: the input handler's time, in the page (rows hidden, count shown).
  const filter = (text) => page.evaluate((text) => {
    const input = document.getElementById("filter-text");
    const t0 = performance.now();
    input.value = text;
    input.dispatchEvent(new Event("input"));
    return performance.now() - t0;
  }, text);
  r.filter_ms = await filter("bench-01");
  r.filtered_visible = await page.locator("tbody tr[data-name]:visible").count();
  r.shown_count = await text(page, "#shown-count");
  await filter("");
  // A change to one of 200 sessions reaches the page through the watch.
  const u0 = Date.now();
  execFileSync("kubectl", ["-n", BENCH_NS, "annotate", "--overwrite", "lease", "bench-007", "gitops.kubectl.dev/mode=cluster"], { stdio: "ignore" });
  await page.waitForFunction((ns) => document.querySelector(`tr[data-namespace="${ns}"][data-name="bench-007"] td[data-label="Mode"]`)?.textContent.includes("cluster"), BENCH_NS, { timeout: 30000 });
  r.update_ms = Date.now() - u0;
  // The page stays responsive meanwhile: the longest main-thread task since it loaded.
  await page.waitForTimeout(2000);
  r.longest_task_ms = await page.evaluate(() => window.__longest);
  return r;
}

try {
  // The one-time URL works once: the first run signs in and keeps the cookie.
  if (!existsSync(UI_STATE)) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(UI_URL);
    await page.waitForURL(home);
    await ctx.storageState({ path: UI_STATE });
    await ctx.close();
  }
  for (const w of MODE === "scale" ? widths.slice(0, 1) : widths) {
    const ctx = await browser.newContext({ viewport: w.viewport, colorScheme: w.colorScheme, storageState: UI_STATE });
    const page = await ctx.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const r = {};
    if (MODE === "list") Object.assign(r, await list(page, w.name));
    if (MODE === "rollout") {
      r.session = await session(page, w.name, `#objects li.obj[data-object="Deployment/web"][data-tone="progress"]`);
      r.logs = await logs(page, w.name);
    }
    if (MODE === "failing") r.session = await session(page, w.name, `#objects li.obj[data-object="Deployment/api"][data-tone="bad"]`);
    if (MODE === "scale") Object.assign(r, await scale(page));
    r.script_errors = errors;
    result[w.name] = r;
    await ctx.close();
  }
} catch (e) {
  result.error = String((e && e.stack) || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
