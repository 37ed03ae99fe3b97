// Copies the uPlot build pinned in package-lock.json (after `npm ci`) into
// insights-api/assets/vendor/uplot/, where the service embeds it.
//   node scripts/vendor.mjs           copy (make dashboard-assets)
//   node scripts/vendor.mjs --check   fail if the committed copy differs (make test-dashboard)
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const pkg = join(here, "node_modules", "uplot");
const dest = join(here, "..", "insights-api", "assets", "vendor", "uplot");
const files = [
  ["dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["dist/uPlot.min.css", "uPlot.min.css"],
  ["LICENSE", "LICENSE"],
];

const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
const locked = lock.packages["node_modules/uplot"]?.version;
if (!existsSync(pkg)) {
  console.error("vendor: node_modules/uplot is missing: run `npm ci` in dashboard/ first");
  process.exit(2);
}
const installed = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).version;
if (installed !== locked) {
  console.error(`vendor: node_modules has uplot ${installed}, the lockfile ${locked}: run \`npm ci\``);
  process.exit(2);
}

const check = process.argv.includes("--check");
let stale = 0;
for (const [from, to] of files) {
  const want = readFileSync(join(pkg, from));
  const path = join(dest, to);
  if (check) {
    const have = existsSync(path) ? readFileSync(path) : null;
    if (!have || !have.equals(want)) {
      console.error(`vendor: ${path} differs from uplot ${locked}/${from}: run \`make dashboard-assets\``);
      stale++;
    }
  } else {
    mkdirSync(dest, { recursive: true });
    writeFileSync(path, want);
  }
}
if (stale) process.exit(1);
console.log(`vendor: uplot ${locked} ${check ? "matches the committed copy" : `copied to ${dest}`}`);
