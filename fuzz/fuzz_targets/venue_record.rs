//! What another door (or anyone who may write the venue's topics) sends: any payload on a
//! venue topic is opened or refused without a panic, and any three records that parse merge
//! the same way in any order (commutative, associative, idempotent: doors that meet converge),
//! with trimming changing no count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tiketo_gate::mqtt::venue::VenueTopics;
use tiketo_gate::venue::ledger::{conflicts, merge, trim, uses, PassRecord};
use tiketo_gate::venue::seal::VenueKey;

fn key() -> Arc<VenueKey> {
    static K: OnceLock<Arc<VenueKey>> = OnceLock::new();
    K.get_or_init(|| Arc::new(VenueKey::from_text("fuzz-venue-key-0123456789abcdef-0123").unwrap()))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut topics = VenueTopics::new(key(), "v", "fuzz-door", 60_000);
    let _ = topics.incoming(&format!("v/p/{}", "0".repeat(32)), data);
    let _ = topics.incoming("v/doors/fuzz-door", data);
    let parts: Vec<PassRecord> = data
        .split(|b| *b == 0xff)
        .filter_map(|p| serde_json::from_slice(p).ok())
        .collect();
    let Some(a) = parts.first() else { return };
    let b = parts.get(1).unwrap_or(a);
    let c = parts.get(2).unwrap_or(b);
    let ab = merge(a, b);
    assert_eq!(ab, merge(b, a), "commutative");
    assert_eq!(merge(&ab, a), ab, "idempotent");
    assert_eq!(merge(&ab, c), merge(a, &merge(b, c)), "associative");
    assert_eq!(trim(&ab), trim(&merge(&trim(a), b)), "trimming before a merge changes nothing");
    assert_eq!(uses(&trim(&ab)), uses(&ab), "trimming changes no count");
    let _ = conflicts(&ab, (data.len() % 4) as u32);
});
