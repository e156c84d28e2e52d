/**
 * What the stand-ins of weir's host keep, shared by them (testing/host.js and
 * testing/state.js, which a Node.js test run loads in place of `weir:handler/host@0.2.0` and
 * `weir:handler/state@0.2.0`) and by testing/index.js, which reads it.
 */

export const store = {
  /** @type {{ subject: string, payload: Uint8Array, headers: [string, string][] }[]} */
  published: [],
  /** @type {[string, string][]} */
  logged: [],
  /** @type {Map<string, Uint8Array>} */
  kept: new Map(),
  /** When set, every publish is refused with this text. @type {string | undefined} */
  publishRefusal: undefined,
  /** When set, every state write is refused with this WIT state-error. @type {any} */
  writeRefusal: undefined,
};

/**
 * An error as the component's bindings throw one for a host call's err: an Error with the
 * err in its own `payload` property.
 * @param {unknown} payload
 */
export function hostError(payload) {
  const error = new Error(typeof payload === 'string' ? payload : `${String(payload)} (see error.payload)`);
  Object.defineProperty(error, 'payload', { value: payload, enumerable: typeof payload !== 'string' });
  return error;
}
