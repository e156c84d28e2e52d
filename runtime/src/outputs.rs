//! What a handler may publish. Every output passes, in this order: the subject is a concrete
//! NATS subject; it is not [`Reserved`]; it matches one of the deployment's `--output`
//! patterns and, where the node's configuration restricts the tenant, one of the tenant's
//! `output_subjects`; and none of its headers is weir's ([`check_header`]).
//!
//! Reserved subjects are the ones through which a message would reach something other than
//! a stream of the tenant's: the NATS server's `$` subjects (the JetStream API, key-value
//! buckets, object stores, advisories, the system account), replies to requests (`_INBOX…`
//! and the reply prefix of every connection the node uses), and weir's own `weir.` subjects
//! (dead letters, logs). They are refused whatever a deployment record or a node's
//! configuration says, because a record can be written straight into `weir_deployments`.
//!
//! A pattern that lies wholly in a reserved namespace (`$KV.>`, `weir.dlq.>`) is refused at
//! deploy time and by every node; a pattern that only partly covers one (`>`, `*.events`) is
//! accepted and *narrowed*: it allows every subject it matches except the reserved ones.

use crate::subject;

/// Why the NATS server's own subjects are reserved.
const SYSTEM: &str = "subjects starting with `$` belong to the NATS server (the JetStream API, \
                      key-value buckets, object stores, advisories, the system account)";
/// Why reply subjects are reserved.
const REPLIES: &str = "`_INBOX` subjects carry replies to requests";
/// Why weir's own subjects are reserved.
const WEIR: &str = "`weir.` subjects are weir's own (dead letters, logs)";

/// Subjects no handler may publish to: the fixed namespaces, and the reply prefixes of the
/// connections a node uses (its own and each tenant's), which need not look like `_INBOX`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Reply prefixes beyond `_INBOX…`, each a subject whose every continuation is reserved.
    reply_prefixes: Vec<String>,
}

/// How much of a pattern lies in reserved namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// None of it.
    Clear,
    /// Some of the subjects it matches, which are refused at run time: `--output '>'`.
    Part,
    /// All of it, for this reason: such a pattern is refused.
    Whole(String),
}

impl Reserved {
    /// The fixed namespaces, plus the subjects under each of `reply_prefixes`.
    pub fn with_reply_prefixes(reply_prefixes: impl IntoIterator<Item = String>) -> Self {
        let mut reply_prefixes: Vec<String> = reply_prefixes
            .into_iter()
            .filter(|prefix| {
                let first = prefix.split('.').next().unwrap_or("");
                !first.is_empty() && fixed_reason(first).is_none()
            })
            .collect();
        reply_prefixes.sort();
        reply_prefixes.dedup();
        Self { reply_prefixes }
    }

    /// Why no handler may publish to `subject`, if it may not.
    pub fn reason(&self, subject: &str) -> Option<String> {
        let first = subject.split('.').next().unwrap_or("");
        if let Some(reason) = fixed_reason(first) {
            return Some(reason.to_owned());
        }
        self.reply_prefixes
            .iter()
            .find(|prefix| {
                subject
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .map(|prefix| reply_prefix_reason(prefix))
    }

    /// How much of the subjects `pattern` matches are reserved.
    pub fn coverage(&self, pattern: &str) -> Coverage {
        let tokens: Vec<&str> = pattern.split('.').collect();
        // The fixed namespaces are told by the first token alone.
        match tokens[0] {
            "*" | ">" => return Coverage::Part,
            first => {
                if let Some(reason) = fixed_reason(first) {
                    return Coverage::Whole(reason.to_owned());
                }
            }
        }
        let mut coverage = Coverage::Clear;
        for prefix in &self.reply_prefixes {
            match under_prefix(prefix, &tokens) {
                Under::All => return Coverage::Whole(reply_prefix_reason(prefix)),
                Under::Some => coverage = Coverage::Part,
                Under::None => {}
            }
        }
        coverage
    }
}

/// Why a subject whose first token is `first` is reserved, if it is for that alone.
fn fixed_reason(first: &str) -> Option<&'static str> {
    if first.starts_with('$') {
        Some(SYSTEM)
    } else if first.starts_with("_INBOX") {
        Some(REPLIES)
    } else if first == "weir" {
        Some(WEIR)
    } else {
        None
    }
}

fn reply_prefix_reason(prefix: &str) -> String {
    format!("`{prefix}` is the reply prefix of a connection the node uses")
}

/// How many of the subjects a pattern matches lie under `<prefix>.>`.
enum Under {
    All,
    Some,
    None,
}

fn under_prefix(prefix: &str, pattern: &[&str]) -> Under {
    let prefix: Vec<&str> = prefix.split('.').collect();
    for (n, want) in prefix.iter().enumerate() {
        match pattern.get(n) {
            None => return Under::None,
            Some(&">") => return Under::Some,
            Some(&"*") => {}
            Some(token) if token == want => {}
            Some(_) => return Under::None,
        }
    }
    if pattern.len() == prefix.len() {
        // `<prefix>` itself is not a reply subject; only what follows it is.
        Under::None
    } else if pattern[..prefix.len()].contains(&"*") {
        Under::Some
    } else {
        Under::All
    }
}

/// Refuses an output pattern that is invalid or wholly reserved; `what` names it in the
/// error (`--output "$KV.>"`).
pub fn check_pattern(reserved: &Reserved, what: &str, pattern: &str) -> anyhow::Result<Coverage> {
    subject::validate_pattern(pattern).map_err(|e| anyhow::anyhow!("invalid {what}: {e}"))?;
    match reserved.coverage(pattern) {
        Coverage::Whole(reason) => {
            anyhow::bail!("{what} is refused: {reason}, and no handler may publish to them")
        }
        coverage => Ok(coverage),
    }
}

/// Refuses a header a handler may not set, or that is not a valid NATS header.
///
/// `Nats-*` headers tell the server how to store a message (`Nats-Msg-Id` deduplication,
/// `Nats-Expected-*` conditions, `Nats-Rollup`, `Nats-TTL`, `Nats-Schedule`, `Nats-Batch-*`…)
/// and `KV-Operation` deletes or purges key-value entries: only weir sets them, and weir sets
/// `Nats-Msg-Id` on every output itself. Names are compared without regard to case.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let shown = Shown(name);
    if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
        return Err(format!(
            "header name {shown} is not a NATS header name (printable ASCII, no ':')"
        ));
    }
    if value.contains(|c: char| c.is_control() && c != '\t') {
        return Err(format!(
            "the value of header {shown} contains a control character (such as a line break)"
        ));
    }
    // The name is ASCII by now, so its bytes compare like its characters.
    let weirs = name
        .as_bytes()
        .get(..5)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"nats-"));
    if weirs {
        return Err(format!(
            "header {shown} is refused: Nats-* headers tell the server how to store a message, \
             and only weir sets them"
        ));
    }
    if name.eq_ignore_ascii_case("kv-operation") {
        return Err(format!(
            "header {shown} is refused: it deletes or purges key-value entries"
        ));
    }
    Ok(())
}

