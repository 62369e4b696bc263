//! Dot-stuffing of a message for DATA (RFC 5321 §4.5.2), refusing line ends that could smuggle a second message.
//!
//! The server ends the message at the first line that is a lone ".", so every line of
//! the message that begins with "." gets one more, and "." CRLF is appended. Only CRLF
//! ends a line here: a bare LF or bare CR is an error, never passed on. Servers differ
//! in whether they take "\n.\n" or "\r.\r" as the end of the data, and a message that
//! carries one can end early on one server and go on as a second, forged transaction
//! (SMTP smuggling, CVE-2023-51766 and others). The renderer writes CRLF only, so an
//! error here is a rendering bug; it is not worth a repair that could hide one.
//!
//! RFC 1870 §3: the `SIZE=` of MAIL FROM counts the message with its CRLFs but not the
//! stuffed dots or the final "." CRLF, so it is the message's length (plus 2 when the
//! message does not end with CRLF), not [`stuffed_len`].

use memchr::memchr2_iter;
use thiserror::Error;

/// A message that cannot be sent with DATA as it is. Stuff the message before DATA is
/// sent: after a 354, the only way out of the data phase is the final "." (which would
/// deliver what was sent so far) or closing the connection. The recipients' outcomes
/// then carry this as a message error; sending the same bytes again cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DotError {
    /// A LF not preceded by CR at byte `offset` of the message.
    #[error("bare LF at byte {offset} of the message: every line must end with CRLF")]
    BareLf { offset: usize },
    /// A CR not followed by LF at byte `offset` of the message.
    #[error("bare CR at byte {offset} of the message: every line must end with CRLF")]
    BareCr { offset: usize },
}

