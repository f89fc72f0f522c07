//! The code framer: whatever bytes arrive, in whatever chunks, it never panics, never holds more
//! than `max_len` bytes, and every code it emits is trimmed, non-empty, within `max_len`, and
//! free of control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiketo_gate::framing::{Frame, Framer};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_len = 1 + data[0] as usize;
    let chunk = 1 + data[1] as usize % 64;
    let mut framer = Framer::new(max_len);
    let mut check = |f: Frame| {
        if let Frame::Code(c) = f {
            assert!(!c.is_empty());
            assert!(c.len() <= max_len, "code of {} bytes > max_len {max_len}", c.len());
            assert!(!c.chars().any(char::is_control));
            assert_eq!(c.trim(), c);
        }
    };
    for part in data[2..].chunks(chunk) {
        framer.feed(part, &mut check);
    }
    if let Some(f) = framer.flush_partial() {
        check(f);
    }
    if let Some(f) = framer.finish() {
        check(f);
    }
});
