//! What the venue knows of one pass (pure): the newest lookup any door made of it, and the
//! admissions at every door, merged by `scanId`.
//!
//! - **Merge** is a union: the newest lookup wins; admissions are kept once per `scanId`, in
//!   the order they happened (time, then `scanId`). So two doors that exchange their views, in
//!   any order and any number of times, end with the same view, and nothing is counted twice.
//! - **Uses**: the offline entries since the reset point, which is the newest of the last
//!   lookup anywhere and the last exit anywhere (an online admission comes with its own lookup,
//!   so it is never counted). This is what `offline.max_offline_uses` is held against.
//! - **Conflicts**: entries past `max_offline_uses` since the reset point were admitted by a
//!   door that did not know of the others (cut off from them, or inside the broker's round
//!   trip). Each such entry is paired with the earlier one it collides with.
//! - Old admissions are not needed once a lookup or an exit is newer than them: [`trim`] drops
//!   them (what the broker keeps stays small).

use serde::{Deserialize, Serialize};

use crate::decision::{Direction, PassFacts};

/// A lookup's result as a door's pass cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lookup {
    /// The API knew the pass.
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub voided: bool,
    /// The project's `scanConfig` (reward points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_config: Option<String>,
    /// The holder's parameters, when a door's greeting needs them (sealed like the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    /// When the API last said this (a scan's lookup or a background refresh).
    pub verified_at_ms: i64,
    /// When a door last looked the pass up for a scan: what resets the offline uses (a
    /// background refresh does not: it admits nobody).
    pub looked_up_ms: i64,
    /// The door that said it last.
    pub door: String,
}

impl Lookup {
    /// A scan's lookup at `door` (`None`: the API knows no such pass).
    pub fn of_scan(facts: Option<&PassFacts>, now_ms: i64, door: &str) -> Lookup {
        let mut l = Lookup::refreshed(facts, now_ms, door);
        l.looked_up_ms = now_ms;
        l
    }

    /// A background refresh's answer: the facts anew, the last scan's lookup time kept by
    /// [`merge`].
    pub fn refreshed(facts: Option<&PassFacts>, now_ms: i64, door: &str) -> Lookup {
        Lookup {
            found: facts.is_some(),
            pass_id: facts.map(|f| f.id.clone()),
            template_id: facts.map(|f| f.template_id.clone()),
            project_id: facts.and_then(|f| f.project_id.clone()),
            expires_ms: facts
                .and_then(|f| f.expires)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64),
            voided: facts.is_some_and(|f| f.voided),
            scan_config: facts.and_then(|f| f.scan_config.clone()),
            parameters: facts.and_then(|f| f.parameters.clone()),
            verified_at_ms: now_ms,
            looked_up_ms: i64::MIN,
            door: door.to_owned(),
        }
    }

    /// The facts the offline decision holds against its rules (`None`: no such pass).
    pub fn facts(&self) -> Option<PassFacts> {
        if !self.found {
            return None;
        }
        Some(PassFacts {
            id: self.pass_id.clone().unwrap_or_default(),
            template_id: self.template_id.clone().unwrap_or_default(),
            project_id: self.project_id.clone(),
            expires: self.expires_ms.and_then(|ms| {
                time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()
            }),
            voided: self.voided,
            scan_config: self.scan_config.clone(),
            parameters: self.parameters.clone(),
        })
    }
}

/// One admission at one door.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Admission {
    #[serde(rename = "scanId")]
    pub scan_id: String,
    pub at_ms: i64,
    pub door: String,
    pub reader: String,
    pub direction: Direction,
    /// Decided online (the server's own record; never counted as an offline use).
    pub online: bool,
    /// The code as logs show it (masked), for the conflict's log line at every door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The venue's view of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
    #[serde(default)]
    pub admissions: Vec<Admission>,
}

