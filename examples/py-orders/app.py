"""The orders example in Python: one JSON order event in, one enriched event out, output for
output the same as the Rust `orders` example (examples/orders).

- a well-formed order is enriched (total, item count, tier, region) and published to
  `<output_prefix>.<customer>`, then acked;
- malformed JSON, or an order without items, is rejected: it becomes a dead letter;
- an order whose payment is still "pending" asks to be retried after `pending_delay` (the
  payment clears by the third delivery), holding back later orders of its partition.

Configuration: `output_prefix` (default `enriched`), `region` (default `eu-west`),
`pending_delay` in milliseconds (default 200).
"""

import json
import re

import weir

U32, U64 = 2**32 - 1, 2**64 - 1


class Malformed(Exception):
    """The payload is not an order."""


# JSON's tokens, over the payload's bytes, as serde_json takes them. A string is anything but
# quotes, backslashes and control characters, with escapes between (its UTF-8 is checked only
# if the string is kept); a number is any JSON number, however long.
_WS = rb"[ \t\n\r]*"
_STRING_TOKEN = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})[^"\\\x00-\x1f]*)*"'
_NUMBER_TOKEN = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_SCALAR_TOKEN = rb"(?:%s|%s|true|false|null)" % (_STRING_TOKEN, _NUMBER_TOKEN)
_WHITESPACE = re.compile(_WS)
_STRING = re.compile(_STRING_TOKEN)
_NUMBER = re.compile(_NUMBER_TOKEN)
# The elements of an array, or the members of an object, that follow while they are scalars:
# what skip_value takes in one match, for speed (a skipped list of numbers is many tokens).
_MORE_SCALARS = {
    b"]": re.compile(rb"(?:%s,%s%s)*" % (_WS, _WS, _SCALAR_TOKEN)),
    b"}": re.compile(rb"(?:%s,%s%s%s:%s%s)*" % (_WS, _WS, _STRING_TOKEN, _WS, _WS, _SCALAR_TOKEN)),
}
_PLAIN_INTEGER = re.compile(rb"0|[1-9][0-9]*")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Reader:
    """A cursor over a payload, reading JSON as serde_json::from_slice reads it. The standard
    json module would not do: it takes lone surrogate escapes, refuses invalid UTF-8 anywhere
    (serde_json only in strings it keeps) and a repeated key anywhere (serde only a known field
    given twice), stops at about a thousand levels of nesting and at 4300 digits."""

    def __init__(self, payload: bytes):
        self.data = payload
        self.pos = 0

    def error(self, what: str) -> Malformed:
        """An error at the cursor, with serde_json's line and column."""
        line = self.data.count(b"\n", 0, self.pos) + 1
        column = self.pos - self.data.rfind(b"\n", 0, self.pos)
        return Malformed(f"{what} at line {line} column {column}")

    def peek(self) -> int:
        """Skips whitespace; the next byte, not taken, or -1 at the end."""
        self.pos = _WHITESPACE.match(self.data, self.pos).end()
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def eat(self, byte: bytes) -> bool:
        """Takes `byte` if it comes next (after whitespace)."""
        if self.peek() != byte[0]:
            return False
        self.pos += 1
        return True

    def expect(self, byte: bytes, what: str):
        if not self.eat(byte):
            raise self.error(f"expected {what}")

    def token(self, pattern: re.Pattern, what: str) -> bytes:
        """Takes the token `pattern` matches next."""
        self.peek()
        match = pattern.match(self.data, self.pos)
        if match is None:
            raise self.error(f"expected {what}")
        self.pos = match.end()
        return match[0]

    def string(self) -> str:
        """A string that is kept (a key or a string field): valid UTF-8, surrogate escapes in
        pairs."""
        if self.peek() != ord('"'):
            raise self.error("invalid type, expected a string")
        token = self.token(_STRING, "a string")
        try:
            if b"\\" not in token:  # no escapes to undo, as in most strings
                return token[1:-1].decode()
            text = json.loads(token.decode())
        except UnicodeDecodeError:
            raise self.error("invalid unicode code point") from None
        if _SURROGATE.search(text):  # json pairs the surrogates it can; these it could not
            raise self.error("lone surrogate in hex escape")
        return text

    def null(self) -> bool:
        """Takes null if it comes next."""
        if self.peek() == ord("n") and self.data.startswith(b"null", self.pos):
            self.pos += 4
            return True
        return False

    def unsigned(self, largest: int) -> int:
        """An integer field (u32, u64): plain digits only. A sign, a fraction or an exponent
        makes the number one serde_json gives the field as signed or floating point, which it
        does not take: -0 included."""
        number = self.token(_NUMBER, "an integer")
        if not _PLAIN_INTEGER.fullmatch(number) or len(number) > 20 or int(number) > largest:
            raise self.error(f"invalid value, expected an integer up to {largest}")
        return int(number)

    def skip_value(self):
        """Skips one value of any kind, as serde_json skips an unknown field's: however deeply
        it nests (serde_json sets no limit there), its keys repeated or not, its strings'
        UTF-8 and surrogate escapes unchecked."""
        closers = []  # what closes each array and object the value has open, innermost last
        while True:
            if self.eat(b"["):
                if not self.eat(b"]"):
                    closers.append(b"]")
                    continue
            elif self.eat(b"{"):
                if not self.eat(b"}"):
                    closers.append(b"}")
                    self.skip_key()
                    continue
            else:
                self.skip_scalar()
            # A value is done: skip the scalars after it, close what ends, then take the comma
            # before the next value.
            while closers:
                self.pos = _MORE_SCALARS[closers[-1]].match(self.data, self.pos).end()
                if self.eat(closers[-1]):
                    closers.pop()
                    continue
                self.expect(b",", f"`,` or `{closers[-1].decode()}`")
                if closers[-1] == b"}":
                    self.skip_key()
                break
            if not closers:
                return

    def skip_scalar(self):
        """Skips a string, a number, true, false or null."""
        if self.peek() == ord('"'):
            self.token(_STRING, "a string")
            return
        for literal in (b"null", b"true", b"false"):
            if self.data.startswith(literal, self.pos):
                self.pos += len(literal)
                return
        self.token(_NUMBER, "a value")

    def skip_key(self):
        self.token(_STRING, "a key")
        self.expect(b":", "`:`")


_REQUIRED = object()


def _struct(r: _Reader, what: str, fields: dict) -> dict:
    """A struct, read as serde's derive reads one: a JSON object with its fields by exact name
    (unknown ones skipped, a known one given twice refused) or a JSON array of its fields in
    order. `fields` maps each name to how its value is read and its default, if it has one."""
    values = {}
    if r.eat(b"{"):
        if not r.eat(b"}"):
            while True:
                name = r.string()
                r.expect(b":", "`:`")
                if name not in fields:
                    r.skip_value()
                elif name in values:
                    raise r.error(f"duplicate field `{name}`")
                else:
                    values[name] = fields[name][0](r)
                if r.eat(b"}"):
                    break
                r.expect(b",", "`,` or `}`")
    elif r.eat(b"["):
        for i, name in enumerate(fields):
            if r.peek() == ord("]"):
                break
            if i > 0:
                r.expect(b",", "`,` or `]`")
            values[name] = fields[name][0](r)
        r.expect(b"]", f"`]`: {what} has {len(fields)} fields")
    else:
        raise r.error(f"invalid type, expected {what}")
    for name, (_, default) in fields.items():
        if name not in values:
            if default is _REQUIRED:
                raise r.error(f"missing field `{name}`")
            values[name] = default
    return values


def _items(r: _Reader) -> list:
    if not r.eat(b"["):
        raise r.error("invalid type, expected a sequence")
    items = []
    if not r.eat(b"]"):
        while True:
            items.append(_struct(r, "struct Item", _ITEM))
            if r.eat(b"]"):
                break
            r.expect(b",", "`,` or `]`")
    return items


# The Rust example's types: each field's reader and default, in declaration order.
_ITEM = {
    "sku": (_Reader.string, _REQUIRED),
    "qty": (lambda r: r.unsigned(U32), _REQUIRED),
    "price_cents": (lambda r: r.unsigned(U64), _REQUIRED),
}
_ORDER = {
    "order_id": (_Reader.string, _REQUIRED),
    "customer": (_Reader.string, _REQUIRED),
    "seq": (lambda r: r.unsigned(U64), 0),
    "items": (_items, _REQUIRED),
    "payment": (lambda r: None if r.null() else r.string(), None),
}


def parse_order(payload: bytes) -> dict:
    """The order in `payload`, accepted and refused as serde_json reads the Rust example's
    `Order`; raises Malformed (whose text is not serde_json's) if it is none."""
    r = _Reader(payload)
    order = _struct(r, "struct Order", _ORDER)
    if r.peek() != -1:
        raise r.error("trailing characters")
    return order


def parse_millis(text: str) -> int:
    """A number of milliseconds read as Rust's u64::from_str reads it, with the same error
    texts, so that a refused configuration reads the same in every example: an optional
    leading '+', then ASCII digits only, checked left to right (a number that has grown too
    large is refused as such before a bad digit after it is seen)."""
    if not text:
        raise ValueError("cannot parse integer from empty string")
    digits = text[1:] if text[0] == "+" and len(text) > 1 else text
    millis = 0
    for c in digits:
        if not "0" <= c <= "9":
            raise ValueError("invalid digit found in string")
        millis = millis * 10 + int(c)
        if millis > U64:
            raise ValueError("number too large to fit in target type")
    return millis


class Orders:
    def __init__(self, config: weir.Config):
        try:
            millis = parse_millis(config.get("pending_delay", "200"))
        except ValueError as e:
            raise ValueError(f"pending_delay must be a number of milliseconds: {e}") from None
        # In nanoseconds, exactly (weir.retry takes seconds, as a float), and at most u64::MAX
        # as the Rust example's Duration saturates.
        self.pending_delay_ns = min(millis * 1_000_000, U64)
        self.output_prefix = config.get("output_prefix", "enriched")
        self.region = config.get("region", "eu-west")

    def handle(self, msg: weir.Message) -> weir.Outcome:
        try:
            order = parse_order(msg.payload)
        except Malformed as e:
            return weir.reject(f"malformed order: {e}")
        if not order["items"]:
            return weir.reject(f"order {order['order_id']} has no items")
        if order["payment"] == "pending" and msg.delivery_attempt < 3:
            weir.info(f"order {order['order_id']}: payment pending, retrying")
            return weir.Outcome("retry", delay_ns=self.pending_delay_ns)

        # Sums wrap on overflow, as the Rust example's do in its release build.
        items = order["items"]
        total = sum(item["qty"] * item["price_cents"] for item in items) & U64
        enriched = {
            "order_id": order["order_id"],
            "customer": order["customer"],
            "seq": order["seq"],
            "total_cents": total,
            "item_count": sum(item["qty"] for item in items) & U32,
            "skus": [item["sku"] for item in items],
            "tier": "standard" if total < 10_000 else "silver" if total < 100_000 else "gold",
            "region": self.region,
            "partition": msg.partition,
            "stream_seq": msg.stream_seq,
            "delivery_attempt": msg.delivery_attempt,
        }
        # Compact, fields in this order, only quotes, backslashes and control characters
        # escaped: byte for byte what serde_json writes.
        payload = json.dumps(enriched, ensure_ascii=False, separators=(",", ":"))
        try:
            weir.publish(f"{self.output_prefix}.{order['customer']}", payload)
        except weir.PublishError:
            # The call has already failed and will be retried; the outcome does not matter.
            return weir.retry()
        return weir.ack()


WitWorld = weir.export(Orders)
