// `switchboard:plugin/env` in Node tests (see ../register.mjs).
import { env as host } from "../host.js";

export const { nowMs, configGet } = host;
