// `echo-js`: `echo` answered with its payload, written with the JavaScript SDK. The benchmark
// suite loads it in place of the Rust echo plugin (`suite --echo-wasm`) to measure what a
// JavaScript plugin costs per message (BENCHMARKS.md). It is named `echo`, as the plugin it
// stands in for, so the suite's swap uploads it under the same name.
import { Router } from "../../../sdk/js/src/index.js";

export const handler = new Router("echo", "0.1.0").on("echo", ({ payload }) => payload).export();