/// Everything that decides where one deployment's handler may publish, on one node.
#[derive(Debug, Clone, Default)]
pub struct OutputRules {
    /// The deployment's `--output` patterns.
    pub deployment: Vec<String>,
    /// The tenant's `output_subjects` on this node, if the node restricts them.
    pub tenant: Option<Vec<String>>,
    /// What no handler may reach.
    pub reserved: Reserved,
}

impl OutputRules {
    /// A deployment's `patterns`, with no tenant restriction and the fixed reserved namespaces:
    /// what `weir deploy` tries a handler's `init` under.
    pub fn allowing(patterns: &[String]) -> Self {
        Self {
            deployment: patterns.to_vec(),
            tenant: None,
            reserved: Reserved::default(),
        }
    }

    /// Refuses an output, saying why: the first rule of the module's list that it breaks.
    pub fn check<'a>(
        &self,
        tenant: &str,
        subject: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        let shown = Shown(subject);
        subject::validate_publish_subject(subject)
            .map_err(|problem| format!("cannot publish to {shown}: {problem}"))?;
        if let Some(reason) = self.reserved.reason(subject) {
            return Err(format!("subject {shown} is reserved: {reason}"));
        }
        if !self
            .deployment
            .iter()
            .any(|pattern| subject::matches(pattern, subject))
        {
            return Err(format!(
                "subject {shown} is not among the deployment's allowed outputs {:?}",
                self.deployment
            ));
        }
        if let Some(allowed) = &self.tenant
            && !allowed
                .iter()
                .any(|pattern| subject::matches(pattern, subject))
        {
            return Err(format!(
                "subject {shown} is outside tenant {tenant}'s allowed outputs {allowed:?}"
            ));
        }
        for (name, value) in headers {
            check_header(name, value)?;
        }
        Ok(())
    }
}

