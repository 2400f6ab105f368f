// `node --import <sdk>/mock/register.mjs --test`: the plugin's imports of the host
// (`switchboard:plugin/...`) load the mock host instead, so its logic runs in Node.
import { register } from "node:module";

register("./hooks.mjs", import.meta.url);
