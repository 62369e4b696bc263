//! MIME bodies: picks a transfer encoding per part and writes the single part or the
//! multipart/alternative structure, with CRLF line ends and lines of at most 998 octets.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use memchr::memmem;

/// RFC 5322 §2.1.1: a line is at most 998 octets before its CRLF.
pub const MAX_LINE: usize = 998;
/// RFC 2045 §6.7 (quoted-printable) and §6.8 (base64): at most 76 characters a line.
const ENCODED_LINE: usize = 76;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl TransferEncoding {
    pub fn name(self) -> &'static str {
        match self {
            TransferEncoding::SevenBit => "7bit",
            TransferEncoding::QuotedPrintable => "quoted-printable",
            TransferEncoding::Base64 => "base64",
        }
    }

    /// 7bit when the text is ASCII without NUL and its lines fit; base64 when more
    /// than a third is non-ASCII (quoted-printable would triple it); else quoted-printable.
    pub fn choose(text: &str) -> TransferEncoding {
        let bytes = text.as_bytes();
        if text.is_ascii() {
            if memchr::memchr(0, bytes).is_none() && longest_line(bytes) <= MAX_LINE {
                return TransferEncoding::SevenBit;
            }
            return TransferEncoding::QuotedPrintable;
        }
        if count_non_ascii(bytes) * 3 > bytes.len() {
            TransferEncoding::Base64
        } else {
            TransferEncoding::QuotedPrintable
        }
    }
}

/// Bytes with the high bit set, counted eight at a time.
fn count_non_ascii(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut n = 0;
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
        n += (word & 0x8080_8080_8080_8080).count_ones() as usize;
    }
    n + chunks.remainder().iter().filter(|&&b| b >= 0x80).count()
}

fn longest_line(bytes: &[u8]) -> usize {
    let mut longest = 0;
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        longest = longest.max(i - start);
        start = i + 1;
    }
    longest.max(bytes.len() - start)
}

/// One body part: its media type (`text/plain`, `text/html`) and decoded text.
pub struct Part<'a> {
    pub media_type: &'static str,
    pub text: &'a str,
}

