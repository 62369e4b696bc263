//! Header fields of a message: folding (RFC 5322 §2.2.3), RFC 2047 encoded-words for
//! non-ASCII text, address fields with display names, and the Date field.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::address::Mailbox;
use crate::error::RenderError;

/// RFC 5322 §2.1.1: lines SHOULD be at most 78 characters; we fold at whitespace there.
const FOLD_AT: usize = 78;
/// RFC 2047 §2: a line that holds an encoded-word is at most 76 characters.
const ENCODED_LINE: usize = 76;
/// `=?utf-8?B?` and `?=` around the base64 of an encoded-word.
const ENCODED_WORD_OVERHEAD: usize = 12;
/// RFC 2047 §2: an encoded-word is at most 75 characters: 63 base64 characters, i.e.
/// 45 bytes of UTF-8 (a multiple of 3), on a line of its own (` ` + 75 = 76).
const ENCODED_WORD_BYTES: usize = 45;

/// Rejects what would let a variable add a header or break the message: CR, LF and
/// other control characters (tab excepted).
pub fn check_value(header: &str, value: &str) -> Result<(), RenderError> {
    for b in value.bytes() {
        let what = match b {
            b'\r' => "a CR",
            b'\n' => "an LF",
            b'\t' => continue,
            0..=31 | 127 => "a control character",
            _ => continue,
        };
        return Err(RenderError::HeaderInjection {
            header: header.to_string(),
            what,
        });
    }
    Ok(())
}

/// Writes `Name: value` CRLF, folding an ASCII value at whitespace and encoding a
/// non-ASCII one (or one with a word too long to fold) as RFC 2047 encoded-words.
pub fn write_unstructured(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b":");
    // The usual subject: ASCII that fits on the field's line. Folding would give the
    // same bytes (` ` and the value) after splitting it into words twice.
    let bytes = value.as_bytes();
    if name.len() + 2 + bytes.len() <= FOLD_AT
        && value.is_ascii()
        && !bytes.windows(2).any(|w| w == b"=?")
    {
        out.push(b' ');
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        return;
    }
    // Folding happens at spaces only, so a tab is part of a word here. A run of spaces
    // could leave a folded line of nothing but blanks (RFC 5322 §3.2.2 forbids that):
    // encoded-words keep such a value exact.
    let longest_word = value.split(' ').map(str::len).max().unwrap_or(0);
    if value.is_ascii()
        && !value.contains("=?")
        && !value.contains("  ")
        && name.len() + 2 + longest_word <= FOLD_AT
    {
        write_folded(out, name.len() + 1, value);
    } else {
        write_encoded_words(out, name.len() + 1, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends ` value`, breaking before a space when the line would pass FOLD_AT.
fn write_folded(out: &mut Vec<u8>, mut column: usize, value: &str) {
    let mut first = true;
    for word in value.split(' ') {
        if !first && column + 1 + word.len() > FOLD_AT {
            out.extend_from_slice(b"\r\n");
            column = 0;
        }
        out.push(b' ');
        out.extend_from_slice(word.as_bytes());
        column += 1 + word.len();
        first = false;
    }
}

/// Appends ` =?utf-8?B?...?=` words split at character boundaries, as many on a line
/// as fit within ENCODED_LINE (the first one sized to the room left after the field
/// name); returns the column where the last line ends.
fn write_encoded_words(out: &mut Vec<u8>, mut column: usize, value: &str) -> usize {
    let mut rest = value;
    let mut buf = String::with_capacity(64);
    while let Some(first_char) = rest.chars().next() {
        // Whole base64 quads that fit after ` =?utf-8?B?` and before `?=`.
        let room = ENCODED_LINE.saturating_sub(column + 1 + ENCODED_WORD_OVERHEAD);
        let mut cut = (room / 4 * 3).min(ENCODED_WORD_BYTES).min(rest.len());
        if cut < first_char.len_utf8() {
            // Not even one character fits on this line: go on at the next one (after
            // a fold, ENCODED_WORD_BYTES always fit).
            out.extend_from_slice(b"\r\n");
            column = 0;
            continue;
        }
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        buf.clear();
        STANDARD.encode_string(chunk, &mut buf);
        out.extend_from_slice(b" =?utf-8?B?");
        out.extend_from_slice(buf.as_bytes());
        out.extend_from_slice(b"?=");
        column += 1 + ENCODED_WORD_OVERHEAD + buf.len();
        rest = tail;
    }
    column
}

/// A mailbox with an optional display name, parsed from what a From or Reply-To
/// template rendered: `Name <addr>`, `"Name" <addr>` or a bare `addr`.
pub struct NameAddr {
    pub name: Option<String>,
    pub mailbox: Mailbox,
}

impl NameAddr {
    pub fn parse(header: &str, value: &str) -> Result<NameAddr, RenderError> {
        let value = value.trim();
        let bad = |message: String| RenderError::Header {
            header: header.to_string(),
            message,
        };
        let (name, addr) = match value
            .strip_suffix('>')
            .and_then(|v| v.rfind('<').map(|i| (v, i)))
        {
            Some((v, i)) => (Some(unquote(v[..i].trim())), &v[i + 1..]),
            None => (None, value),
        };
        let mailbox = Mailbox::parse(addr).map_err(|e| bad(format!("{addr:?}: {e}")))?;
        Ok(NameAddr {
            name: name.filter(|n| !n.is_empty()),
            mailbox,
        })
    }

    /// Writes the whole field: `Name: display <local@domain>` CRLF.
    pub fn write(&self, out: &mut Vec<u8>, field: &str) {
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b":");
        let mut column = field.len() + 1;
        if let Some(name) = &self.name {
            // A line holding an encoded-word is limited to 76 characters, others to 78.
            let mut limit = FOLD_AT;
            let quoted = name.bytes().any(is_special);
            let written = name.len() + name.bytes().filter(|&b| b == b'"' || b == b'\\').count();
            let width = 1 + written + if quoted { 2 } else { 0 };
            if needs_encoded_words(name) || column + width > FOLD_AT {
                column = write_encoded_words(out, column, name);
                limit = ENCODED_LINE;
            } else if quoted {
                out.extend_from_slice(b" \"");
                for b in name.bytes() {
                    if b == b'"' || b == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out.push(b'"');
                column += width;
            } else {
                out.push(b' ');
                out.extend_from_slice(name.as_bytes());
                column += width;
            }
            let addr_len = self.mailbox.local.len() + self.mailbox.domain.len() + 3;
            if column + 1 + addr_len > limit {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b" <");
        } else {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(self.mailbox.local.as_bytes());
        out.push(b'@');
        out.extend_from_slice(self.mailbox.domain.as_bytes());
        if self.name.is_some() {
            out.push(b'>');
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A display name is written as encoded-words when it is not ASCII, could be read as an
/// encoded-word itself (`=?`), or would lose whitespace (tabs, runs of spaces) when
/// unfolded; also when it is too long for the field's line (see `NameAddr::write`),
/// since encoded-words can be folded.
fn needs_encoded_words(name: &str) -> bool {
    !name.is_ascii() || name.contains("=?") || name.contains('\t') || name.contains("  ")
}

/// RFC 5322 specials that force a display name into a quoted-string.
fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b':' | b';' | b'@' | b'\\' | b',' | b'.' | b'"'
    )
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or('\\')
                } else {
                    c
                });
            }
            out
        }
        None => s.to_string(),
    }
}

