//! Worker threads: one current-thread tokio runtime per worker, each
//! serving the client connections handed to it, as nginx's worker processes
//! and Envoy's worker threads do. A connection stays on its worker for its
//! whole life, and so do the endpoint connections its requests use (each
//! endpoint's pool keeps one list of idle connections per worker): no task
//! moves between threads and no wake-up crosses one on the request path.
//! The main runtime accepts and hands each connection to the next worker in
//! turn; it also runs the admin API, health checks and reloads.
//!
//! With `workers = 1` there are no worker threads: the one current-thread
//! runtime does everything.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

static COUNT: AtomicUsize = AtomicUsize::new(1);

/// This thread's worker index; 0 outside the worker threads.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// How many workers serve connections (1 without worker threads).
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The running worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads. Call before the first snapshot is built:
    /// endpoint pools are sized by the worker count.
    pub fn start(n: usize) -> io::Result<Arc<Self>> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    runtime.block_on(stop.cancelled());
                    // What is left after the drain is cut, as on one runtime.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            threads.push(thread);
        }
        COUNT.store(n.max(1), Ordering::Relaxed);
        Ok(Arc::new(Self {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        }))
    }

    /// The worker to hand the next connection to, in turn.
    pub fn next(&self) -> &Handle {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[n % self.handles.len()]
    }

    /// Stops the workers (tasks still running on them are dropped) and
    /// waits for their threads.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}
