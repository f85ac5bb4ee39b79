//! Hot reload: SIGHUP, `POST /reload` and a watch on the config file's
//! directory all lead to [`Reloader::reload`], the only writer of the
//! snapshot after start.
//!
//! A reload first does everything that can fail: read and validate the whole
//! file, build TLS acceptors for changed certificates, bind the sockets of
//! added listeners, build the next snapshot (reusing endpoint state by
//! upstream and address). Only then does it commit: store the snapshot, swap
//! certificates, start added listeners, stop removed ones (they drain), sync
//! the health probes. A failure at any step changes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ListenerConfig};
use crate::listener::{BoundListener, Connections, Serving, tls_acceptor};
use crate::state::{ReloadOutcome, Shared, Snapshot};

/// How long the watcher waits for a burst of file events to end.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Owns the running listeners and performs reloads, one at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    serving: Arc<Serving>,
    state: Mutex<Running>,
}

struct Running {
    listeners: Vec<RunningListener>,
    max_connections: usize,
}

/// What a reload does with one configured listener.
enum Plan {
    /// Keep running listener `i`; `Some` = its certificates changed.
    Keep(usize, Option<Option<TlsAcceptor>>),
    /// A new socket, bound.
    Add(BoundListener),
}

struct RunningListener {
    name: Arc<str>,
    config: ListenerConfig,
    stop: CancellationToken,
    tls: Arc<ArcSwapOption<TlsAcceptor>>,
    connections: Arc<Connections>,
}

impl Reloader {
    /// Starts serving `listeners` and returns the reloader that owns them.
    pub fn start(
        shared: Arc<Shared>,
        serving: Arc<Serving>,
        listeners: Vec<BoundListener>,
        max_connections: usize,
    ) -> Arc<Self> {
        let reloader = Arc::new(Self {
            shared,
            serving,
            state: Mutex::new(Running {
                listeners: Vec::new(),
                max_connections,
            }),
        });
        {
            let mut state = reloader.lock();
            for listener in listeners {
                let running = reloader.spawn(listener);
                state.listeners.push(running);
            }
            reloader.publish_connections(&state);
        }
        reloader
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, listener: BoundListener) -> RunningListener {
        let stop = self.serving.shutdown.child_token();
        let running = RunningListener {
            name: Arc::clone(&listener.name),
            config: listener.config.clone(),
            stop: stop.clone(),
            tls: Arc::clone(&listener.tls),
            connections: Arc::clone(&listener.connections),
        };
        tokio::spawn(listener.serve(Arc::clone(&self.serving), stop));
        running
    }

    fn publish_connections(&self, state: &Running) {
        if let Ok(mut connections) = self.shared.connections.lock() {
            connections.retain(|(name, counts)| {
                let kept = state.listeners.iter().any(|l| l.name == *name);
                if !kept {
                    // The gauge of a removed listener would otherwise keep its last value.
                    counts.open.store(0, Ordering::Relaxed);
                }
                kept
            });
            for l in &state.listeners {
                if !connections.iter().any(|(name, _)| *name == l.name) {
                    connections.push((Arc::clone(&l.name), Arc::clone(&l.connections)));
                }
            }
        }
    }

