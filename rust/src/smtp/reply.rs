//! SMTP replies: the incremental reply parser (RFC 5321 §4.2) and enhanced status codes (RFC 3463, RFC 2034).
//!
//! [`ReplyParser::parse`] reads one reply from the front of a read buffer and says how
//! many bytes it used, so pipelined replies (RFC 2920) that arrive in one read are taken
//! one after the other from the same buffer. It is lenient where real servers differ
//! (bare LF line ends, lines longer than RFC 5321's 512 octets, non-UTF-8 text) and
//! strict where a mistake would misattribute an answer (a line without a code, a
//! multiline reply whose code changes): those are [`ReplyError`]s.

use std::fmt;

use thiserror::Error;

/// Default longest reply line, in bytes before the line end. RFC 5321 §4.5.3.1.5 says
/// 512 octets including CRLF, but real servers go past it (long AUTH lists in EHLO,
/// verbose 5xx texts with URLs) and §4.5.3.1 asks clients to be liberal; 2048 takes
/// those and still bounds memory.
pub const DEFAULT_MAX_LINE_LEN: usize = 2048;
/// Default most lines in one reply. EHLO replies run to 10–30 lines, multiline banners
/// and policy texts a few more. With [`DEFAULT_MAX_LINE_LEN`] this bounds one reply to
/// about 200 KB.
pub const DEFAULT_MAX_LINES: usize = 100;
/// Most bytes of an offending line kept in [`ReplyError::Malformed`].
const MALFORMED_EXCERPT: usize = 128;

/// One complete SMTP reply: a code, the enhanced status code if the server sent one,
/// and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, 200–599 (the parser refuses other first digits).
    pub code: u16,
    /// The enhanced status code of the first line (RFC 2034), when it is there and its
    /// class matches the reply code's first digit.
    pub enhanced: Option<EnhancedCode>,
    /// Each line's text, after the code, the separator (`-` or space) and the line's
    /// enhanced status code with the blanks after it. Never empty; a line may be "".
    /// Bytes that are not UTF-8 are replaced with U+FFFD.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx: the command succeeded.
    pub fn is_positive_completion(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx: the server waits for more (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx: a temporary failure; the same command may succeed later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: a permanent failure; repeating the command will not help.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The text of all lines joined with one space, on one line: the form outcomes,
    /// events and logs carry (as Postfix reports a multiline reply). [`Reply::lines`]
    /// keeps the line structure.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// An enhanced status code `class.subject.detail` (RFC 3463 §2), e.g. 5.1.1 for
/// "bad destination mailbox address". The retry policy (Python) uses it to tell a
/// bounce's category; its class always equals the first digit of the reply code it
/// came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedCode {
    /// A code from its parts: `class` 2, 4 or 5; `subject` and `detail` 0–999.
    /// `None` for anything else.
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        (matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999).then_some(Self {
            class,
            subject,
            detail,
        })
    }

    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub fn class(&self) -> u8 {
        self.class
    }

    /// What the code is about: 1 addressing, 2 mailbox, 3 mail system, 4 network and
    /// routing, 5 mail delivery protocol, 6 message content, 7 security or policy.
    pub fn subject(&self) -> u16 {
        self.subject
    }

    /// The detail within the subject.
    pub fn detail(&self) -> u16 {
        self.detail
    }

    /// Reads an enhanced code at the start of a line's text, if one is there and its
    /// class is `class`; it must be followed by a blank or the end of the text. Returns
    /// the code and where the text after it (and the blanks after it) begins.
    fn parse_prefix(text: &[u8], class: u8) -> Option<(Self, usize)> {
        if text.first() != Some(&(b'0' + class)) || text.get(1) != Some(&b'.') {
            return None;
        }
        let (subject, after_subject) = read_number(text, 2)?;
        if text.get(after_subject) != Some(&b'.') {
            return None;
        }
        let (detail, end) = read_number(text, after_subject + 1)?;
        if !matches!(text.get(end), None | Some(b' ' | b'\t')) {
            return None;
        }
        let code = Self::new(class, subject, detail)?;
        let rest = end
            + text[end..]
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t'))
                .count();
        Some((code, rest))
    }
}

