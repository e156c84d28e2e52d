"""The Python conformance guest: does what tests/conformance/README.md says, through
guest-sdk/python, so that tests/conformance/vectors.json holds the Python SDK to the behaviour
of every other SDK.

Build (from the repository's root)::

    componentize-py -d wit -w handler componentize -p guest-sdk/python \\
        -p tests/guests/py-conformance app -o py-conformance.wasm
"""

from datetime import timedelta

import weir

LEVELS = {
    "trace": weir.TRACE,
    "debug": weir.DEBUG,
    "info": weir.INFO,
    "warn": weir.WARN,
    "error": weir.ERROR,
}


def is_decimal(text: str) -> bool:
    """Whether `text` is a decimal number: ASCII digits only, no sign, no spaces."""
    return text.isascii() and text.isdigit()


class Conformance:
    def __init__(self, config: weir.Config):
        if "refuse" in config:
            # weir refuses the configuration with the exception's text.
            raise ValueError(config["refuse"])
        weir.info(" ".join(["config"] + [f"{key}={value}" for key, value in config.items()]))
        self.config = config

    def handle(self, msg: weir.Message) -> weir.Outcome:
        # conformance.<action>.<rest>
        _, _, tail = msg.subject.partition(".")
        action, _, rest = tail.partition(".")
        try:
            return self.act(action, rest, msg)
        except weir.PublishError as refused:
            # The host fails a call whose publish it refused, whatever the handler answers.
            return weir.reject(f"refused: {refused}")

    def act(self, action: str, rest: str, msg: weir.Message) -> weir.Outcome:
        match action:
            case "ack":
                return weir.ack()
            case "retry":
                return weir.retry()
            case "retry-after":
                text = msg.text()
                if not is_decimal(text):
                    return weir.reject(f"not a number of milliseconds: {text}")
                return weir.retry(timedelta(milliseconds=int(text)))
            case "reject":
                return weir.reject(msg.text())
            case "echo":
                weir.publish(f"out.{rest}", msg.payload, msg.headers)
                return weir.ack()
            case "describe":
                weir.publish("out.describe", self.describe(msg))
                return weir.ack()
            case "log":
                for name, value in msg.headers:
                    if name not in LEVELS:
                        return weir.reject(f"unknown level {name}")
                    weir.log(LEVELS[name], value)
                return weir.ack()
            case "publish-to":
                weir.publish(msg.text(), b"")
                return weir.ack()
            case "many":
                text = msg.text()
                if not is_decimal(text):
                    return weir.reject(f"not a count: {text}")
                for i in range(int(text)):
                    weir.publish(f"out.many.{i}", str(i))
                return weir.ack()
            case "trap":
                raise RuntimeError(f"trap requested: {msg.payload!r}")
            case _:
                return weir.reject(f"unknown action {action}")

    def describe(self, msg: weir.Message) -> str:
        """Every field of `msg` and the configuration, one line each."""
        lines = [
            f"subject {msg.subject}",
            f"stream {msg.stream}",
            f"seq {msg.stream_seq}",
            f"partition {msg.partition}",
            f"attempt {msg.delivery_attempt}",
            f"published-at {msg.published_at}",
            f"payload {len(msg.payload)}",
        ]
        try:
            lines.append(f"text {msg.text()}")
        except UnicodeDecodeError:
            lines.append("text (not UTF-8)")
        lines += [f"header {name}: {value}" for name, value in msg.headers]
        name = msg.header("first")
        if name is not None:
            value = msg.header(name)
            lines.append(f"first {name}: {'(none)' if value is None else value}")
        lines += [f"config {key}={value}" for key, value in self.config.items()]
        return "".join(line + "\n" for line in lines)


WitWorld = weir.export(Conformance)
