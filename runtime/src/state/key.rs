//! A handler's keys as KV keys: any UTF-8 string of 1 to [`MAX_KEY_BYTES`] bytes becomes one
//! subject token. Letters, digits, `-`, `_` and `/` stand for themselves; every other byte
//! (`.` and `=` among them) is written `=XX`, in upper-case hex.

/// The longest key a handler may use, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The KV token of `key`, or `None` if it cannot be a key (empty, or too long).
pub fn encode(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return None;
    }
    let mut token = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("={byte:02X}"));
        }
    }
    Some(token)
}

/// The key a token stands for; `None` for a token [`encode`] does not write.
pub fn decode(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            let decoded = u8::from_str_radix(hex, 16).ok()?;
            if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'_' | b'/') {
                return None;
            }
            bytes.push(decoded);
            rest = &tail[2..];
        } else if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    let key = String::from_utf8(bytes).ok()?;
    (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_one_token_and_comes_back_unchanged() -> anyhow::Result<()> {
        for key in [
            "c42",
            "customer.c42.total",
            "a=b",
            "ünïcode ✓",
            "/-_",
            "x".repeat(256).as_str(),
        ] {
            let token = encode(key).ok_or_else(|| anyhow::anyhow!("{key:?} refused"))?;
            assert!(!token.contains('.') && !token.contains(' '), "{token}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)),
                "{token}"
            );
            assert_eq!(decode(&token).as_deref(), Some(key));
        }
        assert_eq!(encode("customer.c42").as_deref(), Some("customer=2Ec42"));
        Ok(())
    }

    #[test]
    fn keys_that_cannot_be_are_refused_both_ways() {
        assert_eq!(encode(""), None);
        assert_eq!(encode(&"x".repeat(257)), None);
        for token in ["", "a.b", "=2", "=2e", "=41", "=ZZ", "=FF", "a b"] {
            assert_eq!(decode(token), None, "{token:?}");
        }
    }
}