/// Writes the MIME headers (from Content-Type on) and the body for `parts`: one part
/// as the whole body, two or more as multipart/alternative in the order given (RFC 2046
/// §5.1.4: the plainest first). `boundary_seed` makes the boundary unique per message.
pub fn write_body(out: &mut Vec<u8>, parts: &[Part<'_>], boundary_seed: &str) {
    if let [only] = parts {
        let encoding = TransferEncoding::choose(only.text);
        write_part_headers(out, only.media_type, encoding);
        out.extend_from_slice(b"\r\n");
        write_encoded(out, only.text, encoding);
        return;
    }
    // "=_" never occurs in quoted-printable or base64 output; a 7bit part that happens
    // to contain the boundary is sent quoted-printable instead.
    let boundary = format!("=_ferrymail_{boundary_seed}");
    out.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\"\r\n\r\n");
    for part in parts {
        let mut encoding = TransferEncoding::choose(part.text);
        if encoding == TransferEncoding::SevenBit
            && memmem::find(part.text.as_bytes(), boundary.as_bytes()).is_some()
        {
            encoding = TransferEncoding::QuotedPrintable;
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_part_headers(out, part.media_type, encoding);
        out.extend_from_slice(b"\r\n");
        write_encoded(out, part.text, encoding);
        // RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary. The
        // writers end every line with CRLF, so a part whose text ends in a line break
        // (or is empty) needs one more for that break to survive. Base64 ignores it.
        if encoding != TransferEncoding::Base64
            && (part.text.is_empty() || ends_with_break(part.text))
        {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

fn write_part_headers(out: &mut Vec<u8>, media_type: &str, encoding: TransferEncoding) {
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(media_type.as_bytes());
    out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
    out.extend_from_slice(encoding.name().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `text` in `encoding`, ending with CRLF (an empty text writes nothing).
fn write_encoded(out: &mut Vec<u8>, text: &str, encoding: TransferEncoding) {
    match encoding {
        TransferEncoding::SevenBit => write_crlf_lines(out, text.as_bytes()),
        TransferEncoding::QuotedPrintable => write_quoted_printable(out, text.as_bytes()),
        TransferEncoding::Base64 => write_base64(out, text.as_bytes()),
    }
}

fn ends_with_break(text: impl AsRef<[u8]>) -> bool {
    matches!(text.as_ref().last(), Some(b'\n' | b'\r'))
}

/// Splits at CRLF, LF or a lone CR: each is a line break in a text body.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trimmed = match bytes {
        [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n'] | [rest @ .., b'\r'] => rest,
        all => all,
    };
    let empty = bytes.is_empty();
    let mut rest = Some(trimmed).filter(|_| !empty);
    std::iter::from_fn(move || {
        let cur = rest?;
        match memchr::memchr2(b'\r', b'\n', cur) {
            Some(i) => {
                let skip = if cur[i] == b'\r' && cur.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&cur[i + skip..]);
                Some(&cur[..i])
            }
            None => {
                rest = None;
                Some(cur)
            }
        }
    })
}

fn write_crlf_lines(out: &mut Vec<u8>, bytes: &[u8]) {
    for line in lines(bytes) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes that quoted-printable must encode anywhere in a line (RFC 2045 §6.7 rule 2):
/// everything but printable ASCII other than `=`, and space and tab, which are only
/// encoded at the end of a line (rule 3).
const QP_ENCODE: [bool; 256] = {
    let mut t = [true; 256];
    let mut b = 33;
    while b <= 126 {
        t[b] = b == b'=' as usize;
        b += 1;
    }
    t[b' ' as usize] = false;
    t[b'\t' as usize] = false;
    t
};

/// Where the run of bytes quoted-printable leaves as they are, starting at `i`, ends.
/// Sixteen bytes at a time (SSE2, part of every x86-64) or eight elsewhere: a block
/// with no `=`, control or non-ASCII byte is skipped whole. The block test may only
/// over-report (a tab is literal), and the byte loop then decides exactly.
fn literal_run_end(line: &[u8], i: usize) -> usize {
    let mut i = skip_plain_blocks(line, i);
    while i < line.len() && !QP_ENCODE[line[i] as usize] {
        i += 1;
    }
    i
}

#[cfg(target_arch = "x86_64")]
fn skip_plain_blocks(line: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    while let Some(block) = line.get(i..i + 16) {
        // SAFETY: SSE2 is in the x86-64 baseline, and `block` is 16 readable bytes
        // (loadu has no alignment requirement).
        let mask = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            // Signed compare: bytes of 0x80 and more are negative, so "< 0x20" also
            // catches every non-ASCII byte.
            let below_space = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            let equals = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'=' as i8));
            let delete = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(below_space, equals), delete))
        };
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
fn skip_plain_blocks(line: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = line.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let special = has_zero(w ^ (ONES * u64::from(b'=')))
            | has_zero(w ^ (ONES * 0x7f))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH) // a byte below 0x20
            | (w & HIGH); // a byte of 0x80 or more
        if special != 0 {
            break;
        }
        i += 8;
    }
    i
}

