//! The membership step: the one way an upstream's endpoint set and tables
//! change after start. A discovery answer, a change of usability (health
//! checks, ejections) and the end of a slow-start ramp all end here, and a
//! reload takes the same build for every upstream (`Snapshot::build`; both
//! call `Upstream::build`): build the upstream's next endpoints and
//! tables off the request path,
//! reusing each kept endpoint's state by address, and publish a snapshot of
//! the same generation with it. Requests that started on the old snapshot
//! finish on it; an endpoint that left gets no new requests, and its pool
//! (idle connections) closes when the last of them is done.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::Reloader;
use crate::discovery::MembershipListener;
use crate::state::Shared;
use crate::upstream::Upstream;

/// Starts the task that runs the membership step for each upstream named
/// on `shared.membership`.
pub(super) fn start(shared: &Shared, reloader: Weak<Reloader>) {
    let (tx, rx) = unbounded_channel();
    if shared.membership.set(tx).is_ok() {
        tokio::spawn(serve(rx, reloader));
    }
}

async fn serve(mut rx: UnboundedReceiver<Arc<str>>, reloader: Weak<Reloader>) {
    while let Some(first) = rx.recv().await {
        // Several changes at once build each upstream once.
        let mut names = vec![first];
        while let Ok(name) = rx.try_recv() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let Some(reloader) = reloader.upgrade() else {
            return;
        };
        for name in names {
            reloader.rebuild(&name);
        }
    }
}

impl Reloader {
    /// The membership step for upstream `name` of the current snapshot.
    pub fn rebuild(&self, name: &str) {
        let mut running = self.lock();
        let current = self.shared.snapshot.load_full();
        let Some(index) = current.upstreams.iter().position(|u| *u.name == *name) else {
            return;
        };
        let old = &current.upstreams[index];
        let next = Upstream::build(&old.config, Some(old), &self.shared.metrics);
        let snapshot = Arc::new(current.with_upstream(index, next));
        self.shared.snapshot.store(Arc::clone(&snapshot));
        running.health.sync(&self.shared, &snapshot.upstreams);
        schedule_ramp_ends(&self.shared, &snapshot.upstreams[index..=index]);
    }
}

/// After a build: asks for the membership step again when each upstream's
/// first ramp ends, so its tables stop treating the endpoint as ramping.
pub(super) fn schedule_ramp_ends(shared: &Arc<Shared>, upstreams: &[Arc<Upstream>]) {
    for u in upstreams {
        if let Some(left) = u.next_ramp_end() {
            let shared = Arc::downgrade(shared);
            let name = Arc::clone(&u.name);
            tokio::spawn(async move {
                tokio::time::sleep(left + Duration::from_millis(1)).await;
                if let Some(shared) = shared.upgrade() {
                    shared.membership_changed(&name);
                }
            });
        }
    }
}
