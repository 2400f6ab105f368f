// `switchboard:plugin/logging` in Node tests (see ../register.mjs).
import { logging as host } from "../host.js";

export const { log } = host;