/// Two views of a pass made one: commutative, associative and idempotent, so doors that meet
/// in any order, any number of times, end with the same record. Two different admissions with
/// one `scanId`, or two lookups of the same time and door, never come from honest doors; a total
/// order picks one all the same, so that even then every door's merge agrees (and no two doors
/// republish at each other forever).
pub fn merge(a: &PassRecord, b: &PassRecord) -> PassRecord {
    let lookup = match (&a.lookup, &b.lookup) {
        (Some(x), Some(y)) => {
            // The newest facts, and the newest scan's lookup of either.
            let key = |l: &Lookup| (l.verified_at_ms, l.door.clone(), l.clone());
            let mut l = if key(y) > key(x) {
                y.clone()
            } else {
                x.clone()
            };
            l.looked_up_ms = x.looked_up_ms.max(y.looked_up_ms);
            Some(l)
        }
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    };
    let mut admissions: Vec<Admission> =
        a.admissions.iter().chain(&b.admissions).cloned().collect();
    admissions.sort_by(|x, y| (&x.scan_id, x).cmp(&(&y.scan_id, y)));
    admissions.dedup_by(|later, first| later.scan_id == first.scan_id);
    admissions.sort_by(|x, y| (x.at_ms, &x.scan_id).cmp(&(y.at_ms, &y.scan_id)));
    PassRecord { lookup, admissions }
}

/// From when offline entries count: the last scan's lookup anywhere or the last exit anywhere.
pub fn reset_point(r: &PassRecord) -> i64 {
    let lookup = r
        .lookup
        .as_ref()
        .map(|l| l.looked_up_ms)
        .unwrap_or(i64::MIN);
    let exit = r
        .admissions
        .iter()
        .filter(|a| a.direction == Direction::Exit)
        .map(|a| a.at_ms)
        .max()
        .unwrap_or(i64::MIN);
    lookup.max(exit)
}

/// The offline entries since the reset point, in order.
fn counted(r: &PassRecord) -> Vec<&Admission> {
    let from = reset_point(r);
    r.admissions
        .iter()
        .filter(|a| a.direction == Direction::Entry && !a.online && a.at_ms >= from)
        .collect()
}

/// How many offline entries count against `offline.max_offline_uses` now.
pub fn uses(r: &PassRecord) -> u32 {
    counted(r).len() as u32
}

/// The entries past `max` since the reset point, each with the earlier entry it collides with
/// (the one that used the pass up), when the two were made at different doors: a door never
/// goes past `max` knowingly, so only doors that did not know of each other make a conflict.
pub fn conflicts(r: &PassRecord, max: u32) -> Vec<(Admission, Admission)> {
    let c = counted(r);
    let max = max.max(1) as usize;
    if c.len() <= max {
        return Vec::new();
    }
    c[max..]
        .iter()
        .filter(|late| late.door != c[max - 1].door)
        .map(|late| (c[max - 1].clone(), (*late).clone()))
        .collect()
}

/// Drops the admissions no rule needs any more: those before the reset point (the exit that
/// set it is kept, so that the reset is still known).
pub fn trim(r: &PassRecord) -> PassRecord {
    let from = reset_point(r);
    PassRecord {
        lookup: r.lookup.clone(),
        admissions: r
            .admissions
            .iter()
            .filter(|a| a.at_ms >= from)
            .cloned()
            .collect(),
    }
}

