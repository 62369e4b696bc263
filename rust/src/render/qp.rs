//! Quoted-printable (RFC 2045 §6.7) with CRLF hard breaks and `=` soft breaks at 76
//! columns: the renderer's hottest loop, since every byte of most bodies passes here.
//!
//! One pass over the whole text, not a line split first and then a pass per line: the
//! scan for bytes that need encoding also finds the line breaks (CR and LF need
//! encoding too). (Copying runs in fixed 16-byte blocks instead of one `memcpy` each
//! was tried: more instructions, not fewer.)

/// RFC 2045 §6.7: at most 76 characters a line.
const ENCODED_LINE: usize = 76;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes that quoted-printable must encode anywhere in a line (RFC 2045 §6.7 rule 2):
/// everything but printable ASCII other than `=`, and space and tab, which are only
/// encoded at the end of a line (rule 3). CR and LF are here too: they end lines.
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

/// Encodes `bytes` (CRLF, LF or a lone CR each being a line break) onto `out`; every
/// line ends in CRLF, including a last one without a break (empty text writes nothing).
pub fn write_quoted_printable(out: &mut Vec<u8>, bytes: &[u8]) {
    write_quoted_printable_with(out, bytes, &[]);
}

/// Whole lines of a text whose encoding is already known: `range` starts just after
/// an LF and ends just after one, and `encoded` is what `write_quoted_printable` gives
/// for those bytes alone. A line's encoding depends on its bytes only (each starts at
/// column 0), so the encoder copies `encoded` instead of encoding the range again.
#[derive(Debug, Clone)]
pub struct KnownLines<'a> {
    pub range: std::ops::Range<usize>,
    pub encoded: &'a [u8],
}

impl KnownLines<'_> {
    /// The lines of `text` (a fixed stretch of a part) that can be encoded ahead, as
    /// a range of `text`: from after its first LF to after its last one.
    pub fn span(text: &[u8]) -> Option<std::ops::Range<usize>> {
        let start = memchr::memchr(b'\n', text)? + 1;
        let end = memchr::memrchr(b'\n', text)? + 1;
        (start < end).then_some(start..end)
    }
}

