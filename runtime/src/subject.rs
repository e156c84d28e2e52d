//! NATS subjects: matching against patterns, and checking what a handler may publish to.

/// Whether `subject` matches `pattern`, where `*` matches one token and a final `>` matches one
/// or more tokens.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(token) = pattern_tokens.next() {
        if token == ">" && pattern_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if token == "*" || token == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Checks that `subject` is a concrete subject a message can be published to: non-empty
/// tokens, no wildcards, no whitespace.
pub fn validate_publish_subject(subject: &str) -> Result<(), &'static str> {
    validate_tokens(subject)?;
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err("a published subject cannot contain wildcards");
    }
    Ok(())
}

/// Checks that `pattern` is a valid subscription pattern: non-empty tokens without whitespace,
/// `>` only last.
pub fn validate_pattern(pattern: &str) -> Result<(), &'static str> {
    validate_tokens(pattern)?;
    let tokens: Vec<&str> = pattern.split('.').collect();
    if tokens[..tokens.len() - 1].contains(&">") {
        return Err("`>` may only be the last token");
    }
    Ok(())
}

/// Longest subject weir publishes or subscribes to. The server closes a connection whose
/// protocol line passes its `max_control_line` (4 KiB by default), and a publish line holds
/// the subject and a reply subject: one hostile output must not cost every tenant the node's
/// connection.
pub const MAX_SUBJECT_BYTES: usize = 1024;

fn validate_tokens(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("the subject is empty");
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err("a subject can have at most 1024 bytes");
    }
    if subject.chars().any(char::is_whitespace) {
        return Err("a subject cannot contain whitespace");
    }
    if subject.chars().any(char::is_control) {
        return Err("a subject cannot contain control characters");
    }
    if subject.split('.').any(str::is_empty) {
        return Err("a subject cannot have empty tokens");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_nats_subscriptions() {
        assert!(matches("enriched.>", "enriched.c1"));
        assert!(matches("enriched.>", "enriched.c1.created"));
        assert!(!matches("enriched.>", "enriched"));
        assert!(matches("enriched.*", "enriched.c1"));
        assert!(!matches("enriched.*", "enriched.c1.created"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(matches(">", "anything.at.all"));
    }

    #[test]
    fn published_subjects_must_be_concrete() {
        assert!(validate_publish_subject("enriched.c1").is_ok());
        assert!(validate_publish_subject("enriched.*").is_err());
        assert!(validate_publish_subject("enriched..c1").is_err());
        assert!(validate_publish_subject("has space").is_err());
        assert!(validate_publish_subject("").is_err());
        assert!(validate_publish_subject("a\0b").is_err());
        assert!(validate_publish_subject(&"x".repeat(MAX_SUBJECT_BYTES)).is_ok());
        assert!(validate_publish_subject(&"x".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
    }

    #[test]
    fn patterns_allow_full_wildcard_only_last() {
        assert!(validate_pattern("enriched.>").is_ok());
        assert!(validate_pattern("a.>.b").is_err());
    }
}
