//! SIGHUP: installed early, so that a signal sent as soon as fulcrum is up
//! reloads instead of ending the process.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Reloader;

/// The SIGHUP handler, installed early (see [`Hangup::install`]).
pub struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangup {
    /// Installs the handler; from now on SIGHUP no longer terminates the
    /// process. Must run inside the runtime.
    pub fn install() -> Option<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(signal) => Some(Self { signal }),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGHUP; reload with POST /reload");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        None
    }
}

/// Reloads on every SIGHUP until `stop`.
pub async fn on_sighup(hangup: Hangup, reloader: Arc<Reloader>, stop: CancellationToken) {
    #[cfg(unix)]
    {
        let mut hup = hangup.signal;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading");
                    let reloader = Arc::clone(&reloader);
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                () = stop.cancelled() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangup, reloader, stop);
    }
}
