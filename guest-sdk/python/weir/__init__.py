"""Write weir handlers in Python.

A handler is a class: weir makes one instance of it per partition, with the deployment's
configuration, and hands it the partition's messages one at a time, in order. What `handle`
returns decides what becomes of the message::

    import weir

    class Echo:
        def __init__(self, config: weir.Config):
            self.prefix = config.get("output_prefix", "out")

        def handle(self, msg: weir.Message) -> weir.Outcome:
            weir.publish(f"{self.prefix}.{msg.subject}", msg.payload)
            return weir.ack()

    WitWorld = weir.export(Echo)

Build it into a component with componentize-py (`make` does, see the README)::

    componentize-py -d wit -w handler componentize -p guest-sdk/python -p . app -o app.wasm

Raising in `__init__` refuses the configuration (`weir deploy` says why). Raising in `handle`
is a trap: the call's outputs and state changes are dropped, the instance is replaced and the
message is retried. Outside a component (a handler's own unit tests, on any Python 3.10+) the
same code runs against `weir.testing`'s stand-ins.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterable, Iterator, Mapping, Optional, Tuple, Union

from . import _host, state
from ._host import IN_COMPONENT

__all__ = [
    "Config",
    "Message",
    "Outcome",
    "PublishError",
    "ack",
    "retry",
    "reject",
    "publish",
    "log",
    "debug",
    "info",
    "warn",
    "error",
    "export",
    "state",
]


class Config(Mapping[str, str]):
    """The deployment's configuration (`weir deploy --config key=value`): each key once,
    sorted by key."""

    def __init__(self, pairs: Iterable[Tuple[str, str]] = ()):
        self._pairs = dict(pairs)

    def __getitem__(self, key: str) -> str:
        return self._pairs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Config({self._pairs!r})"


@dataclass
class Message:
    """One delivery of an input message, as stored in the input stream."""

    subject: str
    payload: bytes
    #: Headers the publisher set, in the order they arrived, as (name, value); a name may
    #: appear more than once.
    headers: list = field(default_factory=list)
    stream: str = ""
    #: The message's sequence in the input stream.
    stream_seq: int = 0
    partition: int = 0
    #: 1 on the first delivery, 2 on the first retry, and so on.
    delivery_attempt: int = 1
    #: When it was published, in nanoseconds since the Unix epoch.
    published_at: int = 0

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name` (case-sensitive), if present."""
        return next((v for n, v in self.headers if n == name), None)

    def text(self) -> str:
        """The payload as UTF-8 text; raises UnicodeDecodeError if it is not."""
        return self.payload.decode()


@dataclass(frozen=True)
class Outcome:
    """What a handler made of a message: build one with `ack`, `retry` or `reject`."""

    kind: str
    #: For a retry, the delay in nanoseconds (None: the deployment's backoff).
    delay_ns: Optional[int] = None
    #: For a rejection, why.
    reason: str = ""

    def __str__(self) -> str:
        if self.kind == "retry":
            return "retry" if self.delay_ns is None else f"retry after {self.delay_ns / 1e9}s"
        if self.kind == "reject":
            return f"reject: {self.reason}"
        return "ack"


def ack() -> Outcome:
    """Done: the message is acknowledged, after the call's outputs and state changes are
    stored."""
    return Outcome("ack")


def retry(delay: Union[None, float, timedelta] = None) -> Outcome:
    """Try again: after `delay` (seconds, or a timedelta), or the deployment's backoff for this
    delivery attempt. The call's outputs and state changes are dropped, and later messages of
    the partition wait."""
    if delay is None:
        return Outcome("retry")
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"a retry delay cannot be negative: {delay!r}")
    return Outcome("retry", delay_ns=min(round(seconds * 1e9), 2**64 - 1))


def reject(reason: str) -> Outcome:
    """Never retry: the message becomes a dead letter, with `reason`."""
    return Outcome("reject", reason=str(reason))


class PublishError(Exception):
    """weir refused a publish (a subject or header the deployment may not use, or too many
    outputs). The call has failed already: it is retried like a trap, whatever it returns."""


def publish(
    subject: str,
    payload: Union[bytes, str],
    headers: Union[None, Mapping[str, str], Iterable[Tuple[str, str]]] = None,
) -> None:
    """Publishes `payload` (text is sent as UTF-8) to `subject`, with `headers`, if this call
    ends in `ack`; raises PublishError if weir refuses it."""
    if isinstance(payload, str):
        payload = payload.encode()
    if headers is None:
        pairs = []
    elif isinstance(headers, Mapping):
        pairs = list(headers.items())
    else:
        pairs = list(headers)
    try:
        _host.publish(subject, bytes(payload), pairs)
    except _host.HostRefused as refused:
        raise PublishError(str(refused)) from None


# Log levels, as the WIT numbers them.
TRACE, DEBUG, INFO, WARN, ERROR = range(5)


def log(level: int, message: str) -> None:
    """Writes a line to the node's log (and `weir logs`), tagged with tenant, handler,
    partition and stream sequence."""
    _host.log(level, str(message))


def debug(message: str) -> None:
    log(DEBUG, message)


def info(message: str) -> None:
    log(INFO, message)


def warn(message: str) -> None:
    log(WARN, message)


def error(message: str) -> None:
    log(ERROR, message)


def export(factory):
    """The class componentize-py exports for the handler `factory` (a class, or any callable
    taking a Config and returning an object with `handle(msg) -> Outcome`). Assign it to
    `WitWorld` in the component's main module."""

    class WitWorld:
        handler = None

        def init(self, config):
            try:
                WitWorld.handler = factory(Config(config))
            except Exception as refused:  # the configuration is refused, with why
                raise _err(str(refused) or type(refused).__name__) from None

        def handle(self, msg):
            if WitWorld.handler is None:
                raise RuntimeError("weir: handle called before init")
            outcome = WitWorld.handler.handle(_message(msg))
            if not isinstance(outcome, Outcome):
                raise TypeError(
                    f"handle must return weir.ack(), weir.retry() or weir.reject(), "
                    f"not {outcome!r}"
                )
            return _outcome(outcome)

    return WitWorld


def _message(msg) -> Message:
    return Message(
        subject=msg.subject,
        payload=bytes(msg.payload),
        headers=[(h.name, h.value) for h in msg.headers],
        stream=msg.stream,
        stream_seq=msg.stream_seq,
        partition=msg.partition,
        delivery_attempt=msg.delivery_attempt,
        published_at=msg.published_at,
    )


if IN_COMPONENT:
    from componentize_py_types import Err as _Err
    from wit_world.imports import types as _types

    def _err(reason):
        return _Err(reason)

    def _outcome(outcome: Outcome):
        if outcome.kind == "retry":
            return _types.Outcome_Retry(outcome.delay_ns)
        if outcome.kind == "reject":
            return _types.Outcome_Reject(outcome.reason)
        return _types.Outcome_Ack()

else:

    class _Refused(Exception):
        pass

    def _err(reason):
        return _Refused(reason)

    def _outcome(outcome: Outcome):
        return outcome
