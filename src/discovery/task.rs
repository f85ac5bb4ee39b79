//! One resolving task per discovered upstream, supervised: started when a
//! snapshot brings a new [`Discovery`], stopped when its upstream goes away
//! or its table changes by reload, restarted if it ever ends otherwise.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Discovery, Outcome, resolve, resolver};

/// Told when a discovered upstream's endpoint list changed.
pub trait MembershipListener: Send + Sync + 'static {
    fn membership_changed(&self, upstream: &str);
}

/// The running discovery tasks, one per [`Discovery`].
#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: Vec<(Arc<Discovery>, CancellationToken)>,
}

impl Supervisor {
    /// Runs a task for each of `wanted` and stops the others.
    pub fn sync<L: MembershipListener>(&mut self, listener: &Arc<L>, wanted: &[Arc<Discovery>]) {
        self.tasks.retain(|(d, cancel)| {
            let keep = wanted.iter().any(|w| Arc::ptr_eq(w, d));
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for d in wanted {
            if self.tasks.iter().any(|(t, _)| Arc::ptr_eq(t, d)) {
                continue;
            }
            let cancel = CancellationToken::new();
            tokio::spawn(supervise(
                Arc::clone(listener),
                Arc::clone(d),
                cancel.clone(),
            ));
            self.tasks.push((Arc::clone(d), cancel));
        }
    }

    /// Stops every task (at shutdown).
    pub fn stop(&mut self) {
        for (_, cancel) in self.tasks.drain(..) {
            cancel.cancel();
        }
    }
}

/// Runs [`run`] until cancelled; should it ever panic, logs it and starts
/// it again after min_interval.
async fn supervise<L: MembershipListener>(
    listener: Arc<L>,
    discovery: Arc<Discovery>,
    cancel: CancellationToken,
) {
    loop {
        let task = tokio::spawn(run(
            Arc::clone(&listener),
            Arc::clone(&discovery),
            cancel.clone(),
        ));
        let abort = task.abort_handle();
        tokio::select! {
            result = task => {
                if let Err(error) = result && error.is_panic() {
                    tracing::error!(upstream = %discovery.upstream, "discovery task panicked; restarting it");
                }
            }
            () = cancel.cancelled() => {
                abort.abort();
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(discovery.config.min_interval) => {}
            () = cancel.cancelled() => return,
        }
    }
}

async fn run<L: MembershipListener>(
    listener: Arc<L>,
    discovery: Arc<Discovery>,
    cancel: CancellationToken,
) {
    let mut client = None;
    loop {
        let (result, ttl) = resolve_once(&mut client, &discovery).await;
        if discovery.consider(result) == Outcome::Changed {
            listener.membership_changed(&discovery.upstream);
        }
        let pause: Duration = discovery.next_in(ttl);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// One resolution: the endpoints or why not, and the answer's TTL.
async fn resolve_once(
    client: &mut Option<hickory_resolver::TokioResolver>,
    discovery: &Discovery,
) -> (
    Result<Vec<crate::config::EndpointConfig>, String>,
    Option<Duration>,
) {
    if client.is_none() {
        match resolver(&discovery.config) {
            Ok(built) => *client = Some(built),
            Err(error) => return (Err(error), None),
        }
    }
    let Some(resolver) = client.as_ref() else {
        return (Err("no resolver".into()), None);
    };
    match resolve(resolver, &discovery.config).await {
        Ok(answer) => (Ok(answer.endpoints), Some(answer.ttl)),
        Err(error) => (Err(error), None),
    }
}
