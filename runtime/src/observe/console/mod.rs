//! `weir console`: a web console of the cluster, read from NATS.
//!
//! The pages (in `assets/`, plain HTML, CSS and JavaScript modules, compiled into the binary so
//! that the console needs nothing at run time, no network included) fetch what they show from
//! this server's `/api/…`:
//!
//! - `GET /api/snapshot`: the live nodes and every deployment with its partitions and recent
//!   throughput and lag, as the [`sampler`] last read them;
//! - `GET /api/dead-letters[?tenant=T&handler=H]`, `GET /api/dead-letters/{id}` and
//!   `POST /api/dead-letters/{id}/replay`;
//! - `GET /api/logs/{tenant}/{handler}[?partition=P]`: a deployment's log lines, the last
//!   [`LOG_SINCE`] then live, as server-sent events.
//!
//! Everything shown was written by tenants (names, errors, headers, payloads, log lines): the
//! pages only ever set it as text. The server answers only requests that name it as their host
//! when it listens on loopback (so that no other site can reach it by renaming itself), and a
//! replay only with the console's own header, which another site's page cannot send.

mod sampler;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::connection::{Refusals, Refused};
use crate::control::{ControlPlane, DeploymentId};
use crate::dlq::records::{self, DeadLetter, NoDeadLetter};
use crate::logs::{self, LogLine};

/// How far back a log page starts.
pub const LOG_SINCE: Duration = Duration::from_secs(15 * 60);
/// Log pages open at once; more are refused, each holds a consumer on the server.
const MAX_LOG_PAGES: usize = 32;
/// Lines a log page may fall behind by before lines are skipped (and the page told).
const LOG_QUEUE: usize = 1024;
/// Dead letters listed, the newest.
const MAX_LISTED: usize = 500;
/// The most of a payload shown as text, and as hexadecimal when it is not UTF-8.
const PREVIEW_TEXT_BYTES: usize = 64 << 10;
const PREVIEW_HEX_BYTES: usize = 512;
/// The header a page sends with a replay.
const ACTION_HEADER: &str = "x-weir-console";

/// What the console reads from, and whose.
#[derive(Debug, Clone)]
pub struct Console {
    /// The connection.
    pub js: jetstream::Context,
    /// What the server refused on it.
    pub refusals: Refusals,
    /// The one tenant shown, or every tenant.
    pub tenant: Option<String>,
}

/// What a request is handled with.
#[derive(Debug, Clone)]
struct Pages {
    console: Arc<Console>,
    snapshots: watch::Receiver<Bytes>,
    log_pages: Arc<Semaphore>,
    stop: CancellationToken,
}

/// Serves the console on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let (sampler, snapshots) = sampler::Sampler::new(console.tenant.clone());
    let reader = console.clone();
    tokio::spawn(sampler.run(move || read_status(reader.clone()), stop.clone()));
    let pages = Pages {
        console: Arc::new(console),
        snapshots,
        log_pages: Arc::new(Semaphore::new(MAX_LOG_PAGES)),
        stop: stop.clone(),
    };
    let router = axum::Router::new()
        .route("/", get(|| asset("text/html", INDEX)))
        .route("/console.js", get(|| asset("text/javascript", SCRIPT)))
        .route("/console.css", get(|| asset("text/css", STYLE)))
        .route("/api/snapshot", get(snapshot))
        .route("/api/dead-letters", get(dead_letters))
        .route("/api/dead-letters/{id}", get(dead_letter))
        .route("/api/dead-letters/{id}/replay", post(replay))
        .route("/api/logs/{tenant}/{handler}", get(log_lines))
        .with_state(pages)
        .layer(axum::middleware::from_fn(move |request, next| {
            guard(addr, request, next)
        }));
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("the console stopped")
}

/// Binds `addr`, or says why it cannot.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve the console on {addr} (give another address with --listen ADDR)")
    })
}

