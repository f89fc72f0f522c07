//! The decision: a pure function of the pass, the rules and the time.

use std::fmt;
use time::OffsetDateTime;

/// What the daemon knows about a pass that matters for the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassFacts {
    pub id: String,
    pub template_id: String,
    pub project_id: Option<String>,
    pub expires: Option<OffsetDateTime>,
    pub voided: bool,
    /// The project's `scanConfig` string, as the API sent it.
    pub scan_config: Option<String>,
    /// The pass's `parameters` (AWSJSON, as sent), asked for only when the guest screen's
    /// greeting uses them; never part of the verdict.
    pub parameters: Option<String>,
}

/// The `[rules]` of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Allowed project ids; empty: any.
    pub projects: Vec<String>,
    /// Allowed template ids; empty: any.
    pub templates: Vec<String>,
    /// Reward points for each check-in (0: none sent).
    pub reward_points: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject => "reject",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a scan got its verdict. The names are what logs and status show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Accepted online: the pass is valid and the scan event was recorded.
    Valid,
    NotFound,
    Voided,
    Expired,
    WrongProject,
    WrongTemplate,
    /// The server refused the scan event (a GraphQL error or a voided ScanEvent).
    Refused,
    /// The reader delivered something that is not a code.
    Malformed,
    /// The API did not answer in time or could not be reached: the offline policy decided.
    OfflinePolicy,
    /// The API answered with a permanent error to the lookup (a bug or a schema change).
    ApiError,
    /// Offline: this pass was already admitted offline at this device (anti-passback).
    AlreadyUsed,
    /// Offline: the queue of unsent scan events is full, so nothing more is admitted offline.
    QueueFull,
    /// The device has not been able to enrol with Tiketo yet.
    NotEnrolled,
    /// Outside the reader's opening hours (`rules.hours`, `rules.closed_dates`), or the
    /// clock is not synced and `rules.unsynced_clock = "reject"`; decided without the API.
    OutsideHours,
    /// The door is in lockdown (a remote command): every scan rejected until `normal`.
    Lockdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Valid => "valid",
            Reason::NotFound => "not_found",
            Reason::Voided => "voided",
            Reason::Expired => "expired",
            Reason::WrongProject => "wrong_project",
            Reason::WrongTemplate => "wrong_template",
            Reason::Refused => "refused",
            Reason::Malformed => "malformed",
            Reason::OfflinePolicy => "offline_policy",
            Reason::ApiError => "api_error",
            Reason::AlreadyUsed => "already_used",
            Reason::QueueFull => "queue_full",
            Reason::NotEnrolled => "not_enrolled",
            Reason::OutsideHours => "outside_hours",
            Reason::Lockdown => "lockdown",
        }
    }
}

impl Reason {
    /// Whether a rejected scan asks the guest to try again or fetch staff (the pass itself was
    /// not judged) rather than turning the pass away: the buzzer's `attention` sound and the
    /// guest screen's amber.
    pub fn needs_attention(self) -> bool {
        use Reason::*;
        match self {
            Malformed | NotEnrolled | QueueFull | ApiError | OfflinePolicy => true,
            Valid | NotFound | Voided | Expired | WrongProject | WrongTemplate | Refused
            | AlreadyUsed | OutsideHours | Lockdown => false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on a looked-up pass: `Ok(())` to go on and record the scan, `Err(reason)` to
/// reject. `None` is the API's answer for an unknown code.
pub fn decide(pass: Option<&PassFacts>, rules: &Rules, now: OffsetDateTime) -> Result<(), Reason> {
    let pass = pass.ok_or(Reason::NotFound)?;
    if pass.voided {
        return Err(Reason::Voided);
    }
    if matches!(pass.expires, Some(exp) if exp <= now) {
        return Err(Reason::Expired);
    }
    if !rules.projects.is_empty() {
        match &pass.project_id {
            Some(p) if rules.projects.contains(p) => {}
            _ => return Err(Reason::WrongProject),
        }
    }
    if !rules.templates.is_empty() && !rules.templates.contains(&pass.template_id) {
        return Err(Reason::WrongTemplate);
    }
    Ok(())
}

/// Reward points for the scan event: the project's `scanConfig` wins when it is a JSON object
/// with an integer `rewardPoints`; else `rules.reward_points`. `None` (omit) when 0.
pub fn reward_points(pass: &PassFacts, rules: &Rules) -> Option<i64> {
    let from_project = pass
        .scan_config
        .as_deref()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.as_object()?.get("rewardPoints")?.as_i64());
    let points = from_project.unwrap_or(rules.reward_points);
    (points != 0).then_some(points)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflinePolicy {
    /// Fail closed.
    Reject,
    /// Fail open: every well-formed code opens.
    Accept,
    /// Decide by what recent online lookups said (see [`decide_offline`]).
    Cache,
}

impl OfflinePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflinePolicy::Reject => "reject",
            OfflinePolicy::Accept => "accept",
            OfflinePolicy::Cache => "cache",
        }
    }
}

