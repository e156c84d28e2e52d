"""For a handler's unit tests on a plain Python: what it published and what it keeps in state,
held in memory in place of weir's host. Inside a component none of this exists."""

from . import _host

if _host.IN_COMPONENT:
    raise ImportError("weir.testing is for tests on a plain Python, not inside a component")


def published():
    """Everything published since the last `reset`, as (subject, payload, headers)."""
    return list(_host.outputs)


def kept():
    """The state, as a dict of key to bytes. Unlike weir, a call that does not ack keeps its
    writes here: tests check what a handler writes, not weir's commit."""
    return dict(_host.kept)


def reset():
    """Forgets what was published and empties the state."""
    _host.outputs.clear()
    _host.kept.clear()
