"""The weir host, as componentize-py's bindings reach it inside a component, or, when this
package runs on a plain Python (a handler's unit tests), an in-memory stand-in: outputs are
collected and state is a dict (see `weir.testing`). Nothing here is public."""

try:
    from wit_world.imports import host as _host
    from wit_world.imports import state as _state
    from wit_world.imports import types as _types
    from componentize_py_types import Err

    IN_COMPONENT = True
except ImportError:  # not built by componentize-py: the handler's own tests
    IN_COMPONENT = False

if IN_COMPONENT:

    def publish(subject, payload, headers):
        """Raises the host's refusal, as a string, if it refuses."""
        try:
            _host.publish(subject, payload, [_types.Header(n, v) for n, v in headers])
        except Err as refused:
            raise HostRefused(refused.value) from None

    def log(level, message):
        _host.log(_types.Level(level), message)

    def state_get(key):
        return _state.get(key)

    def state_set(key, value):
        try:
            _state.set(key, value)
        except Err as refused:
            raise StateRefused(refused.value) from None

    def state_delete(key):
        try:
            _state.delete(key)
        except Err as refused:
            raise StateRefused(refused.value) from None

    def state_keys(prefix, after, limit):
        return _state.keys(prefix, after, limit)

    def refusal(error):
        """A host `state-error` as (kind, limit)."""
        kinds = {
            _state.StateError_InvalidKey: "invalid_key",
            _state.StateError_ValueTooLarge: "value_too_large",
            _state.StateError_TooManyKeys: "too_many_keys",
            _state.StateError_TooManyBytes: "too_many_bytes",
            _state.StateError_TooManyWrites: "too_many_writes",
        }
        return kinds[type(error)], getattr(error, "value", None)

else:
    import sys

    outputs = []
    kept = {}

    def publish(subject, payload, headers):
        outputs.append((subject, payload, list(headers)))

    def log(level, message):
        print(f"weir log (level {level}): {message}", file=sys.stderr)

    def state_get(key):
        return kept.get(key)

    def state_set(key, value):
        if not 1 <= len(key.encode()) <= 256:
            raise StateRefused(("invalid_key", None))
        kept[key] = bytes(value)

    def state_delete(key):
        if not 1 <= len(key.encode()) <= 256:
            raise StateRefused(("invalid_key", None))
        kept.pop(key, None)

    def state_keys(prefix, after, limit):
        matching = sorted(
            k
            for k in kept
            if k.startswith(prefix) and (after is None or k.encode() > after.encode())
        )
        return matching[:limit]

    def refusal(error):
        return error


class HostRefused(Exception):
    """The host refused a publish; the call has failed."""


class StateRefused(Exception):
    """The host refused a state write; the call goes on."""
