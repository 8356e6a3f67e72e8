// Bundle the console (src/) and niivue into dist/: one script, one stylesheet, the page.
// Run by `make console` (npm ci && npm run build); the service serves dist/ at /console.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist");
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  minify: true,
  target: ["chrome110", "firefox115", "safari16"],
  outfile: "dist/console.js",
  logLevel: "warning",
  legalComments: "external",
});
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/style.css", "dist/console.css");