/// Appends `message`, dot-stuffed and terminated, to `out`: a "." is doubled at the
/// start of every line (the first one too), CRLF is added if the message does not end
/// with one, then "." CRLF. An empty message becomes just ".\r\n". On error `out` is
/// left as it was.
pub fn dot_stuff(message: &[u8], out: &mut Vec<u8>) -> Result<(), DotError> {
    let start = out.len();
    out.reserve(message.len() + 5);
    let mut copied = 0;
    let scanned = for_each_line_start_dot(message, |dot| {
        out.extend_from_slice(&message[copied..dot]);
        out.push(b'.');
        copied = dot;
    });
    if let Err(err) = scanned {
        out.truncate(start);
        return Err(err);
    }
    out.extend_from_slice(&message[copied..]);
    if needs_final_crlf(message) {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    Ok(())
}

/// The exact number of bytes [`dot_stuff`] appends for `message` (to size a buffer or
/// account for a write), or the error it would return.
pub fn stuffed_len(message: &[u8]) -> Result<usize, DotError> {
    let mut dots = 0;
    for_each_line_start_dot(message, |_| dots += 1)?;
    let crlf = if needs_final_crlf(message) { 2 } else { 0 };
    Ok(message.len() + dots + crlf + 3)
}

/// Calls `dot(i)` for each `i` where a line of `message` begins with "."; calls none when
/// `message` has a bare LF or bare CR, and returns the first one.
///
/// Two passes instead of one walk from line end to line end: a 100 KB message has some
/// 1,400 lines of at most 78 octets (quoted-printable), too short for a search per line
/// to pay off, while a whole-message check that every CR is followed by LF (and every LF
/// preceded by CR) compiles to SIMD compares, and a dot after LF is rare enough for one
/// memmem search over the message. (Measured: the walk was 5% of the CPU of delivering
/// 100 KB messages; bench/e2e.py's kumo row.)
fn for_each_line_start_dot(message: &[u8], mut dot: impl FnMut(usize)) -> Result<(), DotError> {
    if !line_ends_are_crlf(message) {
        return Err(first_bare_line_end(message));
    }
    if message.first() == Some(&b'.') {
        dot(0);
    }
    for i in memchr::memmem::find_iter(message, b"\n.") {
        dot(i + 1);
    }
    Ok(())
}

/// Whether every CR in `message` is followed by LF and every LF preceded by CR.
fn line_ends_are_crlf(message: &[u8]) -> bool {
    if message.first() == Some(&b'\n') || message.last() == Some(&b'\r') {
        return false;
    }
    let Some(next) = message.get(1..) else {
        return true; // empty
    };
    // Byte i is CR exactly when byte i + 1 is LF; checked a block at a time, so that
    // the compiler can vectorise the inner loop and a bad message stops early.
    let this = &message[..message.len() - 1];
    this.chunks(256).zip(next.chunks(256)).all(|(a, b)| {
        a.iter().zip(b).fold(0u8, |bad, (&x, &y)| {
            bad | ((x == b'\r') as u8 ^ (y == b'\n') as u8)
        }) == 0
    })
}

/// The first bare LF or bare CR of a message that has one.
fn first_bare_line_end(message: &[u8]) -> DotError {
    let mut line_ends = memchr2_iter(b'\r', b'\n', message);
    while let Some(i) = line_ends.next() {
        if message[i] == b'\n' {
            return DotError::BareLf { offset: i };
        }
        if message.get(i + 1) != Some(&b'\n') {
            return DotError::BareCr { offset: i };
        }
        line_ends.next(); // the LF just checked
    }
    unreachable!("first_bare_line_end of a message whose line ends are all CRLF")
}

/// Whether a message already checked for bare CR/LF lacks its final line end.
fn needs_final_crlf(message: &[u8]) -> bool {
    !message.is_empty() && !message.ends_with(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        dot_stuff(message, &mut out).unwrap();
        assert_eq!(stuffed_len(message), Ok(out.len()), "{message:?}");
        out
    }

    #[test]
    fn plain_message() {
        assert_eq!(
            stuffed(b"Subject: hi\r\n\r\nHello\r\n"),
            b"Subject: hi\r\n\r\nHello\r\n.\r\n"
        );
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(stuffed(b".first\r\n"), b"..first\r\n.\r\n");
        assert_eq!(
            stuffed(b"a\r\n.b\r\n..c\r\n.\r\nd.\r\n"),
            b"a\r\n..b\r\n...c\r\n..\r\nd.\r\n.\r\n"
        );
        assert_eq!(stuffed(b"."), b"..\r\n.\r\n");
        assert_eq!(stuffed(b"x\r\n."), b"x\r\n..\r\n.\r\n");
    }

    #[test]
    fn end_of_data_inside_the_body_is_not_an_end() {
        let out = stuffed(b"Subject: x\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@example>\r\n");
        assert_eq!(
            out,
            b"Subject: x\r\n\r\nbefore\r\n..\r\nMAIL FROM:<evil@example>\r\n.\r\n"
        );
        assert_eq!(
            memchr::memmem::find(&out, b"\r\n.\r\n"),
            Some(out.len() - 5)
        );
    }

    #[test]
    fn empty_message() {
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"\r\n"), b"\r\n.\r\n");
    }

    #[test]
    fn final_crlf_is_added_once() {
        assert_eq!(stuffed(b"body"), b"body\r\n.\r\n");
        assert_eq!(stuffed(b"a\r\nbody"), b"a\r\nbody\r\n.\r\n");
        assert_eq!(stuffed(b"body\r\n"), b"body\r\n.\r\n");
        assert_eq!(stuffed(b"body\r\n\r\n"), b"body\r\n\r\n.\r\n");
    }

    #[test]
    fn bare_lf_and_cr_are_refused() {
        for (message, err) in [
            (&b"a\nb\r\n"[..], DotError::BareLf { offset: 1 }),
            (
                b"a\r\n\n.\nMAIL FROM:<x>\r\n",
                DotError::BareLf { offset: 3 },
            ),
            (b"\n", DotError::BareLf { offset: 0 }),
            (b"a\r\n\r\n.\n", DotError::BareLf { offset: 6 }),
            (b"a\rb\r\n", DotError::BareCr { offset: 1 }),
            (b"a\r\n.\r", DotError::BareCr { offset: 4 }),
            (b"\r\r\n", DotError::BareCr { offset: 0 }),
            (b"body\r", DotError::BareCr { offset: 4 }),
            (b"\n\r", DotError::BareLf { offset: 0 }),
        ] {
            let mut out = b"kept".to_vec();
            assert_eq!(
                dot_stuff(message, &mut out),
                Err(err.clone()),
                "{message:?}"
            );
            assert_eq!(out, b"kept", "out is left as it was");
            assert_eq!(stuffed_len(message), Err(err));
        }
        assert_eq!(
            DotError::BareLf { offset: 7 }.to_string(),
            "bare LF at byte 7 of the message: every line must end with CRLF"
        );
    }

    #[test]
    fn appends_to_what_is_there() {
        let mut out = b"DATA\r\n".to_vec();
        dot_stuff(b".x", &mut out).unwrap();
        assert_eq!(out, b"DATA\r\n..x\r\n.\r\n");
    }

    /// Undoes the stuffing: the message (with its final CRLF) back, and checks that
    /// the only lone "." line is the terminator.
    fn unstuff(out: &[u8]) -> Vec<u8> {
        let body = out.strip_suffix(b".\r\n").expect("terminator");
        let mut message = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            assert_ne!(line, b".\r\n", "a lone dot before the end: {out:?}");
            message.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        message
    }

    #[test]
    fn random_crlf_messages_round_trip() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let pieces = next() % 24;
            let mut message = Vec::new();
            for _ in 0..pieces {
                let piece: &[u8] = match next() % 6 {
                    0 | 1 => b"\r\n",
                    2 => b".",
                    3 => b"..",
                    4 => b"text",
                    _ => b" ",
                };
                message.extend_from_slice(piece);
            }
            let out = stuffed(&message);
            let mut expected = message.clone();
            if needs_final_crlf(&message) {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(unstuff(&out), expected, "{message:?}");
        }
    }

    /// The byte-by-byte reading of RFC 5321 §4.5.2 with CRLF-only line ends, against
    /// which the two-pass scan is checked on every message of up to 7 octets made of
    /// "a", ".", CR and LF.
    fn reference(message: &[u8]) -> Result<Vec<u8>, DotError> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        for (i, &byte) in message.iter().enumerate() {
            if byte == b'\n' && (i == 0 || message[i - 1] != b'\r') {
                return Err(DotError::BareLf { offset: i });
            }
            if byte == b'\r' && message.get(i + 1) != Some(&b'\n') {
                return Err(DotError::BareCr { offset: i });
            }
            if at_line_start && byte == b'.' {
                out.push(b'.');
            }
            out.push(byte);
            at_line_start = byte == b'\n';
        }
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        Ok(out)
    }

    #[test]
    fn agrees_with_the_byte_by_byte_reading_on_every_short_message() {
        let alphabet = [b'a', b'.', b'\r', b'\n'];
        for len in 0..=7u32 {
            for n in 0..4usize.pow(len) {
                let message: Vec<u8> = (0..len).map(|k| alphabet[n / 4usize.pow(k) % 4]).collect();
                let mut out = Vec::new();
                let ours = dot_stuff(&message, &mut out).map(|()| out);
                assert_eq!(ours, reference(&message), "{message:?}");
            }
        }
    }
}