/// RFC 2045 §6.7 quoted-printable with CRLF hard breaks and `=` soft breaks at 76.
/// This is the renderer's hottest loop (every byte of every body passes here), so runs
/// of literal bytes are found with a table and copied whole.
pub fn write_quoted_printable(out: &mut Vec<u8>, bytes: &[u8]) {
    for line in lines(bytes) {
        let len = line.len();
        let mut column = 0;
        let mut i = 0;
        while i < len {
            let mut run_end = literal_run_end(line, i);
            // Whitespace ending a line is encoded, or transports may strip it (rule 3).
            if run_end == len && matches!(line[len - 1], b' ' | b'\t') && run_end > i {
                run_end -= 1;
            }
            while i < run_end {
                // Columns left before a soft break's "=" is needed; the line's very
                // last character may take the 76th column itself.
                let room = ENCODED_LINE - 1 - column;
                let rest = run_end - i;
                if rest <= room || (run_end == len && rest == room + 1) {
                    out.extend_from_slice(&line[i..run_end]);
                    column += rest;
                    i = run_end;
                } else {
                    out.extend_from_slice(&line[i..i + room]);
                    out.extend_from_slice(b"=\r\n");
                    column = 0;
                    i += room;
                }
            }
            if i < len {
                let b = line[i];
                let limit = if i + 1 == len {
                    ENCODED_LINE
                } else {
                    ENCODED_LINE - 1
                };
                if column + 3 > limit {
                    out.extend_from_slice(b"=\r\n");
                    column = 0;
                }
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                column += 3;
                i += 1;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 2045 §6.8 base64 in 76-character lines; line breaks are normalised to CRLF first.
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut canonical = Vec::with_capacity(bytes.len() + 64);
    write_crlf_lines(&mut canonical, bytes);
    if !bytes.is_empty() && !ends_with_break(bytes) {
        canonical.truncate(canonical.len() - 2); // the text has no final line break
    }
    let encoded = STANDARD.encode(&canonical);
    for line in encoded.as_bytes().chunks(ENCODED_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(s: &str) -> String {
        let mut out = Vec::new();
        write_quoted_printable(&mut out, s.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoted_printable_escapes_and_soft_breaks() {
        assert_eq!(qp("a=b é \nend "), "a=3Db =C3=A9=20\r\nend=20\r\n");
        let long = qp(&"x".repeat(200));
        assert!(long.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(long.replace("=\r\n", "").trim_end(), "x".repeat(200));
    }

    #[test]
    fn literal_runs_agree_with_the_table_on_random_lines() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 70) as usize;
            let line: Vec<u8> = (0..len)
                .map(|k| {
                    let r = (x >> (k % 56)) as u8 ^ (k as u8).wrapping_mul(31);
                    // Mostly printable ASCII, sometimes anything.
                    if r % 11 == 0 {
                        r
                    } else {
                        b' ' + r % 95
                    }
                })
                .collect();
            let start = (x >> 40) as usize % (len + 1);
            let expected = (start..len)
                .find(|&k| QP_ENCODE[line[k] as usize])
                .unwrap_or(len);
            assert_eq!(
                literal_run_end(&line, start),
                expected,
                "{line:?} from {start}"
            );
        }
    }

    #[test]
    fn literal_runs_stop_at_every_byte_that_needs_encoding() {
        for special in [b'=', 0x7f, 0x80, 0xff, 0x00, 0x1f, b'\t'] {
            for at in 0..20 {
                let mut line = vec![b'a'; 20];
                line[at] = special;
                let expected = if special == b'\t' { 20 } else { at };
                assert_eq!(
                    literal_run_end(&line, 0),
                    expected,
                    "byte {special:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn line_breaks_of_every_kind_become_crlf() {
        let mut out = Vec::new();
        write_crlf_lines(&mut out, b"a\rb\nc\r\nd");
        assert_eq!(out, b"a\r\nb\r\nc\r\nd\r\n");
        out.clear();
        write_crlf_lines(&mut out, b"");
        assert!(out.is_empty());
    }

    #[test]
    fn encoding_choice() {
        assert_eq!(
            TransferEncoding::choose("plain"),
            TransferEncoding::SevenBit
        );
        assert_eq!(
            TransferEncoding::choose(&"x".repeat(1000)),
            TransferEncoding::QuotedPrintable
        );
        assert_eq!(
            TransferEncoding::choose("Grüße aus Berlin"),
            TransferEncoding::QuotedPrintable
        );
        assert_eq!(
            TransferEncoding::choose("日本語のテキスト"),
            TransferEncoding::Base64
        );
    }
}
