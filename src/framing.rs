//! Framing of the reader's byte stream into pass codes.
//!
//! Pure logic, no IO: the reader feeds whatever bytes a `read` returned and gets back the
//! frames they completed. A code ends at CR, LF or CRLF (a CRLF is a CR that ends the code and
//! an LF that ends an empty line, and an empty line is nothing). Whitespace and control
//! characters around a code are stripped. A line longer than `max_len` bytes, a line that is
//! not UTF-8 and a line with a control character inside the code are `Malformed`. After an
//! over-long line the framer drops bytes until the next terminator, so its buffer never holds
//! more than `max_len` bytes whatever arrives.

use std::fmt;

/// Why a line was rejected before it reached the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    /// More than `max_len` bytes before a terminator.
    TooLong,
    /// The line is not valid UTF-8.
    NotUtf8,
    /// A control character inside the code (after trimming).
    ControlChar,
    /// Bytes that were never terminated: the reader went quiet mid-code.
    Incomplete,
    /// A keyboard-mode reader pressed a key its layout cannot map (a function key, Ctrl+x).
    UnmappedKey,
}

impl MalformedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MalformedKind::TooLong => "too_long",
            MalformedKind::NotUtf8 => "not_utf8",
            MalformedKind::ControlChar => "control_char",
            MalformedKind::Incomplete => "incomplete",
            MalformedKind::UnmappedKey => "unmapped_key",
        }
    }
}

impl fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Code(String),
    Malformed(MalformedKind),
}

/// Incremental framer with bounded memory.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max_len: usize,
    /// Dropping bytes of an over-long line until the next terminator.
    overflow: bool,
}

impl Framer {
    pub fn new(max_len: usize) -> Self {
        assert!(max_len > 0, "max_len must be positive");
        Framer {
            buf: Vec::with_capacity(max_len.min(4096)),
            max_len,
            overflow: false,
        }
    }

    /// True when bytes of an unterminated line are waiting.
    pub fn has_partial(&self) -> bool {
        self.overflow || !self.buf.is_empty()
    }