async fn read_status(console: Console) -> anyhow::Result<crate::status::ClusterStatus> {
    let tenant = console.tenant.as_deref();
    let reading = async {
        match ControlPlane::existing(&console.js).await? {
            Some(control) => crate::status::read(&console.js, &control, tenant).await,
            None => Ok(crate::status::ClusterStatus::default()),
        }
    };
    console
        .refusals
        .guard("read the deployments' status", reading)
        .await
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let content_type = format!("{content_type}; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Refuses requests that another site could have made, and gives every answer the headers
/// that keep a page from loading anything but the console's own files.
async fn guard(listening: SocketAddr, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if listening.ip().is_loopback() && !host.is_some_and(|host| names_loopback(host, listening)) {
        return Failure::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this console answers only as localhost:{}",
                listening.port()
            ),
        )
        .into_response();
    }
    if request.method() != Method::GET && !is_the_consoles_own(headers, host) {
        return Failure::new(
            StatusCode::FORBIDDEN,
            "only the console's own pages may act".into(),
        )
        .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `host` (a Host header) names the loopback address the console listens on.
fn names_loopback(host: &str, listening: SocketAddr) -> bool {
    let port = listening.port().to_string();
    let Some((name, host_port)) = host.rsplit_once(':') else {
        return false;
    };
    host_port == port && matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Whether an action comes from the console's own page: it carries the console's header,
/// which a page of another origin cannot send without the console's consent (it gives none),
/// and its origin, when given, is the console's.
fn is_the_consoles_own(headers: &HeaderMap, host: Option<&str>) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let same_origin = match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        (Some(_), None) => false,
    };
    headers.contains_key(ACTION_HEADER) && same_origin
}

/// A request that failed, answered as `{"error": "…"}`.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    error: String,
}

impl Failure {
    fn new(status: StatusCode, error: String) -> Self {
        Self { status, error }
    }

    fn bad_request(error: anyhow::Error) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{error:#}"))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let status = if error.downcast_ref::<Refused>().is_some() {
            StatusCode::FORBIDDEN
        } else if error.downcast_ref::<NoDeadLetter>().is_some() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_GATEWAY
        };
        Self::new(status, format!("{error:#}"))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.error }));
        (self.status, body).into_response()
    }
}

impl Pages {
    /// Fails unless the console shows `tenant`'s deployments, as if what is not shown did not
    /// exist.
    fn shows(&self, tenant: &str, missing: impl FnOnce() -> Failure) -> Result<(), Failure> {
        match &self.console.tenant {
            Some(shown) if shown != tenant => Err(missing()),
            _ => Ok(()),
        }
    }

    async fn guarded<T>(
        &self,
        action: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> Result<T, Failure> {
        Ok(self.console.refusals.guard(action, work).await?)
    }

    /// The dead letter `id`, if it is one this console shows.
    async fn dead_letter(&self, id: u64) -> Result<DeadLetter, Failure> {
        let js = &self.console.js;
        let letter = self
            .guarded("read dead letters", records::get(js, id))
            .await?;
        self.shows(&letter.tenant, || {
            anyhow::Error::from(NoDeadLetter(id)).into()
        })?;
        Ok(letter)
    }
}

async fn snapshot(State(pages): State<Pages>) -> Response {
    let json = pages.snapshots.borrow().clone();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// Which dead letters a page lists.
#[derive(Debug, Deserialize)]
struct Selection {
    tenant: Option<String>,
    handler: Option<String>,
}

/// The dead letters listed, newest first.
#[derive(Debug, Serialize)]
struct Listed {
    /// How many there are in all.
    total: usize,
    letters: Vec<DeadLetter>,
}

async fn dead_letters(
    State(pages): State<Pages>,
    Query(selection): Query<Selection>,
) -> Result<axum::Json<Listed>, Failure> {
    let js = &pages.console.js;
    let tenant = selection
        .tenant
        .as_deref()
        .or(pages.console.tenant.as_deref());
    if let Some(tenant) = tenant {
        crate::control::validate_name("tenant", tenant).map_err(Failure::bad_request)?;
        pages.shows(tenant, || {
            Failure::new(
                StatusCode::FORBIDDEN,
                format!("this console does not show tenant {tenant}"),
            )
        })?;
    }
    if let Some(handler) = &selection.handler {
        crate::control::validate_name("handler", handler).map_err(Failure::bad_request)?;
        if tenant.is_none() {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "a handler is chosen with its tenant".into(),
            ));
        }
    }
    // Reading creates nothing: without the dead-letter stream there are no dead letters.
    if crate::control::stream_missing(js, crate::dlq::DLQ_STREAM).await {
        return Ok(axum::Json(Listed {
            total: 0,
            letters: Vec::new(),
        }));
    }
    let handler = selection.handler.as_deref();
    let mut letters = pages
        .guarded("read dead letters", records::list(js, tenant, handler))
        .await?;
    let total = letters.len();
    letters.reverse();
    letters.truncate(MAX_LISTED);
    Ok(axum::Json(Listed { total, letters }))
}

/// A dead letter with the start of its payload.
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    letter: DeadLetter,
    /// The payload, when it is UTF-8, up to [`PREVIEW_TEXT_BYTES`].
    payload_text: Option<String>,
    /// The start of the payload in hexadecimal, when it is not UTF-8.
    payload_hex: Option<String>,
    /// Whether the preview is shorter than the payload.
    payload_clipped: bool,
}

