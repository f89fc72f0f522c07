//! Keyboard-mode ("HID") scanners: evdev key events to characters.
//!
//! Pure logic, no IO. A keyboard-mode scanner "types" each code and presses Enter. The keys it
//! presses are the ones that give the code's characters **on the layout the scanner is set
//! to**, so the decoder must know that layout: a German-layout scanner types `z` with the key
//! a US keyboard calls Y. [`HidDecoder`] tracks Shift, Caps Lock, AltGr and Alt+keypad codes
//! and hands complete lines to the same [`Framer`] as the serial reader (so `max_len`, the
//! control-character rule and the frame timeout are the same for every reader).
//!
//! A key the layout cannot map (a function key, Ctrl+something, Backspace) makes the whole
//! code `unmapped_key`: a code with a hole in it would be a different code, and guessing
//! would admit or refuse the wrong pass.

use crate::framing::{Frame, Framer, MalformedKind};

/// `EV_KEY`: key events; all other event types are ignored.
pub const EV_KEY: u16 = 0x01;

/// The keyboard layouts a scanner can be set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// US English (QWERTY).
    Us,
    /// German (QWERTZ, with AltGr).
    De,
}

impl Layout {
    pub const NAMES: &'static [&'static str] = &["us", "de"];

    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "us" => Some(Layout::Us),
            "de" => Some(Layout::De),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Us => "us",
            Layout::De => "de",
        }
    }
}

// Linux key codes (linux/input-event-codes.h).
const KEY_BACKSPACE: u16 = 14;
const KEY_ENTER: u16 = 28;
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_RIGHTSHIFT: u16 = 54;
const KEY_LEFTALT: u16 = 56;
const KEY_CAPSLOCK: u16 = 58;
const KEY_NUMLOCK: u16 = 69;
const KEY_SCROLLLOCK: u16 = 70;
const KEY_KPENTER: u16 = 96;
const KEY_RIGHTCTRL: u16 = 97;
const KEY_RIGHTALT: u16 = 100;
const KEY_LEFTMETA: u16 = 125;
const KEY_RIGHTMETA: u16 = 126;

/// (plain, shifted, AltGr; whether Caps Lock shifts it) for one key on one layout.
type KeyChars = (char, char, Option<char>, bool);

fn letter(c: char) -> KeyChars {
    (c, c.to_ascii_uppercase(), None, true)
}

fn sym(plain: char, shifted: char) -> KeyChars {
    (plain, shifted, None, false)
}