/// What the offline decision knows about a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheView {
    /// No fresh cache entry.
    Unknown,
    /// A fresh entry: `None` means the API said there is no such pass.
    Known(Option<PassFacts>),
}

/// The offline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineRules {
    pub policy: OfflinePolicy,
    /// For `cache`: the verdict on a code with no fresh entry.
    pub unknown_accepts: bool,
    /// For `cache`: how often one pass may be admitted offline at this device.
    pub max_offline_uses: u32,
}

/// The offline decision: a pure function of the policy, what the cache knows, how often the
/// pass was already admitted offline here, whether the queue has room, and the time.
/// `Ok(())` admits (and spends one offline use when the policy is `cache`).
pub fn decide_offline(
    o: &OfflineRules,
    view: &CacheView,
    offline_uses: u32,
    queue_full: bool,
    rules: &Rules,
    now: OffsetDateTime,
) -> Result<(), Reason> {
    let admit = match o.policy {
        OfflinePolicy::Reject => Err(Reason::OfflinePolicy),
        OfflinePolicy::Accept => Ok(()),
        OfflinePolicy::Cache => match view {
            CacheView::Unknown if o.unknown_accepts => Ok(()),
            CacheView::Unknown => Err(Reason::OfflinePolicy),
            CacheView::Known(facts) => match decide(facts.as_ref(), rules, now) {
                Ok(()) if offline_uses >= o.max_offline_uses => Err(Reason::AlreadyUsed),
                other => other,
            },
        },
    };
    match admit {
        Ok(()) if queue_full => Err(Reason::QueueFull),
        other => other,
    }
}

/// Which way a reader lets people through. Goes into `ScanEventInput.data` as `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Direction {
    #[default]
    Entry,
    Exit,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Entry => "entry",
            Direction::Exit => "exit",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "entry" => Some(Direction::Entry),
            "exit" => Some(Direction::Exit),
            _ => None,
        }
    }
}

/// As its name (`entry`, `exit`): the venue's messages carry it.
impl serde::Serialize for Direction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Direction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Direction::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("direction {s:?}")))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an offline decision does to a pass's count of offline admissions (anti-passback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseChange {
    None,
    /// An entry admitted on a known pass: one more use.
    Count,
    /// An exit admitted on a known pass: the guest is out, so the next entry is not a
    /// second one.
    Reset,
}

impl From<bool> for UseChange {
    /// `true`: count one offline use.
    fn from(count: bool) -> Self {
        if count {
            UseChange::Count
        } else {
            UseChange::None
        }
    }
}

/// The offline admissions that count against `offline.max_offline_uses` for a scan in
/// `direction`: entries only (an exit is never "already used").
pub fn counted_uses(direction: Direction, entry_uses: u32) -> u32 {
    match direction {
        Direction::Entry => entry_uses,
        Direction::Exit => 0,
    }
}

