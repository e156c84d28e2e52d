//! How weir connects to NATS: the server URLs and whose identity it presents. The command line
//! builds one [`Credentials`] from its flags; a node's configuration file gives each tenant one
//! of its own (see [`crate::tenants`]).
//!
//! The server refuses what a user may not do without answering the request: it reports a
//! permissions violation on the side (`-ERR 'Permissions Violation for Publish to "…"'`) and
//! the request itself would only time out. [`connect_watching`] keeps those reports as
//! [`Refusals`], so that a command can fail at once with what was refused ([`Refused`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// Who a connection authenticates as. Every field is optional: with none, the connection is
/// anonymous, which a server without authorization accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// A NATS credentials file (JWT and NKey seed), for servers in operator mode.
    pub creds: Option<PathBuf>,
    /// A user name, with `password`, for servers whose configuration lists users.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// Prefix of the connection's reply subjects instead of `_INBOX`, so that a user allowed
    /// to subscribe only to its own prefix cannot read other users' replies.
    pub inbox_prefix: Option<String>,
}

impl Credentials {
    /// Anonymous, or whatever the server's URL carries.
    pub fn none() -> Self {
        Self::default()
    }

    /// Who this is, for messages: the user, the credentials file, or "anonymous".
    pub fn describe(&self) -> String {
        match (&self.user, &self.creds) {
            (Some(user), _) => format!("user {user:?}"),
            (None, Some(creds)) => format!("credentials {}", creds.display()),
            (None, None) => "no credentials".to_owned(),
        }
    }
}

/// Connects to NATS at `urls` (one URL, or several separated by commas, for a cluster) as
/// `credentials`, naming both in the error. What the server refuses this connection is logged.
pub async fn connect(urls: &str, credentials: &Credentials) -> anyhow::Result<async_nats::Client> {
    Ok(connect_watching(urls, credentials).await?.0)
}

/// [`connect`], also returning the refusals the connection meets from now on.
pub async fn connect_watching(
    urls: &str,
    credentials: &Credentials,
) -> anyhow::Result<(async_nats::Client, Refusals)> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|url| {
            url.trim()
                .parse()
                .with_context(|| format!("invalid NATS URL {url:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let (refused, refusals) = tokio::sync::watch::channel(Vec::new());
    let who = credentials.describe();
    let mut options = async_nats::ConnectOptions::new()
        .name("weir")
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event
                && let Some(refusal) = Refusal::parse(text)
            {
                tracing::info!("NATS refused {who}: {refusal}");
                refused.send_modify(|seen| seen.push(refusal));
            }
            async {}
        });
    if let Some(creds) = &credentials.creds {
        options = with_creds_file(options, creds).await?;
    }
    match (&credentials.user, &credentials.password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        (Some(user), None) => anyhow::bail!("user {user:?} is given without a password"),
        (None, Some(_)) => anyhow::bail!("a password is given without a user"),
        (None, None) => {}
    }
    if let Some(prefix) = &credentials.inbox_prefix {
        options = options.custom_inbox_prefix(prefix.clone());
    }
    let client = options.connect(servers).await.with_context(|| {
        format!(
            "cannot connect to NATS at {urls} with {}",
            credentials.describe()
        )
    })?;
    Ok((
        client,
        Refusals {
            who: credentials.describe(),
            seen: refusals,
        },
    ))
}

async fn with_creds_file(
    options: async_nats::ConnectOptions,
    creds: &Path,
) -> anyhow::Result<async_nats::ConnectOptions> {
    options
        .credentials_file(creds)
        .await
        .with_context(|| format!("failed to read credentials {}", creds.display()))
}

/// What the server refused a connection: a publish (every JetStream API request is one) or a
/// subscription, for lack of permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Whether a publish or a subscription was refused.
    pub operation: RefusedOperation,
    /// The subject of the refused publish or subscription.
    pub subject: String,
}

/// See [`Refusal::operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedOperation {
    /// A publish, or a request (JetStream API calls are requests).
    Publish,
    /// A subscription, e.g. to the connection's reply subjects.
    Subscribe,
}