/// 1–3 ASCII digits at `text[start..]` (RFC 3463: `1*3digit`): the value and the index
/// after them. More than three digits is not a number here.
fn read_number(text: &[u8], start: usize) -> Option<(u16, usize)> {
    let digits = text
        .get(start..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if !(1..=3).contains(&digits) {
        return None;
    }
    let value = text[start..start + digits]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((value, start + digits))
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why the bytes from a server are not a valid reply. The session treats every one as
/// a transient failure of the attempt: it drops the connection (the stream can no
/// longer be trusted to pair replies with commands) and reports the recipients still
/// pending as deferred, with this message as the text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// A line that does not start with a reply code 2xx–5xx followed by a space, `-`
    /// or the line end. `line` is the start of the line, lossily decoded.
    #[error("malformed reply line {line:?}: expected a code 200-599 followed by a space, '-' or the line end")]
    Malformed { line: String },
    /// A line longer than the parser's limit (bytes before the line end).
    #[error("reply line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// A multiline reply that went on past the parser's line limit.
    #[error("reply longer than {limit} lines")]
    TooManyLines { limit: usize },
    /// A multiline reply whose lines carry different codes.
    #[error("multiline reply began with code {first}, then a line had code {then}")]
    CodeMismatch { first: u16, then: u16 },
}

/// Reads replies from the front of a growing read buffer, one at a time.
///
/// Call [`ReplyParser::parse`] with everything read so far that has not been consumed.
/// `Ok(None)` means the reply is not complete: read more, append, and call again with
/// the same bytes at the front (the parser remembers how far it got, so a reply that
/// trickles in is still read in linear time). `Ok(Some((reply, n)))` means the first
/// `n` bytes were one reply: drop them (`BytesMut::advance(n)`) and call again for the
/// next pipelined reply. After `Some` or an error the parser starts afresh.
///
/// ```
/// use _core::smtp::ReplyParser;
///
/// let mut parser = ReplyParser::default();
/// let mut buf = b"250-mx.example.com\r\n250 PIPELINING\r\n250 2.1.0 Ok\r\n".to_vec();
/// let (ehlo, n) = parser.parse(&buf).unwrap().unwrap();
/// assert_eq!(ehlo.lines, ["mx.example.com", "PIPELINING"]);
/// buf.drain(..n);
/// let (mail, n) = parser.parse(&buf).unwrap().unwrap();
/// assert_eq!(mail.enhanced.unwrap().to_string(), "2.1.0");
/// buf.drain(..n);
/// assert_eq!(parser.parse(&buf).unwrap(), None);
/// ```
#[derive(Debug, Clone)]
pub struct ReplyParser {
    max_line_len: usize,
    max_lines: usize,
    /// Where the first line not yet taken begins.
    line_start: usize,
    /// How far the buffer has been searched for that line's LF.
    scanned: usize,
    /// The reply so far: code (0 before the first line), enhanced code, lines.
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_LINES)
    }
}

impl ReplyParser {
    /// A parser that refuses lines longer than `max_line_len` bytes (before the line
    /// end) and replies of more than `max_lines` lines. Both are at least 1.
    pub fn new(max_line_len: usize, max_lines: usize) -> Self {
        Self {
            max_line_len: max_line_len.max(1),
            max_lines: max_lines.max(1),
            line_start: 0,
            scanned: 0,
            code: 0,
            enhanced: None,
            lines: Vec::new(),
        }
    }

    /// Forgets a partly read reply (e.g. when the session discards its read buffer).
    pub fn reset(&mut self) {
        self.line_start = 0;
        self.scanned = 0;
        self.code = 0;
        self.enhanced = None;
        self.lines.clear();
    }

