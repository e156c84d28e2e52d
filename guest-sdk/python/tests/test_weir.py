"""The SDK on a plain Python, against weir.testing's stand-ins: what a handler's own unit tests
see. Run with `python3 -m unittest discover -s guest-sdk/python/tests -t guest-sdk/python`."""

import unittest
from datetime import timedelta

import weir
import weir.testing
from weir import state


class Echo:
    def __init__(self, config):
        if "refuse" in config:
            raise ValueError(f"refusing: {config['refuse']}")
        self.prefix = config.get("output_prefix", "out")
        self.config = list(config.items())

    def handle(self, msg):
        weir.publish(f"{self.prefix}.{msg.subject}", msg.payload, {"attempt": str(msg.delivery_attempt)})
        return weir.ack()


class Outcomes(unittest.TestCase):
    def test_each_outcome_says_what_it_is(self):
        self.assertEqual(str(weir.ack()), "ack")
        self.assertEqual(weir.retry().delay_ns, None)
        self.assertEqual(weir.retry(0.25).delay_ns, 250_000_000)
        self.assertEqual(weir.retry(timedelta(milliseconds=750)).delay_ns, 750_000_000)
        self.assertEqual(weir.retry(10**30).delay_ns, 2**64 - 1)
        self.assertEqual(weir.reject("no items").reason, "no items")
        with self.assertRaises(ValueError):
            weir.retry(-1)


class Handlers(unittest.TestCase):
    def setUp(self):
        weir.testing.reset()

    def test_a_handler_is_made_from_the_configuration_and_publishes(self):
        handler = Echo(weir.Config([("b", "2"), ("output_prefix", "o")]))
        msg = weir.Message("in.k.ev", b"hi", headers=[("x", "1"), ("x", "2")], delivery_attempt=3)
        self.assertEqual(handler.handle(msg), weir.ack())
        self.assertEqual(weir.testing.published(), [("o.in.k.ev", b"hi", [("attempt", "3")])])
        self.assertEqual(msg.header("x"), "1")
        self.assertIsNone(msg.header("y"))

    def test_the_exported_world_refuses_a_configuration_its_handler_refuses(self):
        world = weir.export(Echo)()
        with self.assertRaises(Exception) as refused:
            world.init([("refuse", "because")])
        self.assertEqual(str(refused.exception), "refusing: because")
        world.init([("output_prefix", "p")])
        self.assertEqual(world.handle(weir.Message("s", b"x")), weir.ack())

    def test_a_handler_that_returns_no_outcome_fails_the_call(self):
        class Forgetful:
            def __init__(self, config):
                pass

            def handle(self, msg):
                return None

        world = weir.export(Forgetful)()
        world.init([])
        with self.assertRaises(TypeError):
            world.handle(weir.Message("s", b"x"))


class State(unittest.TestCase):
    def setUp(self):
        weir.testing.reset()

    def test_typed_values_are_kept_as_the_other_sdks_keep_them(self):
        state.set_int("total", 42)
        state.set_str("name", "ünï")
        state.set_json("doc", {"a": [1, 2]})
        self.assertEqual(weir.testing.kept()["total"], b"42")
        self.assertEqual(state.get_int("total"), 42)
        self.assertEqual(state.get_int("missing", 0), 0)
        self.assertEqual(state.get_str("name"), "ünï")
        self.assertEqual(state.get_json("doc"), {"a": [1, 2]})
        self.assertEqual(weir.testing.kept()["doc"], b'{"a":[1,2]}')

    def test_keys_are_listed_by_prefix_in_order_and_deleted(self):
        for key in ["b/2", "a/1", "b/1", "c"]:
            state.set(key, b"")
        self.assertEqual(list(state.keys("b/")), ["b/1", "b/2"])
        state.delete("b/1")
        self.assertEqual(list(state.keys()), ["a/1", "b/2", "c"])

    def test_an_invalid_key_is_refused_with_a_state_error(self):
        with self.assertRaises(state.StateError) as refused:
            state.set("", b"x")
        self.assertEqual(refused.exception.kind, "invalid_key")
        self.assertEqual(str(refused.exception), "invalid state key: use 1 to 256 bytes")


if __name__ == "__main__":
    unittest.main()
