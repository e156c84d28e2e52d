//! Who may deploy what: the sample configuration `examples/tenants/nats-server.conf` on a real
//! nats-server, used through the `weir` binary and through a tenant's own connection (the one a
//! node opens to run that tenant's partitions).
//!
//! Refusals are observed as the server reports them (`-ERR 'Permissions Violation …'`, kept by
//! [`Refusals`]), never by waiting for a request to time out.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesError};
use async_nats::jetstream::consumer::{
    AckPolicy, DeliverPolicy, PriorityPolicy, push::OrderedConfig,
};
use async_nats::jetstream::{self, AckKind, stream};
use futures::StreamExt as _;
use weir::connection::{Credentials, Refusal, Refusals, RefusedOperation, connect_watching};
use weir::control::ControlPlane;
use weir::embedded::{NatsServer, ServerOptions};
use weir::node::{self, NodeConfig};
use weir::partition::{self, StreamRequest};
use weir::tenants::TenantsConfig;

use crate::cli::text;
use crate::support::{PATIENCE, guest_path, key_in, wait_for};

/// A server with the sample configuration and the tenants' streams, made by the operator's
/// user.
struct Sample {
    server: NatsServer,
    /// The operator's (`weir`) connection.
    js: jetstream::Context,
}

impl Sample {
    /// [`Sample::bare`], with weir's control plane as a node makes it when it starts.
    async fn start() -> anyhow::Result<(Self, ControlPlane)> {
        let sample = Self::bare().await?;
        let control = ControlPlane::open(&sample.js).await?;
        for tenant in ["acme", "globex"] {
            control.artifacts.bucket(tenant).await?;
        }
        Ok((sample, control))
    }

    /// The server and the tenants' streams, and nothing of weir's yet.
    async fn bare() -> anyhow::Result<Self> {
        Self::bare_with(&sample_config()).await
    }

    /// [`Sample::bare`], on a server with the configuration at `config`.
    async fn bare_with(config: &Path) -> anyhow::Result<Self> {
        let server = NatsServer::start_with_config(ServerOptions::default(), config)?;
        let (client, _) = connect_watching(&server.url(), &credentials("weir")).await?;
        let js = jetstream::new(client);
        for (name, subjects, partitions) in
            [("ORDERS", "orders.*.>", 4), ("PAYMENTS", "payments.*.>", 2)]
        {
            partition::create_stream(
                &js,
                &StreamRequest {
                    name: name.into(),
                    subjects: subjects.into(),
                    partitions,
                    key_tokens: vec![],
                    replicas: 1,
                },
            )
            .await?;
        }
        for (name, subjects) in [("ACME_OUT", "acme.>"), ("GLOBEX_OUT", "globex.>")] {
            js.create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                ..Default::default()
            })
            .await?;
        }
        Ok(Self { server, js })
    }

    /// Runs `weir` as `user`, with its password and its own reply prefix.
    fn weir_as(&self, user: &str, args: &[&str]) -> Output {
        let url = self.server.url();
        let inbox = format!("_INBOX_{user}");
        let password = password(user);
        let connection = [
            "--nats-url",
            &url,
            "--user",
            user,
            "--password",
            &password,
            "--inbox-prefix",
            &inbox,
        ];
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .args(connection)
            .env_remove("NATS_URL")
            .env_remove("NATS_CREDS")
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .env_remove("NATS_INBOX_PREFIX")
            .output()
            .expect("weir runs")
    }

    /// `user` deploys the scripted guest as `<tenant>/<handler>` on `stream`.
    fn deploy_as(
        &self,
        user: &str,
        tenant: &str,
        handler: &str,
        stream: &str,
        output: &str,
    ) -> Output {
        let guest = guest_path("scripted");
        self.weir_as(
            user,
            &[
                "deploy",
                &guest.to_string_lossy(),
                "--tenant",
                tenant,
                "--name",
                handler,
                "--stream",
                stream,
                "--output",
                output,
            ],
        )
    }

    /// A connection as `user` (a tenant's, as a node opens it), with its refusals.
    async fn connect_as(&self, user: &str) -> anyhow::Result<(jetstream::Context, Refusals)> {
        let (client, refusals) = connect_watching(&self.server.url(), &credentials(user)).await?;
        Ok((jetstream::new(client), refusals))
    }

    /// How many objects (chunks and metadata) `tenant`'s artifact bucket holds.
    async fn artifact_messages(&self, tenant: &str) -> anyhow::Result<u64> {
        let mut stream = self
            .js
            .get_stream(format!("OBJ_weir_artifacts_{tenant}"))
            .await?;
        Ok(stream.info().await?.state.messages)
    }
}

