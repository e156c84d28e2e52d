"""{{name}}'s own tests, on a plain Python, against weir.testing's stand-ins for the host:
`PYTHONPATH=weir-sdk/python python3 -m unittest`."""

import unittest

import weir
import weir.testing

from app import Shout


class ShoutTest(unittest.TestCase):
    def setUp(self):
        weir.testing.reset()
        self.handler = Shout(weir.Config([("output_prefix", "loud")]))

    def test_a_message_is_shouted(self):
        outcome = self.handler.handle(weir.Message("greetings.en", b"hello, weir"))
        self.assertEqual(outcome, weir.ack())
        self.assertEqual(weir.testing.published(), [("loud.greetings.en", b"HELLO, WEIR", [])])

    def test_an_empty_message_is_rejected(self):
        outcome = self.handler.handle(weir.Message("greetings.en", b""))
        self.assertEqual(outcome, weir.reject("empty message"))
        self.assertEqual(weir.testing.published(), [])

    def test_an_empty_prefix_is_refused(self):
        with self.assertRaisesRegex(ValueError, "output_prefix must not be empty"):
            Shout(weir.Config([("output_prefix", "")]))


if __name__ == "__main__":
    unittest.main()
