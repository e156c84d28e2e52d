//! `weir console`: see [`crate::observe::console`].

use std::net::SocketAddr;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{NatsArgs, scoped};
use crate::note;
use crate::observe::console::{self, Console};

/// `weir console` options.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to serve the console
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Only this tenant's deployments, dead letters and logs [default: every tenant's, or, for
    /// a user who may read only one tenant's, the tenant named like the user]
    #[arg(long)]
    pub tenant: Option<String>,
}

pub(super) async fn run(nats: &NatsArgs, args: ConsoleArgs) -> anyhow::Result<()> {
    let session = nats.session().await?;
    // Whose deployments this user may read is found once, as `weir ls` finds it.
    let js = &session.js;
    let tenant = scoped(&session, args.tenant.as_deref(), |tenant| async move {
        if let Some(control) = crate::control::ControlPlane::existing(js).await? {
            crate::deploy::list(&control, tenant.as_deref()).await?;
        }
        Ok(tenant)
    })
    .await?;
    let listener = console::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let shown = tenant
        .as_deref()
        .map_or_else(|| "every tenant".to_owned(), |t| format!("tenant {t}"));
    note!("weir: console of {shown} on http://{addr}/ ; Ctrl-C to stop");
    let stop = CancellationToken::new();
    let console = Console {
        js: session.js.clone(),
        refusals: session.refusals.clone(),
        tenant,
    };
    let mut serving = tokio::spawn(console::serve(listener, console, stop.clone()));
    tokio::select! {
        // It ends by itself only when it fails.
        served = &mut serving => return served?,
        signal = super::shutdown_signal() => signal?,
    }
    stop.cancel();
    serving.await?
}
