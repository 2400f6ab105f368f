#!/usr/bin/env node
// Builds a JavaScript plugin into a WASM component of the plugin world (sdk/wit), with
// @bytecodealliance/componentize-js (StarlingMonkey: about 12 MB, no WASI imports).
//
//   node sdk/js/build.mjs path/to/plugin.js out.wasm
//
// The entry module exports `handler` (usually `router.export()`); it may import the SDK and
// other modules by relative path.
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const [entry, out] = process.argv.slice(2);
if (!entry || !out) {
  console.error("usage: node build.mjs ENTRY.js OUT.wasm");
  process.exit(2);
}
const witPath = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "wit");
const started = performance.now();
const { component } = await componentize({
  sourcePath: path.resolve(entry),
  witPath,
  worldName: "plugin",
  // The plugin world has no WASI: time comes from the host's `env`, output from `logging`.
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await mkdir(path.dirname(path.resolve(out)), { recursive: true });
await writeFile(out, component);
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(`built ${out}: ${(component.length / 1e6).toFixed(1)} MB in ${seconds} s`);