/// `write_quoted_printable`, copying the encoding of `known` lines (in order, not
/// overlapping) instead of encoding them.
pub fn write_quoted_printable_with(out: &mut Vec<u8>, bytes: &[u8], known: &[KnownLines<'_>]) {
    let mut known = known.iter().peekable();
    let n = bytes.len();
    let is_break = |p: usize| matches!(bytes.get(p), Some(b'\r' | b'\n'));
    // True when the line ends at `p` (a break or the end of the text).
    let line_ends = |p: usize| p == n || is_break(p);
    let mut column = 0;
    let mut i = 0;
    while i < n {
        // Known lines start after an LF: only where a line starts can one begin.
        if column == 0 {
            if let Some(k) = known.next_if(|k| k.range.start == i) {
                debug_assert!(i > 0 && bytes[i - 1] == b'\n' && bytes[k.range.end - 1] == b'\n');
                out.extend_from_slice(k.encoded);
                i = k.range.end;
                continue;
            }
        }
        let mut run_end = literal_run_end(bytes, i);
        // Whitespace ending a line is encoded, or transports may strip it (rule 3).
        if run_end > i && line_ends(run_end) && matches!(bytes[run_end - 1], b' ' | b'\t') {
            run_end -= 1;
        }
        let at_line_end = line_ends(run_end);
        while i < run_end {
            // Columns left before a soft break's "=" is needed; the line's very last
            // character may take the 76th column itself.
            let room = ENCODED_LINE - 1 - column;
            let rest = run_end - i;
            if rest <= room || (at_line_end && rest == room + 1) {
                copy_run(out, bytes, i, rest);
                column += rest;
                i = run_end;
            } else {
                out.extend_from_slice(&bytes[i..i + room]);
                out.extend_from_slice(b"=\r\n");
                column = 0;
                i += room;
            }
        }
        if i == n {
            break;
        }
        let b = bytes[i];
        if b == b'\r' || b == b'\n' {
            out.extend_from_slice(b"\r\n");
            column = 0;
            i += if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            continue;
        }
        let limit = if line_ends(i + 1) {
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
    if !matches!(bytes.last(), None | Some(b'\r' | b'\n')) {
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `bytes[i..i + len]`. Most runs in HTML are short (an `=` every few
/// words): one 16-byte load and store, where room allows, instead of a `memcpy` call
/// (about 20 instructions a run). The bytes stored past `len` lie in `out`'s spare
/// capacity and are not part of it.
#[inline]
fn copy_run(out: &mut Vec<u8>, bytes: &[u8], i: usize, len: usize) {
    if len <= 16 && i + 16 <= bytes.len() && out.capacity() - out.len() >= 16 {
        let block: [u8; 16] = bytes[i..i + 16].try_into().expect("16 bytes");
        // SAFETY: 16 bytes of spare capacity were checked above; only the first `len`
        // (copied from `bytes`, so initialised) become part of the vector.
        unsafe {
            let end = out.as_mut_ptr().add(out.len());
            std::ptr::write_unaligned(end.cast::<[u8; 16]>(), block);
            out.set_len(out.len() + len);
        }
    } else {
        out.extend_from_slice(&bytes[i..i + len]);
    }
}

/// Where the run of bytes quoted-printable leaves as they are, starting at `i`, ends.
/// Sixteen bytes at a time (SSE2, part of every x86-64) or eight elsewhere: a block
/// with no byte to encode is skipped whole. The block test may only over-report, and
/// the byte loop then decides exactly.
pub(crate) fn literal_run_end(bytes: &[u8], i: usize) -> usize {
    let mut i = skip_plain_blocks(bytes, i);
    while i < bytes.len() && !QP_ENCODE[bytes[i] as usize] {
        i += 1;
    }
    i
}

/// Exact on x86-64: returns the first byte to encode, or where fewer than 16 are left.
#[cfg(target_arch = "x86_64")]
fn skip_plain_blocks(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    while let Some(block) = bytes.get(i..i + 16) {
        // SAFETY: SSE2 is in the x86-64 baseline, and `block` is 16 readable bytes
        // (loadu has no alignment requirement).
        let mask = unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            // Signed compare: bytes of 0x80 and more are negative, so "< 0x20" also
            // catches every non-ASCII byte; a tab is below 0x20 but literal.
            let below_space = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            let tab = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8));
            let equals = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'=' as i8));
            let delete = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
            let control = _mm_andnot_si128(tab, below_space);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(control, equals), delete))
        };
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 16;
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
fn skip_plain_blocks(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = bytes.get(i..i + 8) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::xorshift;
    use super::*;

    fn qp(s: &[u8]) -> String {
        let mut out = Vec::new();
        write_quoted_printable(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    /// The encoder as it was first written, one line at a time: the new one must give
    /// the same bytes.
    fn reference(bytes: &[u8]) -> String {
        let trimmed = match bytes {
            [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n'] | [rest @ .., b'\r'] => rest,
            all => all,
        };
        let mut lines = Vec::new();
        if !bytes.is_empty() {
            let mut rest = trimmed;
            loop {
                match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                    Some(i) => {
                        lines.push(&rest[..i]);
                        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                            2
                        } else {
                            1
                        };
                        rest = &rest[i + skip..];
                    }
                    None => {
                        lines.push(rest);
                        break;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for line in lines {
            let len = line.len();
            let mut column = 0;
            let mut i = 0;
            while i < len {
                let mut run_end = i;
                while run_end < len && !QP_ENCODE[line[run_end] as usize] {
                    run_end += 1;
                }
                if run_end == len && matches!(line[len - 1], b' ' | b'\t') && run_end > i {
                    run_end -= 1;
                }
                while i < run_end {
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
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_and_soft_breaks() {
        assert_eq!(
            qp("a=b é \nend ".as_bytes()),
            "a=3Db =C3=A9=20\r\nend=20\r\n"
        );
        let long = qp("x".repeat(200).as_bytes());
        assert!(long.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(long.replace("=\r\n", "").trim_end(), "x".repeat(200));
        assert_eq!(qp(b""), "");
        assert_eq!(qp(b"\n"), "\r\n");
        assert_eq!(qp(b"a\r\r\nb\r"), "a\r\n\r\nb\r\n");
    }

    #[test]
    fn same_bytes_as_the_line_by_line_encoder_on_random_texts() {
        // Pieces chosen to hit every branch: runs that end exactly at columns 75 and
        // 76, escapes at a line's end, trailing blanks, every kind of line break.
        let pieces: [&[u8]; 16] = [
            b"a",
            b"=",
            b" ",
            b"\t",
            "é".as_bytes(),
            b"\r\n",
            b"\n",
            b"\r",
            b"\x00",
            b"\x7f",
            b"word ",
            b"0123456789abcdef",
            b"<a href=\"x\">",
            b" \n",
            b"\t\r\n",
            b"=\n",
        ];
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for _ in 0..30_000 {
            let mut text = Vec::new();
            let count = next() % 40;
            for _ in 0..count {
                let r = next();
                if r % 5 == 0 {
                    // A long plain stretch, to land runs on every column.
                    text.extend(std::iter::repeat_n(b'x', (r >> 8) as usize % 160));
                } else {
                    text.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
                }
            }
            let (ours, theirs) = (qp(&text), reference(&text));
            if ours != theirs {
                // Show where they part, not two pages of text.
                let at = ours
                    .bytes()
                    .zip(theirs.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                let from = at.saturating_sub(100);
                panic!(
                    "{:?}\nours:   {:?}\ntheirs: {:?}",
                    String::from_utf8_lossy(&text),
                    &ours[from..(at + 40).min(ours.len())],
                    &theirs[from..(at + 40).min(theirs.len())],
                );
            }
        }
    }

    #[test]
    fn known_lines_give_the_same_bytes() {
        let pieces: [&[u8]; 10] = [
            b"a",
            b"=",
            b" ",
            "é".as_bytes(),
            b"\r\n",
            b"\n",
            b"\r",
            b"word ",
            b"0123456789abcdef0123456789abcdef",
            b" \n",
        ];
        let mut next = xorshift(0x1234_5678_9ABC_DEF1);
        for _ in 0..5_000 {
            let mut text = Vec::new();
            let mut fixed = Vec::new();
            for _ in 0..next() % 12 {
                // Stretches of text, some of them "fixed" with lines encoded ahead.
                let start = text.len();
                for _ in 0..next() % 12 {
                    text.extend_from_slice(pieces[next() as usize % pieces.len()]);
                }
                if next() % 2 == 0 {
                    if let Some(span) = KnownLines::span(&text[start..]) {
                        let range = start + span.start..start + span.end;
                        let mut encoded = Vec::new();
                        write_quoted_printable(&mut encoded, &text[range.clone()]);
                        fixed.push((range, encoded));
                    }
                }
            }
            let known: Vec<KnownLines<'_>> = fixed
                .iter()
                .map(|(range, encoded)| KnownLines {
                    range: range.clone(),
                    encoded,
                })
                .collect();
            let mut with = Vec::new();
            write_quoted_printable_with(&mut with, &text, &known);
            assert_eq!(
                String::from_utf8(with).unwrap(),
                qp(&text),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn literal_runs_agree_with_the_table_on_random_lines() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let x = next();
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
        for special in [b'=', 0x7f, 0x80, 0xff, 0x00, 0x1f, b'\r', b'\n', b'\t'] {
            for at in 0..40 {
                let mut line = vec![b'a'; 40];
                line[at] = special;
                let expected = if special == b'\t' { 40 } else { at };
                assert_eq!(
                    literal_run_end(&line, 0),
                    expected,
                    "byte {special:#x} at {at}"
                );
            }
        }
    }
}