impl Refusal {
    /// Reads the server's report of a permissions violation (`Permissions Violation for
    /// Publish to "…"`, `… for Subscription to "…"`); `None` for any other error.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("Permissions Violation for ")?;
        let (operation, rest) = if let Some(rest) = rest.strip_prefix("Publish to ") {
            (RefusedOperation::Publish, rest)
        } else if let Some(rest) = rest.strip_prefix("Subscription to ") {
            (RefusedOperation::Subscribe, rest)
        } else if let Some(rest) = rest.strip_prefix("Publish with Reply of ") {
            (RefusedOperation::Publish, rest)
        } else {
            return None;
        };
        let subject = rest.strip_prefix('"')?.split('"').next()?;
        Some(Self {
            operation,
            subject: subject.to_owned(),
        })
    }

    /// What to do about it, where weir can tell.
    fn hint(&self) -> Option<String> {
        let created = self.subject.strip_prefix("$JS.API.STREAM.CREATE.");
        if let Some(tenant) = created.and_then(|s| s.strip_prefix("OBJ_weir_artifacts_")) {
            Some(format!(
                "an operator must create tenant {tenant}'s artifact bucket first: a node does \
                 for each tenant in its --config, and so does a `weir deploy --tenant {tenant}` \
                 run as a user with every right"
            ))
        } else if created.is_some_and(|s| s.starts_with("KV_weir_") || s.starts_with("WEIR_")) {
            Some(
                "weir's buckets and streams are made by its operators: start a node, or run a \
                 weir command as a user with every right, first"
                    .to_owned(),
            )
        } else if self.operation == RefusedOperation::Subscribe
            && self.subject.starts_with("_INBOX.")
        {
            Some(
                "give the user's own reply prefix with --inbox-prefix, e.g. _INBOX_<user>"
                    .to_owned(),
            )
        } else {
            None
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let operation = match self.operation {
            RefusedOperation::Publish => "publish to",
            RefusedOperation::Subscribe => "subscribe to",
        };
        write!(
            f,
            "the server refused to {operation} {} (permissions violation)",
            self.subject
        )?;
        if let Some(hint) = self.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// The refusals one connection met, in order, for whoever waits on them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Refusals {
    who: String,
    seen: tokio::sync::watch::Receiver<Vec<Refusal>>,
}

impl Refusals {
    /// How many refusals the connection has met so far.
    pub fn count(&self) -> usize {
        self.seen.borrow().len()
    }

    /// The first refusal after the first `seen`, once the server reports it; never, if the
    /// connection is gone.
    pub async fn after(&self, seen: usize) -> Refusal {
        let mut watch = self.seen.clone();
        // The borrowed refusals are let go of before waiting forever, so that the future is
        // `Send`.
        let refusal = watch
            .wait_for(|refusals| refusals.len() > seen)
            .await
            .map(|refusals| refusals[seen].clone());
        match refusal {
            Ok(refusal) => refusal,
            Err(_) => std::future::pending().await,
        }
    }

    /// Runs `work`, which is `action` (e.g. "deploy for tenant acme"), and fails it with
    /// [`Refused`] as soon as the server refuses anything on the connection meanwhile, rather
    /// than letting the refused request time out.
    pub async fn guard<T>(
        &self,
        action: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let seen = self.count();
        let refused = |refusal| Refused {
            who: self.who.clone(),
            action: action.to_owned(),
            refusal,
        };
        tokio::select! {
            result = work => match result {
                // A failure that followed a refusal is the refusal's doing.
                Err(_) if self.count() > seen => {
                    let refusal = self.seen.borrow()[seen].clone();
                    Err(refused(refusal).into())
                }
                result => result,
            },
            refusal = self.after(seen) => Err(refused(refusal).into()),
        }
    }
}

/// An operation the server refused: who tried to do what, and what the server refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{who} may not {action}: {refusal}")]
pub struct Refused {
    /// Whose connection it was, e.g. `user "acme"`.
    pub who: String,
    /// What it tried to do, e.g. `deploy for tenant globex`.
    pub action: String,
    /// What the server refused.
    pub refusal: Refusal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_violations_are_read_from_the_server_error() {
        assert_eq!(
            Refusal::parse(
                r#"Permissions Violation for Publish to "$KV.weir_deployments.globex.pay""#
            ),
            Some(Refusal {
                operation: RefusedOperation::Publish,
                subject: "$KV.weir_deployments.globex.pay".to_owned(),
            })
        );
        assert_eq!(
            Refusal::parse(
                r#"Permissions Violation for Subscription to "_INBOX.abc.*" using queue "q""#
            ),
            Some(Refusal {
                operation: RefusedOperation::Subscribe,
                subject: "_INBOX.abc.*".to_owned(),
            })
        );
        assert_eq!(Refusal::parse("Maximum Payload Violation"), None);
    }

    #[test]
    fn a_refusal_says_what_was_refused_and_what_to_do() {
        let refused = Refused {
            who: "user \"acme\"".to_owned(),
            action: "deploy for tenant globex".to_owned(),
            refusal: Refusal {
                operation: RefusedOperation::Publish,
                subject: "$KV.weir_deployments.globex.pay".to_owned(),
            },
        };
        assert_eq!(
            refused.to_string(),
            "user \"acme\" may not deploy for tenant globex: the server refused to publish to \
             $KV.weir_deployments.globex.pay (permissions violation)"
        );
        let creating = Refusal {
            operation: RefusedOperation::Publish,
            subject: "$JS.API.STREAM.CREATE.KV_weir_deployments".to_owned(),
        };
        assert!(creating.to_string().contains("start a node"), "{creating}");
    }
}
