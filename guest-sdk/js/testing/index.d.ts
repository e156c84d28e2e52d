/**
 * For a handler's unit tests on Node.js, with the stand-ins registered
 * (`node --import weir/testing/register --test`): what it published, logged and keeps.
 */

/** One publish: headers as `[name, value]` pairs. */
export interface Published {
  subject: string;
  payload: Uint8Array;
  headers: [string, string][];
}

/** Everything published since the last `reset`, in order. */
export function published(): Published[];

/** Every line logged since the last `reset`, in order, as `[level, text]`. */
export function logged(): [string, string][];

/** The state, key to bytes, in key order (writes of calls that did not ack included). */
export function kept(): Map<string, Uint8Array>;

/** Until `reset`, every publish is refused with `reason` (undefined takes them again). */
export function refusePublish(reason: string | undefined): void;

/** Until `reset`, every state write is refused with a StateError of `kind` and `limit`. */
export function refuseWrites(
  kind: 'invalid_key' | 'value_too_large' | 'too_many_keys' | 'too_many_bytes' | 'too_many_writes' | undefined,
  limit?: number | bigint,
): void;

/** Forgets what was published and logged, empties the state and takes every write again. */
export function reset(): void;
