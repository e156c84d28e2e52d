//! A handler written against `weir:handler@0.1.0` (`wit/0.1.0`), with the bindings alone: it
//! publishes every payload to `out.<subject>` and acks, so that the tests can show a node still
//! runs components of the first version.

wit_bindgen::generate!({
    world: "handler",
    path: "../../../wit/0.1.0",
});

struct Echo;

impl Guest for Echo {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(msg: Message) -> Outcome {
        let subject = format!("out.{}", msg.subject);
        match weir::handler::host::publish(&subject, &msg.payload, &[]) {
            Ok(()) => Outcome::Ack,
            Err(reason) => Outcome::Reject(reason),
        }
    }
}

export!(Echo);
