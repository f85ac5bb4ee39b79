//! The running set of listeners: started at start, changed by a reload in
//! two steps. [`ListenerSet::plan`] does everything that can fail (TLS
//! acceptors for changed certificates, sockets of added listeners) and
//! changes nothing; [`ListenerSet::commit`] applies a plan: certificates
//! swapped, added listeners started, removed ones stopped (their
//! connections drain), the connection limit moved.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{BoundListener, Serving, tls_acceptor};
use crate::config::{Config, ListenerConfig};

/// The listeners running now (the connection limit they share is in
/// `Serving`).
pub struct ListenerSet {
    serving: Arc<Serving>,
    listeners: Vec<RunningListener>,
}

/// What a reload does with the listeners: one step per configured listener.
pub struct Plan {
    steps: Vec<Step>,
    max_connections: usize,
}

/// What a reload does with one configured listener.
enum Step {
    /// Keep running listener `i`; `Some` = its certificates changed.
    Keep(usize, Option<Option<TlsAcceptor>>),
    /// A new socket, bound.
    Add(BoundListener),
}

struct RunningListener {
    /// Its socket, name, certificates and connection counts, shared with
    /// its accept loop.
    bound: Arc<BoundListener>,
    /// Its config now (a reload may have changed it since the bind).
    config: ListenerConfig,
    stop: CancellationToken,
}

impl ListenerSet {
    /// Starts serving `listeners`.
    pub fn start(serving: Arc<Serving>, listeners: Vec<BoundListener>) -> Self {
        let mut set = Self {
            serving,
            listeners: Vec::new(),
        };
        for listener in listeners {
            let running = set.spawn(listener);
            set.listeners.push(running);
        }
        set.publish_connections();
        set
    }

    /// Everything a change to `config`'s listeners needs that can fail,
    /// done before anything changes.
    pub fn plan(&self, config: &Config) -> Result<Plan, String> {
        let mut steps = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let kept = self
                .listeners
                .iter()
                .position(|r| *r.bound.name == *l.name && r.config.bind == l.bind);
            steps.push(match kept {
                Some(i) => {
                    let tls = (self.listeners[i].config.tls != l.tls)
                        .then(|| tls_acceptor(l))
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    Step::Keep(i, tls)
                }
                None => Step::Add(BoundListener::bind(l).map_err(|e| e.to_string())?),
            });
        }
        Ok(Plan {
            steps,
            max_connections: config.server.max_connections,
        })
    }

    /// Applies `plan`, made from `config`; cannot fail.
    pub fn commit(&mut self, plan: Plan, config: &Config) {
        let mut old: Vec<Option<RunningListener>> = self.listeners.drain(..).map(Some).collect();
        let mut listeners = Vec::with_capacity(plan.steps.len());
        for (step, l) in plan.steps.into_iter().zip(&config.listeners) {
            match step {
                Step::Keep(i, tls) => {
                    // Names are unique, so each old listener is kept at most once.
                    let mut running = old[i].take().expect("kept once");
                    if let Some(tls) = tls {
                        running.bound.tls.store(tls.map(Arc::new));
                        tracing::info!(listener = %l.name, "certificates replaced for new connections");
                    }
                    if running.config.defer_accept != l.defer_accept {
                        running.set_defer_accept(l.defer_accept);
                    }
                    running.config = l.clone();
                    listeners.push(running);
                }
                Step::Add(bound) => {
                    tracing::info!(listener = %bound.name, addr = %bound.local_addr, "listener added");
                    listeners.push(self.spawn(bound));
                }
            }
        }
        for removed in old.into_iter().flatten() {
            tracing::info!(listener = %removed.bound.name, "listener removed; draining its connections");
            removed.stop.cancel();
        }
        self.listeners = listeners;
        self.publish_connections();
        // Lowered, the limit holds as connections close (none is closed
        // for it).
        self.serving.connections.set_max(plan.max_connections);
    }

    fn spawn(&self, listener: BoundListener) -> RunningListener {
        let stop = self.serving.shutdown.child_token();
        let listener = Arc::new(listener);
        let running = RunningListener {
            bound: Arc::clone(&listener),
            config: listener.config.clone(),
            stop: stop.clone(),
        };
        // Its polls are turns: the connections one poll accepts share a
        // clock read.
        tokio::spawn(crate::clock::InTurns::new(
            listener.serve(Arc::clone(&self.serving), stop),
        ));
        running
    }

    /// Shows the running listeners' connection counts to the metrics.
    fn publish_connections(&self) {
        let Ok(mut connections) = self.serving.shared.connections.lock() else {
            return;
        };
        connections.retain(|(name, counts)| {
            let kept = self.listeners.iter().any(|l| l.bound.name == *name);
            if !kept {
                // The gauge of a removed listener would otherwise keep its last value.
                counts.open.store(0, Ordering::Relaxed);
            }
            kept
        });
        for l in &self.listeners {
            let l = &l.bound;
            if !connections.iter().any(|(name, _)| *name == l.name) {
                connections.push((Arc::clone(&l.name), Arc::clone(&l.connections)));
            }
        }
    }
}

impl RunningListener {
    /// A reload turned `defer_accept` on or off: for connections accepted
    /// from now (the option cannot fail on a listening socket where the
    /// config allows it; if it does, the listener goes on as it was).
    fn set_defer_accept(&self, on: bool) {
        match self.bound.set_defer_accept(on) {
            Ok(()) => tracing::info!(listener = %self.bound.name, on, "defer_accept changed"),
            Err(error) => {
                tracing::warn!(listener = %self.bound.name, %error, "defer_accept left as it was");
            }
        }
    }
}
