//! Tenants on a node: what each may use and do, read from the node's configuration file
//! (`weir node --config weir.toml`), and what the node keeps for each while it runs.
//!
//! ```toml
//! [defaults]                       # every tenant, unless its own section says otherwise
//! max_memory_per_instance = "64MiB"
//! max_memory_total = "512MiB"      # all of a tenant's instances on this node together
//! cpu_time_per_message = "2s"
//! max_instances = 16               # partitions of the tenant this node runs at once
//! max_outputs_per_call = 1000
//! max_output_bytes_per_call = "8MiB"
//! log_lines_per_second = 100
//! cpu_weight = 1                   # share of the node's guest CPU against other tenants'
//! max_window_bytes = "64MiB"      # messages one partition pulls ahead of its handler
//! max_state_value_bytes = "256KiB" # handler state (`weir:handler/state`), per partition:
//! max_state_keys = 100000          #   one value, the keys, and keys and values together;
//! max_state_bytes = "256MiB"
//! max_state_writes_per_call = 100  #   and the keys one call may set or delete (at most 999)
//! input_streams = []               # none: only tenants with a section of their own run here
//!
//! [tenants.acme]
//! input_streams = ["ORDERS"]
//! output_subjects = ["acme.>"]
//! nats = { user = "acme", password = "acme-secret", inbox_prefix = "_INBOX_acme" }
//! ```
//!
//! A deployment's own limits apply within its tenant's quotas: where it asks for more, the
//! quota is what it gets. A tenant with `nats` credentials has a connection of its own, which
//! the node uses for that tenant's consumers, acknowledgements and outputs, so the server
//! checks the tenant's permissions on every one of them too.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::{parse_duration, parse_size};
use crate::connection::{self, Credentials};
use crate::control::validate_name;
use crate::host::{BudgetQuota, DEFAULT_CPU_WEIGHT, Host, TenantBudget};
use crate::outputs::{self, Reserved};
use crate::spec::LimitsSpec;
use crate::state::{MAX_WRITES_PER_CALL, StateQuotas};

/// The quotas of a tenant with no configuration at all (a node started without `--config`).
/// Generous: they keep a runaway handler from taking the whole node, not more.
pub const DEFAULT_MAX_MEMORY_PER_INSTANCE: u64 = 256 << 20;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_MAX_MEMORY_TOTAL: u64 = 4 << 30;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_CPU_TIME_PER_MESSAGE: Duration = Duration::from_secs(30);
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_MAX_INSTANCES: u32 = 1024;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_MAX_OUTPUTS_PER_CALL: u32 = 10_000;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_MAX_OUTPUT_BYTES_PER_CALL: u64 = 64 << 20;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 1_000;
/// See [`DEFAULT_MAX_MEMORY_PER_INSTANCE`].
pub const DEFAULT_MAX_WINDOW_BYTES: u64 = 64 << 20;

/// The highest `cpu_weight`: a tenant may be given at most this many times another's share.
pub const MAX_CPU_WEIGHT: u32 = 1000;

/// What one tenant may use on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Linear memory of one instance.
    pub max_memory_per_instance: u64,
    /// Linear memory of all the tenant's instances on the node together.
    pub max_memory_total: u64,
    /// CPU time of one `init` or `handle` call.
    pub cpu_time_per_message: Duration,
    /// Partitions of the tenant the node runs at once (each has at most one instance).
    pub max_instances: u32,
    /// Outputs one call may publish.
    pub max_outputs_per_call: u32,
    /// Output bytes one call may publish.
    pub max_output_bytes_per_call: u64,
    /// Guest log lines per second over all the tenant's instances on the node.
    pub log_lines_per_second: u32,
    /// The tenant's share of the node's guest CPU when tenants want more than there is: a
    /// tenant of weight 2 gets twice the CPU of one of weight 1 (see `host::fairness`).
    pub cpu_weight: u32,
    /// Bytes of messages one partition of the tenant's may have pulled ahead of its handler
    /// (its window, in bytes; a window never holds less than one message).
    pub max_window_bytes: u64,
    /// What the tenant's handlers may keep in state, per partition.
    pub state: StateQuotas,
    /// Input streams the tenant's handlers may read; `None`: any.
    pub input_streams: Option<Vec<String>>,
    /// Subject patterns the tenant's handlers may publish to; `None`: any.
    pub output_subjects: Option<Vec<String>>,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_memory_per_instance: DEFAULT_MAX_MEMORY_PER_INSTANCE,
            max_memory_total: DEFAULT_MAX_MEMORY_TOTAL,
            cpu_time_per_message: DEFAULT_CPU_TIME_PER_MESSAGE,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_outputs_per_call: DEFAULT_MAX_OUTPUTS_PER_CALL,
            max_output_bytes_per_call: DEFAULT_MAX_OUTPUT_BYTES_PER_CALL,
            log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
            cpu_weight: DEFAULT_CPU_WEIGHT,
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            state: StateQuotas::default(),
            input_streams: None,
            output_subjects: None,
        }
    }
}

