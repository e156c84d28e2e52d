"""The orders handler's own tests, on a plain Python (see weir.testing):
`PYTHONPATH=../../guest-sdk/python python3 -m unittest test_app`."""

import json
import unittest

import weir
import weir.testing

from app import Orders


def order(**fields):
    base = {"order_id": "o-1", "customer": "c42", "items": [{"sku": "A", "qty": 2, "price_cents": 1500}]}
    base.update(fields)
    return json.dumps(base).encode()


class OrdersTest(unittest.TestCase):
    def setUp(self):
        weir.testing.reset()
        self.orders = Orders(weir.Config([("region", "ap-south")]))

    def test_an_order_is_enriched_and_published_to_its_customer(self):
        outcome = self.orders.handle(weir.Message("orders.c42.created", order(seq=7), partition=3, stream_seq=17))
        self.assertEqual(outcome, weir.ack())
        [(subject, payload, headers)] = weir.testing.published()
        self.assertEqual(subject, "enriched.c42")
        self.assertEqual(
            payload,
            b'{"order_id":"o-1","customer":"c42","seq":7,"total_cents":3000,"item_count":2,'
            b'"skus":["A"],"tier":"standard","region":"ap-south","partition":3,"stream_seq":17,'
            b'"delivery_attempt":1}',
        )

    def test_malformed_orders_and_orders_without_items_are_rejected(self):
        for payload, reason in [
            (b"not json", "malformed order:"),
            (order(order_id=None), "malformed order:"),
            (order(items=[{"sku": "A", "qty": -1, "price_cents": 1}]), "malformed order:"),
            (order(items=[]), "order o-1 has no items"),
        ]:
            outcome = self.orders.handle(weir.Message("s", payload))
            self.assertEqual(outcome.kind, "reject", payload)
            self.assertTrue(outcome.reason.startswith(reason), outcome.reason)
        self.assertEqual(weir.testing.published(), [])

    def test_unknown_fields_are_skipped_as_serde_json_skips_them(self):
        def order(extra):
            return b'{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}]' + extra + b"}"

        for payload in [
            order(b',"x":1,"x":2'),  # given twice
            order(b',"x":{"a":1,"a":[{"b":1,"b":2}]}'),  # a key repeated inside
            b'{"order_id":"o","customer":"c","items":[{"sku":"A","z":1,"qty":1,"price_cents":1,"z":2}]}',
            b'["o","c",0,[{"sku":"A","qty":1,"price_cents":1,"z":1,"z":2}]]',
            order(b',"x":"\xff\xfe\xed\xa0\x80"'),  # invalid UTF-8 in a string
            order(b',"x":{"\xff":1}'),  # and in a key inside
            order(b',"x":["\\ud800","\\udc00x"]'),  # lone surrogate escapes
            order(b',"x":{"\\ud800":1}'),
            order(b',"x":' + b"[" * 100_000 + b"]" * 100_000),  # far deeper than json goes
            order(b',"x":' + b"9" * 5000 + b"e-" + b"9" * 5000),  # more digits than int() takes
            order(b' , "a" : [ null , true , false , -0 , 1.5E+3 , "" , { } , [ ] ] ,\t\n\r"b":{"c":-1e-9}'),
        ]:
            weir.testing.reset()
            self.assertEqual(self.orders.handle(weir.Message("s", payload)), weir.ack(), payload[:80])
            [(_, published, _)] = weir.testing.published()
            self.assertTrue(published.startswith(b'{"order_id":"o","customer":"c","seq":0,"total_cents":1,'))

    def test_what_serde_json_refuses_is_malformed(self):
        items = b'"items":[{"sku":"A","qty":1,"price_cents":1}]'
        for payload in [
            # A key of Order or Item is read as a string, whether the field is known or not,
            # and serde_json checks every string it reads: UTF-8, surrogate escapes in pairs.
            b'{"order_id":"o","customer":"c",' + items + b',"\\ud800":1}',
            b'{"order_id":"o","customer":"c",' + items + b',"\\udc00":1}',
            b'{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1,"\\ud800":1}]}',
            b'{"order_id":"o","customer":"c",' + items + b',"\xff":1}',
            b'{"order_id":"\\ud800","customer":"c",' + items + b"}",
            b'{"order_id":"\\ud83d\\u0041","customer":"c",' + items + b"}",
            b'{"order_id":"o","customer":"\\udc00",' + items + b"}",
            b'{"order_id":"o","customer":"c","items":[{"sku":"\\ud800","qty":1,"price_cents":1}]}',
            b'{"order_id":"o","customer":"c",' + items + b',"payment":"\\ud800"}',
            # serde_json reads -0 as a floating-point number, which no integer field takes.
            b'{"order_id":"o","customer":"c","items":[{"sku":"A","qty":-0,"price_cents":1}]}',
            b'{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":-0}]}',
            b'{"order_id":"o","customer":"c","seq":-0,' + items + b"}",
            b'{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1e0,"price_cents":1}]}',
            # A skipped value must still be JSON.
            b'{"order_id":"o","customer":"c",' + items + b',"x":"\x01"}',
            b'{"order_id":"o","customer":"c",' + items + b',"x":[1,]}',
            b'{"order_id":"o","customer":"c",' + items + b',"x":-}',
            b'{"order_id":"o","customer":"c",' + items + b',"x":NaN}',
        ]:
            outcome = self.orders.handle(weir.Message("s", payload))
            self.assertEqual(outcome.kind, "reject", payload)
            self.assertTrue(outcome.reason.startswith("malformed order:"), outcome.reason)
        # A field given twice that is not the order's is no reason to refuse it.
        outcome = self.orders.handle(weir.Message("s", b'{"order_id":"o","customer":"c","items":[],"x":1,"x":2}'))
        self.assertEqual(outcome, weir.reject("order o has no items"))
        self.assertEqual(weir.testing.published(), [])

    def test_a_pending_payment_is_retried_until_the_third_delivery(self):
        pending = order(payment="pending")
        for attempt in (1, 2):
            outcome = self.orders.handle(weir.Message("s", pending, delivery_attempt=attempt))
            self.assertEqual(outcome, weir.retry(0.2))
        self.assertEqual(self.orders.handle(weir.Message("s", pending, delivery_attempt=3)), weir.ack())

    def test_a_pending_delay_that_is_no_number_is_refused(self):
        with self.assertRaises(ValueError) as refused:
            Orders(weir.Config([("pending_delay", "soon")]))
        self.assertEqual(
            str(refused.exception),
            "pending_delay must be a number of milliseconds: invalid digit found in string",
        )

    def test_a_pending_delay_is_read_as_rust_reads_it(self):
        pending = order(payment="pending")
        for millis, delay_ns in [
            ("+5", 5_000_000),
            # Exact nanoseconds, where seconds as a float would be off...
            ("18446744073709", 18446744073709_000_000),
            # ...and u64::MAX past it, as the Rust example's Duration saturates.
            ("18446744073710", 2**64 - 1),
            ("18446744073709551615", 2**64 - 1),
            ("0" * 5000 + "7", 7_000_000),
        ]:
            orders = Orders(weir.Config([("pending_delay", millis)]))
            outcome = orders.handle(weir.Message("s", pending))
            self.assertEqual(outcome, weir.Outcome("retry", delay_ns=delay_ns), millis)
        for millis, error in [
            ("", "cannot parse integer from empty string"),
            ("+", "invalid digit found in string"),
            ("-1", "invalid digit found in string"),
            ("18446744073709551616", "number too large to fit in target type"),
            # Read left to right: too large before the bad digit is reached.
            ("99999999999999999999x", "number too large to fit in target type"),
            ("1844674407370955161x", "invalid digit found in string"),
            ("1" * 5000, "number too large to fit in target type"),
        ]:
            with self.assertRaises(ValueError) as refused:
                Orders(weir.Config([("pending_delay", millis)]))
            self.assertEqual(str(refused.exception), f"pending_delay must be a number of milliseconds: {error}")


if __name__ == "__main__":
    unittest.main()