/// RFC 5322 §3.3 date-time in UTC, e.g. `Sun, 29 Nov 2026 07:12:02 +0000`.
pub fn format_date(unix_seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> String {
        let mut out = Vec::new();
        write_unstructured(&mut out, name, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ascii_is_folded_at_whitespace() {
        let v = "word ".repeat(30);
        let f = field("Subject", v.trim());
        assert!(f.lines().all(|l| l.len() <= FOLD_AT), "{f}");
        assert!(f.contains("\r\n word"));
    }

    #[test]
    fn short_ascii_is_one_line_as_folding_would_write_it() {
        for v in [
            "",
            "a",
            "two  spaces",
            " lead",
            "trail ",
            "x".repeat(69).as_str(),
        ] {
            let mut folded = b"Subject:".to_vec();
            write_folded(&mut folded, 8, v);
            folded.extend_from_slice(b"\r\n");
            assert_eq!(field("Subject", v).as_bytes(), folded, "{v:?}");
        }
        assert!(field("Subject", "a =?x?= b").starts_with("Subject: =?utf-8?B?"));
    }

    #[test]
    fn non_ascii_becomes_encoded_words_at_char_boundaries() {
        let f = field("Subject", &"Grüße 🎉 ".repeat(10));
        assert!(f.starts_with("Subject: =?utf-8?B?"));
        let mut decoded = Vec::new();
        for line in f.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= ENCODED_LINE, "{line}");
            for word in line
                .split(' ')
                .filter(|w| !w.is_empty() && *w != "Subject:")
            {
                assert!(word.len() <= 75, "{word}");
                let b64 = word
                    .strip_prefix("=?utf-8?B?")
                    .unwrap()
                    .strip_suffix("?=")
                    .unwrap();
                let bytes = STANDARD.decode(b64).unwrap();
                String::from_utf8(bytes.clone()).unwrap();
                decoded.extend(bytes);
            }
        }
        assert_eq!(decoded, "Grüße 🎉 ".repeat(10).as_bytes());
    }

    #[test]
    fn encoded_words_fit_after_a_long_field_name() {
        for name in ["Subject", "X-A-Rather-Long-Header-Name", &"X".repeat(70)] {
            let f = field(name, "Grüße");
            assert!(f.split("\r\n").all(|l| l.len() <= ENCODED_LINE), "{f}");
        }
    }

    #[test]
    fn injection_is_refused() {
        assert!(check_value("Subject", "hi\r\nBcc: x@y.z").is_err());
        assert!(check_value("Subject", "tab\tok").is_ok());
    }

    #[test]
    fn display_names_are_quoted_or_encoded() {
        let mut out = Vec::new();
        NameAddr::parse("From", "Lee, Ann <ann@Example.com>")
            .unwrap()
            .write(&mut out, "From");
        assert_eq!(out, b"From: \"Lee, Ann\" <ann@example.com>\r\n");
        out.clear();
        NameAddr::parse("From", "\"Zoë\" <z@bücher.example>")
            .unwrap()
            .write(&mut out, "From");
        assert!(out.starts_with(b"From: =?utf-8?B?"));
        assert!(out.ends_with(b"<z@xn--bcher-kva.example>\r\n"));
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(format_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            format_date(1_795_936_322),
            "Sun, 29 Nov 2026 07:12:02 +0000"
        );
    }
}