fn sample_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tenants/nats-server.conf")
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

fn credentials(user: &str) -> Credentials {
    Credentials {
        user: Some(user.to_owned()),
        password: Some(password(user)),
        inbox_prefix: Some(format!("_INBOX_{user}")),
        ..Credentials::none()
    }
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "weir failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs `work` on a connection watched by `refusals` and expects the server to refuse
/// `operation` on `subject`.
async fn refused<T: std::fmt::Debug>(
    refusals: &Refusals,
    operation: RefusedOperation,
    subject: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) {
    let result = tokio::time::timeout(PATIENCE, refusals.guard("try", work))
        .await
        .unwrap_or_else(|_| panic!("neither done nor refused within {PATIENCE:?}: {subject}"));
    let error = result.expect_err(&format!("{subject} was allowed"));
    let refusal = &error
        .downcast_ref::<weir::connection::Refused>()
        .unwrap_or_else(|| panic!("{subject} failed, but was not refused: {error:#}"))
        .refusal;
    assert_eq!(
        refusal,
        &Refusal {
            operation,
            subject: subject.to_owned(),
        }
    );
}

/// Subscribes to `subject` and expects the server to refuse it.
async fn subscription_refused(js: &jetstream::Context, refusals: &Refusals, subject: &str) {
    let seen = refusals.count();
    let _subscription = js
        .client()
        .subscribe(subject.to_owned())
        .await
        .expect("subscribed");
    js.client().flush().await.expect("flushed");
    let refusal = tokio::time::timeout(PATIENCE, refusals.after(seen))
        .await
        .unwrap_or_else(|_| panic!("subscribing to {subject} was not refused"));
    assert_eq!(
        refusal,
        Refusal {
            operation: RefusedOperation::Subscribe,
            subject: subject.to_owned(),
        }
    );
}

#[tokio::test]
async fn a_tenant_deploys_and_lists_only_its_own_handlers() -> anyhow::Result<()> {
    let (sample, operator) = Sample::start().await?;
    succeeded(&sample.deploy_as("globex", "globex", "pay", "PAYMENTS", "globex.>"));
    let deployed = succeeded(&sample.deploy_as("acme", "acme", "orders", "ORDERS", "acme.>"));
    assert!(deployed.contains("deployed acme/orders"), "{deployed}");
    // A node (the operator's) runs both.
    let node = node::start(sample.js.client().clone(), NodeConfig::default()).await?;
    for id in ["acme.orders", "globex.pay"] {
        let key = format!("{id}.{}", node.id());
        wait_for(&format!("the node to run {id}"), || async {
            operator.status.get(&key).await.ok()?.map(|_| ())
        })
        .await;
    }

    let listed = succeeded(&sample.weir_as("acme", &["ls", "--json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed)?;
    let seen: Vec<(String, serde_json::Value)> = rows
        .iter()
        .map(|row| {
            let spec = &row["deployment"];
            let name = format!("{}/{}", spec["tenant"], spec["handler"]).replace('"', "");
            (name, row["nodes"][0]["node"].clone())
        })
        .collect();
    assert_eq!(
        seen,
        [("acme/orders".to_owned(), node.id().into())],
        "acme's listing: {listed}"
    );

    let published = succeeded(&sample.weir_as(
        "acme",
        &[
            "publish",
            "orders.{key}.created",
            "--count",
            "3",
            "--keys",
            "3",
        ],
    ));
    assert!(published.contains("published 3 message(s)"), "{published}");

    let status = succeeded(&sample.weir_as("acme", &["status"]));
    assert!(status.contains("acme/orders"), "{status}");
    assert!(
        !status.contains("globex"),
        "acme sees globex's status: {status}"
    );

    // The operator sees both.
    let everything = succeeded(&sample.weir_as("weir", &["ls"]));
    assert!(
        everything.contains("acme") && everything.contains("globex"),
        "{everything}"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_tenant_cannot_deploy_for_another_tenant() -> anyhow::Result<()> {
    let (sample, operator) = Sample::start().await?;
    succeeded(&sample.deploy_as("globex", "globex", "pay", "PAYMENTS", "globex.>"));
    let before = operator
        .deployments
        .entry("globex.pay")
        .await?
        .expect("globex.pay stored");
    let artifacts_before = sample.artifact_messages("globex").await?;

    for stream in ["PAYMENTS", "ORDERS"] {
        let output = sample.deploy_as("acme", "globex", "pay", stream, "globex.>");
        assert!(
            !output.status.success(),
            "acme deployed for globex on {stream}"
        );
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(
                "user \"acme\" may not deploy for tenant globex: the server refused to publish \
                 to $KV.weir_deployments.globex.pay (permissions violation)"
            ),
            "{stderr}"
        );
    }

    let after = operator
        .deployments
        .entry("globex.pay")
        .await?
        .expect("globex.pay kept");
    assert_eq!(
        (after.revision, &after.value),
        (before.revision, &before.value)
    );
    assert_eq!(sample.artifact_messages("globex").await?, artifacts_before);
    Ok(())
}

#[tokio::test]
async fn a_tenant_can_neither_read_nor_change_another_tenants_deployment() -> anyhow::Result<()> {
    let (sample, operator) = Sample::start().await?;
    succeeded(&sample.deploy_as("globex", "globex", "pay", "PAYMENTS", "globex.>"));
    succeeded(&sample.deploy_as("acme", "acme", "orders", "ORDERS", "acme.>"));
    let before = operator
        .deployments
        .entry("globex.pay")
        .await?
        .expect("globex.pay stored");
    let (js, refusals) = sample.connect_as("acme").await?;
    let acme = refusals.guard("open", ControlPlane::open(&js)).await?;
    let deployments = &acme.deployments;

    // Its own: read, and its past versions through a consumer on its own keys.
    assert!(deployments.get("acme.orders").await?.is_some());
    let history = refusals
        .guard("history", async {
            let consumer = deployments
                .stream
                .create_consumer(OrderedConfig {
                    name: Some("acme-history".into()),
                    deliver_subject: js.client().new_inbox(),
                    filter_subject: "$KV.weir_deployments.acme.orders".into(),
                    ..Default::default()
                })
                .await?;
            Ok(consumer.cached_info().num_pending)
        })
        .await?;
    assert_eq!(history, 1);

    // Globex's: not read, not listed through a consumer, not overwritten, not deleted.
    let key = "$KV.weir_deployments.globex.pay";
    refused(
        &refusals,
        RefusedOperation::Publish,
        &format!("$JS.API.DIRECT.GET.KV_weir_deployments.{key}"),
        async { Ok(deployments.get("globex.pay").await?) },
    )
    .await;
    refused(
        &refusals,
        RefusedOperation::Publish,
        &format!("$JS.API.CONSUMER.CREATE.KV_weir_deployments.peek.{key}"),
        async {
            let consumer = deployments
                .stream
                .create_consumer(OrderedConfig {
                    name: Some("peek".into()),
                    deliver_subject: js.client().new_inbox(),
                    filter_subject: key.into(),
                    ..Default::default()
                })
                .await?;
            Ok(consumer.cached_info().num_pending)
        },
    )
    .await;
    refused(&refusals, RefusedOperation::Publish, key, async {
        Ok(deployments.put("globex.pay", "{}".into()).await?)
    })
    .await;
    refused(&refusals, RefusedOperation::Publish, key, async {
        Ok(deployments.delete("globex.pay").await?)
    })
    .await;
    // Nor its artifacts.
    refused(
        &refusals,
        RefusedOperation::Publish,
        "$JS.API.STREAM.INFO.OBJ_weir_artifacts_globex",
        async {
            Ok(js
                .get_object_store("weir_artifacts_globex")
                .await
                .map(|_| ())?)
        },
    )
    .await;

    let after = operator
        .deployments
        .entry("globex.pay")
        .await?
        .expect("globex.pay kept");
    assert_eq!(
        (after.revision, &after.value),
        (before.revision, &before.value)
    );
    Ok(())
}

/// The next message of a pull stream.
async fn next(messages: &mut pull::Stream) -> anyhow::Result<jetstream::Message> {
    messages
        .next()
        .await
        .expect("the pull stream goes on")
        .map_err(|e: MessagesError| anyhow::anyhow!(e))
}

/// What a partition worker does on its tenant's connection (see `worker.rs`), for a consumer
/// named like weir's on `stream`, filtered on partition 0.
fn partition_consumer(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: partition::filter_subject(0),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        max_ack_pending: 1,
        priority_groups: vec![weir::control::PRIORITY_GROUP.to_owned()],
        priority_policy: PriorityPolicy::PinnedClient,
        priority_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tenants_credentials_run_its_partitions_and_nothing_else() -> anyhow::Result<()> {
    let (sample, _) = Sample::start().await?;
    let (js, refusals) = sample.connect_as("acme").await?;
    let consumer_name = "weir_acme_x_p000";
    let key = key_in(0, 4, 0);
    for n in 0..2 {
        sample
            .js
            .publish(format!("orders.{key}.created"), format!("order {n}").into())
            .await?
            .await?;
    }

    let work = async {
        let mut orders = js.get_stream("ORDERS").await?;
        orders.info().await?;
        let consumer = orders
            .create_consumer(partition_consumer(consumer_name))
            .await?;
        let mut pins = js
            .client()
            .subscribe(format!(
                "$JS.EVENT.ADVISORY.CONSUMER.*.ORDERS.{consumer_name}"
            ))
            .await?;
        js.client().flush().await?;
        let mut messages = consumer
            .stream()
            .group(weir::control::PRIORITY_GROUP)
            .expires(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await?;

        // First message: in progress, then an output stored, then acked.
        let first = next(&mut messages).await?;
        let reply = first.reply.clone().expect("a reply subject");
        assert!(reply.starts_with("$JS.ACK.ORDERS."), "ack subject {reply}");
        let pinned = tokio::time::timeout(PATIENCE, pins.next())
            .await?
            .expect("an advisory");
        assert!(
            pinned
                .subject
                .starts_with("$JS.EVENT.ADVISORY.CONSUMER.PINNED.")
        );
        first
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        js.publish("acme.x", "output".into()).await?.await?;
        first.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;

        // Second: a nak, then, on its redelivery, a termination with a reason.
        let second = next(&mut messages).await?;
        second
            .double_ack_with(AckKind::Nak(None))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let again = next(&mut messages).await?;
        assert_eq!(again.info().map_err(|e| anyhow::anyhow!(e))?.delivered, 2);
        js.client()
            .request(
                again.reply.clone().expect("a reply subject"),
                "+TERM rejected".into(),
            )
            .await?;
        drop(messages);

        orders.consumer_info(consumer_name).await?;
        orders
            .unpin_consumer(consumer_name, weir::control::PRIORITY_GROUP)
            .await?;
        orders.reset_consumer(consumer_name, None).await?;
        orders.delete_consumer(consumer_name).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(PATIENCE, refusals.guard("run acme's partition", work)).await??;

    // Another tenant's stream, consumers and subjects are out of reach.
    refused(
        &refusals,
        RefusedOperation::Publish,
        "$JS.API.STREAM.INFO.PAYMENTS",
        async { Ok(js.get_stream("PAYMENTS").await.map(|_| ())?) },
    )
    .await;
    let payments = js.get_stream_no_info("PAYMENTS").await?;
    refused(
        &refusals,
        RefusedOperation::Publish,
        "$JS.API.CONSUMER.CREATE.PAYMENTS.weir_globex_x_p000.0.>",
        async {
            Ok(payments
                .create_consumer(partition_consumer("weir_globex_x_p000"))
                .await
                .map(|_| ())?)
        },
    )
    .await;
    refused(
        &refusals,
        RefusedOperation::Publish,
        "$JS.API.CONSUMER.INFO.PAYMENTS.weir_globex_pay_p000",
        async {
            Ok(payments
                .consumer_info("weir_globex_pay_p000")
                .await
                .map(|_| ())?)
        },
    )
    .await;
    refused(&refusals, RefusedOperation::Publish, "globex.x", async {
        Ok(js
            .publish("globex.x", "output".into())
            .await?
            .await
            .map(|_| ())?)
    })
    .await;
    subscription_refused(
        &js,
        &refusals,
        "$JS.EVENT.ADVISORY.CONSUMER.*.PAYMENTS.weir_globex_pay_p000",
    )
    .await;
    // Replies to anybody else's requests.
    subscription_refused(&js, &refusals, "_INBOX_globex.>").await;
    subscription_refused(&js, &refusals, "_INBOX.>").await;

    // acme's output is stored; nothing reached globex's.
    let mut acme_out = sample.js.get_stream("ACME_OUT").await?;
    assert_eq!(acme_out.info().await?.state.messages, 1);
    let mut globex_out = sample.js.get_stream("GLOBEX_OUT").await?;
    assert_eq!(globex_out.info().await?.state.messages, 0);
    Ok(())
}

#[tokio::test]
async fn a_tenant_is_told_that_operators_make_weirs_buckets() -> anyhow::Result<()> {
    let sample = Sample::bare().await?;
    let fails = |args: &[&str], expected: &str| {
        let output = sample.weir_as("acme", args);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "weir {args:?} succeeded");
        assert!(stderr.contains(expected), "weir {args:?} said {stderr}");
    };
    // Reading creates nothing, and finds nothing.
    assert!(succeeded(&sample.weir_as("acme", &["ls"])).contains("no deployments"));
    let guest = guest_path("scripted");
    let deploy = [
        "deploy",
        &guest.to_string_lossy(),
        "--tenant",
        "acme",
        "--name",
        "orders",
        "--stream",
        "ORDERS",
    ];
    fails(
        &deploy,
        "user \"acme\" may not deploy for tenant acme: the server refused to publish to \
         $JS.API.STREAM.CREATE.KV_weir_deployments (permissions violation); weir's buckets and \
         streams are made by its operators",
    );

    // A node made the shared buckets, but not acme's artifact bucket.
    ControlPlane::open(&sample.js).await?;
    fails(
        &deploy,
        "user \"acme\" may not deploy for tenant acme: the server refused to publish to \
         $JS.API.STREAM.CREATE.OBJ_weir_artifacts_acme (permissions violation); an operator \
         must create tenant acme's artifact bucket first",
    );
    Ok(())
}

#[tokio::test]
async fn a_tenants_handler_writes_nothing_its_tenants_own_user_may_write() -> anyhow::Result<()> {
    let (sample, control) = Sample::start().await?;
    let url = sample.server.url();
    // acme's partitions run with acme's credentials, and no restriction on its outputs but the
    // deployment's: only weir's own rules stand between the handler and what acme may write.
    let tenants = TenantsConfig::parse(
        r#"[tenants.acme]
           input_streams = ["ORDERS"]
           nats = { user = "acme", password = "acme-secret", inbox_prefix = "_INBOX_acme" }"#,
    )?;
    let (client, _) = connect_watching(&url, &credentials("weir")).await?;
    let config = NodeConfig {
        tenants,
        nats_urls: Some(url),
        ..NodeConfig::default()
    };
    let node = node::start(client, config).await?;
    let guest = guest_path("scripted");
    succeeded(&sample.weir_as(
        "acme",
        &[
            "deploy",
            &guest.to_string_lossy(),
            "--tenant",
            "acme",
            "--name",
            "orders",
            "--stream",
            "ORDERS",
            "--output",
            ">",
            "--config",
            "output_prefix=acme",
            "--max-deliver",
            "1",
        ],
    ));
    let id = weir::control::DeploymentId::new("acme", "orders")?;
    let record = control
        .deployments
        .entry(id.key())
        .await?
        .expect("acme's record");
    wait_for("the node to run acme/orders", || async {
        let value = control.status.get(id.status_key(node.id())).await.ok()??;
        let status: weir::spec::NodeStatus = serde_json::from_slice(&value).ok()?;
        (status.revision >= record.revision && status.partitions.len() == 4).then_some(())
    })
    .await;
    // The server itself takes such a write from acme's user.
    let (acme, refusals) = sample.connect_as("acme").await?;
    let rewrite = acme.publish(format!("$KV.weir_deployments.{}", id.key()), record.value);
    let rewritten = refusals
        .guard("rewrite", async { Ok(rewrite.await?.await?) })
        .await?;

    let attacks = [
        ("publish-to $KV.weir_deployments.acme.orders", "is reserved"),
        ("publish-to _INBOX_acme.forged", "is reserved"),
        (
            "publish-header acme.h Nats-Rollup all",
            "header \"Nats-Rollup\" is refused",
        ),
    ];
    for (n, (command, _)) in attacks.iter().enumerate() {
        sample
            .js
            .publish(format!("orders.{}.ev", key_in(0, 4, n)), (*command).into())
            .await?
            .await?;
    }
    sample
        .js
        .publish(format!("orders.{}.ev", key_in(0, 4, 9)), "echo fine".into())
        .await?
        .await?;

    let letters = wait_for("a dead letter for every attack", || async {
        let letters = weir::dlq::records::list(&sample.js, None, None)
            .await
            .ok()?;
        (letters.len() >= attacks.len()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), attacks.len());
    for (letter, (command, error)) in letters.iter().zip(attacks) {
        assert!(
            letter.last_error.starts_with("publish refused: ") && letter.last_error.contains(error),
            "{command}: {}",
            letter.last_error
        );
    }
    let handled = wait_for("acme's one allowed output", || async {
        let mut stream = sample.js.get_stream("ACME_OUT").await.ok()?;
        let held = stream.info().await.ok()?.state.messages;
        (held >= 1).then_some(held)
    })
    .await;
    assert_eq!(handled, 1);
    let latest = control
        .deployments
        .entry(id.key())
        .await?
        .expect("acme's record");
    assert_eq!(
        latest.revision, rewritten.sequence,
        "the handler rewrote its own deployment record"
    );
    node.shutdown().await
}

/// Runs `weir` as `user` off the test's runtime, which runs the node.
fn weir_off_runtime(sample: &Sample, user: &str, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| sample.weir_as(user, args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_its_own_handlers_lifecycle_and_nobody_elses() -> anyhow::Result<()> {
    let (sample, operator) = Sample::start().await?;
    succeeded(&sample.deploy_as("globex", "globex", "pay", "PAYMENTS", "globex.>"));
    succeeded(&sample.deploy_as("acme", "acme", "orders", "ORDERS", "acme.>"));
    // A second version, to roll back from.
    let guest = guest_path("scripted");
    let guest = guest.to_string_lossy();
    let acme = ["--tenant", "acme", "--name", "orders"];
    succeeded(&weir_off_runtime(
        &sample,
        "acme",
        &[
            &[
                "deploy", &guest, "--stream", "ORDERS", "--output", "acme.>", "--config", "tag=two",
            ][..],
            &acme,
        ]
        .concat(),
    ));
    let node = node::start(sample.js.client().clone(), NodeConfig::default()).await?;
    let id = weir::control::DeploymentId::new("acme", "orders")?;
    wait_for("the node to run acme/orders", || async {
        let status = crate::support::node_status(&operator, node.id(), &id).await?;
        (status.revision > 0 && status.partitions.len() == 4).then_some(())
    })
    .await;
    let run =
        |args: &[&str]| succeeded(&weir_off_runtime(&sample, "acme", &[args, &acme].concat()));

    assert!(run(&["pause"]).contains("paused acme/orders"));
    assert!(run(&["resume"]).contains("resumed acme/orders"));
    let versions = run(&["versions"]);
    assert_eq!(versions.lines().count(), 3, "{versions}");
    assert!(
        versions.contains(" acme "),
        "deployed by the user acme: {versions}"
    );
    assert!(run(&["rollback"]).contains("rolled acme/orders back"));
    run(&["logs"]);

    // Not globex's.
    for verb in ["pause", "versions", "logs", "undeploy"] {
        let output = weir_off_runtime(
            &sample,
            "acme",
            &[verb, "--tenant", "globex", "--name", "pay"],
        );
        assert!(!output.status.success(), "acme could {verb} globex/pay");
    }

    let undeployed = run(&["undeploy"]);
    assert!(
        undeployed.contains("4 partition consumer(s) deleted"),
        "{undeployed}"
    );
    assert!(undeployed.contains("1 stored component(s)"), "{undeployed}");
    let listed = succeeded(&weir_off_runtime(&sample, "weir", &["ls"]));
    assert!(
        !listed.contains("orders") && listed.contains("globex"),
        "{listed}"
    );
    node.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_state_is_out_of_every_other_tenants_reach() -> anyhow::Result<()> {
    let (sample, control) = Sample::start().await?;
    let url = sample.server.url();
    // acme's partitions run with acme's credentials: its state is read and committed as acme.
    let tenants = TenantsConfig::parse(
        r#"[tenants.acme]
           input_streams = ["ORDERS"]
           nats = { user = "acme", password = "acme-secret", inbox_prefix = "_INBOX_acme" }"#,
    )?;
    let (client, _) = connect_watching(&url, &credentials("weir")).await?;
    let config = NodeConfig {
        tenants,
        nats_urls: Some(url),
        ..NodeConfig::default()
    };
    let node = node::start(client, config).await?;
    let guest = guest_path("stateful");
    let acme = ["--tenant", "acme", "--name", "totals"];
    succeeded(&weir_off_runtime(
        &sample,
        "acme",
        &[
            &[
                "deploy",
                &guest.to_string_lossy(),
                "--stream",
                "ORDERS",
                "--output",
                "acme.>",
                "--config",
                "output_prefix=acme",
            ][..],
            &acme,
        ]
        .concat(),
    ));
    let id = weir::control::DeploymentId::new("acme", "totals")?;
    wait_for("the node to run acme/totals", || async {
        let status = crate::support::node_status(&control, node.id(), &id).await?;
        (status.revision > 0 && status.partitions.len() == 4).then_some(())
    })
    .await;
    let key = key_in(0, 4, 0);
    for n in [3, 4] {
        sample
            .js
            .publish(
                format!("orders.{key}.created"),
                format!("add total {n}").into(),
            )
            .await?
            .await?;
    }
    wait_for("acme's totals to be stored", || async {
        let mut out = sample.js.get_stream("ACME_OUT").await.ok()?;
        (out.info().await.ok()?.state.messages >= 2).then_some(())
    })
    .await;

    // acme reads its own state; globex may not, through weir or straight through NATS.
    let total = succeeded(&weir_off_runtime(
        &sample,
        "acme",
        &[&["state", "get", "total"][..], &acme].concat(),
    ));
    assert_eq!(total, "7\n");
    let snooped = weir_off_runtime(&sample, "globex", &[&["state", "ls"][..], &acme].concat());
    assert!(!snooped.status.success(), "globex listed acme's state");
    assert!(
        text(&snooped.stderr).contains("permissions violation"),
        "{}",
        text(&snooped.stderr)
    );
    let (globex, refusals) = sample.connect_as("globex").await?;
    let subject = "$KV.weir_state_acme.totals.p000.total".to_owned();
    refused(
        &refusals,
        RefusedOperation::Publish,
        "$JS.API.STREAM.MSG.GET.KV_weir_state_acme",
        async {
            let stream = globex.get_stream_no_info("KV_weir_state_acme").await?;
            Ok(stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .map(|_| ())?)
        },
    )
    .await;
    refused(&refusals, RefusedOperation::Publish, &subject, async {
        Ok(globex
            .publish(subject.clone(), "1000".into())
            .await?
            .await
            .map(|_| ())?)
    })
    .await;
    let still = succeeded(&weir_off_runtime(
        &sample,
        "acme",
        &[&["state", "get", "total"][..], &acme].concat(),
    ));
    assert_eq!(still, "7\n");
    node.shutdown().await
}

#[tokio::test]
async fn a_tenant_that_may_not_read_its_state_bucket_still_gets_the_rest_of_its_status()
-> anyhow::Result<()> {
    // Permissions written before weir kept state: acme's, without its state bucket.
    let rights = std::fs::read_to_string(sample_config())?;
    let without_state: String = rights
        .lines()
        .filter(|line| !line.contains("weir_state_acme"))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("nats-server.conf");
    std::fs::write(&config, without_state)?;
    let sample = Sample::bare_with(&config).await?;
    let control = ControlPlane::open(&sample.js).await?;
    control.artifacts.bucket("acme").await?;
    weir::state::StateBucket::ensure(&sample.js, "acme", 1).await?;
    // (acme itself may not deploy: `weir deploy` reads what state the handler keeps.)
    succeeded(&sample.deploy_as("weir", "acme", "orders", "ORDERS", "acme.>"));

    let status = sample.weir_as("acme", &["status"]);
    let table = succeeded(&status);
    assert!(table.contains("acme/orders version"), "{table}");
    assert!(table.contains("PARTITION"), "{table}");
    let note = text(&status.stderr);
    assert!(
        note.contains("what the handlers keep in state is not shown")
            && note.contains("permissions violation"),
        "{note}"
    );
    Ok(())
}
