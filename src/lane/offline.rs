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
use crate::store::Store;

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
            s.cache_put(&self.base.code, Some(f), now)?;
        }
        let view = if self.offline.policy == OfflinePolicy::Cache {
            match s.cache_get(&self.base.code, self.cache_ttl, now)? {
                Some(entry) => CacheView::Known(entry.facts),
                None => CacheView::Unknown,
            }
        } else {
            CacheView::Unknown
        };
        let uses = decision::counted_uses(self.base.direction, s.offline_uses(&self.base.code)?);
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
