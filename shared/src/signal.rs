//! Shutdown signals: SIGTERM or SIGINT cancels the token once (and says which arrived); a second
//! signal exits at once.

use futures::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio_util::sync::CancellationToken;

/// Cancel `token` on the first SIGTERM/SIGINT; exit with status 130 on the second.
pub fn install(token: CancellationToken) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    tokio::spawn(async move {
        let mut seen = false;
        while let Some(sig) = signals.next().await {
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
            if seen {
                tracing::warn!(signal = name, "second signal; exiting without draining");
                std::process::exit(130);
            }
            seen = true;
            tracing::info!(signal = name, "shutdown requested");
            token.cancel();
        }
    });
    Ok(())
}
