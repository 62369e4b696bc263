//! MIME bodies: picks a transfer encoding per part and writes the single part or the
//! multipart/alternative structure, with CRLF line ends and lines of at most 998 octets.

use super::qp::{write_quoted_printable_with, KnownLines};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// RFC 5322 §2.1.1: a line is at most 998 octets before its CRLF.
pub const MAX_LINE: usize = 998;
/// RFC 2045 §6.8 (base64): at most 76 characters a line.
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

/// Bytes with the high bit set. Eight at a time, each byte's high bit added into its
/// own lane of a word and the lanes summed every 255 words (before one could overflow):
/// a popcount per word costs a dozen instructions on baseline x86-64, which has none.
fn count_non_ascii(bytes: &[u8]) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const PAIRS: u64 = 0x00ff_00ff_00ff_00ff;
    let mut n = 0;
    for block in bytes.chunks(8 * 255) {
        let mut lanes = 0u64;
        let mut words = block.chunks_exact(8);
        for w in &mut words {
            lanes += (u64::from_le_bytes(w.try_into().expect("chunks of 8")) >> 7) & LOW;
        }
        // Eight byte lanes (at most 255 each) to four 16-bit lanes, then their sum.
        let pairs = (lanes & PAIRS) + ((lanes >> 8) & PAIRS);
        n += (pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48) as usize;
        n += words.remainder().iter().filter(|&&b| b >= 0x80).count();
    }
    n
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
    /// Lines of `text` whose quoted-printable is known ahead (empty: none).
    pub known: &'a [KnownLines<'a>],
}

/// Writes the MIME headers (from Content-Type on) and the body for `parts`: one part
/// as the whole body, two or more as multipart/alternative in the order given (RFC 2046
/// §5.1.4: the plainest first). `boundary_seed` makes the boundary unique per message.
pub fn write_body(out: &mut Vec<u8>, parts: &[Part<'_>], boundary_seed: &str) {
    if let [only] = parts {
        let encoding = TransferEncoding::choose(only.text);
        write_part_headers(out, only.media_type, encoding);
        out.extend_from_slice(b"\r\n");
        write_encoded(out, only, encoding);
        return;
    }
    // "=_" never occurs in quoted-printable or base64 output; a 7bit part that happens
    // to contain the boundary is sent quoted-printable instead.
    let mut boundary = String::with_capacity(12 + boundary_seed.len());
    boundary.push_str("=_ferrymail_");
    boundary.push_str(boundary_seed);
    out.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\"\r\n\r\n");
    for part in parts {
        let mut encoding = TransferEncoding::choose(part.text);
        if encoding == TransferEncoding::SevenBit
            && contains(part.text.as_bytes(), boundary.as_bytes())
        {
            encoding = TransferEncoding::QuotedPrintable;
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_part_headers(out, part.media_type, encoding);
        out.extend_from_slice(b"\r\n");
        write_encoded(out, part, encoding);
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

/// Whether `needle` (which starts with `=`) occurs in `haystack`. Text rarely has an
/// `=` at all: one `memchr` pass settles that, where building a substring searcher
/// for a needle used once per message cost about 3,000 instructions.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memchr_iter(needle[0], haystack).any(|i| haystack[i..].starts_with(needle))
}

fn write_part_headers(out: &mut Vec<u8>, media_type: &str, encoding: TransferEncoding) {
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(media_type.as_bytes());
    out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
    out.extend_from_slice(encoding.name().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `text` in `encoding`, ending with CRLF (an empty text writes nothing).
fn write_encoded(out: &mut Vec<u8>, part: &Part<'_>, encoding: TransferEncoding) {
    let text = part.text.as_bytes();
    match encoding {
        TransferEncoding::SevenBit => write_crlf_lines(out, text),
        TransferEncoding::QuotedPrintable => write_quoted_printable_with(out, text, part.known),
        TransferEncoding::Base64 => write_base64(out, text),
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
    fn non_ascii_bytes_are_counted_exactly_at_every_length() {
        let mut x: u32 = 12345;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for len in (0..100).chain([2039, 2040, 2041, 4079, 4080, 4088, 5000]) {
            let expected = data[..len].iter().filter(|&&b| b >= 0x80).count();
            assert_eq!(count_non_ascii(&data[..len]), expected, "length {len}");
        }
        assert_eq!(count_non_ascii(&[0xff; 4100]), 4100);
    }

    #[test]
    fn boundary_search() {
        assert!(contains(b"a=_x=_b", b"=_b"));
        assert!(contains(b"=_b", b"=_b"));
        assert!(!contains(b"a=_x=_", b"=_b"));
        assert!(!contains(b"", b"=_b"));
        let mut out = Vec::new();
        let parts = [
            Part {
                media_type: "text/plain",
                text: "see --=_ferrymail_seed here",
                known: &[],
            },
            Part {
                media_type: "text/html",
                text: "<p>x</p>",
                known: &[],
            },
        ];
        write_body(&mut out, &parts, "seed");
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("quoted-printable\r\n\r\nsee --=3D_ferrymail_seed here"),
            "{out}"
        );
        assert!(
            out.contains("text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit"),
            "{out}"
        );
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
