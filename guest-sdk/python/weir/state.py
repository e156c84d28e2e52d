"""The partition's state: keys and values weir keeps for this deployment and partition, that
outlive the instance, the node and the version.

A call sees its own writes at once. They take effect only if the call returns `weir.ack()`,
and then exactly once: weir commits them with the fact that the message was applied, before it
acknowledges the message. A retry, a rejection or an exception drops them::

    total = weir.state.get_int("total", 0) + amount
    weir.state.set_int("total", total)

Keys are text of 1 to 256 UTF-8 bytes. A write over the tenant's quotas is refused with a
StateError that says which; the call goes on.
"""

import json
from typing import Any, Iterator, Optional, Union

from . import _host

__all__ = [
    "StateError",
    "get",
    "set",
    "delete",
    "keys",
    "get_str",
    "set_str",
    "get_int",
    "set_int",
    "get_json",
    "set_json",
]

_MESSAGES = {
    "invalid_key": lambda _: "invalid state key: use 1 to 256 bytes",
    "value_too_large": lambda n: f"state value larger than the tenant's limit of {n} bytes",
    "too_many_keys": lambda n: f"the partition would hold more than the tenant's {n} state keys",
    "too_many_bytes": lambda n: f"the partition's state would take more than the tenant's {n} bytes",
    "too_many_writes": lambda n: f"this call has already written {n} state keys, the most one may",
}


class StateError(Exception):
    """A write weir refused. `kind` is one of `invalid_key`, `value_too_large`,
    `too_many_keys`, `too_many_bytes` and `too_many_writes`; `limit` is the quota it hit."""

    def __init__(self, kind: str, limit: Optional[int]):
        super().__init__(_MESSAGES[kind](limit))
        self.kind = kind
        self.limit = limit


def _refused(refused: _host.StateRefused) -> StateError:
    kind, limit = _host.refusal(refused.args[0])
    return StateError(kind, limit)


def get(key: str) -> Optional[bytes]:
    """The value of `key`, or None if it has none."""
    value = _host.state_get(key)
    return None if value is None else bytes(value)


def set(key: str, value: Union[bytes, bytearray, memoryview]) -> None:
    """Sets `key` to `value` if this call acks; raises StateError if refused."""
    try:
        _host.state_set(key, bytes(value))
    except _host.StateRefused as refused:
        raise _refused(refused) from None


def delete(key: str) -> None:
    """Removes `key` if this call acks; raises StateError if refused."""
    try:
        _host.state_delete(key)
    except _host.StateRefused as refused:
        raise _refused(refused) from None


def keys(prefix: str = "") -> Iterator[str]:
    """Every key that starts with `prefix`, in byte order, read from weir a page at a time."""
    after = None
    while True:
        page = _host.state_keys(prefix, after, 1000)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1]


def get_str(key: str, default: Optional[str] = None) -> Optional[str]:
    """The value of `key` as UTF-8 text, or `default`."""
    value = get(key)
    return default if value is None else value.decode()


def set_str(key: str, value: str) -> None:
    set(key, value.encode())


def get_int(key: str, default: Optional[int] = None) -> Optional[int]:
    """The value of `key` as a whole number stored as decimal text (as `set_int` and the other
    SDKs' `set_u64` store it, so `weir state get` shows it), or `default`."""
    value = get(key)
    return default if value is None else int(value.decode())


def set_int(key: str, value: int) -> None:
    set(key, str(int(value)).encode())


def get_json(key: str, default: Any = None) -> Any:
    """The value of `key` decoded from JSON, or `default`."""
    value = get(key)
    return default if value is None else json.loads(value)


def set_json(key: str, value: Any) -> None:
    set(key, json.dumps(value, separators=(",", ":")).encode())
