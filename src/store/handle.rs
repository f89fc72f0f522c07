//! The async seam over the store (see [`StoreHandle`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Result, Store, StoreError};

/// The async seam over the store: every call runs on a blocking thread. Writes go one at a
/// time through the main connection ([`StoreHandle::run`]); reads that only look (counts for
/// the status page and the metrics, the replay's next batch) and the WAL checkpoint go
/// through a second connection ([`StoreHandle::read`]), so that a scan's write never waits
/// behind them (WAL: a reader and a checkpoint do not hold the writer up). When the store
/// cannot be opened (or was lost), each call first tries to open it again (at most every
/// 5 s) and otherwise fails with a clear error; the daemon keeps deciding meanwhile.
#[derive(Clone)]
pub struct StoreHandle {
    inner: std::sync::Arc<std::sync::Mutex<HandleState>>,
    side: std::sync::Arc<std::sync::Mutex<Option<Store>>>,
    path: PathBuf,
    /// Counts the commits that queued events for the broker (the MQTT task's wake-up).
    events_wake: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

struct HandleState {
    store: Option<Store>,
    last_attempt: Option<std::time::Instant>,
    /// The broker's copy of the events: kept, bounded, when `[mqtt]` is on (set again on
    /// a store opened anew).
    events: Option<u64>,
    /// The venue's memory (`mqtt.venue`), set again on a store opened anew.
    venue: Option<super::VenueCtx>,
}

impl StoreHandle {
    /// Opens the store at `path` (moving a corrupt file aside); on failure the handle starts
    /// without a store and retries later.
    pub fn open(path: &Path) -> StoreHandle {
        let store = Self::try_open(path);
        StoreHandle {
            inner: std::sync::Arc::new(std::sync::Mutex::new(HandleState {
                store,
                last_attempt: Some(std::time::Instant::now()),
                events: None,
                venue: None,
            })),
            side: Default::default(),
            path: path.to_owned(),
            events_wake: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Keeps the broker's copy of the events (`[mqtt]`), at most `max_pending` rows.
    pub fn keep_events(&self, max_pending: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.events = Some(max_pending);
        if let Some(s) = g.store.as_mut() {
            s.keep_events(Some(max_pending));
        }
    }

    /// Keeps the venue's memory (`mqtt.venue`).
    pub fn keep_venue(&self, ctx: super::VenueCtx) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.venue = Some(ctx.clone());
        if let Some(s) = g.store.as_mut() {
            s.keep_venue(Some(ctx));
        }
    }

    /// Changes each time a commit queued events for the broker.
    pub fn events_wake(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_wake.subscribe()
    }

    fn try_open(path: &Path) -> Option<Store> {
        match Store::open_or_quarantine(path) {
            Ok((s, None)) => Some(s),
            Ok((s, Some(aside))) => {
                tracing::error!(
                    "the scan store {} was damaged: moved aside to {} and started a new one",
                    path.display(),
                    aside.display()
                );
                Some(s)
            }
            Err(e) => {
                tracing::error!(
                    "cannot open the scan store {}: {e}; deciding by policy and retrying",
                    path.display()
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_open(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .is_some()
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T> + Send + 'static,
    {
        let (inner, side, path) = (self.inner.clone(), self.side.clone(), self.path.clone());
        let wake = self.events_wake.clone();
        tokio::task::spawn_blocking(move || {
            Self::on_main(&inner, &side, &path, |s| {
                let r = f(s);
                if s.take_new_events() {
                    wake.send_modify(|n| *n = n.wrapping_add(1));
                }
                r
            })
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    /// Runs `f` on the main connection, first trying to open it again (at most every 5 s)
    /// while it is missing.
    fn on_main<T>(
        inner: &std::sync::Mutex<HandleState>,
        side: &std::sync::Mutex<Option<Store>>,
        path: &Path,
        f: impl FnOnce(&mut Store) -> Result<T>,
    ) -> Result<T> {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.store.is_none()
            && g.last_attempt
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            g.last_attempt = Some(std::time::Instant::now());
            g.store = Self::try_open(path);
            let (events, venue) = (g.events, g.venue.clone());
            if let Some(s) = g.store.as_mut() {
                s.keep_events(events);
                s.keep_venue(venue);
            }
            // The file may be a new one: the second connection opens it afresh.
            *side.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if g.store.is_some() {
                tracing::info!("scan store {} is open again", path.display());
            }
        }
        let r = match g.store.as_mut() {
            Some(s) => f(s),
            None => Err(StoreError(format!(
                "the scan store {} is not available",
                path.display()
            ))),
        };
        crate::metrics::metrics().store_ok.set(r.is_ok() as i64);
        r
    }

    /// Makes every commit so far durable, without holding either connection: one fsync of
    /// the WAL file. A commit without fsync (`synchronous=NORMAL`) has written its frames to
    /// the WAL already; fsync makes them durable whichever descriptor it comes through. What
    /// a checkpoint has moved into the database file meanwhile was synced by the checkpoint.
    /// For the replay's marks: the scans' writes never wait for this fsync.
    pub async fn sync_wal(&self) -> Result<()> {
        let wal = super::wal_path(&self.path);
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&wal)
                .map_err(|e| StoreError(format!("cannot open {}: {e}", wal.display())))?;
            f.sync_data()
                .map_err(|e| StoreError(format!("fsync of {} failed: {e}", wal.display())))
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    /// Runs `f` on the second connection: for reads and the checkpoint, never for a write a
    /// scan waits for. Opened when first needed (after the main connection made the file);
    /// while it cannot be opened, `f` runs on the main connection instead.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let side = self.side.clone();
        let path = self.path.clone();
        let main = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = side.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() && path.exists() {
                *g = Store::open_existing(&path, true).ok();
            }
            if let Some(s) = g.as_ref() {
                let r = f(s);
                if r.as_ref()
                    .is_err_and(|e| e.0.contains("malformed") || e.0.contains("not a database"))
                {
                    // The file was replaced (moved aside): open it again next time.
                    *g = None;
                }
                return r;
            }
            drop(g);
            Self::on_main(&main, &side, &path, |s| f(s))
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sync_wal_makes_the_replays_marks_durable_through_the_wal_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let h = StoreHandle::open(&path);
        // A commit without fsync writes its frames to the WAL, which sync_wal then syncs.
        h.run(|s| s.set_meta_all(&[("k", "v".into())], 1))
            .await
            .unwrap();
        assert!(super::super::wal_path(&path).exists());
        h.sync_wal().await.unwrap();
        // No WAL file: an error that names it, never a silent success.
        let gone = StoreHandle {
            path: dir.path().join("none.db"),
            ..h.clone()
        };
        let e = gone.sync_wal().await.unwrap_err();
        assert!(e.0.contains("none.db-wal"), "{e}");
    }
}