    /// Reads one reply from the front of `buf`: `Ok(Some((reply, consumed)))`, or
    /// `Ok(None)` when more bytes are needed. Lines may end in CRLF or a bare LF. A
    /// line that is too long is refused as soon as it is, without waiting for its end.
    ///
    /// A `buf` shorter than one given before for the same reply breaks the calling
    /// contract; the parser then starts the reply again from `buf`'s first byte.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        if buf.len() < self.scanned {
            self.reset();
        }
        let result = self.parse_lines(buf);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    fn parse_lines(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        loop {
            let Some(lf) = memchr::memchr(b'\n', &buf[self.scanned..]).map(|i| self.scanned + i)
            else {
                self.scanned = buf.len();
                let partial = &buf[self.line_start..];
                if partial.strip_suffix(b"\r").unwrap_or(partial).len() > self.max_line_len {
                    return Err(ReplyError::LineTooLong {
                        limit: self.max_line_len,
                    });
                }
                return Ok(None);
            };
            let line = &buf[self.line_start..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.line_start = lf + 1;
            self.scanned = lf + 1;
            if self.take_line(line)? {
                let reply = Reply {
                    code: self.code,
                    enhanced: self.enhanced,
                    lines: std::mem::take(&mut self.lines),
                };
                return Ok(Some((reply, lf + 1)));
            }
        }
    }

    /// Adds one line (without its line end) to the reply; true if it was the last.
    fn take_line(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        if line.len() > self.max_line_len {
            return Err(ReplyError::LineTooLong {
                limit: self.max_line_len,
            });
        }
        let (code, last) = match line {
            [c @ b'2'..=b'5', d @ b'0'..=b'9', u @ b'0'..=b'9', rest @ ..] => {
                let code = [c, d, u]
                    .iter()
                    .fold(0u16, |n, &&b| n * 10 + u16::from(b - b'0'));
                match rest.first() {
                    None | Some(b' ') => (code, true),
                    Some(b'-') => (code, false),
                    Some(_) => return Err(malformed(line)),
                }
            }
            _ => return Err(malformed(line)),
        };
        if self.lines.is_empty() {
            self.code = code;
        } else if code != self.code {
            return Err(ReplyError::CodeMismatch {
                first: self.code,
                then: code,
            });
        }
        let text = line.get(4..).unwrap_or_default();
        let class = (code / 100) as u8;
        let text = match EnhancedCode::parse_prefix(text, class) {
            Some((enhanced, after)) => {
                if self.lines.is_empty() {
                    self.enhanced = Some(enhanced);
                }
                &text[after..]
            }
            None => text,
        };
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last && self.lines.len() >= self.max_lines {
            return Err(ReplyError::TooManyLines {
                limit: self.max_lines,
            });
        }
        Ok(last)
    }
}

