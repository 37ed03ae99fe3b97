// The dashboard in headless Chromium (Debian's /usr/bin/chromium) against a
// running insights-api with known data. Run by insights-api/tests/dashboard.rs
// (make test-dashboard), which creates the database, starts the API and passes:
//   DASHBOARD_URL         http://127.0.0.1:PORT
//   DASHBOARD_MODE        full | empty | perf
//   DASHBOARD_EXPECT      JSON: {servers, metrics, windows: [{server, metric, start, end}], unhealthy}
//   DASHBOARD_SCREENSHOT  where to save the full-page screenshot (full and perf)
//   DASHBOARD_BUDGET_MS   perf: the most the page may take to be ready
//   DASHBOARD_TOKEN       the API's API_TOKEN, when it has one
// Prints one line per check and exits non-zero on the first failure.
import { strict as assert } from "node:assert";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const BASE = process.env.DASHBOARD_URL;
const MODE = process.env.DASHBOARD_MODE || "full";
const EXPECT = JSON.parse(process.env.DASHBOARD_EXPECT || "{}");
const SHOT = process.env.DASHBOARD_SCREENSHOT;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOKEN = process.env.DASHBOARD_TOKEN;
assert.ok(BASE, "DASHBOARD_URL is required");

const ok = (msg) => console.log(`ok   ${MODE}: ${msg}`);
const getJson = async (path) => {
  const r = await fetch(BASE + path, TOKEN ? { headers: { authorization: `Bearer ${TOKEN}` } } : {});
  assert.equal(r.status, 200, `${path}: HTTP ${r.status}`);
  return r.json();
};

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, timezoneId: "Europe/Paris" });
  // Everything the page says or does wrong, and every request it makes.
  const problems = [];
  let allowed = []; // console errors a sub-test provokes on purpose
  page.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    if (allowed.some((re) => re.test(m.text()))) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("request", (r) => {
    if (!r.url().startsWith(BASE + "/") && !r.url().startsWith("data:")) problems.push(`request off the API: ${r.url()}`);
  });
  const settled = () => page.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: 60_000 });
  const noProblems = (what) => {
    assert.deepEqual(problems, [], `${what}: console errors, page errors or foreign requests`);
    ok(`${what}: no console errors or warnings, no page errors, no request off the API`);
  };

  if (TOKEN) {
    // Without the token the page says what is missing (the browser logs the 401s).
    allowed = [/status of 401/];
    await page.goto(BASE + "/");
    await settled();
    assert.equal(await page.evaluate(() => document.body.dataset.state), "error");
    assert.match(await page.locator("#banner").innerText(), /Authorization: Bearer/);
    allowed = [];
    // Given once in the fragment, it is kept for the tab and leaves the address bar.
    await page.goto(`${BASE}/#token=${encodeURIComponent(TOKEN)}`);
    await settled();
    assert.ok(!page.url().includes(TOKEN), `the token left the address bar: ${page.url()}`);
    ok("API_TOKEN: refused without it, kept for the tab from /#token=, gone from the address bar");
  }
  const t0 = Date.now();
  await page.goto(BASE + "/");
  await settled();
  const loadMs = Date.now() - t0;
  const bodyState = await page.evaluate(() => document.body.dataset.state);

  if (MODE === "empty") {
    assert.equal(bodyState, "empty", "an empty database shows the empty state");
    const banner = await page.locator("#banner").innerText();
    assert.match(banner, /no bins|no data/i, `the empty state says so: ${banner}`);
    assert.ok(await page.locator("#banner").isVisible(), "the message is visible");
    assert.equal(await page.locator("#servers li").count(), 0);
    ok(`empty database: "${banner}"`);
    noProblems("empty");
  } else {
    assert.equal(bodyState, "ready", `the page is ready (banner: ${await page.locator("#banner").innerText()})`);
    const periods = (await getJson("/periods")).periods;
    const last = periods[periods.length - 1];
    const ins = await getJson(`/insights?start=${last.start}&end=${last.end}`);

    // Period picker, fed by /periods; the last period is chosen.
    const options = await page.locator("#period option").allInnerTexts();
    assert.equal(options.length, periods.length, "one option per period");
    assert.equal(await page.locator("#period").inputValue(), String(periods.length - 1));
    assert.ok(options[periods.length - 1].includes(last.start.slice(0, 10)), options.join(" | "));
    ok(`period picker: ${options.length} option(s), chosen "${options[periods.length - 1]}"`);

    // Server list with a health badge each, as /insights says.
    const badges = await page.$$eval("#servers button", (bs) => bs.map((b) => [b.dataset.server, b.querySelector(".badge")?.dataset.status]));
    assert.deepEqual(badges.map((b) => b[0]), EXPECT.servers, "the server list");
    for (const [server, status] of badges) {
      const h = ins.health.find((x) => x.server === server);
      assert.equal(status, h.status, `${server}'s badge`);
    }
    // Health levels: each badge's tooltip gives the rule that set it; the
    // servers with anomalies have incidents, listed even when nothing needs
    // action; the legend says what the levels ask of the operator.
    const titles = new Map(await page.$$eval("#servers button", (bs) => bs.map((b) => [b.dataset.server, b.title])));
    for (const h of ins.health) {
      assert.ok(titles.get(h.server).startsWith(`${h.status} (`), `${h.server}'s tooltip: ${titles.get(h.server)}`);
      assert.ok(titles.get(h.server).includes(h.reason), `${h.server}'s tooltip gives the reason`);
    }
    for (const s of EXPECT.unhealthy || []) {
      const h = ins.health.find((x) => x.server === s);
      assert.ok(h.incidents > 0, `${s} has incidents`);
      assert.match(titles.get(s), new RegExp(`${h.incidents} incidents`), `${s}'s tooltip counts them`);
      if (h.status === "critical") assert.match(h.reason, /ongoing|silent|forecast/, `${s}: critical means act now`);
    }
    const legend = await page.locator("#health-legend").innerText();
    assert.match(legend, /critical\s+act now/i);
    assert.match(legend, /warning\s+look today/i);
    ok(`server list: ${badges.length} servers, badges ${badges.map((b) => b.join("=")).join(" ")}; health legend and reasons shown`);

    if (MODE === "perf") {
      const budget = Number(process.env.DASHBOARD_BUDGET_MS || 8000);
      assert.equal(await page.locator("#charts figure.chart").count(), EXPECT.metrics.length);
      assert.equal(await page.locator("#charts canvas").count(), EXPECT.metrics.length);
      const fleetServers = await page.$$eval("#fleet-charts figure", (fs) => fs.map((f) => Number(f.dataset.servers)));
      assert.deepEqual(fleetServers, EXPECT.metrics.map(() => EXPECT.servers.length));
      assert.ok(loadMs <= budget, `ready in ${loadMs} ms, budget ${budget} ms`);
      ok(`${EXPECT.servers.length} servers x ${EXPECT.metrics.length} metrics of one-minute bins: ready in ${loadMs} ms (budget ${budget} ms; page's own measure ${await page.evaluate(() => document.body.dataset.renderMs)} ms)`);
      console.log(`dashboard_load_ms=${loadMs}`);
    } else {
      // One chart per metric for each server with a known window, shading at the right x.
      for (const server of [...new Set(EXPECT.windows.map((w) => w.server))]) {
        await page.click(`#servers button[data-server="${server}"]`);
        await settled();
        assert.equal(await page.getAttribute("#servers button[aria-current=true]", "data-server"), server);
        const figs = await page.$$eval("#charts figure.chart", (fs) => fs.map((f) => [f.dataset.metric, f.dataset.server, !!f.querySelector("canvas"), Number(f.dataset.forecastPoints)]));
        assert.deepEqual(figs.map((f) => f[0]), EXPECT.metrics, `${server}: one chart per metric`);
        for (const [m, s, canvas, fc] of figs) {
          assert.ok(canvas && s === server, `${server} ${m}: a drawn chart`);
          const hasForecast = ins.forecasts.some((f) => f.server === server && f.metric === m && f.points.length);
          assert.equal(fc > 0, hasForecast, `${server} ${m}: forecast drawn iff /insights has one`);
        }
        for (const m of EXPECT.metrics) {
          const want = ins.anomalies.filter((a) => a.server === server && a.metric === m);
          const known = EXPECT.windows.filter((w) => w.server === server && w.metric === m);
          for (const k of known) {
            assert.ok(want.some((a) => a.start === k.start && a.end === k.end), `/insights finds ${server} ${m} ${k.start}..${k.end}`);
          }
          await checkShading(page, server, m, want);
        }
        ok(`${server}: ${figs.length} charts (avg, min-max band, p80, forecast), shading at ${EXPECT.windows.filter((w) => w.server === server).map((w) => `${w.metric} ${w.start.slice(11, 16)}-${w.end.slice(11, 16)}`).join(", ")}`);
      }

      // Fleet view: one chart per metric over every server.
      const fleet = await page.$$eval("#fleet-charts figure.fleet-chart", (fs) => fs.map((f) => [f.dataset.metric, Number(f.dataset.servers), !!f.querySelector("canvas")]));
      assert.deepEqual(fleet, EXPECT.metrics.map((m) => [m, EXPECT.servers.length, true]), "fleet view");
      ok(`fleet view: ${fleet.map((f) => `${f[0]} (${f[1]} servers)`).join(", ")}`);

      // Narrative: the findings of /insights, each citation a link to its anomaly or chart.
      assert.equal(await page.locator("#narrative .summary").innerText(), ins.narrative.summary);
      const items = page.locator("#narrative li.finding");
      assert.equal(await items.count(), ins.narrative.findings.length, "one item per finding");
      assert.ok(ins.narrative.findings.length > 0);
      const facts = new Map(ins.facts.map((f) => [f.id, f]));
      for (let i = 0; i < ins.narrative.findings.length; i++) {
        const f = ins.narrative.findings[i];
        assert.equal(await items.nth(i).locator(".text").innerText(), f.text);
        for (const id of f.evidence) {
          const cite = items.nth(i).locator(`[data-fact="${id}"]`);
          assert.equal(await cite.count(), 1, `finding ${i + 1} cites ${id}`);
          if (facts.get(id).kind === "anomaly") {
            assert.equal(await cite.getAttribute("data-target"), `anomaly-${id}`, `${id} links to its anomaly`);
            assert.ok((await cite.getAttribute("href")).endsWith(`#anomaly-${id}`));
          }
        }
      }
      ok(`narrative: summary and ${ins.narrative.findings.length} findings, citations linked`);
      // Following a citation selects the server and shows the cited window.
      for (const w of EXPECT.windows) {
        const a = ins.anomalies.find((x) => x.server === w.server && x.metric === w.metric && x.start === w.start);
        const link = page.locator(`#narrative a.cite[data-fact="${a.id}"]`).first();
        assert.equal(await link.count(), 1, `the narrative cites ${a.id}`);
        await link.click();
        await settled();
        await page.waitForSelector(`#anomaly-${a.id}.flash`);
        assert.equal(await page.getAttribute("#servers button[aria-current=true]", "data-server"), w.server);
        const box = await page.locator(`#anomaly-${a.id}`).boundingBox();
        assert.ok(box && box.y >= 0 && box.y + box.height <= 900, `${a.id} is scrolled into view: ${JSON.stringify(box)}`);
        ok(`citation ${a.id} -> ${w.server} ${w.metric} window, highlighted`);
      }
      noProblems("full");

      if (SHOT) await screenshot(page, SHOT);

      // An API error is shown, not swallowed (the browser logs the 503 itself).
      allowed = [/status of 503/];
      await page.route("**/insights?**", (r) => r.fulfill({
        status: 503, contentType: "application/json",
        body: JSON.stringify({ error: { status: 503, code: "database_unavailable", message: "database unavailable: injected by the test" } }),
      }));
      await page.reload();
      await settled();
      assert.equal(await page.evaluate(() => document.body.dataset.state), "error");
      const banner = page.locator("#banner");
      assert.ok(await banner.isVisible(), "the error banner is visible");
      assert.match(await banner.innerText(), /injected by the test/);
      assert.match(await page.locator("#narrative .summary").innerText(), /injected by the test/);
      ok(`a failing /insights is shown: "${await banner.innerText()}"`);
      noProblems("api error");
    }
    if (MODE === "perf") {
      if (SHOT) await screenshot(page, SHOT);
      noProblems(MODE);
    }
  }
} catch (e) {
  failed = true;
  console.error(`FAIL ${MODE}: ${e.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

// The shaded windows of one chart: every anomaly of /insights for it is an
// overlay at its time, the overlay sits where the chart's x scale puts the
// window, and in the pixels the severity colour covers those columns and no others.
async function checkShading(page, server, metric, anomalies) {
  const fig = page.locator(`#charts figure[data-metric="${metric}"]`);
  const over = fig.locator(".u-over");
  const marks = await fig.locator(".anomaly").evaluateAll((ds) => ds.map((d) => ({
    id: d.dataset.anomalyId, start: d.dataset.start, end: d.dataset.end, severity: d.dataset.severity,
    left: d.getBoundingClientRect().left, right: d.getBoundingClientRect().right,
  })));
  assert.equal(marks.length, anomalies.length, `${server} ${metric}: ${anomalies.length} shaded windows, found ${marks.length}`);
  const xmin = Number(await fig.getAttribute("data-x-min"));
  const xmax = Number(await fig.getAttribute("data-x-max"));
  const ob = await over.boundingBox();
  const px = (iso) => ob.x + ((Date.parse(iso) / 1000 - xmin) / (xmax - xmin)) * ob.width;
  const expected = [];
  for (const a of anomalies) {
    const m = marks.find((k) => k.id === a.id);
    assert.ok(m, `${a.id} is shaded`);
    assert.equal(m.start, a.start); assert.equal(m.end, a.end); assert.equal(m.severity, a.severity);
    const l = px(a.start), r = Math.max(px(a.end), l + 3);
    assert.ok(Math.abs(m.left - l) <= 1.5 && Math.abs(m.right - r) <= 1.5,
      `${a.id} at x ${m.left.toFixed(1)}..${m.right.toFixed(1)}, expected ${l.toFixed(1)}..${r.toFixed(1)}`);
    expected.push([Math.round(l - ob.x), Math.round(r - ob.x)]);
  }
  // The top row of the plot: the windows' severity strip is the only red there.
  const png = PNG.sync.read(await over.screenshot({ path: process.env.DASHBOARD_DEBUG ? `${process.env.DASHBOARD_DEBUG}/${server}-${metric}.png` : undefined }));
  const y = 1;
  const red = [];
  for (let x = 0; x < png.width; x++) {
    const i = (y * png.width + x) * 4;
    if (png.data[i] - png.data[i + 2] > 60) red.push(x);
  }
  const runs = [];
  for (const x of red) {
    if (runs.length && x - runs[runs.length - 1][1] <= 1) runs[runs.length - 1][1] = x;
    else runs.push([x, x]);
  }
  const merged = mergeSpans(expected);
  assert.equal(runs.length, merged.length, `${server} ${metric}: red runs ${JSON.stringify(runs)} vs windows ${JSON.stringify(merged)}`);
  runs.forEach(([a, b], i) => {
    assert.ok(Math.abs(a - merged[i][0]) <= 2 && Math.abs(b + 1 - merged[i][1]) <= 2,
      `${server} ${metric}: red columns ${a}..${b} vs window ${merged[i][0]}..${merged[i][1]}`);
  });
}

function mergeSpans(spans) {
  const s = [...spans].sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const [a, b] of s) {
    if (out.length && a <= out[out.length - 1][1]) out[out.length - 1][1] = Math.max(b, out[out.length - 1][1]);
    else out.push([a, b]);
  }
  return out;
}

// A full-page screenshot, checked not blank: many colours, and most of the
// page not one flat colour.
async function screenshot(page, path) {
  mkdirSync(dirname(path), { recursive: true });
  await page.evaluate(() => window.scrollTo(0, 0));
  const buf = await page.screenshot({ path, fullPage: true });
  const png = PNG.sync.read(buf);
  const counts = new Map();
  for (let i = 0; i < png.data.length; i += 4) {
    const k = ((png.data[i] >> 4) << 8) | ((png.data[i + 1] >> 4) << 4) | (png.data[i + 2] >> 4);
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  const total = png.width * png.height;
  const top = Math.max(...counts.values());
  assert.ok(counts.size >= 64, `screenshot has only ${counts.size} colours`);
  // a blank page is one colour; this one has charts, text and badges on it
  const drawn = 1 - top / total;
  assert.ok(drawn >= 0.05, `only ${(100 * drawn).toFixed(1)}% of the screenshot differs from its background`);
  ok(`screenshot ${path}: ${png.width}x${png.height}, ${counts.size} colours, ${(100 * drawn).toFixed(1)}% off the background`);
}