/// How an admitted (or not) offline scan changes the pass's use count. Only a pass the cache
/// knows is counted (a code admitted by `offline.unknown = "accept"` or `policy = "accept"`
/// has no pass facts to hold against it).
pub fn offline_use_change(direction: Direction, admitted: bool, known_pass: bool) -> UseChange {
    match (admitted && known_pass, direction) {
        (false, _) => UseChange::None,
        (true, Direction::Entry) => UseChange::Count,
        (true, Direction::Exit) => UseChange::Reset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn exits_never_count_as_entries_and_reset_anti_passback() {
        let o = OfflineRules {
            policy: OfflinePolicy::Cache,
            unknown_accepts: false,
            max_offline_uses: 1,
        };
        let known = CacheView::Known(Some(pass()));
        let rules = Rules::default();
        // One entry used: a second entry is refused, an exit is not.
        let entry = decide_offline(
            &o,
            &known,
            counted_uses(Direction::Entry, 1),
            false,
            &rules,
            NOW,
        );
        assert_eq!(entry, Err(Reason::AlreadyUsed));
        let exit = decide_offline(
            &o,
            &known,
            counted_uses(Direction::Exit, 1),
            false,
            &rules,
            NOW,
        );
        assert_eq!(exit, Ok(()));
        assert_eq!(
            offline_use_change(Direction::Entry, true, true),
            UseChange::Count
        );
        assert_eq!(
            offline_use_change(Direction::Exit, true, true),
            UseChange::Reset
        );
        assert_eq!(
            offline_use_change(Direction::Entry, false, true),
            UseChange::None
        );
        assert_eq!(
            offline_use_change(Direction::Entry, true, false),
            UseChange::None
        );
        assert_eq!(Direction::parse("exit"), Some(Direction::Exit));
        assert_eq!(Direction::parse("out"), None);
    }

    const NOW: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

    fn pass() -> PassFacts {
        PassFacts {
            id: "p1".into(),
            template_id: "t1".into(),
            project_id: Some("proj".into()),
            expires: Some(datetime!(2027-01-01 0:00 UTC)),
            voided: false,
            scan_config: None,
            parameters: None,
        }
    }

    fn rules(projects: &[&str], templates: &[&str]) -> Rules {
        Rules {
            projects: projects.iter().map(|s| s.to_string()).collect(),
            templates: templates.iter().map(|s| s.to_string()).collect(),
            reward_points: 0,
        }
    }

    #[test]
    fn valid_pass_with_open_rules_is_accepted() {
        assert_eq!(decide(Some(&pass()), &rules(&[], &[]), NOW), Ok(()));
        let no_expiry = PassFacts {
            expires: None,
            ..pass()
        };
        assert_eq!(decide(Some(&no_expiry), &rules(&[], &[]), NOW), Ok(()));
    }

    #[test]
    fn each_reason() {
        let r = rules(&["proj"], &["t1"]);
        assert_eq!(decide(None, &r, NOW), Err(Reason::NotFound));
        let voided = PassFacts {
            voided: true,
            ..pass()
        };
        assert_eq!(decide(Some(&voided), &r, NOW), Err(Reason::Voided));
        let expired = PassFacts {
            expires: Some(datetime!(2026-11-27 11:59:59 UTC)),
            ..pass()
        };
        assert_eq!(decide(Some(&expired), &r, NOW), Err(Reason::Expired));
        let at_now = PassFacts {
            expires: Some(NOW),
            ..pass()
        };
        assert_eq!(decide(Some(&at_now), &r, NOW), Err(Reason::Expired));
        let other = PassFacts {
            project_id: Some("other".into()),
            ..pass()
        };
        assert_eq!(decide(Some(&other), &r, NOW), Err(Reason::WrongProject));
        let no_project = PassFacts {
            project_id: None,
            ..pass()
        };
        assert_eq!(
            decide(Some(&no_project), &r, NOW),
            Err(Reason::WrongProject)
        );
        let tpl = PassFacts {
            template_id: "t9".into(),
            ..pass()
        };
        assert_eq!(decide(Some(&tpl), &r, NOW), Err(Reason::WrongTemplate));
        assert_eq!(decide(Some(&pass()), &r, NOW), Ok(()));
    }

    #[test]
    fn voided_wins_over_expired_and_project() {
        let p = PassFacts {
            voided: true,
            expires: Some(datetime!(2020-01-01 0:00 UTC)),
            project_id: Some("other".into()),
            ..pass()
        };
        assert_eq!(
            decide(Some(&p), &rules(&["proj"], &[]), NOW),
            Err(Reason::Voided)
        );
    }

    #[test]
    fn offline_decisions() {
        let r = rules(&["proj"], &[]);
        let o = |policy, unknown_accepts| OfflineRules {
            policy,
            unknown_accepts,
            max_offline_uses: 1,
        };
        let known = CacheView::Known(Some(pass()));
        // reject and accept ignore the cache
        assert_eq!(
            decide_offline(&o(OfflinePolicy::Reject, true), &known, 0, false, &r, NOW),
            Err(Reason::OfflinePolicy)
        );
        assert_eq!(
            decide_offline(
                &o(OfflinePolicy::Accept, false),
                &CacheView::Unknown,
                5,
                false,
                &r,
                NOW
            ),
            Ok(())
        );
        // cache: known and valid, once
        let c = o(OfflinePolicy::Cache, false);
        assert_eq!(decide_offline(&c, &known, 0, false, &r, NOW), Ok(()));
        assert_eq!(
            decide_offline(&c, &known, 1, false, &r, NOW),
            Err(Reason::AlreadyUsed)
        );
        let two = OfflineRules {
            max_offline_uses: 2,
            ..c
        };
        assert_eq!(decide_offline(&two, &known, 1, false, &r, NOW), Ok(()));
        // cache: the same rules as online, expiry against now
        let expired = CacheView::Known(Some(PassFacts {
            expires: Some(datetime!(2026-11-27 11:00 UTC)),
            ..pass()
        }));
        assert_eq!(
            decide_offline(&c, &expired, 0, false, &r, NOW),
            Err(Reason::Expired)
        );
        let voided = CacheView::Known(Some(PassFacts {
            voided: true,
            ..pass()
        }));
        assert_eq!(
            decide_offline(&c, &voided, 0, false, &r, NOW),
            Err(Reason::Voided)
        );
        assert_eq!(
            decide_offline(&c, &CacheView::Known(None), 0, false, &r, NOW),
            Err(Reason::NotFound)
        );
        // cache: unknown codes by offline.unknown
        assert_eq!(
            decide_offline(&c, &CacheView::Unknown, 0, false, &r, NOW),
            Err(Reason::OfflinePolicy)
        );
        assert_eq!(
            decide_offline(
                &o(OfflinePolicy::Cache, true),
                &CacheView::Unknown,
                0,
                false,
                &r,
                NOW
            ),
            Ok(())
        );
        // a full queue admits nothing more offline, and says why
        assert_eq!(
            decide_offline(&c, &known, 0, true, &r, NOW),
            Err(Reason::QueueFull)
        );
        assert_eq!(
            decide_offline(
                &o(OfflinePolicy::Accept, false),
                &CacheView::Unknown,
                0,
                true,
                &r,
                NOW
            ),
            Err(Reason::QueueFull)
        );
        assert_eq!(
            decide_offline(&c, &voided, 0, true, &r, NOW),
            Err(Reason::Voided)
        );
    }

    #[test]
    fn reward_points_from_rules_or_project_scan_config() {
        let mut r = rules(&[], &[]);
        assert_eq!(reward_points(&pass(), &r), None);
        r.reward_points = 5;
        assert_eq!(reward_points(&pass(), &r), Some(5));
        let p = PassFacts {
            scan_config: Some(r#"{"rewardPoints": 12}"#.into()),
            ..pass()
        };
        assert_eq!(reward_points(&p, &r), Some(12));
        let zero = PassFacts {
            scan_config: Some(r#"{"rewardPoints": 0}"#.into()),
            ..pass()
        };
        assert_eq!(reward_points(&zero, &r), None);
        for junk in [
            "not json",
            "[1]",
            r#"{"rewardPoints": "7"}"#,
            r#"{"rewardPoints": 1.5}"#,
        ] {
            let p = PassFacts {
                scan_config: Some(junk.into()),
                ..pass()
            };
            assert_eq!(reward_points(&p, &r), Some(5), "{junk}");
        }
    }
}
