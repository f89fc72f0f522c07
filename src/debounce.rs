//! Debounce: readers repeat a code while a phone is held in front of them. A code seen again
//! within the window since it was *last seen* is not a new scan, so a phone held still for ten
//! seconds is one scan, and the same pass shown again after the window is a new one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    last_seen: HashMap<String, Instant>,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Debouncer {
            window,
            last_seen: HashMap::new(),
        }
    }

    /// Records that `code` was read at `now`; true when this is a new scan.
    pub fn is_new_scan(&mut self, code: &str, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        // Forget codes whose window has passed, so memory stays bounded by the scan rate.
        if self.last_seen.len() > 64 {
            let window = self.window;
            self.last_seen
                .retain(|_, seen| now.saturating_duration_since(*seen) < window);
        }
        match self.last_seen.insert(code.to_owned(), now) {
            Some(prev) => now.saturating_duration_since(prev) >= self.window,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_inside_the_window_are_not_new_scans() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_millis(1500));
        assert!(d.is_new_scan("A", t0));
        assert!(!d.is_new_scan("A", t0 + Duration::from_millis(200)));
        assert!(d.is_new_scan("B", t0 + Duration::from_millis(300)));
        // Held in front of the reader: each repeat extends the window.
        assert!(!d.is_new_scan("A", t0 + Duration::from_millis(1600)));
        assert!(!d.is_new_scan("A", t0 + Duration::from_millis(3000)));
        // Shown again after a pause of a full window: a new scan.
        assert!(d.is_new_scan("A", t0 + Duration::from_millis(4500)));
    }

    #[test]
    fn zero_window_disables_debounce() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        assert!(d.is_new_scan("A", t0));
        assert!(d.is_new_scan("A", t0));
    }

    #[test]
    fn old_entries_are_pruned() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_millis(10));
        for i in 0..1000 {
            d.is_new_scan(&format!("C{i}"), t0 + Duration::from_millis(i * 20));
        }
        assert!(
            d.last_seen.len() <= 66,
            "{} entries kept",
            d.last_seen.len()
        );
    }
}
