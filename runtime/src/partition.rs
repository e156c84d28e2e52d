//! Partitioned streams: the partition number is the first subject token, written by the
//! stream's own subject transform, with the hash nats-server uses (FNV-1a 32 of the key tokens,
//! concatenated without separator, modulo the partition count).

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

/// Stream metadata key that records the partition count (set by `weir stream create`).
pub const PARTITIONS_METADATA: &str = "weir.partitions";

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// FNV-1a, 32-bit: the hash nats-server's `partition()` transform uses.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The partition nats-server puts a message in, given its key tokens.
pub fn partition_of(key_tokens: &[&str], partitions: u32) -> u32 {
    fnv1a(key_tokens.concat().as_bytes()) % partitions.max(1)
}

/// The subject transform for a stream whose publishers use `subjects` (one pattern with at
/// least one `*`): `orders.*.>` → `{{partition(N,1)}}.orders.{{wildcard(1)}}.>`.
/// `key_tokens` are 1-based indexes among the `*` tokens; empty means the first.
pub fn transform(
    subjects: &str,
    partitions: u32,
    key_tokens: &[u32],
) -> anyhow::Result<stream::SubjectTransform> {
    crate::subject::validate_pattern(subjects)
        .map_err(|e| anyhow::anyhow!("invalid subject pattern {subjects:?}: {e}"))?;
    anyhow::ensure!(
        (1..=MAX_PARTITIONS).contains(&partitions),
        "the partition count must be between 1 and {MAX_PARTITIONS}, not {partitions}"
    );
    let wildcards = subjects.split('.').filter(|t| *t == "*").count() as u32;
    anyhow::ensure!(
        wildcards > 0,
        "subject pattern {subjects:?} has no `*` token to take the key from, e.g. `orders.*.>`"
    );
    let key_tokens = if key_tokens.is_empty() {
        vec![1]
    } else {
        key_tokens.to_vec()
    };
    if let Some(bad) = key_tokens.iter().find(|k| **k == 0 || **k > wildcards) {
        anyhow::bail!(
            "key token {bad} does not exist: {subjects:?} has {wildcards} `*` token(s), numbered from 1"
        );
    }
    let mut n = 0;
    let rewritten: Vec<String> = subjects
        .split('.')
        .map(|token| {
            if token == "*" {
                n += 1;
                format!("{{{{wildcard({n})}}}}")
            } else {
                token.to_owned()
            }
        })
        .collect();
    let keys: Vec<String> = key_tokens.iter().map(u32::to_string).collect();
    Ok(stream::SubjectTransform {
        source: subjects.to_owned(),
        destination: format!(
            "{{{{partition({partitions},{})}}}}.{}",
            keys.join(","),
            rewritten.join(".")
        ),
    })
}

/// How many partitions a stream has, or why it is not a partitioned stream.
pub fn partitions_of(config: &stream::Config) -> anyhow::Result<u32> {
    if let Some(value) = config.metadata.get(PARTITIONS_METADATA) {
        return value.parse().with_context(|| {
            format!(
                "stream {} has an invalid {PARTITIONS_METADATA} metadata value {value:?}",
                config.name
            )
        });
    }
    let destination = config
        .subject_transform
        .as_ref()
        .map(|t| t.destination.as_str())
        .unwrap_or("");
    let first = destination.split('.').next().unwrap_or("");
    let count = first
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map(str::trim)
        .and_then(|t| {
            t.strip_prefix("partition(")
                .or_else(|| t.strip_prefix("Partition("))
        })
        .and_then(|t| t.split([',', ')']).next())
        .and_then(|n| n.trim().parse().ok());
    count.with_context(|| {
        format!(
            "stream {} is not partitioned: its subject transform must put {{{{partition(N,...)}}}} first \
             (create it with `weir stream create {} --subjects '<prefix>.*.>' --partitions N`)",
            config.name, config.name
        )
    })
}

/// Splits a stored subject `7.orders.c42.created` into the partition and the subject as
/// published.
pub fn split_subject(stored: &str) -> Option<(u32, &str)> {
    let (partition, rest) = stored.split_once('.')?;
    Some((partition.parse().ok()?, rest))
}

/// The consumer filter for one partition.
pub fn filter_subject(partition: u32) -> String {
    format!("{partition}.>")
}

