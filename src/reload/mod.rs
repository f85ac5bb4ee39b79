//! Hot reload: SIGHUP (`signal.rs`), `POST /reload` and a watch on the
//! config file's directory (`watch.rs`) all lead to [`Reloader::reload`],
//! the only writer of the snapshot after start.
//!
//! A reload first does everything that can fail: read and validate the whole
//! file, plan the listeners (TLS acceptors for changed certificates, sockets
//! of added listeners: `listener::set`), build the next snapshot (reusing
//! endpoint state by upstream and address). Only then does it commit: store
//! the snapshot, apply the listener plan, sync the health probes. A failure
//! at any step changes nothing.

mod inputs;
mod membership;
mod signal;
mod watch;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

pub use signal::{Hangup, on_sighup};
pub use watch::{DEBOUNCE, Watcher, watch};

use crate::config;
use crate::discovery::Supervisor as DiscoverySupervisor;
use crate::listener::set::ListenerSet;
use crate::listener::{BoundListener, Serving};
use crate::state::{ReloadOutcome, Shared, Snapshot};
use crate::upstream::health::Supervisor;

/// Owns the running listeners and the health-check tasks, and performs
/// reloads, one at a time.
pub struct Reloader {
    shared: Arc<Shared>,
    running: Mutex<Running>,
    /// The fingerprint of what the last attempt read (`inputs.rs`).
    last_attempt: Mutex<u64>,
}

/// What a reload changes besides the snapshot.
struct Running {
    listeners: ListenerSet,
    health: Supervisor,
    discovery: DiscoverySupervisor,
}

impl Reloader {
    /// Starts serving `listeners` and the health checks of the current
    /// snapshot; returns the reloader that owns them.
    pub fn start(
        shared: Arc<Shared>,
        serving: Arc<Serving>,
        listeners: Vec<BoundListener>,
    ) -> Arc<Self> {
        let mut health = Supervisor::default();
        let snapshot = shared.snapshot.load_full();
        health.sync(&shared, &snapshot.upstreams);
        let mut discovery = DiscoverySupervisor::default();
        discovery.sync(&shared, &snapshot.discoveries());
        let loaded = inputs::fingerprint(&shared.config_path, &Ok(shared.config_text()));
        let reloader = Arc::new(Self {
            last_attempt: Mutex::new(loaded),
            running: Mutex::new(Running {
                listeners: ListenerSet::start(serving, listeners),
                health,
                discovery,
            }),
            shared,
        });
        membership::start(&reloader.shared, Arc::downgrade(&reloader));
        reloader
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every health check and discovery task (at shutdown).
    pub fn stop_health_checks(&self) {
        let mut running = self.lock();
        running.health.stop();
        running.discovery.stop();
    }

    /// Reloads from the file (SIGHUP, `POST /reload`: always); the new
    /// generation, or why nothing changed.
    pub fn reload(&self) -> Result<u64, String> {
        let path = self.shared.config_path.clone();
        let text = read(&path);
        self.note_attempt(inputs::fingerprint(&path, &text));
        self.reload_text(&path, text)
    }

    /// Reloads only if what the config reads (its text and the files it
    /// names) differs from what the last attempt read, valid or not: the
    /// watcher's trigger, which editors, logs and unrelated files wake
    /// often. An empty file is taken as a write in progress.
    pub fn reload_if_changed(&self) -> Option<Result<u64, String>> {
        let path = self.shared.config_path.clone();
        let text = read(&path);
        if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            return None;
        }
        let fingerprint = inputs::fingerprint(&path, &text);
        if !self.note_attempt(fingerprint) {
            return None;
        }
        Some(self.reload_text(&path, text))
    }

    /// Records what an attempt reads; false if the last one read the same.
    fn note_attempt(&self, fingerprint: u64) -> bool {
        let mut last = self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *last, fingerprint) != fingerprint
    }

    fn reload_text(&self, path: &Path, text: Result<String, String>) -> Result<u64, String> {
        let mut running = self.lock();
        let result = text.and_then(|text| self.apply(&mut running, path, text));
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

    fn apply(&self, running: &mut Running, path: &Path, text: String) -> Result<u64, String> {
        let config = config::parse(path, &text).map_err(|e| e.to_string())?;
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
        // Everything that can fail, before anything changes.
        let plan = running.listeners.plan(&config)?;
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
        running.listeners.commit(plan, &config);
        running.health.sync(&self.shared, &snapshot.upstreams);
        running
            .discovery
            .sync(&self.shared, &snapshot.discoveries());
        membership::schedule_ramp_ends(&self.shared, &snapshot.upstreams);
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

/// The config file's text, or why it could not be read.
fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}
