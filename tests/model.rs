//! Model tests of the store and the replay, in Vector's manner (`disk_v2/tests/model`): a
//! proptest sequence of [`Action`]s runs against the real store (a SQLite file) and the
//! replay's real rule ([`dispose`]) and against a plain model beside it; after every step the
//! two must agree.
//!
//! Invariants, checked after every action:
//! 1. nothing admitted is lost: every pending row written is pending, sent or dead, and
//!    nothing else is;
//! 2. order holds: the outbox hands out the pending rows in the order they were scanned,
//!    whatever was sent, refused, retried or restarted in between;
//! 3. a row the server acknowledged is never handed out again;
//! 4. the counts the status shows are the model's.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use tiketo_gate::api::classify::ErrorClass;
use tiketo_gate::api::AliasOutcome;
use tiketo_gate::decision::{Direction, Reason, UseChange, Verdict};
use tiketo_gate::replay::{dispose, AMBIGUOUS_TRIES};
use tiketo_gate::store::{NewScan, Store};

/// What the server says of one event of a batch.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Sent,
    Voided,
    Refused,
    Ambiguous,
    Throttled,
    NotRun,
}

#[derive(Debug, Clone)]
enum Action {
    /// A guest admitted offline: a durable pending row.
    AdmitOffline,
    /// A guest admitted online whose event reached the server live.
    AdmitOnline,
    /// A guest turned away (a row, nothing to send).
    Reject,
    /// A replay batch of up to `limit` rows and the server's answer to each.
    Replay { limit: usize, answers: Vec<Answer> },
    /// The daemon restarted (the store closed and opened again).
    Restart,
    /// `tiketo-gate queue retry --all-dead`.
    RetryDead,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Sent),
        1 => Just(Answer::Voided),
        1 => Just(Answer::Refused),
        2 => Just(Answer::Ambiguous),
        2 => Just(Answer::Throttled),
        1 => Just(Answer::NotRun),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::AdmitOffline),
        2 => Just(Action::AdmitOnline),
        2 => Just(Action::Reject),
        4 => (1usize..8, prop::collection::vec(answer(), 8))
            .prop_map(|(limit, answers)| Action::Replay { limit, answers }),
        1 => Just(Action::Restart),
        1 => Just(Action::RetryDead),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Outbox {
    Pending { attempts: i64 },
    Sent,
    Dead,
}

/// The model: every row that went to the outbox, in scan order.
#[derive(Default)]
struct Model {
    rows: BTreeMap<u64, (String, Outbox)>,
    rejected: i64,
    next: u64,
}