impl Quotas {
    /// What the tenant's instances share.
    pub fn budget(&self) -> BudgetQuota {
        BudgetQuota {
            max_memory_total_bytes: self.max_memory_total,
            cpu_time_per_message: self.cpu_time_per_message,
            log_lines_per_second: self.log_lines_per_second,
            cpu_weight: self.cpu_weight,
        }
    }

    /// A deployment's limits within these quotas, and a note for each limit the quotas lowered.
    pub fn clamp(&self, limits: &LimitsSpec) -> (LimitsSpec, Vec<String>) {
        let mut notes = Vec::new();
        let mut lower = |what: &str, asked: u64, quota: u64| {
            if asked > quota {
                notes.push(format!(
                    "{what} {asked} lowered to the tenant's quota of {quota}"
                ));
            }
            asked.min(quota)
        };
        let clamped = LimitsSpec {
            max_memory_bytes: lower(
                "max_memory_bytes",
                limits.max_memory_bytes,
                self.max_memory_per_instance,
            ),
            handler_timeout: limits.handler_timeout,
            max_outputs_per_call: lower(
                "max_outputs_per_call",
                limits.max_outputs_per_call.into(),
                self.max_outputs_per_call.into(),
            ) as u32,
            max_output_bytes_per_call: lower(
                "max_output_bytes_per_call",
                limits.max_output_bytes_per_call,
                self.max_output_bytes_per_call,
            ),
        };
        (clamped, notes)
    }

    /// Refuses an input stream the tenant may not read.
    pub fn check_input_stream(&self, tenant: &str, stream: &str) -> anyhow::Result<()> {
        match &self.input_streams {
            Some(allowed) if !allowed.iter().any(|s| s == stream) => anyhow::bail!(
                "tenant {tenant} may not read stream {stream} on this node (its input_streams \
                 are {allowed:?})"
            ),
            _ => Ok(()),
        }
    }
}

/// A tenant's settings: quotas, and the identity the node uses for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantPolicy {
    /// What the tenant may use.
    pub quotas: Quotas,
    /// The tenant's own NATS identity; `None`: the node's connection.
    pub credentials: Option<Credentials>,
}

/// The tenants part of a node's configuration: defaults and per-tenant sections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantsConfig {
    /// The quotas of a tenant without a section.
    pub defaults: Quotas,
    /// Tenants with a section of their own.
    pub tenants: BTreeMap<String, TenantPolicy>,
}