/// What one key gives on a layout (keypad keys are the same on every layout).
fn key_chars(layout: Layout, code: u16) -> Option<KeyChars> {
    // The keypad: digits and operators, whatever the layout (a scanner in keypad mode).
    let keypad = match code {
        71 => Some('7'),
        72 => Some('8'),
        73 => Some('9'),
        74 => Some('-'),
        75 => Some('4'),
        76 => Some('5'),
        77 => Some('6'),
        78 => Some('+'),
        79 => Some('1'),
        80 => Some('2'),
        81 => Some('3'),
        82 => Some('0'),
        83 => Some('.'),
        55 => Some('*'),
        98 => Some('/'),
        _ => None,
    };
    if let Some(c) = keypad {
        return Some((c, c, None, false));
    }
    // Letters common to both layouts (Y and Z swap on German).
    let common = match code {
        16 => Some('q'),
        17 => Some('w'),
        18 => Some('e'),
        19 => Some('r'),
        20 => Some('t'),
        22 => Some('u'),
        23 => Some('i'),
        24 => Some('o'),
        25 => Some('p'),
        30 => Some('a'),
        31 => Some('s'),
        32 => Some('d'),
        33 => Some('f'),
        34 => Some('g'),
        35 => Some('h'),
        36 => Some('j'),
        37 => Some('k'),
        38 => Some('l'),
        45 => Some('x'),
        46 => Some('c'),
        47 => Some('v'),
        48 => Some('b'),
        49 => Some('n'),
        50 => Some('m'),
        _ => None,
    };
    if let Some(c) = common {
        let mut k = letter(c);
        if layout == Layout::De {
            k.2 = match c {
                'q' => Some('@'),
                'e' => Some('€'),
                'm' => Some('µ'),
                _ => None,
            };
        }
        return Some(k);
    }
    if code == 57 {
        return Some(sym(' ', ' '));
    }
    match layout {
        Layout::Us => Some(match code {
            2..=10 => {
                let d = (b'0' + (code - 1) as u8) as char;
                sym(d, b"!@#$%^&*("[(code - 2) as usize] as char)
            }
            11 => sym('0', ')'),
            12 => sym('-', '_'),
            13 => sym('=', '+'),
            21 => letter('y'),
            26 => sym('[', '{'),
            27 => sym(']', '}'),
            39 => sym(';', ':'),
            40 => sym('\'', '"'),
            41 => sym('`', '~'),
            43 => sym('\\', '|'),
            44 => letter('z'),
            51 => sym(',', '<'),
            52 => sym('.', '>'),
            53 => sym('/', '?'),
            86 => sym('\\', '|'),
            _ => return None,
        }),
        Layout::De => Some(match code {
            2..=11 => {
                let i = (code - 2) as usize;
                let plain = "1234567890".chars().nth(i)?;
                let shifted = "!\"§$%&/()=".chars().nth(i)?;
                let altgr = match code {
                    3 => Some('²'),
                    4 => Some('³'),
                    8 => Some('{'),
                    9 => Some('['),
                    10 => Some(']'),
                    11 => Some('}'),
                    _ => None,
                };
                (plain, shifted, altgr, false)
            }
            12 => ('ß', '?', Some('\\'), false),
            13 => sym('´', '`'),
            21 => letter('z'),
            26 => ('ü', 'Ü', None, true),
            27 => ('+', '*', Some('~'), false),
            39 => ('ö', 'Ö', None, true),
            40 => ('ä', 'Ä', None, true),
            41 => sym('^', '°'),
            43 => sym('#', '\''),
            44 => letter('y'),
            51 => sym(',', ';'),
            52 => sym('.', ':'),
            53 => sym('-', '_'),
            86 => ('<', '>', Some('|'), false),
            _ => return None,
        }),
    }
}

/// Keypad digit of a key code, for Alt+keypad character codes.
fn keypad_digit(code: u16) -> Option<u32> {
    Some(match code {
        82 => 0,
        79 => 1,
        80 => 2,
        81 => 3,
        75 => 4,
        76 => 5,
        77 => 6,
        71 => 7,
        72 => 8,
        73 => 9,
        _ => return None,
    })
}

/// Turns key events into frames. Feed it every `EV_KEY` event (`value`: 1 press, 0 release,
/// 2 autorepeat) with [`HidDecoder::key`].
#[derive(Debug)]
pub struct HidDecoder {
    layout: Layout,
    framer: Framer,
    left_shift: bool,
    right_shift: bool,
    caps_lock: bool,
    ctrl: u8,
    left_alt: bool,
    altgr: bool,
    meta: u8,
    /// Alt held with keypad digits typed: the character code so far.
    alt_code: Option<u32>,
    /// The code being typed met a key that cannot be mapped.
    tainted: bool,
}

impl HidDecoder {
    pub fn new(layout: Layout, max_len: usize) -> Self {
        HidDecoder {
            layout,
            framer: Framer::new(max_len),
            left_shift: false,
            right_shift: false,
            caps_lock: false,
            ctrl: 0,
            left_alt: false,
            altgr: false,
            meta: 0,
            alt_code: None,
            tainted: false,
        }
    }

    /// True while part of a code has been typed (the reader then times it out).
    pub fn has_partial(&self) -> bool {
        self.tainted || self.alt_code.is_some() || self.framer.has_partial()
    }

    /// Drops a half-typed code as `incomplete` (the scanner went quiet mid-code).
    pub fn flush_partial(&mut self) -> Option<Frame> {
        let had = self.has_partial();
        self.tainted = false;
        self.alt_code = None;
        self.framer.flush_partial();
        had.then_some(Frame::Malformed(MalformedKind::Incomplete))
    }

    fn shift(&self) -> bool {
        self.left_shift || self.right_shift
    }