impl Model {
    fn pending(&self) -> Vec<String> {
        self.rows
            .values()
            .filter(|(_, o)| matches!(o, Outbox::Pending { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn count(&self, f: impl Fn(&Outbox) -> bool) -> i64 {
        self.rows.values().filter(|(_, o)| f(o)).count() as i64
    }

    fn state_of(&mut self, id: &str) -> &mut Outbox {
        &mut self
            .rows
            .values_mut()
            .find(|(i, _)| i == id)
            .expect("a row of the model")
            .1
    }
}

fn row(i: u64, verdict: Verdict, pending: bool, online: bool) -> NewScan {
    NewScan {
        scan_id: uuid::Uuid::new_v4(),
        code: format!("CODE-{i:06}"),
        verdict,
        reason: if verdict == Verdict::Reject {
            Reason::Expired
        } else if online {
            Reason::Valid
        } else {
            Reason::OfflinePolicy
        },
        online,
        // Scan order is the order of the rows (the seq), whatever the clock says.
        scanned_at: time::OffsetDateTime::now_utc(),
        boot_id: "model".into(),
        mono_ms: i,
        clock_synced: i.is_multiple_of(2),
        device: "model-door".into(),
        reader: "reader".into(),
        direction: Direction::Entry,
        reward_points: None,
        pending,
    }
}

fn outcome(a: Answer) -> AliasOutcome {
    match a {
        Answer::Sent => AliasOutcome::Sent {
            event_id: Some("ev".into()),
            voided: false,
        },
        Answer::Voided => AliasOutcome::Sent {
            event_id: Some("ev".into()),
            voided: true,
        },
        Answer::Refused => AliasOutcome::Failed {
            class: ErrorClass::Permanent,
            detail: "MappingTemplate".into(),
        },
        Answer::Ambiguous => AliasOutcome::Failed {
            class: ErrorClass::Ambiguous,
            detail: "Lambda:Unhandled".into(),
        },
        Answer::Throttled => AliasOutcome::Failed {
            class: ErrorClass::Retryable { retry_after: None },
            detail: "Throttling".into(),
        },
        Answer::NotRun => AliasOutcome::NotRun,
    }
}

fn apply(store: &mut Store, model: &mut Model, path: &Path, action: &Action) {
    match action {
        Action::AdmitOffline | Action::AdmitOnline => {
            let online = matches!(action, Action::AdmitOnline);
            let r = row(model.next, Verdict::Accept, true, online);
            let id = r.scan_id.to_string();
            if online {
                store.insert_scan_if_absent(&r).unwrap();
                store.mark_sent(&id, Some("live")).unwrap();
            } else {
                store.upsert_offline_decision(&r, UseChange::Count).unwrap();
            }
            let state = if online {
                Outbox::Sent
            } else {
                Outbox::Pending { attempts: 0 }
            };
            model.rows.insert(model.next, (id, state));
            model.next += 1;
        }
        Action::Reject => {
            store
                .insert_scan(
                    &row(model.next, Verdict::Reject, false, true),
                    UseChange::None,
                )
                .unwrap();
            model.rejected += 1;
            model.next += 1;
        }
        Action::Replay { limit, answers } => {
            let rows = store.pending_batch(*limit, &[]).unwrap();
            let expected: Vec<String> = model.pending().into_iter().take(*limit).collect();
            let got: Vec<String> = rows.iter().map(|r| r.scan_id.clone()).collect();
            assert_eq!(got, expected, "the oldest pending rows, in scan order");
            let outcomes: Vec<AliasOutcome> =
                answers[..rows.len()].iter().map(|a| outcome(*a)).collect();
            let d = dispose(&rows, &outcomes);
            for (id, answer) in got.iter().zip(answers) {
                let state = model.state_of(id);
                let Outbox::Pending { attempts } = state.clone() else {
                    panic!("handed out a row that is not pending: {id}");
                };
                *state = match answer {
                    Answer::Sent => Outbox::Sent,
                    Answer::Voided | Answer::Refused => Outbox::Dead,
                    Answer::Ambiguous if attempts + 1 >= AMBIGUOUS_TRIES => Outbox::Dead,
                    Answer::Ambiguous | Answer::Throttled => Outbox::Pending {
                        attempts: attempts + 1,
                    },
                    Answer::NotRun => Outbox::Pending { attempts },
                };
            }
            store.apply_replay(&d.sent, &d.dead, &d.retry).unwrap();
        }
        Action::Restart => {
            *store = Store::open(path).unwrap();
        }
        Action::RetryDead => {
            let n = store.retry(None).unwrap();
            let mut m = 0;
            for (_, state) in model.rows.values_mut() {
                if *state == Outbox::Dead {
                    *state = Outbox::Pending { attempts: 0 };
                    m += 1;
                }
            }
            assert_eq!(n, m, "dead letters put back");
        }
    }
}

fn check(store: &Store, model: &Model) {
    // 1 and 3: every row is where the model says, and nothing else is in the outbox.
    let pending = store.all_scan_ids("pending").unwrap();
    assert_eq!(pending, model.pending(), "pending rows, in scan order");
    let dead = store.all_scan_ids("dead").unwrap();
    let model_dead: Vec<String> = model
        .rows
        .values()
        .filter(|(_, o)| *o == Outbox::Dead)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(dead, model_dead, "dead letters");
    // 2: the outbox hands them out in that order, and each with its attempts.
    let batch = store.pending_batch(usize::MAX / 4, &[]).unwrap();
    for r in &batch {
        let expected = model
            .rows
            .values()
            .find(|(id, _)| *id == r.scan_id)
            .map(|(_, o)| o.clone());
        match expected {
            Some(Outbox::Pending { attempts }) => assert_eq!(r.attempts, attempts, "attempts"),
            other => panic!("{} handed out but the model has {other:?}", r.scan_id),
        }
    }
    // 4: the counts.
    let c = store.counts().unwrap();
    assert_eq!(
        c.pending,
        model.count(|o| matches!(o, Outbox::Pending { .. }))
    );
    assert_eq!(c.dead, model.count(|o| *o == Outbox::Dead));
    assert_eq!(c.sent, model.count(|o| *o == Outbox::Sent));
    assert_eq!(c.scans, model.rows.len() as i64 + model.rejected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn nothing_admitted_is_lost_and_order_holds(actions in prop::collection::vec(action(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.db");
        let mut store = Store::open(&path).unwrap();
        let mut model = Model::default();
        for a in &actions {
            apply(&mut store, &mut model, &path, a);
            check(&store, &model);
        }
    }
}

/// A named case: one event that fails ambiguously at the head keeps its place and its
/// retries, and goes to the dead letters after `AMBIGUOUS_TRIES`; the others are sent.
#[test]
fn an_ambiguous_head_goes_dead_after_its_tries_and_the_rest_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.db");
    let mut store = Store::open(&path).unwrap();
    let mut model = Model::default();
    for _ in 0..4 {
        apply(&mut store, &mut model, &path, &Action::AdmitOffline);
    }
    let mut answers = vec![Answer::Ambiguous];
    answers.extend([Answer::Sent; 7]);
    for _ in 0..AMBIGUOUS_TRIES {
        apply(
            &mut store,
            &mut model,
            &path,
            &Action::Replay {
                limit: 1,
                answers: answers.clone(),
            },
        );
        check(&store, &model);
    }
    assert_eq!(store.counts().unwrap().dead, 1);
    apply(
        &mut store,
        &mut model,
        &path,
        &Action::Replay {
            limit: 8,
            answers: vec![Answer::Sent; 8],
        },
    );
    check(&store, &model);
    assert_eq!(store.counts().unwrap().pending, 0);
    assert_eq!(store.counts().unwrap().sent, 3);
}
