//! One shutdown story, in mini-redis's manner: a watch channel that every long-lived task
//! hears, and a task set the daemon waits on.
//!
//! - [`Tasks::spawn`] runs a task until it ends or the daemon stops (it is dropped at its next
//!   await: nothing it does is half a transaction, the store's work runs to its end on the
//!   store's thread).
//! - [`Tasks::spawn_with`] hands the task its own [`Shutdown`], for a task that must finish
//!   what it is doing first (a lane finishes a commit it began).
//! - [`Tasks::stop`] tells every task and waits for them, within a bound.
//!
//! The outputs' safe state is not a task's business: the feedback owns it, and is halted
//! before anyone is told (see the order at the top of `daemon.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// A task's ear for the stop.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Returns once the daemon is stopping (at once if it already is).
    pub async fn recv(&mut self) {
        // An error means the sender is gone: that is a stop too.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

/// The daemon's long-lived tasks.
pub struct Tasks {
    tx: watch::Sender<bool>,
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Tasks {
            tx,
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// A handle to hear the stop with.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Runs `task` until it ends or the daemon stops.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let mut shutdown = self.shutdown();
        let h = self.set.spawn(async move {
            tokio::select! {
                _ = task => {}
                _ = shutdown.recv() => {}
            }
        });
        self.names.insert(h.id(), name);
    }

    /// Runs the task `make` builds with its own [`Shutdown`]: it stops when it chooses to.
    pub fn spawn_with<F>(&mut self, name: &'static str, make: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let h = self.set.spawn(make(self.shutdown()));
        self.names.insert(h.id(), name);
    }

    /// Tells every task to stop and waits up to `within` for them; returns the names of those
    /// that did not stop in time (they are dropped with the runtime).
    pub async fn stop(mut self, within: Duration) -> Vec<&'static str> {
        self.tx.send_replace(true);
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(done)) =
            tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await
        {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            self.names.remove(&id);
        }
        // What is left is still running: name it, then abort it.
        self.set.abort_all();
        let mut late: Vec<&'static str> = self.names.into_values().collect();
        late.sort_unstable();
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn every_task_hears_the_stop_and_the_careful_one_finishes_first() {
        let mut tasks = Tasks::new();
        tasks.spawn("forever", std::future::pending());
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        tasks.spawn_with("careful", move |mut shutdown| async move {
            shutdown.recv().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.store(true, Ordering::SeqCst);
        });
        let late = tasks.stop(Duration::from_secs(5)).await;
        assert!(late.is_empty(), "{late:?}");
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_will_not_stop_is_named() {
        let mut tasks = Tasks::new();
        tasks.spawn_with("stubborn", |_| std::future::pending());
        let late = tasks.stop(Duration::from_millis(50)).await;
        assert_eq!(late, ["stubborn"]);
    }
}