fn malformed(line: &[u8]) -> ReplyError {
    let excerpt = &line[..line.len().min(MALFORMED_EXCERPT)];
    ReplyError::Malformed {
        line: String::from_utf8_lossy(excerpt).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        ReplyParser::default().parse(input)
    }

    fn reply(input: &[u8]) -> Reply {
        let (reply, used) = parse_one(input).unwrap().expect("a complete reply");
        assert_eq!(used, input.len());
        reply
    }

    fn code(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode::new(class, subject, detail).unwrap())
    }

    #[test]
    fn single_line() {
        let r = reply(b"250 OK\r\n");
        assert_eq!(
            (r.code, r.enhanced, r.lines),
            (250, None, vec!["OK".into()])
        );
        let r = reply(b"354 End data with <CR><LF>.<CR><LF>\r\n");
        assert!(r.is_intermediate() && !r.is_positive_completion());
        assert_eq!(r.text(), "End data with <CR><LF>.<CR><LF>");
    }

    #[test]
    fn code_only_and_empty_text() {
        assert_eq!(reply(b"250\r\n").lines, [""]);
        assert_eq!(reply(b"250 \r\n").lines, [""]);
        let r = reply(b"220-\r\n220\r\n");
        assert_eq!((r.code, r.lines), (220, vec![String::new(), String::new()]));
    }

    #[test]
    fn classifiers() {
        assert!(reply(b"221 bye\r\n").is_positive_completion());
        assert!(reply(b"334 VXNlcm5hbWU6\r\n").is_intermediate());
        let r = reply(b"421 4.7.0 try later\r\n");
        assert!(r.is_transient() && !r.is_permanent());
        let r = reply(b"554 5.7.1 no\r\n");
        assert!(r.is_permanent() && !r.is_transient());
    }

    #[test]
    fn bare_lf_line_ends() {
        let r = reply(b"250-first\n250 2.0.0 second\n");
        assert_eq!(r.lines, ["first", "second"]);
        // Only the CR right before the LF belongs to the line end.
        assert_eq!(reply(b"250 a\rb\r\r\n").lines, ["a\rb\r"]);
    }

    #[test]
    fn multiline() {
        let r = reply(
            b"550-5.1.1 The email account that you tried to reach does not exist.\r\n\
              550-5.1.1 Please try double-checking the recipient's email address.\r\n\
              550 5.1.1 https://support.example/answer 123 - gsmtp\r\n",
        );
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, code(5, 1, 1));
        assert_eq!(r.lines.len(), 3);
        assert_eq!(
            r.lines[0],
            "The email account that you tried to reach does not exist."
        );
        assert_eq!(
            r.text(),
            "The email account that you tried to reach does not exist. Please try \
             double-checking the recipient's email address. \
             https://support.example/answer 123 - gsmtp"
        );
    }

    #[test]
    fn enhanced_codes() {
        let r = reply(b"250 2.1.5 Ok\r\n");
        assert_eq!((r.enhanced, r.text()), (code(2, 1, 5), "Ok".into()));
        assert_eq!(r.enhanced.unwrap().to_string(), "2.1.5");
        let r = reply(b"452 4.2.2  \tmailbox full\r\n");
        assert_eq!(
            (r.enhanced, r.text()),
            (code(4, 2, 2), "mailbox full".into())
        );
        let r = reply(b"550 5.999.999\r\n");
        assert_eq!((r.enhanced, r.text()), (code(5, 999, 999), String::new()));
        // Leading zeros are digits too (RFC 3463: 1*3digit); Display drops them.
        assert_eq!(reply(b"550 5.01.001 x\r\n").enhanced, code(5, 1, 1));
    }

    #[test]
    fn enhanced_code_absent_or_not_one() {
        for (input, text) in [
            (&b"250 OK\r\n"[..], "OK"),
            (
                b"550 4.1.1 class differs from the code\r\n",
                "4.1.1 class differs from the code",
            ),
            (
                b"354 3.0.0 no class 3 in RFC 3463\r\n",
                "3.0.0 no class 3 in RFC 3463",
            ),
            (b"250 2.1.5Ok\r\n", "2.1.5Ok"),
            (b"250 2.1000.5 Ok\r\n", "2.1000.5 Ok"),
            (b"250 2.1.5000 Ok\r\n", "2.1.5000 Ok"),
            (b"250 2..5 Ok\r\n", "2..5 Ok"),
            (b"250 2.1. Ok\r\n", "2.1. Ok"),
            (b"250 2.1 Ok\r\n", "2.1 Ok"),
            (b"250 .2.1.5 Ok\r\n", ".2.1.5 Ok"),
            (b"250-8BITMIME\r\n250 x\r\n", "8BITMIME x"),
        ] {
            let r = reply(input);
            assert_eq!(r.enhanced, None, "{input:?}");
            assert_eq!(r.text(), text);
        }
        // The first line decides; later lines still have theirs taken off their text.
        let r = reply(b"250-hello\r\n250 2.0.0 Ok\r\n");
        assert_eq!((r.enhanced, r.text()), (None, "hello Ok".into()));
    }

    #[test]
    fn enhanced_code_new_checks_ranges() {
        assert!(EnhancedCode::new(3, 0, 0).is_none());
        assert!(EnhancedCode::new(5, 1000, 0).is_none());
        assert!(EnhancedCode::new(4, 0, 1000).is_none());
        let c = EnhancedCode::new(4, 7, 0).unwrap();
        assert_eq!((c.class(), c.subject(), c.detail()), (4, 7, 0));
        assert_eq!(c.to_string(), "4.7.0");
    }

    #[test]
    fn garbage_lines() {
        for input in [
            &b"\r\n"[..],
            b"\n",
            b"25\r\n",
            b"250x\r\n",
            b"2500 OK\r\n",
            b"250\tOK\r\n",
            b"abc OK\r\n",
            b"150 below 200\r\n",
            b"650 above 599\r\n",
            b"099 x\r\n",
            b" 250 OK\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(
                matches!(parse_one(input), Err(ReplyError::Malformed { .. })),
                "{input:?}"
            );
        }
        let err = parse_one(b"250-ok\r\nnonsense\r\n").unwrap_err();
        assert_eq!(
            err,
            ReplyError::Malformed {
                line: "nonsense".into()
            }
        );
        assert!(err.to_string().contains("\"nonsense\""));
    }

    #[test]
    fn malformed_excerpt_is_short() {
        let mut line = b"x".repeat(1000);
        line.extend_from_slice(b"\r\n");
        let Err(ReplyError::Malformed { line }) = parse_one(&line) else {
            panic!("expected Malformed");
        };
        assert_eq!(line.len(), MALFORMED_EXCERPT);
    }

    #[test]
    fn non_utf8_text_is_replaced() {
        let r = reply(b"550 5.1.1 caf\xe9 \xff\r\n");
        assert_eq!(r.text(), "caf\u{fffd} \u{fffd}");
    }

    #[test]
    fn overlong_line() {
        let mut parser = ReplyParser::new(10, 5);
        // 10 bytes before the line end is the limit, with or without the CR.
        assert!(parser.parse(b"250 123456\r\n").unwrap().is_some());
        assert!(parser.parse(b"250 123456\n").unwrap().is_some());
        let err = parser.parse(b"250 1234567\r\n").unwrap_err();
        assert_eq!(err, ReplyError::LineTooLong { limit: 10 });
        assert_eq!(err.to_string(), "reply line longer than 10 bytes");
        // Refused before its end arrives, so a server cannot make us buffer forever.
        assert_eq!(parser.parse(b"250 123456\r").unwrap(), None);
        parser.reset();
        assert_eq!(
            parser.parse(b"250 1234567").unwrap_err(),
            ReplyError::LineTooLong { limit: 10 }
        );
        // The default: 2048.
        let mut line = b"250 ".to_vec();
        line.resize(DEFAULT_MAX_LINE_LEN, b'a');
        assert!(parse_one(&[&line[..], b"\r\n"].concat()).unwrap().is_some());
        line.push(b'a');
        assert!(matches!(
            parse_one(&line),
            Err(ReplyError::LineTooLong { limit: 2048 })
        ));
    }

    #[test]
    fn too_many_lines() {
        let mut parser = ReplyParser::new(100, 3);
        assert!(parser
            .parse(b"250-a\r\n250-b\r\n250 c\r\n")
            .unwrap()
            .is_some());
        let err = parser.parse(b"250-a\r\n250-b\r\n250-c\r\n").unwrap_err();
        assert_eq!(err, ReplyError::TooManyLines { limit: 3 });
        assert_eq!(err.to_string(), "reply longer than 3 lines");
        let many = b"250-x\r\n".repeat(DEFAULT_MAX_LINES);
        assert_eq!(
            parse_one(&many).unwrap_err(),
            ReplyError::TooManyLines { limit: 100 }
        );
    }

    #[test]
    fn code_mismatch_in_multiline() {
        let err = parse_one(b"250-first\r\n251-second\r\n250 third\r\n").unwrap_err();
        assert_eq!(
            err,
            ReplyError::CodeMismatch {
                first: 250,
                then: 251
            }
        );
        assert!(err.to_string().contains("250") && err.to_string().contains("251"));
    }

    #[test]
    fn incomplete_needs_more() {
        for input in [
            &b""[..],
            b"2",
            b"250",
            b"250 OK",
            b"250 OK\r",
            b"250-first\r\n",
            b"250-first\r\n250 last",
        ] {
            assert_eq!(parse_one(input).unwrap(), None, "{input:?}");
        }
    }

    #[test]
    fn split_across_buffer_boundaries() {
        let input: &[u8] = b"250-mx.example.com at your service\r\n250-PIPELINING\n\
                             250-SIZE 10240000\r\n250 2.0.0 ENHANCEDSTATUSCODES\r\n";
        let whole = reply(input);
        let mut parser = ReplyParser::default();
        for end in 0..input.len() {
            assert_eq!(parser.parse(&input[..end]).unwrap(), None, "at {end}");
        }
        let (r, used) = parser.parse(input).unwrap().unwrap();
        assert_eq!((r, used), (whole, input.len()));
    }

    #[test]
    fn pipelined_replies_in_one_buffer() {
        let input: &[u8] = b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n\
                             550-5.1.1 No such user\r\n550 5.1.1 here\r\n\
                             354 Go ahead\r\n250 2.0";
        let mut parser = ReplyParser::default();
        let mut rest = input;
        let mut seen = Vec::new();
        while let Some((r, used)) = parser.parse(rest).unwrap() {
            seen.push((r.code, r.enhanced.map(|e| e.to_string()), r.text()));
            rest = &rest[used..];
        }
        assert_eq!(
            seen,
            [
                (250, Some("2.1.0".into()), "Sender ok".into()),
                (250, Some("2.1.5".into()), "Recipient ok".into()),
                (550, Some("5.1.1".into()), "No such user here".into()),
                (354, None, "Go ahead".into()),
            ]
        );
        assert_eq!(rest, b"250 2.0");
        let (r, _) = parser.parse(b"250 2.0.0 Queued\r\n").unwrap().unwrap();
        assert_eq!(r.enhanced, code(2, 0, 0));
    }

    #[test]
    fn shorter_buffer_starts_over() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.parse(b"250-first\r\n250 la").unwrap(), None);
        let (r, used) = parser.parse(b"221 bye\r\n").unwrap().unwrap();
        assert_eq!((r.code, r.lines, used), (221, vec!["bye".into()], 9));
    }

    #[test]
    fn errors_reset_the_parser() {
        let mut parser = ReplyParser::default();
        assert!(parser.parse(b"250-a\r\n999\r\n").is_err());
        assert_eq!(parser.parse(b"250 ok\r\n").unwrap().unwrap().0.code, 250);
    }

    /// xorshift64: enough randomness for a no-panic property test, no new dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random reply-shaped lines (codes, separators, enhanced codes, text, line ends),
    /// each piece now and then replaced by a random byte, so that inputs reach every
    /// state: complete and partial replies, enhanced codes, every error.
    fn random_input(rng: &mut XorShift) -> Vec<u8> {
        const CODES: [&[u8]; 8] = [
            b"250", b"250", b"250", b"250", b"550", b"421", b"354", b"25",
        ];
        const SEPARATORS: [&[u8]; 7] = [b"-", b"-", b"-", b"-", b" ", b"", b"x"];
        const ENHANCED: [&[u8]; 6] = [b"", b"2.1.5 ", b"5.1.1 ", b"4.7.0", b"5.1000.1 ", b"2.0."];
        const TEXT: [&[u8]; 5] = [
            b"",
            b"OK",
            b"queued as 1A2B",
            b"\xff\xfe",
            b"long text goes on",
        ];
        const ENDS: [&[u8]; 6] = [b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"];
        let mut out = Vec::new();
        for _ in 0..rng.below(10) {
            for choices in [&CODES[..], &SEPARATORS, &ENHANCED, &TEXT, &ENDS] {
                if rng.below(40) == 0 {
                    out.push(rng.next() as u8);
                } else {
                    out.extend_from_slice(choices[rng.below(choices.len())]);
                }
            }
        }
        out
    }

    /// Every reply in `input`, then the error or the unparsed rest.
    type Outcome = (Vec<Reply>, Result<usize, ReplyError>);

    fn parse_all(input: &[u8]) -> Outcome {
        let mut parser = ReplyParser::new(40, 4);
        let mut replies = Vec::new();
        let mut start = 0;
        loop {
            match parser.parse(&input[start..]) {
                Ok(Some((reply, used))) => {
                    assert!(used > 0 && start + used <= input.len());
                    replies.push(reply);
                    start += used;
                }
                Ok(None) => return (replies, Ok(input.len() - start)),
                Err(err) => return (replies, Err(err)),
            }
        }
    }

    /// Same input fed in random chunks, as reads from a socket arrive.
    fn parse_chunked(input: &[u8], rng: &mut XorShift) -> Outcome {
        let mut parser = ReplyParser::new(40, 4);
        let mut replies = Vec::new();
        let mut start = 0;
        let mut end = 0;
        loop {
            match parser.parse(&input[start..end]) {
                Ok(Some((reply, used))) => {
                    replies.push(reply);
                    start += used;
                }
                Ok(None) if end == input.len() => return (replies, Ok(end - start)),
                Ok(None) => end = (end + 1 + rng.below(8)).min(input.len()),
                Err(err) => return (replies, Err(err)),
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_matter() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5000 {
            let input = random_input(&mut rng);
            let whole = parse_all(&input);
            let chunked = parse_chunked(&input, &mut rng);
            assert_eq!(whole, chunked, "{input:?}");
            for reply in whole.0 {
                assert!((200..600).contains(&reply.code));
                assert!(!reply.lines.is_empty() && reply.lines.len() <= 4);
                if let Some(e) = reply.enhanced {
                    assert_eq!(u16::from(e.class()), reply.code / 100);
                }
            }
        }
    }
}
