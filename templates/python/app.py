"""{{name}}: a weir stream handler. weir hands it the messages of each partition of its input
stream one at a time, in order; for each it publishes the payload in capitals to
`<output_prefix>.<subject>` and acks, or rejects an empty message (it becomes a dead letter).

Configuration (`weir deploy --config key=value`): `output_prefix`, by default `out`.
"""

import weir


class Shout:
    def __init__(self, config: weir.Config):
        self.prefix = config.get("output_prefix", "out")
        if not self.prefix:
            raise ValueError("output_prefix must not be empty")

    def handle(self, msg: weir.Message) -> weir.Outcome:
        if not msg.payload:
            return weir.reject("empty message")
        # A refused publish raises weir.PublishError, and the call fails whatever it answers.
        weir.publish(f"{self.prefix}.{msg.subject}", msg.payload.upper())
        return weir.ack()


WitWorld = weir.export(Shout)
