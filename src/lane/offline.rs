//! The offline decision, made where its facts are: in the store's transaction, from the
//! pass cache and the pass's offline uses read there (two lanes cannot both spend a pass's
//! last use), or, without a store, from the policy alone. The verdict itself is
//! `decision::decide_offline` (pure).

use std::time::Duration;

use time::OffsetDateTime;

use crate::decision::{
    self, CacheView, OfflinePolicy, OfflineRules, PassFacts, Reason, Rules, UseChange, Verdict,
};
use crate::state::Shared;
use crate::store::{CacheEntry, Store};
use crate::venue::ledger::{self, PassRecord};

use super::row::RowBase;
use super::LaneSettings;

/// An offline verdict, and the admitted pass's `parameters` where the cache knew them (for
/// the guest screen's greeting).
pub type OfflineVerdict = (Verdict, Reason, Option<String>);

/// What the offline policy needs, taken into the store's transaction.
#[derive(Debug, Clone)]
pub struct OfflineInput {
    pub base: RowBase,
    /// What a lookup of this very scan said (it answered, the event did not go through).
    pub fresh: Option<PassFacts>,
    pub queue_full: bool,
    pub rules: Rules,
    pub offline: OfflineRules,
    pub cache_ttl: Duration,
}

impl OfflineInput {
    pub fn new(s: &LaneSettings, shared: &Shared, base: RowBase, fresh: Option<PassFacts>) -> Self {
        OfflineInput {
            base,
            fresh,
            queue_full: shared.outbox.is_full(s.max_pending),
            rules: s.rules.clone(),
            offline: s.offline,
            cache_ttl: s.cache_ttl,
        }
    }

    /// Decides from the store's cache and use counts and writes the row (replacing the row
    /// the online attempt may have written), in one transaction of the store's thread.
    pub fn decide_in(self, s: &mut Store) -> crate::store::Result<OfflineVerdict> {
        let now = crate::clock::now_ms();
        if let Some(f) = &self.fresh {
            // At the scan's time: its lookup's.
            let at = (self.base.scanned_at.unix_timestamp_nanos() / 1_000_000) as i64;
            s.cache_put(&self.base.code, Some(f), at.min(now))?;
        }
        // What this door knows, and what the venue knows (`mqtt.venue`): the newer of the two.
        let venue = match self.offline.policy {
            OfflinePolicy::Cache => s.venue_record(&self.base.code)?,
            _ => None,
        };
        let view = if self.offline.policy == OfflinePolicy::Cache {
            let local = s.cache_get(&self.base.code, self.cache_ttl, now)?;
            known_view(local, venue.as_ref(), self.cache_ttl, now)
        } else {
            CacheView::Unknown
        };
        // With the venue, its count (every door's offline entries since the last lookup or
        // exit anywhere, this door's own included: they are written into it with each row).
        let entries = match &venue {
            Some(r) => ledger::uses(r),
            None => s.offline_uses(&self.base.code)?,
        };
        let uses = decision::counted_uses(self.base.direction, entries);
        let (verdict, reason, reward, change) = self.verdict(&view, uses);
        s.upsert_offline_decision(&self.base.row(verdict, reason, false, reward), change)?;
        let parameters = match (&view, verdict) {
            (CacheView::Known(Some(f)), Verdict::Accept) => f.parameters.clone(),
            (_, Verdict::Accept) => self.fresh.as_ref().and_then(|f| f.parameters.clone()),
            _ => None,
        };
        Ok((verdict, reason, parameters))
    }

    /// Without a store: the policy alone, with nothing known of the pass.
    pub fn without_store(&self) -> OfflineVerdict {
        let (verdict, reason, _, _) = self.verdict(&CacheView::Unknown, 0);
        (verdict, reason, None)
    }

    /// The verdict (pure): (verdict, reason, reward points, what it does to the pass's
    /// offline uses).
    fn verdict(&self, view: &CacheView, uses: u32) -> (Verdict, Reason, Option<i64>, UseChange) {
        let d = decision::decide_offline(
            &self.offline,
            view,
            uses,
            self.queue_full,
            &self.rules,
            OffsetDateTime::now_utc(),
        );
        match d {
            Ok(()) => {
                let reward = match view {
                    CacheView::Known(Some(f)) => decision::reward_points(f, &self.rules),
                    _ => (self.rules.reward_points != 0).then_some(self.rules.reward_points),
                };
                let known = self.offline.policy == OfflinePolicy::Cache
                    && matches!(view, CacheView::Known(Some(_)));
                let change = decision::offline_use_change(self.base.direction, true, known);
                (Verdict::Accept, Reason::OfflinePolicy, reward, change)
            }
            Err(reason) => (Verdict::Reject, reason, None, UseChange::None),
        }
    }
}

/// The newest of this door's cache entry and the venue's lookup, each only if verified within
/// `ttl` (pure).
fn known_view(
    local: Option<CacheEntry>,
    venue: Option<&PassRecord>,
    ttl: Duration,
    now_ms: i64,
) -> CacheView {
    let ttl_ms = ttl.as_millis() as i64;
    let from_venue = venue
        .and_then(|r| r.lookup.as_ref())
        .filter(|l| now_ms - l.verified_at_ms < ttl_ms);
    match (local, from_venue) {
        (Some(e), Some(l)) if l.verified_at_ms > e.verified_at_ms => CacheView::Known(l.facts()),
        (Some(e), _) => CacheView::Known(e.facts),
        (None, Some(l)) => CacheView::Known(l.facts()),
        (None, None) => CacheView::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::venue::ledger::Lookup;

    fn facts(voided: bool) -> PassFacts {
        PassFacts {
            id: "p1".into(),
            template_id: "t1".into(),
            project_id: Some("proj".into()),
            expires: None,
            voided,
            scan_config: None,
            parameters: None,
        }
    }

    #[test]
    fn the_newer_of_the_door_and_the_venue_is_what_is_known() {
        let ttl = Duration::from_secs(60);
        let local = |at| {
            Some(CacheEntry {
                facts: Some(facts(false)),
                verified_at_ms: at,
            })
        };
        let venue = |at, voided| PassRecord {
            lookup: Some(Lookup::refreshed(Some(&facts(voided)), at, "b")),
            admissions: vec![],
        };
        let now = 100_000;
        assert_eq!(known_view(None, None, ttl, now), CacheView::Unknown);
        assert_eq!(
            known_view(None, Some(&venue(now - 1000, false)), ttl, now),
            CacheView::Known(Some(facts(false))),
            "looked up at another door only"
        );
        assert_eq!(
            known_view(local(now - 5000), Some(&venue(now - 1000, true)), ttl, now),
            CacheView::Known(Some(facts(true))),
            "the venue's newer verification (voided) wins"
        );
        assert_eq!(
            known_view(local(now - 500), Some(&venue(now - 1000, true)), ttl, now),
            CacheView::Known(Some(facts(false))),
            "this door's newer lookup wins"
        );
        assert_eq!(
            known_view(None, Some(&venue(now - 61_000, false)), ttl, now),
            CacheView::Unknown,
            "past cache_ttl the venue's lookup is forgotten too"
        );
    }
}
