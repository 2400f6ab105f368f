// `switchboard:plugin/kv-versioned` in Node tests (see ../register.mjs).
import { kvVersioned as host } from "../host.js";

export const { getVersioned, compareAndSet, compareAndDelete, list } = host;