    /// Feeds bytes; calls `emit` for every frame they complete, in order.
    pub fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(Frame)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(i) => {
                    self.push(&rest[..i]);
                    if let Some(frame) = self.finish_line() {
                        emit(frame);
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    self.push(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Ends a line that was never terminated (the reader went quiet mid-code). Returns
    /// `Malformed(TooLong)` after an overflow, `Malformed(Incomplete)` when there were bytes
    /// that are not only whitespace, else nothing.
    pub fn flush_partial(&mut self) -> Option<Frame> {
        let frame = if self.overflow {
            Some(Frame::Malformed(MalformedKind::TooLong))
        } else if trim(&self.buf).is_empty() {
            None
        } else {
            Some(Frame::Malformed(MalformedKind::Incomplete))
        };
        self.buf.clear();
        self.overflow = false;
        frame
    }

    /// Ends the stream: an unterminated last line counts as a line (stdin without a final
    /// newline), unless it is over-long.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.has_partial() {
            self.finish_line()
        } else {
            None
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_len {
            self.buf.clear();
            self.overflow = true;
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn finish_line(&mut self) -> Option<Frame> {
        if self.overflow {
            self.overflow = false;
            self.buf.clear();
            return Some(Frame::Malformed(MalformedKind::TooLong));
        }
        let frame = classify_line(&self.buf);
        self.buf.clear();
        frame
    }
}

fn is_trimmable(b: u8) -> bool {
    b.is_ascii_whitespace() || b.is_ascii_control()
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| !is_trimmable(b));
    match start {
        None => &[],
        Some(s) => {
            let end = line.iter().rposition(|&b| !is_trimmable(b)).unwrap_or(s);
            &line[s..=end]
        }
    }
}

fn classify_line(line: &[u8]) -> Option<Frame> {
    let trimmed = trim(line);
    if trimmed.is_empty() {
        return None;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Some(Frame::Malformed(MalformedKind::NotUtf8));
    };
    // Unicode whitespace and controls (NBSP, C1 controls) around the code go as well.
    let text = text.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if text.is_empty() {
        return None;
    }
    if text.chars().any(char::is_control) {
        return Some(Frame::Malformed(MalformedKind::ControlChar));
    }
    Some(Frame::Code(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max_len: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new(max_len);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |fr| out.push(fr));
        }
        out
    }

    fn code(s: &str) -> Frame {
        Frame::Code(s.to_owned())
    }

    #[test]
    fn cr_lf_and_crlf_each_end_one_code() {
        assert_eq!(
            frames(64, &[b"A1\rB2\nC3\r\nD4\n\r"]),
            vec![code("A1"), code("B2"), code("C3"), code("D4")]
        );
    }

    #[test]
    fn codes_split_across_reads_are_joined() {
        assert_eq!(
            frames(64, &[b"ABC", b"DEF\r", b"\nGH", b"I\n"]),
            vec![code("ABCDEF"), code("GHI")]
        );
    }

    #[test]
    fn whitespace_and_controls_around_a_code_are_stripped() {
        assert_eq!(
            frames(64, &[b"\x02  TICKET-1 \t\x03\r\n"]),
            vec![code("TICKET-1")]
        );
        assert_eq!(
            frames(64, &["\u{a0}X-9\u{85}\n".as_bytes()]),
            vec![code("X-9")]
        );
    }

    #[test]
    fn empty_and_blank_lines_are_nothing() {
        assert_eq!(frames(64, &[b"\r\n\r\n  \t\n\x00\n"]), vec![]);
    }

    #[test]
    fn inner_spaces_are_kept_inner_controls_are_malformed() {
        assert_eq!(frames(64, &[b"A B\n"]), vec![code("A B")]);
        assert_eq!(
            frames(64, &[b"A\x07B\n"]),
            vec![Frame::Malformed(MalformedKind::ControlChar)]
        );
    }

    #[test]
    fn non_utf8_is_malformed_and_next_code_works() {
        assert_eq!(
            frames(64, &[b"\xff\xfeAB\r\nOK-1\r\n"]),
            vec![Frame::Malformed(MalformedKind::NotUtf8), code("OK-1")]
        );
    }

    #[test]
    fn exactly_max_len_is_accepted_one_more_is_too_long() {
        let ok = vec![b'A'; 16];
        let mut long = vec![b'B'; 17];
        long.push(b'\n');
        let mut first = ok.clone();
        first.push(b'\n');
        assert_eq!(
            frames(16, &[&first, &long, b"C\n"]),
            vec![
                code(&"A".repeat(16)),
                Frame::Malformed(MalformedKind::TooLong),
                code("C")
            ]
        );
    }

    #[test]
    fn overflow_keeps_memory_bounded_and_resyncs_at_terminator() {
        let mut f = Framer::new(512);
        let mut out = Vec::new();
        let garbage = vec![b'x'; 4096];
        for _ in 0..16 {
            f.feed(&garbage, |fr| out.push(fr));
            assert!(
                f.buf.capacity() <= 4096,
                "buffer grew to {}",
                f.buf.capacity()
            );
            assert!(f.buf.len() <= 512);
        }
        assert!(out.is_empty());
        f.feed(b"tail\r\nVALID-1\r\n", |fr| out.push(fr));
        assert_eq!(
            out,
            vec![Frame::Malformed(MalformedKind::TooLong), code("VALID-1")]
        );
    }

    #[test]
    fn flush_partial_reports_incomplete_garbage_once() {
        let mut f = Framer::new(64);
        let mut out = Vec::new();
        f.feed(b"half-a-co", |fr| out.push(fr));
        assert!(f.has_partial());
        assert_eq!(
            f.flush_partial(),
            Some(Frame::Malformed(MalformedKind::Incomplete))
        );
        assert!(!f.has_partial());
        assert_eq!(f.flush_partial(), None);
        f.feed(b"  ", |fr| out.push(fr));
        assert_eq!(f.flush_partial(), None, "whitespace alone is nothing");
        f.feed(b"GOOD\n", |fr| out.push(fr));
        assert_eq!(out, vec![code("GOOD")]);
        f.feed(&[b'z'; 100], |fr| out.push(fr));
        assert_eq!(
            f.flush_partial(),
            Some(Frame::Malformed(MalformedKind::TooLong))
        );
    }

    #[test]
    fn finish_treats_last_unterminated_line_as_a_line() {
        let mut f = Framer::new(64);
        f.feed(b"LAST", |_| {});
        assert_eq!(f.finish(), Some(code("LAST")));
        assert_eq!(f.finish(), None);
    }
}
