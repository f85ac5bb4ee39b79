//! The watch on the config file's directory: a change there reloads,
//! debounced, when the file's content differs from what is loaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Reloader;

/// How long the watcher waits for a burst of file events to end.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the config directory watched; dropping it ends the watch (the
/// task reading Linux's events ends with `stop`).
pub struct Watcher {
    #[cfg(not(target_os = "linux"))]
    _notify: notify::RecommendedWatcher,
}

/// Watches the config file's directory (so that a rename into place or a
/// symlink swap is seen) and reloads, debounced, when it changes.
///
/// On Linux, inotify with a mask of writes, renames, creations and
/// deletions only: notify's mask includes IN_OPEN, so every open of any file
/// next to the config (another server's file sent on every request, a log)
/// woke the watcher's thread, which then competed with the workers
/// (docs/performance.md measured one wake-up per two requests).
pub fn watch(
    reloader: Arc<Reloader>,
    path: PathBuf,
    stop: CancellationToken,
) -> std::io::Result<Watcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    #[cfg(target_os = "linux")]
    let watcher = {
        use futures_util::StreamExt as _;
        use inotify::{Inotify, WatchMask};
        let inotify = Inotify::init()?;
        inotify.watches().add(
            &dir,
            WatchMask::MODIFY
                | WatchMask::CLOSE_WRITE
                | WatchMask::ATTRIB
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
        )?;
        let mut events = inotify.into_event_stream([0u8; 4096])?;
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(_)) => { let _ = tx.try_send(()); }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "config watch failed; reload with SIGHUP or POST /reload");
                            return;
                        }
                        None => return,
                    },
                    () = stop.cancelled() => return,
                }
            }
        });
        Watcher {}
    };
    #[cfg(not(target_os = "linux"))]
    let watcher = {
        use notify::Watcher as _;
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    let _ = tx.try_send(());
                }
            })
            .map_err(std::io::Error::other)?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        Watcher { _notify: watcher }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = rx.recv() => if event.is_none() { return },
                () = stop.cancelled() => return,
            }
            // One save is many events: wait for the burst to end.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let reloader = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || reloader.reload_if_changed()).await;
        }
    });
    Ok(watcher)
}