/// What `weir stream create` makes.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// The stream's name.
    pub name: String,
    /// The subjects publishers use, one pattern with at least one `*` (`orders.*.>`).
    pub subjects: String,
    /// How many partitions; fixed for the stream's life.
    pub partitions: u32,
    /// 1-based indexes among the `*` tokens that form the key; empty means the first.
    pub key_tokens: Vec<u32>,
    /// Stream replicas (1 on a single server, 3 on a cluster).
    pub replicas: usize,
}

/// Creates a partitioned input stream with Limits retention, so that a dead message can still
/// be read by sequence.
pub async fn create_stream(
    js: &jetstream::Context,
    request: &StreamRequest,
) -> anyhow::Result<stream::Info> {
    let transform = transform(&request.subjects, request.partitions, &request.key_tokens)?;
    let config = stream::Config {
        name: request.name.clone(),
        description: Some(format!(
            "weir: {} partitions of {}",
            request.partitions, request.subjects
        )),
        subjects: vec![request.subjects.clone()],
        subject_transform: Some(transform),
        retention: stream::RetentionPolicy::Limits,
        num_replicas: request.replicas,
        metadata: [(
            PARTITIONS_METADATA.to_owned(),
            request.partitions.to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let mut stream = js
        .create_stream(config)
        .await
        .with_context(|| format!("failed to create stream {}", request.name))?;
    Ok(stream
        .info()
        .await
        .with_context(|| format!("failed to read stream {}", request.name))?
        .clone())
}

/// The partition count of an existing input stream, with an error that says what is wrong
/// with it: it must be partitioned, and keep its messages under Limits retention, so that a
/// message that dies can still be read and copied to the dead-letter stream.
pub async fn input_stream_partitions(js: &jetstream::Context, name: &str) -> anyhow::Result<u32> {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            anyhow::bail!(
                "stream {name} does not exist (create it with `weir stream create {name} ...`)"
            )
        }
        Err(error) => {
            return Err(error).with_context(|| format!("failed to look up stream {name}"));
        }
    };
    let info = stream
        .info()
        .await
        .with_context(|| format!("failed to read stream {name}"))?;
    let retention = &info.config.retention;
    anyhow::ensure!(
        *retention == stream::RetentionPolicy::Limits,
        "stream {name} has {retention:?} retention; weir needs Limits retention, which keeps a \
         message after it is acknowledged or terminated, so that a message that dies can still \
         be copied to the dead-letter stream (create input streams with `weir stream create`)"
    );
    partitions_of(&info.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn multi_token_keys_are_concatenated_without_separator() {
        assert_eq!(
            partition_of(&["ab", "c"], 16),
            partition_of(&["a", "bc"], 16)
        );
    }

    #[test]
    fn transform_puts_the_partition_first_and_keeps_every_token() -> anyhow::Result<()> {
        let t = transform("orders.*.>", 16, &[])?;
        assert_eq!(
            t.destination,
            "{{partition(16,1)}}.orders.{{wildcard(1)}}.>"
        );
        let t = transform("a.*.*", 4, &[1, 2])?;
        assert_eq!(
            t.destination,
            "{{partition(4,1,2)}}.a.{{wildcard(1)}}.{{wildcard(2)}}"
        );
        Ok(())
    }

    #[test]
    fn transform_refuses_patterns_without_a_key() {
        assert!(transform("orders.>", 8, &[]).is_err());
        assert!(transform("orders.*", 8, &[2]).is_err());
        assert!(transform("orders.*", 0, &[]).is_err());
    }

    #[test]
    fn partition_count_is_read_from_metadata_or_the_transform() -> anyhow::Result<()> {
        let mut config = stream::Config {
            name: "ORDERS".into(),
            ..Default::default()
        };
        assert!(partitions_of(&config).is_err());
        config.subject_transform = Some(transform("orders.*.>", 12, &[])?);
        assert_eq!(partitions_of(&config)?, 12);
        config
            .metadata
            .insert(PARTITIONS_METADATA.into(), "8".into());
        assert_eq!(partitions_of(&config)?, 8);
        Ok(())
    }

    #[test]
    fn stored_subjects_split_into_partition_and_published_subject() {
        assert_eq!(
            split_subject("7.orders.c42.created"),
            Some((7, "orders.c42.created"))
        );
        assert_eq!(split_subject("orders.c42"), None);
    }
}
