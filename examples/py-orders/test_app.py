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


if __name__ == "__main__":
    unittest.main()