    fn type_char(&mut self, c: char, emit: &mut impl FnMut(Frame)) {
        if self.tainted {
            return;
        }
        let mut b = [0u8; 4];
        self.framer.feed(c.encode_utf8(&mut b).as_bytes(), emit);
    }

    fn end_line(&mut self, emit: &mut impl FnMut(Frame)) {
        if self.tainted {
            self.tainted = false;
            self.framer.flush_partial();
            emit(Frame::Malformed(MalformedKind::UnmappedKey));
        } else {
            self.framer.feed(b"\n", emit);
        }
    }

    /// One key event; calls `emit` for each frame it completes.
    pub fn key(&mut self, code: u16, value: i32, mut emit: impl FnMut(Frame)) {
        let down = value != 0;
        // Modifiers: follow press and release (autorepeat changes nothing).
        match code {
            KEY_LEFTSHIFT => return self.left_shift = down,
            KEY_RIGHTSHIFT => return self.right_shift = down,
            KEY_LEFTCTRL | KEY_RIGHTCTRL => {
                let bit = if code == KEY_LEFTCTRL { 1 } else { 2 };
                self.ctrl = if down {
                    self.ctrl | bit
                } else {
                    self.ctrl & !bit
                };
                return;
            }
            KEY_LEFTMETA | KEY_RIGHTMETA => {
                let bit = if code == KEY_LEFTMETA { 1 } else { 2 };
                self.meta = if down {
                    self.meta | bit
                } else {
                    self.meta & !bit
                };
                return;
            }
            KEY_LEFTALT => {
                self.left_alt = down;
                if !down {
                    // Alt released: the keypad digits typed meanwhile are one character.
                    if let Some(n) = self.alt_code.take() {
                        match char::from_u32(n).filter(|c| (' '..='~').contains(c)) {
                            Some(c) => self.type_char(c, &mut emit),
                            None => self.tainted = true,
                        }
                    }
                }
                return;
            }
            KEY_RIGHTALT => {
                // AltGr on German; US has no third level, so a key pressed with it is unmapped.
                return self.altgr = down;
            }
            KEY_CAPSLOCK => {
                if value == 1 {
                    self.caps_lock = !self.caps_lock;
                }
                return;
            }
            KEY_NUMLOCK | KEY_SCROLLLOCK => return,
            _ => {}
        }
        if value != 1 {
            // Releases and autorepeat: a scanner presses each key once.
            return;
        }
        if code == KEY_ENTER || code == KEY_KPENTER {
            if self.alt_code.is_some() {
                self.alt_code = None;
                self.tainted = true;
            }
            return self.end_line(&mut emit);
        }
        if self.left_alt {
            match keypad_digit(code) {
                Some(d) => {
                    let n = self
                        .alt_code
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(d);
                    self.alt_code = Some(n.min(1_000_000));
                }
                None => self.tainted = true,
            }
            return;
        }
        if self.ctrl != 0 || self.meta != 0 || code == KEY_BACKSPACE {
            self.tainted = true;
            return;
        }
        let Some((plain, shifted, third, caps_applies)) = key_chars(self.layout, code) else {
            self.tainted = true;
            return;
        };
        let c = if self.altgr {
            match third {
                Some(c) => c,
                None => {
                    self.tainted = true;
                    return;
                }
            }
        } else {
            let upper = self.shift() ^ (self.caps_lock && caps_applies);
            if upper {
                shifted
            } else {
                plain
            }
        };
        self.type_char(c, &mut emit);
    }
}

/// The size of one `struct input_event` as this machine's kernel writes it: a `timeval` of
/// two longs, then type (u16), code (u16) and value (i32).
pub const RECORD_SIZE: usize = if cfg!(target_pointer_width = "64") {
    24
} else {
    16
};

/// One recorded event: (type, code, value).
pub fn parse_record(rec: &[u8]) -> Option<(u16, u16, i32)> {
    if rec.len() != RECORD_SIZE {
        return None;
    }
    let at = RECORD_SIZE - 8;
    let ty = u16::from_ne_bytes([rec[at], rec[at + 1]]);
    let code = u16::from_ne_bytes([rec[at + 2], rec[at + 3]]);
    let value = i32::from_ne_bytes([rec[at + 4], rec[at + 5], rec[at + 6], rec[at + 7]]);
    Some((ty, code, value))
}