    /// Reloads from the file; the new generation, or why nothing changed.
    pub fn reload(&self) -> Result<u64, String> {
        let path = self.shared.config_path.clone();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()));
        self.reload_text(&path, text)
    }

    /// Reloads only if the file's content differs from the loaded one (the
    /// watcher's trigger: editors and unrelated files make many events). An
    /// empty file is taken as a write in progress.
    pub fn reload_if_changed(&self) -> Option<Result<u64, String>> {
        let path = self.shared.config_path.clone();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => return None,
            Ok(text) if self.shared.config_text() == text => return None,
            other => other.map_err(|e| format!("{}: cannot read: {e}", path.display())),
        };
        Some(self.reload_text(&path, text))
    }

    fn reload_text(&self, path: &Path, text: Result<String, String>) -> Result<u64, String> {
        let mut state = self.lock();
        let result = text.and_then(|text| self.apply(&mut state, path, text));
        match &result {
            Ok(generation) => {
                tracing::info!(generation, path = %path.display(), "config reloaded");
            }
            Err(error) => {
                tracing::error!(path = %path.display(), "reload failed; the old config keeps serving:\n{error}");
            }
        }
        self.shared.record_reload(ReloadOutcome {
            ok: result.is_ok(),
            at: SystemTime::now(),
            error: result.as_ref().err().cloned(),
        });
        result
    }

    fn apply(&self, state: &mut Running, path: &Path, text: String) -> Result<u64, String> {
        let config = config::parse(path, &text).map_err(|e| e.to_string())?;

        // Everything that can fail, before anything changes: one plan per
        // configured listener, in order.
        let mut plans = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let kept = state
                .listeners
                .iter()
                .position(|r| *r.name == *l.name && r.config.bind == l.bind);
            plans.push(match kept {
                Some(i) => {
                    let tls = (state.listeners[i].config.tls != l.tls)
                        .then(|| tls_acceptor(l))
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    Plan::Keep(i, tls)
                }
                None => Plan::Add(BoundListener::bind(l).map_err(|e| e.to_string())?),
            });
        }
        let previous = self.shared.snapshot.load_full();
        let generation = previous.generation + 1;
        let snapshot = Arc::new(Snapshot::build(
            &config,
            generation,
            Some(&previous),
            &self.shared.metrics,
        ));

        // Commit.
        self.shared.snapshot.store(Arc::clone(&snapshot));
        let mut old: Vec<Option<RunningListener>> = state.listeners.drain(..).map(Some).collect();
        let mut listeners = Vec::with_capacity(plans.len());
        for (plan, l) in plans.into_iter().zip(&config.listeners) {
            match plan {
                Plan::Keep(i, tls) => {
                    // Names are unique, so each old listener is kept at most once.
                    let mut running = old[i].take().expect("kept once");
                    if let Some(tls) = tls {
                        running.tls.store(tls.map(Arc::new));
                        tracing::info!(listener = %l.name, "certificates replaced for new connections");
                    }
                    running.config = l.clone();
                    listeners.push(running);
                }
                Plan::Add(bound) => {
                    tracing::info!(listener = %bound.name, addr = %bound.local_addr, "listener added");
                    listeners.push(self.spawn(bound));
                }
            }
        }
        for removed in old.into_iter().flatten() {
            tracing::info!(listener = %removed.name, "listener removed; draining its connections");
            removed.stop.cancel();
        }
        state.listeners = listeners;
        self.publish_connections(state);

        let wanted = config.server.max_connections;
        if wanted > state.max_connections {
            self.serving
                .connections
                .add_permits(wanted - state.max_connections);
        } else if wanted < state.max_connections {
            // Takes free permits now; busy ones are not handed back later.
            let mut excess = state.max_connections - wanted;
            excess -= self.serving.connections.forget_permits(excess);
            if excess > 0 {
                let semaphore = Arc::clone(&self.serving.connections);
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(excess as u32).await {
                        permits.forget();
                    }
                });
            }
        }
        state.max_connections = wanted;

        if let Ok(mut health) = self.shared.health.lock() {
            health.sync(&self.shared, &snapshot);
        }
        self.warn_about_restart_only(&config);
        self.shared.set_config_text(text);
        Ok(generation)
    }

    fn warn_about_restart_only(&self, config: &config::Config) {
        let startup = &self.shared.startup;
        if startup.admin != config.admin {
            tracing::warn!("admin settings changed; they apply after a restart");
        }
        if startup.access_log != config.access_log {
            tracing::warn!("access_log settings changed; they apply after a restart");
        }
        if startup.workers != config.server.workers {
            tracing::warn!("server.workers changed; it applies after a restart");
        }
    }
}

/// What only a restart changes, remembered from the start.
#[derive(Debug, Clone)]
pub struct Startup {
    pub admin: config::AdminConfig,
    pub access_log: config::AccessLogConfig,
    pub workers: usize,
}

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
