// `switchboard:plugin/realtime` in Node tests (see ../register.mjs).
import { realtime as host } from "../host.js";

export const { send, sendToUser, broadcast, join, leave, close, setAttachment, members } = host;