async fn dead_letter(
    State(pages): State<Pages>,
    Path(id): Path<u64>,
) -> Result<axum::Json<Shown>, Failure> {
    let letter = pages.dead_letter(id).await?;
    let (payload_text, payload_hex, payload_clipped) = match std::str::from_utf8(&letter.payload) {
        Ok(text) => {
            let preview = crate::logs::clip(text, PREVIEW_TEXT_BYTES);
            let clipped = preview.len() < text.len();
            (Some(preview.to_owned()), None, clipped)
        }
        Err(_) => {
            let start = &letter.payload[..letter.payload.len().min(PREVIEW_HEX_BYTES)];
            let hex = start.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>();
            (
                None,
                Some(hex.join(" ")),
                start.len() < letter.payload.len(),
            )
        }
    };
    Ok(axum::Json(Shown {
        letter,
        payload_text,
        payload_hex,
        payload_clipped,
    }))
}

async fn replay(
    State(pages): State<Pages>,
    Path(id): Path<u64>,
) -> Result<axum::Json<records::Replay>, Failure> {
    let letter = pages.dead_letter(id).await?;
    let action = format!("replay dead letter {id}");
    let replayed = pages
        .guarded(&action, records::replay(&pages.console.js, &letter, None))
        .await?;
    tracing::info!(
        "console: replayed dead letter {id} of {}/{} to {} as {}",
        letter.tenant,
        letter.handler,
        replayed.to,
        replayed.stored_as
    );
    Ok(axum::Json(replayed))
}

/// Which lines a log page shows.
#[derive(Debug, Deserialize)]
struct LogSelection {
    partition: Option<u32>,
}

async fn log_lines(
    State(pages): State<Pages>,
    Path((tenant, handler)): Path<(String, String)>,
    Query(selection): Query<LogSelection>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, Failure> {
    let id = DeploymentId::new(&tenant, &handler).map_err(Failure::bad_request)?;
    pages.shows(&id.tenant, || {
        Failure::new(
            StatusCode::FORBIDDEN,
            format!("this console does not show tenant {tenant}"),
        )
    })?;
    let Ok(permit) = pages.log_pages.clone().try_acquire_owned() else {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LOG_PAGES} log pages are open already; close one"),
        ));
    };
    let query = logs::Query {
        id,
        partition: selection.partition,
        since: LOG_SINCE,
        follow: true,
    };
    let (events, received) = mpsc::channel(LOG_QUEUE);
    tokio::spawn(follow_logs(pages.clone(), query, events, permit));
    let stream = futures::stream::unfold(received, |mut received| async move {
        let event = received.recv().await?;
        Some((Ok(event), received))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Sends `query`'s lines to a page as `line` events, until the page goes away or the console
/// stops. Lines the page cannot take in time are skipped and counted in a `skipped` event; a
/// failure is sent as a `problem` event, and the page then asks again.
async fn follow_logs(
    pages: Pages,
    query: logs::Query,
    events: mpsc::Sender<Event>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut skipped = 0u64;
    let mut send = |line: &LogLine| {
        if skipped > 0 {
            let note = Event::default().event("skipped").data(skipped.to_string());
            if events.try_send(note).is_ok() {
                skipped = 0;
            }
        }
        let event = Event::default().event("line").json_data(line)?;
        match events.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                skipped += 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => anyhow::bail!("the page went away"),
        }
    };
    let action = format!("read the log lines of {}", query.id);
    let reading = pages
        .console
        .refusals
        .guard(&action, logs::read(&pages.console.js, &query, &mut send));
    let failed = tokio::select! {
        result = reading => result.err(),
        () = events.closed() => None,
        () = pages.stop.cancelled() => None,
    };
    if let Some(error) = failed {
        let problem = Event::default()
            .event("problem")
            .data(format!("{error:#}"))
            .retry(Duration::from_secs(5));
        let _ = events.send(problem).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[test]
    fn a_loopback_console_answers_only_to_its_own_names() {
        for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
            assert!(names_loopback(host, loopback()), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost:9090",
            "localhost",
            "127.0.0.1.evil:8080",
        ] {
            assert!(!names_loopback(host, loopback()), "{host}");
        }
    }

    #[test]
    fn an_action_needs_the_consoles_header_and_origin() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let host = Some("localhost:8080");
        assert!(is_the_consoles_own(
            &headers(&[(ACTION_HEADER, "replay")]),
            host
        ));
        assert!(is_the_consoles_own(
            &headers(&[
                (ACTION_HEADER, "replay"),
                ("origin", "http://localhost:8080")
            ]),
            host
        ));
        assert!(!is_the_consoles_own(&headers(&[]), host));
        assert!(!is_the_consoles_own(
            &headers(&[(ACTION_HEADER, "replay"), ("origin", "http://evil.example")]),
            host
        ));
    }
}
