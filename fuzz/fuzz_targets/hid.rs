//! The keyboard-mode decoder: whatever key events arrive (any codes, values, modifiers, in any
//! order), it never panics, and every code it emits is trimmed, non-empty, within `max_len`
//! and free of control characters (the same guarantees as the serial framer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiketo_gate::framing::Frame;
use tiketo_gate::hid::{HidDecoder, Layout};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_len = 1 + data[0] as usize;
    let layout = if data[1] & 1 == 0 { Layout::Us } else { Layout::De };
    let mut d = HidDecoder::new(layout, max_len);
    let mut check = |f: Frame| {
        if let Frame::Code(c) = f {
            assert!(!c.is_empty());
            assert!(c.len() <= max_len, "code of {} bytes > max_len {max_len}", c.len());
            assert!(!c.chars().any(char::is_control));
            assert_eq!(c.trim(), c);
        }
    };
    // Three bytes an event: a key code (biased to the keyboard's range), a value (press,
    // release, repeat, or anything), and one bit for "the frame timeout fires here".
    for ev in data[2..].chunks_exact(3) {
        let code = if ev[0] < 200 { ev[0] as u16 % 128 } else { ev[0] as u16 * 3 };
        let value = match ev[1] % 4 {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => ev[1] as i32 - 128,
        };
        d.key(code, value, &mut check);
        if ev[2] & 0x80 != 0 {
            if let Some(f) = d.flush_partial() {
                check(f);
            }
        }
    }
});
