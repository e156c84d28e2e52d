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

import weir

U32, U64 = 2**32 - 1, 2**64 - 1


class Malformed(Exception):
    """The payload is not an order."""


def _pairs(pairs):
    """An object's fields, refusing a field given twice (as serde does for a struct's)."""
    fields = {}
    for name, value in pairs:
        if name in fields:
            raise Malformed(f"duplicate field `{name}`")
        fields[name] = value
    return fields


def _constant(name):
    raise Malformed(f"invalid number {name}")


def _fields(raw, what, names):
    """A struct's fields, from an object or, as serde also takes one, an array in field
    order."""
    if isinstance(raw, dict):
        return {name: raw[name] for name in names if name in raw}
    if isinstance(raw, list):
        if len(raw) > len(names):
            raise Malformed(f"invalid length, expected {what} with {len(names)} elements")
        return dict(zip(names, raw))
    raise Malformed(f"invalid type, expected {what}")


def _field(fields, name, kind, required=True):
    if name not in fields:
        if required:
            raise Malformed(f"missing field `{name}`")
        return None
    value = fields[name]
    if kind is str:
        if not isinstance(value, str):
            raise Malformed(f"invalid type for field `{name}`, expected a string")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise Malformed("lone surrogate in a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= kind:
        raise Malformed(f"invalid value for field `{name}`, expected an integer up to {kind}")
    return value


def parse_order(payload: bytes):
    try:
        raw = json.loads(payload.decode(), object_pairs_hook=_pairs, parse_constant=_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise Malformed(str(e)) from None
    fields = _fields(raw, "struct Order", ["order_id", "customer", "seq", "items", "payment"])
    order = {
        "order_id": _field(fields, "order_id", str),
        "customer": _field(fields, "customer", str),
        "seq": _field(fields, "seq", U64, required=False) or 0,
        "payment": None,
    }
    if fields.get("payment") is not None:
        order["payment"] = _field(fields, "payment", str)
    items = fields.get("items")
    if "items" not in fields:
        raise Malformed("missing field `items`")
    if not isinstance(items, list):
        raise Malformed("invalid type for field `items`, expected a sequence")
    order["items"] = []
    for item in items:
        f = _fields(item, "struct Item", ["sku", "qty", "price_cents"])
        order["items"].append(
            (_field(f, "sku", str), _field(f, "qty", U32), _field(f, "price_cents", U64))
        )
    return order


def parse_millis(text: str) -> int:
    """A number of milliseconds read as Rust's u64::from_str reads it, with the same error
    texts, so that a refused configuration reads the same in every example: an optional
    leading '+', then ASCII digits only."""
    if not text:
        raise ValueError("cannot parse integer from empty string")
    digits = text[1:] if text[0] == "+" and len(text) > 1 else text
    if not all("0" <= c <= "9" for c in digits):
        raise ValueError("invalid digit found in string")
    if int(digits) > U64:
        raise ValueError("number too large to fit in target type")
    return int(digits)


class Orders:
    def __init__(self, config: weir.Config):
        try:
            millis = parse_millis(config.get("pending_delay", "200"))
        except ValueError as e:
            raise ValueError(f"pending_delay must be a number of milliseconds: {e}") from None
        self.pending_delay = millis / 1000
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
            return weir.retry(self.pending_delay)

        # Sums wrap on overflow, as the Rust example's do in its release build.
        total = sum(qty * price for _, qty, price in order["items"]) & U64
        enriched = {
            "order_id": order["order_id"],
            "customer": order["customer"],
            "seq": order["seq"],
            "total_cents": total,
            "item_count": sum(qty for _, qty, _ in order["items"]) & U32,
            "skus": [sku for sku, _, _ in order["items"]],
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
