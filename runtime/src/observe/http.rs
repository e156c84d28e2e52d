//! The node's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Verdict};
use super::metrics::{Metrics, NodeReadings, TenantReadings};
use crate::tenants::Tenants;

/// What the endpoints read from.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub(crate) metrics: Metrics,
    pub(crate) health: Arc<Health>,
    pub(crate) client: async_nats::Client,
    pub(crate) tenants: Arc<Tenants>,
}

impl Sources {
    fn nats_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Binds `addr`, or says why it cannot.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot serve HTTP on {addr} (give another address with --http ADDR, or --http off)"
        )
    })
}

/// Serves the endpoints on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    shutdown: CancellationToken,
) {
    let router = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(sources);
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!("the HTTP endpoints stopped: {error}");
    }
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    let tenants = sources
        .tenants
        .met()
        .into_iter()
        .map(|tenant| TenantReadings {
            memory_bytes: tenant.budget.memory_in_use(),
            cpu: tenant.budget.cpu_usage(),
            partitions: (tenant.quotas.max_instances as usize)
                .saturating_sub(tenant.instances.available_permits()),
            name: tenant.name.clone(),
        })
        .collect();
    sources.metrics.set_node(NodeReadings {
        active: !sources.health.draining(),
        nats_connected: sources.nats_connected(),
        nats_connects: sources
            .client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        tenants,
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sources.metrics.encode(),
    )
}

async fn healthz(State(sources): State<Sources>) -> impl IntoResponse {
    answer(sources.health.alive())
}

async fn readyz(State(sources): State<Sources>) -> impl IntoResponse {
    answer(sources.health.ready(sources.nats_connected()))
}

fn answer(verdict: Verdict) -> impl IntoResponse {
    let status = if verdict.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(verdict))
}
