// Module resolution hooks (see register.mjs): `switchboard:plugin/NAME@VERSION` resolves to
// `interfaces/NAME.js`.
const PREFIX = "switchboard:plugin/";

export async function resolve(specifier, context, next) {
  if (specifier.startsWith(PREFIX)) {
    const name = specifier.slice(PREFIX.length).split("@")[0];
    return { url: new URL(`./interfaces/${name}.js`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
