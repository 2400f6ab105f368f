// `switchboard:plugin/kv` in Node tests (see ../register.mjs).
import { kv as host } from "../host.js";

export const { get, set, incr } = host;
const remove = host.delete;
export { remove as delete };