/// The newest scan the record tells of (a scan's lookup, an admission; not a background
/// refresh, which keeps the facts fresh, not the pass in the cache): the venue keeps a record
/// until `offline.cache_ttl` after it, and the broker's copy expires then.
pub fn last_activity(r: &PassRecord) -> i64 {
    let lookup = r
        .lookup
        .as_ref()
        .map(|l| l.looked_up_ms)
        .unwrap_or(i64::MIN);
    r.admissions
        .iter()
        .map(|a| a.at_ms)
        .max()
        .unwrap_or(i64::MIN)
        .max(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(at: i64, door: &str) -> Lookup {
        Lookup {
            found: true,
            pass_id: Some("p1".into()),
            template_id: Some("t".into()),
            project_id: Some("proj-main".into()),
            expires_ms: None,
            voided: false,
            scan_config: None,
            parameters: None,
            verified_at_ms: at,
            looked_up_ms: at,
            door: door.into(),
        }
    }

    fn adm(id: &str, at: i64, door: &str, dir: Direction, online: bool) -> Admission {
        Admission {
            scan_id: id.into(),
            at_ms: at,
            door: door.into(),
            reader: "main".into(),
            direction: dir,
            online,
            code: None,
        }
    }

    #[test]
    fn merging_is_a_union_in_any_order_and_counts_nothing_twice() {
        let a = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![adm("s1", 200, "a", Direction::Entry, false)],
        };
        let b = PassRecord {
            lookup: Some(lookup(150, "b")),
            admissions: vec![
                adm("s2", 210, "b", Direction::Entry, false),
                adm("s1", 200, "a", Direction::Entry, false),
            ],
        };
        let ab = merge(&a, &b);
        assert_eq!(ab, merge(&b, &a), "the order of meeting does not matter");
        assert_eq!(merge(&ab, &a), ab, "meeting again changes nothing");
        assert_eq!(
            ab.lookup.as_ref().unwrap().door,
            "b",
            "the newest lookup wins"
        );
        assert_eq!(ab.admissions.len(), 2);
        assert_eq!(uses(&ab), 2);
        assert_eq!(merge(&PassRecord::default(), &a), a);
    }

    #[test]
    fn uses_count_offline_entries_since_the_last_lookup_or_exit_anywhere() {
        let mut r = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![
                adm("old", 50, "b", Direction::Entry, false),
                adm("on", 120, "a", Direction::Entry, true),
                adm("s1", 130, "b", Direction::Entry, false),
            ],
        };
        assert_eq!(
            uses(&r),
            1,
            "before the lookup and online entries do not count"
        );
        r.admissions
            .push(adm("x", 140, "c", Direction::Exit, false));
        assert_eq!(uses(&r), 0, "an exit anywhere resets");
        r.admissions
            .push(adm("s2", 150, "a", Direction::Entry, false));
        assert_eq!(uses(&r), 1);
        assert_eq!(reset_point(&r), 140);
        let t = trim(&r);
        assert_eq!(
            t.admissions
                .iter()
                .map(|a| a.scan_id.as_str())
                .collect::<Vec<_>>(),
            ["x", "s2"]
        );
        assert_eq!(uses(&t), uses(&r), "trimming changes no count");
    }

    #[test]
    fn two_doors_cut_off_from_each_other_meet_as_a_conflict() {
        // The partition: door a and door b each admit the pass offline once (max 1).
        let a = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![adm("sa", 300, "a", Direction::Entry, false)],
        };
        let b = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![adm("sb", 305, "b", Direction::Entry, false)],
        };
        assert!(conflicts(&a, 1).is_empty() && conflicts(&b, 1).is_empty());
        let met = merge(&a, &b);
        let c = conflicts(&met, 1);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].0.door.as_str(), c[0].1.door.as_str()), ("a", "b"));
        assert!(
            conflicts(&met, 2).is_empty(),
            "within max_offline_uses: no conflict"
        );
    }

    #[test]
    fn a_refresh_renews_the_facts_but_resets_no_use() {
        let scanned = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![adm("s1", 130, "b", Direction::Entry, false)],
        };
        let mut facts = scanned.lookup.as_ref().unwrap().facts().unwrap();
        facts.voided = true;
        let refreshed = PassRecord {
            lookup: Some(Lookup::refreshed(Some(&facts), 200, "c")),
            admissions: vec![],
        };
        let met = merge(&scanned, &refreshed);
        assert_eq!(met, merge(&refreshed, &scanned));
        let l = met.lookup.as_ref().unwrap();
        assert!(l.voided, "the newest facts win");
        assert_eq!((l.verified_at_ms, l.looked_up_ms), (200, 100));
        assert_eq!(
            uses(&met),
            1,
            "a refresh admits nobody: the use still counts"
        );
        assert_eq!(last_activity(&met), 130, "a refresh is no activity");
        let gone = Lookup::of_scan(None, 300, "a");
        assert!(gone.facts().is_none() && gone.looked_up_ms == 300);
    }

    #[test]
    fn a_record_goes_over_the_wire_and_back() {
        let r = PassRecord {
            lookup: Some(lookup(100, "a")),
            admissions: vec![adm("s1", 130, "b", Direction::Exit, false)],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains("\"scanId\":\"s1\"") && text.contains("\"direction\":\"exit\""),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<PassRecord>(&text).unwrap(), r);
        assert!(serde_json::from_str::<PassRecord>(r#"{"admissions":[{"scanId":"x","at_ms":1,"door":"d","reader":"r","direction":"sideways","online":false}]}"#).is_err());
    }
}
