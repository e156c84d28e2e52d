"""The conformance vectors run on a plain Python, through the SDK's stand-ins (weir.testing): a
check of the guest's own logic before the authoritative run through the real host
(runtime/tests/integration/conformance.rs).

    PYTHONPATH=../../../guest-sdk/python python3 -m unittest test_app

Natively:

- weir.testing records what is published but never refuses a publish, so the "output refused"
  vectors (the host refuses the publish and fails the call, whatever the guest answers) are
  skipped;
- log lines go to standard error as "weir log (level N): text", which the test reads back
  (weir.testing does not record them);
- a trap is an exception the test catches, and the instance simply goes on: there is no
  instance to start again.
"""

import contextlib
import io
import json
import re
import unittest
from pathlib import Path
from unittest import mock

import weir
import weir.testing

from app import Conformance, WitWorld

VECTORS = json.loads((Path(__file__).parent / "../../conformance/vectors.json").read_text())
LEVEL_NAMES = ["trace", "debug", "info", "warn", "error"]
LOG_LINE = re.compile(r"weir log \(level (\d)\): (.*)")


def payload_of(fields) -> bytes:
    """A vector's payload: `payload` as UTF-8, or `payload_hex`, or none."""
    if "payload" in fields:
        return fields["payload"].encode()
    return bytes.fromhex(fields.get("payload_hex", ""))


def message(fields) -> weir.Message:
    """What the SDK hands the handler for a vector's message, with the README's defaults."""
    return weir.Message(
        subject=fields["subject"],
        payload=payload_of(fields),
        headers=[tuple(h) for h in fields.get("headers", [])],
        stream=fields.get("stream", "IN"),
        stream_seq=fields["stream_seq"],
        partition=fields.get("partition", 0),
        delivery_attempt=fields.get("delivery_attempt", 1),
        published_at=fields.get("published_at", 1700000000000000000),
    )


def outcome_text(outcome: weir.Outcome) -> str:
    """An outcome as the vectors write it."""
    if outcome.kind == "retry":
        if outcome.delay_ns is None:
            return "retry"
        if outcome.delay_ns % 1_000_000 == 0:
            return f"retry {outcome.delay_ns // 1_000_000}ms"
        return f"retry {outcome.delay_ns}ns"
    if outcome.kind == "reject":
        return f"reject {outcome.reason}"
    return outcome.kind


@contextlib.contextmanager
def captured_logs():
    """The lines logged in the block, read back from the stand-in's standard error, as
    [level, text]."""
    logs = []
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        yield logs
    for line in stderr.getvalue().splitlines():
        match = LOG_LINE.fullmatch(line)
        assert match, f"not a log line of the stand-in: {line!r}"
        logs.append([LEVEL_NAMES[int(match[1])], match[2]])


class InitVectors(unittest.TestCase):
    def test_init_vectors(self):
        for vector in VECTORS["init"]:
            with self.subTest(vector["name"]):
                expect = vector["expect"]
                refusal = None
                with captured_logs() as logs:
                    # Through the SDK's export, which turns the exception into the refusal.
                    try:
                        WitWorld().init([tuple(pair) for pair in vector["config"]])
                    except Exception as refused:
                        refusal = str(refused)
                self.assertEqual(refusal, expect.get("refused"))
                self.assertEqual(logs, expect.get("logs", []))

    @unittest.expectedFailure
    def test_an_empty_refusal_is_refused_word_for_word(self):
        # Not a vector, but what the README asks. weir.export refuses with the exception's
        # text or, when that is empty, with the exception's class name ("ValueError").
        with self.assertRaises(Exception) as refused:
            WitWorld().init([("refuse", "")])
        self.assertEqual(str(refused.exception), "")


class HandleVectors(unittest.TestCase):
    def test_handle_vectors(self):
        table = VECTORS["handle"]
        with captured_logs():
            # One instance for the whole table, as the suite has.
            guest = Conformance(weir.Config([tuple(pair) for pair in table["config"]]))
        for vector in table["vectors"]:
            with self.subTest(vector["name"]):
                expect = vector["expect"]
                if expect["outcome"] == "output refused":
                    self.skipTest("only the real host refuses a publish")
                weir.testing.reset()
                with captured_logs() as logs:
                    try:
                        outcome = outcome_text(guest.handle(message(vector["message"])))
                    except Exception:
                        outcome = "trap"
                self.assertEqual(outcome, expect["outcome"])
                if outcome == "trap":
                    continue  # a trap's outputs and log lines are the host's to discard
                self.assertEqual(
                    weir.testing.published(),
                    [
                        (o["subject"], payload_of(o), [tuple(h) for h in o.get("headers", [])])
                        for o in expect.get("outputs", [])
                    ],
                )
                self.assertEqual(logs, expect.get("logs", []))

    def test_a_refused_publish_is_rejected_with_the_sdks_text(self):
        # Word for word, an empty text included, though the host fails such a call whatever
        # it answers.
        with captured_logs():
            guest = Conformance(weir.Config())
        for text in ["subject elsewhere.x is not an allowed output", ""]:
            for subject in ["publish-to", "echo.x", "many", "describe"]:
                with self.subTest(text=text, subject=subject), mock.patch.object(
                    weir, "publish", side_effect=weir.PublishError(text)
                ):
                    outcome = guest.handle(weir.Message(f"conformance.{subject}", b"1"))
                    self.assertEqual(outcome, weir.reject(f"refused: {text}"))


if __name__ == "__main__":
    unittest.main()