impl TenantsConfig {
    /// Reads a node configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the node configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid node configuration {}", path.display()))
    }

    /// Parses the text of a node configuration file.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        let defaults = file
            .defaults
            .apply_to(Quotas::default())
            .context("in [defaults]")?;
        anyhow::ensure!(
            file.defaults.nats.is_none(),
            "in [defaults]: nats credentials belong in a tenant's own section"
        );
        let mut tenants = BTreeMap::new();
        for (name, section) in file.tenants {
            validate_name("tenant", &name).with_context(|| format!("in [tenants.{name}]"))?;
            let quotas = section
                .apply_to(defaults.clone())
                .with_context(|| format!("in [tenants.{name}]"))?;
            tenants.insert(
                name,
                TenantPolicy {
                    quotas,
                    credentials: section.nats,
                },
            );
        }
        Ok(Self { defaults, tenants })
    }

    /// The policy of `tenant`: its section, or the defaults.
    pub fn policy(&self, tenant: &str) -> TenantPolicy {
        self.tenants
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| TenantPolicy {
                quotas: self.defaults.clone(),
                credentials: None,
            })
    }
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Section,
    #[serde(default)]
    tenants: BTreeMap<String, Section>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    max_memory_per_instance: Option<SizeText>,
    max_memory_total: Option<SizeText>,
    cpu_time_per_message: Option<String>,
    max_instances: Option<u32>,
    max_outputs_per_call: Option<u32>,
    max_output_bytes_per_call: Option<SizeText>,
    log_lines_per_second: Option<u32>,
    cpu_weight: Option<u32>,
    max_window_bytes: Option<SizeText>,
    max_state_value_bytes: Option<SizeText>,
    max_state_keys: Option<u64>,
    max_state_bytes: Option<SizeText>,
    max_state_writes_per_call: Option<u32>,
    input_streams: Option<Vec<String>>,
    output_subjects: Option<Vec<String>>,
    nats: Option<Credentials>,
}

/// A size written as a number of bytes or like `64MiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl SizeText {
    fn bytes(&self, key: &str) -> anyhow::Result<u64> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Text(text) => parse_size(text).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        }
    }
}

impl Section {
    /// `base` with every key this section sets, checked.
    fn apply_to(&self, base: Quotas) -> anyhow::Result<Quotas> {
        let mut quotas = base;
        if let Some(size) = &self.max_memory_per_instance {
            quotas.max_memory_per_instance = size.bytes("max_memory_per_instance")?;
        }
        if let Some(size) = &self.max_memory_total {
            quotas.max_memory_total = size.bytes("max_memory_total")?;
        }
        if let Some(text) = &self.cpu_time_per_message {
            quotas.cpu_time_per_message =
                parse_duration(text).map_err(|e| anyhow::anyhow!("cpu_time_per_message: {e}"))?;
        }
        if let Some(n) = self.max_instances {
            quotas.max_instances = n;
        }
        if let Some(n) = self.max_outputs_per_call {
            quotas.max_outputs_per_call = n;
        }
        if let Some(size) = &self.max_output_bytes_per_call {
            quotas.max_output_bytes_per_call = size.bytes("max_output_bytes_per_call")?;
        }
        if let Some(n) = self.log_lines_per_second {
            quotas.log_lines_per_second = n;
        }
        if let Some(weight) = self.cpu_weight {
            anyhow::ensure!(
                (1..=MAX_CPU_WEIGHT).contains(&weight),
                "cpu_weight: from 1 to {MAX_CPU_WEIGHT}, not {weight}"
            );
            quotas.cpu_weight = weight;
        }
        if let Some(size) = &self.max_window_bytes {
            quotas.max_window_bytes = size.bytes("max_window_bytes")?;
        }
        if let Some(size) = &self.max_state_value_bytes {
            quotas.state.max_value_bytes = size.bytes("max_state_value_bytes")?;
        }
        if let Some(n) = self.max_state_keys {
            quotas.state.max_keys = n;
        }
        if let Some(size) = &self.max_state_bytes {
            quotas.state.max_bytes = size.bytes("max_state_bytes")?;
        }
        if let Some(n) = self.max_state_writes_per_call {
            anyhow::ensure!(
                n <= MAX_WRITES_PER_CALL,
                "max_state_writes_per_call: at most {MAX_WRITES_PER_CALL} (a message's changes \
                 are committed in one atomic batch of at most 1000 messages)"
            );
            quotas.state.max_writes_per_call = n;
        }
        if let Some(streams) = &self.input_streams {
            quotas.input_streams = Some(streams.clone());
        }
        if let Some(patterns) = &self.output_subjects {
            for pattern in patterns {
                outputs::check_pattern(
                    &Reserved::default(),
                    &format!("output_subjects: {pattern:?}"),
                    pattern,
                )?;
            }
            quotas.output_subjects = Some(patterns.clone());
        }
        for (key, value) in [
            ("max_memory_per_instance", quotas.max_memory_per_instance),
            ("max_memory_total", quotas.max_memory_total),
            ("max_instances", quotas.max_instances.into()),
            ("log_lines_per_second", quotas.log_lines_per_second.into()),
            ("max_window_bytes", quotas.max_window_bytes),
            (
                "max_state_writes_per_call",
                quotas.state.max_writes_per_call.into(),
            ),
            (
                "cpu_time_per_message",
                quotas.cpu_time_per_message.as_millis() as u64,
            ),
        ] {
            anyhow::ensure!(value > 0, "{key} must be more than 0");
        }
        Ok(quotas)
    }
}

