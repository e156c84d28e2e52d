/**
 * Node.js module-resolution hooks (registered by testing/register.js) that stand weir's host
 * in for a test run: `weir:handler/host@0.2.0` and `weir:handler/state@0.2.0`, which exist only
 * inside a component, resolve to this directory's in-memory modules, and `weir` (this package),
 * when it is not installed where the test runs, to this copy of it.
 */

/** @type {Record<string, string>} */
const STAND_INS = {
  'weir:handler/host@0.2.0': new URL('./host.js', import.meta.url).href,
  'weir:handler/state@0.2.0': new URL('./state.js', import.meta.url).href,
};

/** This package's own entry points, as its package.json exports them. */
const SDK = {
  weir: '../index.js',
  'weir/state': '../state.js',
  'weir/testing': './index.js',
  'weir/testing/register': './register.js',
};

/**
 * @param {string} specifier
 * @param {object} context
 * @param {Function} nextResolve
 */
export async function resolve(specifier, context, nextResolve) {
  const standIn = STAND_INS[specifier];
  if (standIn !== undefined) return { url: standIn, format: 'module', shortCircuit: true };
  const own = /** @type {Record<string, string>} */ (SDK)[specifier];
  if (own !== undefined) {
    try {
      return await nextResolve(specifier, context);
    } catch (error) {
      if (/** @type {any} */ (error)?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
      return { url: new URL(own, import.meta.url).href, format: 'module', shortCircuit: true };
    }
  }
  return nextResolve(specifier, context);
}