/// A subject or header name as an error shows it: quoted, and cut short if it is long, so that the reason
/// after it survives the first KiB a dead letter keeps of an error.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN_CHARS: usize = 80;
        match self.0.char_indices().nth(SHOWN_CHARS) {
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // A failed expectation is a failed test here.
mod tests {
    use super::*;

    fn reserved() -> Reserved {
        Reserved::with_reply_prefixes(["acme.replies".to_owned(), "_INBOX_acme".to_owned()])
    }

    #[test]
    fn the_servers_replies_and_weirs_subjects_are_reserved() {
        let reserved = reserved();
        for subject in [
            "$JS.API.STREAM.DELETE.ORDERS",
            "$KV.weir_deployments.globex.payments",
            "$O.weir_artifacts_acme.M.abc",
            "$SYS.REQ.SERVER.PING",
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.IN.c",
            "$JSC.R.x",
            "_INBOX.abc",
            "_INBOX_globex.abc",
            "weir.dlq.acme.orders.ORDERS.7",
            "weir.logs.acme.orders.0",
            "acme.replies.x",
        ] {
            assert!(
                reserved.reason(subject).is_some(),
                "{subject} is not reserved"
            );
        }
        for subject in [
            "orders.c1",
            "weirdo.x",
            "acme.replies",
            "acme.repliesx.y",
            "x.$KV",
        ] {
            assert_eq!(reserved.reason(subject), None, "{subject} is reserved");
        }
    }

    #[test]
    fn a_pattern_is_refused_only_when_every_subject_it_matches_is_reserved() {
        let reserved = reserved();
        for pattern in [
            "$KV.>",
            "$KV.weir_deployments.>",
            "$O.*.>",
            "$JS.API.>",
            "$SYS.>",
            "_INBOX.>",
            "_INBOX_x.*",
            "weir.>",
            "weir.dlq.>",
            "acme.replies.>",
            "acme.replies.*",
        ] {
            assert!(
                matches!(reserved.coverage(pattern), Coverage::Whole(_)),
                "{pattern} is not wholly reserved"
            );
        }
        for pattern in [">", "*.>", "*.created", "acme.>", "acme.*.x", "*.replies.x"] {
            assert_eq!(reserved.coverage(pattern), Coverage::Part, "{pattern}");
        }
        for pattern in ["orders.>", "acme.replies", "acme.other.>", "weirdo.>"] {
            assert_eq!(reserved.coverage(pattern), Coverage::Clear, "{pattern}");
        }
    }

    #[test]
    fn refused_patterns_say_why() {
        let error = check_pattern(&Reserved::default(), "--output \"$KV.>\"", "$KV.>")
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "--output \"$KV.>\" is refused: subjects starting with `$` belong to the NATS server \
             (the JetStream API, key-value buckets, object stores, advisories, the system \
             account), and no handler may publish to them"
        );
        assert!(check_pattern(&Reserved::default(), "x", "a.>.b").is_err());
        assert_eq!(
            check_pattern(&Reserved::default(), "x", ">").ok(),
            Some(Coverage::Part)
        );
    }

    #[test]
    fn reply_prefixes_already_reserved_are_not_kept_twice() {
        let reserved = Reserved::with_reply_prefixes([
            "_INBOX".to_owned(),
            "_INBOX_acme".to_owned(),
            "a.b".to_owned(),
            "a.b".to_owned(),
        ]);
        assert_eq!(reserved.reply_prefixes, vec!["a.b".to_owned()]);
    }

    #[test]
    fn weirs_headers_are_refused_whatever_their_case() {
        for name in [
            "Nats-Msg-Id",
            "nats-msg-id",
            "Nats-Rollup",
            "Nats-TTL",
            "Nats-Expected-Last-Subject-Sequence",
            "Nats-Schedule",
            "Nats-Batch-Id",
            "NATS-ANYTHING",
            "KV-Operation",
            "kv-operation",
        ] {
            let error = check_header(name, "x").expect_err(name);
            assert!(error.contains("is refused"), "{name}: {error}");
        }
        assert!(check_header("Content-Type", "application/json").is_ok());
        assert!(check_header("Natsy", "x").is_ok());
    }

    #[test]
    fn headers_that_would_break_the_protocol_are_refused() {
        for (name, value) in [("", "x"), ("a b", "x"), ("a:b", "x"), ("é", "x")] {
            assert!(check_header(name, value).is_err(), "{name:?}");
        }
        for value in ["a\r\nNats-Rollup: all", "a\nb", "a\0b"] {
            assert!(check_header("x", value).is_err(), "{value:?}");
        }
        assert!(check_header("x", "tab\tand spaces, ünïcode").is_ok());
    }

    #[test]
    fn an_output_passes_every_rule_or_is_refused_by_the_first_it_breaks() {
        let rules = OutputRules {
            deployment: vec![">".to_owned()],
            tenant: Some(vec!["acme.>".to_owned(), "$KV.>".to_owned()]),
            reserved: reserved(),
        };
        assert_eq!(rules.check("acme", "acme.out", [("k", "v")]), Ok(()));
        let refused = |subject: &str, headers: &[(&str, &str)]| {
            rules
                .check("acme", subject, headers.iter().copied())
                .expect_err(subject)
        };
        assert!(refused("acme.*", &[]).starts_with("cannot publish to \"acme.*\""));
        assert!(refused("$KV.b.k", &[]).starts_with("subject \"$KV.b.k\" is reserved"));
        assert!(refused("acme.replies.1", &[]).contains("reply prefix"));
        assert!(refused("globex.out", &[]).contains("outside tenant acme's allowed outputs"));
        assert!(
            refused("acme.out", &[("Nats-TTL", "1s")]).contains("header \"Nats-TTL\" is refused")
        );
        let long = format!("acme.{}", "x".repeat(2000));
        let error = refused(&long, &[]);
        assert!(
            error.len() < 200 && error.ends_with("a subject can have at most 1024 bytes"),
            "{error}"
        );
    }
}