/// One tenant as a node runs it.
#[derive(Debug)]
pub struct Tenant {
    /// The tenant's name.
    pub name: String,
    /// What it may use.
    pub quotas: Quotas,
    /// The connection its consumers, acknowledgements and outputs go through: its own when
    /// it has credentials, else the node's.
    pub js: jetstream::Context,
    /// What its instances share.
    pub budget: Arc<TenantBudget>,
    /// One permit per partition the node runs for it; see [`Quotas::max_instances`].
    pub instances: Arc<Semaphore>,
    /// The subjects its handlers may never publish to, whatever their deployments allow.
    pub reserved: Reserved,
}

/// The tenants a node has met, each made once: connections opened at start for tenants with
/// credentials, the rest when their first deployment arrives.
#[derive(Debug)]
pub struct Tenants {
    config: TenantsConfig,
    host: Host,
    node_js: jetstream::Context,
    /// What no tenant's handler may publish to on this node.
    reserved: Reserved,
    met: Mutex<HashMap<String, Arc<Tenant>>>,
}

/// The prefix of `client`'s reply subjects (`_INBOX`, or its custom prefix).
fn reply_prefix(client: &async_nats::Client) -> String {
    let inbox = client.new_inbox();
    match inbox.rsplit_once('.') {
        Some((prefix, _nuid)) => prefix.to_owned(),
        None => inbox,
    }
}

impl Tenants {
    /// Opens a connection as each tenant that has credentials, to `urls`.
    pub async fn open(
        config: TenantsConfig,
        host: Host,
        node_js: jetstream::Context,
        urls: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for (name, policy) in &config.tenants {
            let Some(credentials) = &policy.credentials else {
                continue;
            };
            let urls = urls.with_context(|| {
                format!("tenant {name} has nats credentials, but the node was given no NATS URL")
            })?;
            let client = connection::connect(urls, credentials)
                .await
                .with_context(|| format!("cannot connect as tenant {name}"))?;
            clients.push((name.clone(), policy.quotas.clone(), client));
        }
        // No handler may answer a request made on any of the node's connections.
        let reserved = Reserved::with_reply_prefixes(
            std::iter::once(&node_js.client())
                .chain(clients.iter().map(|(_, _, client)| client))
                .map(reply_prefix),
        );
        let mut met = HashMap::new();
        for (name, quotas, client) in clients {
            let js = jetstream::new(client);
            let tenant = Self::make(&host, &name, quotas, js, &reserved);
            met.insert(name, Arc::new(tenant));
        }
        Ok(Self {
            config,
            host,
            node_js,
            reserved,
            met: Mutex::new(met),
        })
    }

    fn make(
        host: &Host,
        name: &str,
        quotas: Quotas,
        js: jetstream::Context,
        reserved: &Reserved,
    ) -> Tenant {
        Tenant {
            name: name.to_owned(),
            budget: host.tenant_budget(name, quotas.budget()),
            instances: Arc::new(Semaphore::new(quotas.max_instances as usize)),
            quotas,
            js,
            reserved: reserved.clone(),
        }
    }

    /// `name`'s runtime state, made on first use.
    pub fn get(&self, name: &str) -> Arc<Tenant> {
        let mut met = self.met.lock().unwrap_or_else(PoisonError::into_inner);
        met.entry(name.to_owned())
            .or_insert_with(|| {
                let quotas = self.config.policy(name).quotas;
                let js = self.node_js.clone();
                Arc::new(Self::make(&self.host, name, quotas, js, &self.reserved))
            })
            .clone()
    }

    /// Every tenant the node has met so far.
    pub fn met(&self) -> Vec<Arc<Tenant>> {
        let met = self.met.lock().unwrap_or_else(PoisonError::into_inner);
        met.values().cloned().collect()
    }

