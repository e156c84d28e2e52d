"""The stateful test guest (tests/guests/stateful) in Python, through guest-sdk/python's
`weir.state`: each message a command, every reply published to `<output_prefix>.<subject>`
before the call acks, and every reply the Rust guest's, word for word, so that the state tests
run it unchanged. The commands the tests use: `add KEY N` (and `add-then-retry`,
`add-then-reject`, `add-then-trap`, `add-then-hog`, `add-then-overrun MS`), `read KEY`,
`read-own KEY`, `delete KEY`, `keys PREFIX`, `put-big KEY BYTES`, `put-many PREFIX N`.
"""

import time

import weir
from weir import state


def number(words, at, default):
    """The decimal number at `words[at]`, or `default`."""
    try:
        return int(words[at]) if words[at].isdigit() else default
    except IndexError:
        return default


def word(words, at, default):
    return words[at] if len(words) > at else default


class Stateful:
    def __init__(self, config: weir.Config):
        self.prefix = config.get("output_prefix", "out")

    def handle(self, msg: weir.Message) -> weir.Outcome:
        try:
            text = msg.text()
        except UnicodeDecodeError:
            text = ""
        words = text.split()
        command = word(words, 0, "")
        if command in ("add", "add-then-retry", "add-then-reject", "add-then-trap", "add-then-hog", "add-then-overrun"):
            key = word(words, 1, "total")
            total = state.get_int(key, 0) + number(words, 2, 1)
            try:
                state.set_int(key, total)
            except state.StateError:
                return weir.retry()
            if command == "add-then-retry":
                return weir.retry(0.05)
            if command == "add-then-reject":
                return weir.reject("rejected after adding")
            if command == "add-then-trap":
                raise RuntimeError("trap after adding")
            if command == "add-then-hog":
                hoard = []
                while True:
                    hoard.append(bytearray(b"\1" * (1 << 20)))
            if command == "add-then-overrun":
                time.sleep(number(words, 3, 1000) / 1000)
            return self.reply(msg, f"{key}={total}")
        if command == "read":
            return self.reply(msg, state.get_str(word(words, 1, "total"), "none"))
        if command == "read-own":
            key = word(words, 1, "own")
            reads = []
            for value in ("first", "second"):
                try:
                    state.set_str(key, value)
                except state.StateError:
                    return weir.retry()
                reads.append(state.get_str(key, "none"))
            return self.reply(msg, ",".join(reads))
        if command == "delete":
            key = word(words, 1, "total")
            try:
                state.delete(key)
            except state.StateError:
                return weir.retry()
            return self.reply(msg, state.get_str(key, "none"))
        if command == "keys":
            return self.reply(msg, ",".join(state.keys(word(words, 1, ""))))
        if command == "put-big":
            try:
                state.set(word(words, 1, "big"), b"b" * number(words, 2, 1 << 20))
            except state.StateError as refused:
                return self.reply(msg, str(refused))
            return self.reply(msg, "ok")
        if command == "put-many":
            prefix = word(words, 1, "k")
            for i in range(number(words, 2, 10)):
                try:
                    state.set(f"{prefix}{i}", b"v")
                except state.StateError as refused:
                    return self.reply(msg, str(refused))
            return self.reply(msg, "ok")
        return self.reply(msg, text)

    def reply(self, msg: weir.Message, text: str) -> weir.Outcome:
        try:
            weir.publish(f"{self.prefix}.{msg.subject}", text)
        except weir.PublishError:
            return weir.retry()
        return weir.ack()


WitWorld = weir.export(Stateful)