/// One event as the kernel writes it (for tests and for making recordings).
pub fn record(ty: u16, code: u16, value: i32) -> Vec<u8> {
    let mut v = vec![0u8; RECORD_SIZE - 8];
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&code.to_ne_bytes());
    v.extend_from_slice(&value.to_ne_bytes());
    v
}

/// Decodes a whole recording (raw `input_event` records, as the reader reads them). A code
/// still being typed at the end is `incomplete`; a trailing partial record is ignored.
pub fn decode_recording(bytes: &[u8], layout: Layout, max_len: usize) -> (usize, Vec<Frame>) {
    let mut d = HidDecoder::new(layout, max_len);
    let mut frames = Vec::new();
    let mut keys = 0;
    for rec in bytes.chunks_exact(RECORD_SIZE) {
        if let Some((EV_KEY, code, value)) = parse_record(rec) {
            keys += 1;
            d.key(code, value, |f| frames.push(f));
        }
    }
    frames.extend(d.flush_partial());
    (keys, frames)
}

/// The key presses and releases (with SYN reports) a scanner set to `layout` sends to type
/// `text` and Enter; `None` if a character has no key on that layout. For tests, the
/// benchmark and `tiketo-sim`.
pub fn keystrokes(layout: Layout, text: &str) -> Option<Vec<(u16, u16, i32)>> {
    const EV_SYN: u16 = 0;
    let mut out = Vec::new();
    let tap = |out: &mut Vec<(u16, u16, i32)>, mods: &[u16], code: u16| {
        for m in mods {
            out.push((EV_KEY, *m, 1));
        }
        out.push((EV_KEY, code, 1));
        out.push((EV_SYN, 0, 0));
        out.push((EV_KEY, code, 0));
        for m in mods.iter().rev() {
            out.push((EV_KEY, *m, 0));
        }
        out.push((EV_SYN, 0, 0));
    };
    'chars: for ch in text.chars() {
        // Prefer the main block over the keypad (as scanners do), plain over shifted.
        for code in
            (1u16..=127).filter(|c| keypad_digit(*c).is_none() && ![55, 74, 78, 83, 98].contains(c))
        {
            let Some((plain, shifted, third, _)) = key_chars(layout, code) else {
                continue;
            };
            if plain == ch {
                tap(&mut out, &[], code);
                continue 'chars;
            }
            if shifted == ch {
                tap(&mut out, &[KEY_LEFTSHIFT], code);
                continue 'chars;
            }
            if third == Some(ch) {
                tap(&mut out, &[KEY_RIGHTALT], code);
                continue 'chars;
            }
        }
        return None;
    }
    tap(&mut out, &[], KEY_ENTER);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(layout: Layout, events: &[(u16, u16, i32)]) -> Vec<Frame> {
        let mut d = HidDecoder::new(layout, 512);
        let mut out = Vec::new();
        for &(ty, code, value) in events {
            if ty == EV_KEY {
                d.key(code, value, |f| out.push(f));
            }
        }
        out
    }

    fn press(code: u16) -> [(u16, u16, i32); 2] {
        [(EV_KEY, code, 1), (EV_KEY, code, 0)]
    }

    fn seq(parts: &[&[(u16, u16, i32)]]) -> Vec<(u16, u16, i32)> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    const SHIFT_DOWN: (u16, u16, i32) = (EV_KEY, KEY_LEFTSHIFT, 1);
    const SHIFT_UP: (u16, u16, i32) = (EV_KEY, KEY_LEFTSHIFT, 0);

    /// A recording of a US-layout scanner typing `Ab-1` and Enter, as evtest shows it (with
    /// the MSC_SCAN events a real keyboard sends, which are ignored).
    #[test]
    fn us_layout_with_shift() {
        let ev = [
            (4, 4, 0x70004),
            (EV_KEY, 42, 1),
            (EV_KEY, 30, 1),
            (0, 0, 0),
            (EV_KEY, 30, 0),
            (EV_KEY, 42, 0),
            (EV_KEY, 48, 1),
            (EV_KEY, 48, 0),
            (EV_KEY, 12, 1),
            (EV_KEY, 12, 0),
            (EV_KEY, 2, 1),
            (EV_KEY, 2, 0),
            (EV_KEY, 28, 1),
            (EV_KEY, 28, 0),
        ];
        assert_eq!(decode(Layout::Us, &ev), vec![Frame::Code("Ab-1".into())]);
    }

    #[test]
    fn german_layout_swaps_y_and_z_and_moves_symbols() {
        // The keys a German-layout scanner presses for "Zy-_/:@ü": on a US keymap that
        // would read "Yz/?&>q[" — the classic wrong-layout garbage.
        let ev = seq(&[
            &[SHIFT_DOWN],
            &press(21),
            &[SHIFT_UP],
            &press(44),
            &press(53),
            &[SHIFT_DOWN],
            &press(53),
            &press(8),
            &press(52),
            &[SHIFT_UP],
            &[(EV_KEY, KEY_RIGHTALT, 1)],
            &press(16),
            &[(EV_KEY, KEY_RIGHTALT, 0)],
            &press(26),
            &press(KEY_ENTER),
        ]);
        assert_eq!(
            decode(Layout::De, &ev),
            vec![Frame::Code("Zy-_/:@ü".into())]
        );
        // The same keys on the US layout: the AltGr key has nothing there, so the code is
        // refused rather than misread.
        assert_eq!(
            decode(Layout::Us, &ev),
            vec![Frame::Malformed(MalformedKind::UnmappedKey)]
        );
    }

    #[test]
    fn caps_lock_shifts_letters_only_and_shift_cancels_it() {
        let caps = press(KEY_CAPSLOCK);
        let ev = seq(&[
            &caps,
            &press(30), // A
            &press(2),  // 1 (not !)
            &[SHIFT_DOWN],
            &press(48), // b (Shift cancels Caps)
            &[SHIFT_UP],
            &press(40), // DE: Ä (umlauts follow Caps Lock)
            &caps,
            &press(31), // s
            &press(KEY_ENTER),
        ]);
        assert_eq!(decode(Layout::De, &ev), vec![Frame::Code("A1bÄs".into())]);
        assert_eq!(decode(Layout::Us, &ev), vec![Frame::Code("A1b's".into())]);
    }

    #[test]
    fn a_code_interrupted_mid_way_is_incomplete_and_the_next_one_reads() {
        let mut d = HidDecoder::new(Layout::Us, 512);
        let mut out = Vec::new();
        for (c, v) in [(30, 1), (30, 0), (48, 1)] {
            d.key(c, v, |f| out.push(f));
        }
        assert!(d.has_partial());
        // The reader's frame timeout fires: the half code is dropped, Shift state too.
        out.extend(d.flush_partial());
        assert!(!d.has_partial());
        for (c, v) in [(46, 1), (46, 0), (28, 1), (28, 0)] {
            d.key(c, v, |f| out.push(f));
        }
        assert_eq!(
            out,
            vec![
                Frame::Malformed(MalformedKind::Incomplete),
                Frame::Code("c".into())
            ]
        );
        assert_eq!(d.flush_partial(), None, "nothing pending: nothing to drop");
    }

    #[test]
    fn unmapped_keys_refuse_the_whole_code() {
        // F1 in the middle, Ctrl+C, Backspace: each makes its code unmapped_key, and the
        // next code is read normally.
        let ev = seq(&[
            &press(30),
            &press(59),
            &press(31),
            &press(KEY_ENTER),
            &[(EV_KEY, KEY_LEFTCTRL, 1)],
            &press(46),
            &[(EV_KEY, KEY_LEFTCTRL, 0)],
            &press(KEY_ENTER),
            &press(30),
            &press(KEY_BACKSPACE),
            &press(KEY_KPENTER),
            &press(32),
            &press(KEY_ENTER),
        ]);
        assert_eq!(
            decode(Layout::Us, &ev),
            vec![
                Frame::Malformed(MalformedKind::UnmappedKey),
                Frame::Malformed(MalformedKind::UnmappedKey),
                Frame::Malformed(MalformedKind::UnmappedKey),
                Frame::Code("d".into()),
            ]
        );
    }

    #[test]
    fn alt_keypad_codes_are_layout_independent() {
        // Alt+0064 is '@', Alt+90 is 'Z', keypad digits without Alt are digits.
        let alt = |digits: &[u16]| {
            let mut v = vec![(EV_KEY, KEY_LEFTALT, 1)];
            for d in digits {
                v.extend(press(*d));
            }
            v.push((EV_KEY, KEY_LEFTALT, 0));
            v
        };
        let ev = seq(&[
            &alt(&[82, 77, 75]),
            &alt(&[73, 82]),
            &press(79),
            &press(KEY_ENTER),
        ]);
        for layout in [Layout::Us, Layout::De] {
            assert_eq!(decode(layout, &ev), vec![Frame::Code("@Z1".into())]);
        }
        // Alt+7 is a control character: refused.
        let bad = seq(&[&alt(&[71]), &press(KEY_ENTER)]);
        assert_eq!(
            decode(Layout::Us, &bad),
            vec![Frame::Malformed(MalformedKind::UnmappedKey)]
        );
    }

    #[test]
    fn autorepeat_and_max_len() {
        let ev = seq(&[
            &[
                (EV_KEY, 30, 1),
                (EV_KEY, 30, 2),
                (EV_KEY, 30, 2),
                (EV_KEY, 30, 0),
            ],
            &press(KEY_ENTER),
        ]);
        assert_eq!(decode(Layout::Us, &ev), vec![Frame::Code("a".into())]);
        let mut d = HidDecoder::new(Layout::Us, 3);
        let mut out = Vec::new();
        for _ in 0..5 {
            d.key(30, 1, |f| out.push(f));
        }
        d.key(KEY_ENTER, 1, |f| out.push(f));
        assert_eq!(out, vec![Frame::Malformed(MalformedKind::TooLong)]);
    }

    #[test]
    fn keystrokes_round_trip_on_both_layouts() {
        let texts = [
            "TKT-2026-ABCDEFGH",
            "https://t.example/p?id=Zy_9&x=1",
            "{\"a\":[1,2]}",
            "a b\\c|d~e@f",
        ];
        for layout in [Layout::Us, Layout::De] {
            for t in texts {
                let ev = keystrokes(layout, t).unwrap();
                assert_eq!(
                    decode(layout, &ev),
                    vec![Frame::Code(t.into())],
                    "{t} on {layout:?}"
                );
            }
        }
        assert!(keystrokes(Layout::Us, "ü").is_none());
        assert_eq!(
            decode(Layout::De, &keystrokes(Layout::De, "Grüße").unwrap()),
            vec![Frame::Code("Grüße".into())]
        );
    }

    #[test]
    fn a_recording_decodes_like_the_live_reader() {
        let mut bytes: Vec<u8> = keystrokes(Layout::De, "VALID-0001")
            .unwrap()
            .into_iter()
            .flat_map(|(t, c, v)| record(t, c, v))
            .collect();
        bytes.extend(record(EV_KEY, 30, 1));
        bytes.extend(&[0u8; 5]);
        let (keys, frames) = decode_recording(&bytes, Layout::De, 512);
        assert_eq!(
            keys, 33,
            "5 shifted letters (4 events), 5 plain keys and Enter (2), 1 more"
        );
        assert_eq!(
            frames,
            vec![
                Frame::Code("VALID-0001".into()),
                Frame::Malformed(MalformedKind::Incomplete)
            ]
        );
        // Read with the wrong layout, the German '-' key is a US '/'.
        let (_, us) = decode_recording(&bytes, Layout::Us, 512);
        assert_eq!(us[0], Frame::Code("VALID/0001".into()));
    }

    #[test]
    fn records_round_trip() {
        let r = record(EV_KEY, 30, 1);
        assert_eq!(r.len(), RECORD_SIZE);
        assert_eq!(parse_record(&r), Some((EV_KEY, 30, 1)));
        assert_eq!(parse_record(&r[1..]), None);
    }
}