    /// Flushes what the tenants' own connections still have to send.
    pub async fn flush(&self) {
        let clients: Vec<(String, async_nats::Client)> = {
            let met = self.met.lock().unwrap_or_else(PoisonError::into_inner);
            met.values()
                .map(|t| (t.name.clone(), t.js.client()))
                .collect()
        };
        for (name, client) in clients {
            if let Err(error) = client.flush().await {
                tracing::warn!(
                    tenant = name,
                    "could not flush the tenant's connection: {error}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_reads_as_it_says() -> anyhow::Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tenants/weir.toml");
        let config = TenantsConfig::load(&path)?;
        assert_eq!(config.defaults.state.max_value_bytes, 64 << 10);
        assert_eq!(config.policy("acme").quotas.state.max_keys, 10_000);
        Ok(())
    }

    #[test]
    fn state_writes_per_call_fit_one_atomic_batch() {
        let refused = TenantsConfig::parse("[defaults]\nmax_state_writes_per_call = 1000\n");
        assert!(refused.is_err_and(|e| format!("{e:#}").contains("at most 999")));
    }

    #[test]
    fn a_tenant_section_overrides_the_defaults_key_by_key() -> anyhow::Result<()> {
        let config = TenantsConfig::parse(
            r#"
            [defaults]
            max_memory_per_instance = "32MiB"
            cpu_time_per_message = "2s"
            input_streams = []

            [tenants.acme]
            max_memory_total = 1048576
            input_streams = ["ORDERS"]
            output_subjects = ["acme.>"]
            nats = { user = "acme", password = "secret", inbox_prefix = "_INBOX_acme" }
            "#,
        )?;
        let acme = config.policy("acme");
        assert_eq!(acme.quotas.max_memory_per_instance, 32 << 20);
        assert_eq!(acme.quotas.max_memory_total, 1 << 20);
        assert_eq!(acme.quotas.cpu_time_per_message, Duration::from_secs(2));
        assert_eq!(acme.quotas.input_streams, Some(vec!["ORDERS".to_owned()]));
        assert_eq!(
            acme.credentials.and_then(|c| c.inbox_prefix).as_deref(),
            Some("_INBOX_acme")
        );
        let stranger = config.policy("stranger");
        assert_eq!(stranger.quotas.input_streams, Some(vec![]));
        assert!(stranger.credentials.is_none());
        assert!(
            stranger
                .quotas
                .check_input_stream("stranger", "ORDERS")
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        let cases = [
            (
                "[defaults]\nmax_memory = \"1MiB\"",
                "unknown field `max_memory`",
            ),
            (
                "[defaults]\nmax_memory_total = \"lots\"",
                "max_memory_total",
            ),
            (
                "[defaults]\nmax_instances = 0",
                "max_instances must be more than 0",
            ),
            (
                "[tenants.acme]\ncpu_weight = 0",
                "cpu_weight: from 1 to 1000, not 0",
            ),
            ("[tenants.Acme]\n", "invalid tenant name"),
            (
                "[tenants.acme]\noutput_subjects = [\"a..b\"]",
                "output_subjects",
            ),
            (
                "[tenants.acme]\noutput_subjects = [\"$KV.>\"]",
                "output_subjects: \"$KV.>\" is refused",
            ),
            (
                "[defaults]\nnats = { user = \"x\" }",
                "belong in a tenant's own section",
            ),
        ];
        for (text, expected) in cases {
            let Err(error) = TenantsConfig::parse(text) else {
                panic!("accepted: {text}");
            };
            let error = format!("{error:#}");
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_deployment_gets_its_limits_within_the_quotas() {
        let quotas = Quotas {
            max_memory_per_instance: 32 << 20,
            max_outputs_per_call: 10,
            ..Quotas::default()
        };
        let (limits, notes) = quotas.clamp(&LimitsSpec::default());
        assert_eq!(limits.max_memory_bytes, 32 << 20);
        assert_eq!(limits.max_outputs_per_call, 10);
        assert_eq!(
            limits.max_output_bytes_per_call,
            LimitsSpec::default().max_output_bytes_per_call
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
