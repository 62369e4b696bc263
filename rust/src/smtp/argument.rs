//! What may go into an SMTP command line: envelope addresses and the EHLO name, checked where commands are written.
//!
//! The renderer and the options already check addresses and the HELO name; this is the
//! last line, as aiosmtplib has one: whatever a caller hands the session, no argument
//! can end a command early (CR, LF), hide one in a NUL, or add parameters of its own.
//! RFC 5321 §4.1.2 allows no control character in a mailbox (quoted strings included),
//! RFC 6531 §3.3 adds UTF-8 only for SMTPUTF8 transactions, and RFC 5198 keeps C1
//! controls and the Unicode line separators out of text on the wire too.

use std::fmt;

/// An argument that must not be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeArgument {
    /// What the argument is, e.g. "recipient address".
    pub what: &'static str,
    /// The argument, escaped for logs (Rust's `{:?}` of it).
    pub escaped: String,
    /// What is wrong with it, e.g. "a line feed (LF)".
    pub problem: &'static str,
}

impl fmt::Display for UnsafeArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} {} contains {}, which cannot go into an SMTP command",
            self.what, self.escaped, self.problem
        )
    }
}

impl std::error::Error for UnsafeArgument {}

/// Checks a mailbox for MAIL FROM or RCPT TO (inside the angle brackets). `utf8`: the
/// transaction declares SMTPUTF8, so non-ASCII characters may go.
pub fn check_mailbox(what: &'static str, mailbox: &str, utf8: bool) -> Result<(), UnsafeArgument> {
    let fail = |problem| UnsafeArgument {
        what,
        escaped: format!("{mailbox:?}"),
        problem,
    };
    // Angle brackets may appear only inside a quoted local part: outside one they would
    // end the path and let the rest pass for parameters of the command.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in mailbox.char_indices() {
        if let Some(problem) = forbidden(c, utf8) {
            return Err(fail(problem));
        }
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' && (quoted || i == 0) {
            quoted = !quoted;
        } else if !quoted && (c == '<' || c == '>') {
            return Err(fail("an angle bracket outside a quoted local part"));
        }
    }
    Ok(())
}

/// Checks the name EHLO or HELO sends: ASCII without controls or spaces.
pub fn check_helo_name(name: &str) -> Result<(), UnsafeArgument> {
    let fail = |problem| UnsafeArgument {
        what: "EHLO name",
        escaped: format!("{name:?}"),
        problem,
    };
    for c in name.chars() {
        if let Some(problem) = forbidden(c, false) {
            return Err(fail(problem));
        }
        if c == ' ' {
            return Err(fail("a space"));
        }
    }
    Ok(())
}

/// Why `c` may not appear in a command argument, if it may not.
fn forbidden(c: char, utf8: bool) -> Option<&'static str> {
    Some(match c {
        '\r' => "a carriage return (CR)",
        '\n' => "a line feed (LF)",
        '\0' => "a NUL",
        '\u{2028}' | '\u{2029}' => "a Unicode line or paragraph separator",
        c if c.is_control() => "a control character",
        c if !c.is_ascii() && !utf8 => "a non-ASCII character without SMTPUTF8",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_quoted_mailboxes_pass() {
        for mailbox in [
            "",
            "ann@example.com",
            "\"ann <lee>\"@example.com",
            "\"a\\\"> b\"@example.com",
            "o'brien+tag@example.com",
        ] {
            assert_eq!(check_mailbox("recipient address", mailbox, false), Ok(()));
        }
        assert_eq!(
            check_mailbox("recipient address", "jürgen@example.com", true),
            Ok(())
        );
    }

    #[test]
    fn line_breaks_nul_and_controls_are_refused_and_named() {
        for (mailbox, problem) in [
            ("a\r\nRSET@example.com", "a carriage return (CR)"),
            ("a\nb@example.com", "a line feed (LF)"),
            ("a\0b@example.com", "a NUL"),
            ("a\tb@example.com", "a control character"),
            ("a\x7fb@example.com", "a control character"),
            ("a\u{85}b@example.com", "a control character"),
            (
                "a\u{2028}b@example.com",
                "a Unicode line or paragraph separator",
            ),
            ("\"a\r\n\"@example.com", "a carriage return (CR)"),
        ] {
            let e = check_mailbox("recipient address", mailbox, true).unwrap_err();
            assert_eq!(e.problem, problem, "{mailbox:?}");
            // The message names the address without writing the character itself.
            let message = e.to_string();
            assert!(message.contains("recipient address"), "{message}");
            assert!(!message.chars().any(|c| c.is_control()), "{message:?}");
        }
    }

    #[test]
    fn parameters_cannot_be_smuggled_through_angle_brackets() {
        let e = check_mailbox("sender address", "a@b.example> SMTPUTF8 RET=FULL", false);
        assert!(e.unwrap_err().problem.contains("angle bracket"));
        let e = check_mailbox("sender address", "\"x\"@b.example>", false);
        assert!(e.unwrap_err().problem.contains("angle bracket"));
    }

    /// Where a server reading `<…>` finds the path's closing bracket: the first '>'
    /// outside a quoted string (the fuzz target argument.rs checks the same).
    fn path_end(line: &str) -> Option<usize> {
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in line.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => return Some(i),
                _ => {}
            }
        }
        None
    }

    #[test]
    fn no_accepted_mailbox_ends_the_path_early_or_breaks_the_line() {
        // Every string of up to five characters from an alphabet of the troublemakers.
        let alphabet = ['a', '"', '\\', '<', '>', '@', ' ', '\r', '\n', '\0', 'é'];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .filter(|t| t.chars().count() == texts.last().unwrap().chars().count())
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        for text in &texts {
            for utf8 in [false, true] {
                if check_mailbox("recipient address", text, utf8).is_err() {
                    continue;
                }
                assert!(!text.chars().any(char::is_control), "{text:?}");
                assert!(utf8 || text.is_ascii(), "{text:?}");
                if let Some(end) = path_end(&format!("<{text}>")) {
                    assert_eq!(end, text.len() + 1, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn non_ascii_needs_smtputf8() {
        let e = check_mailbox("recipient address", "jürgen@example.com", false).unwrap_err();
        assert!(e.problem.contains("SMTPUTF8"));
    }

    #[test]
    fn helo_names() {
        assert_eq!(check_helo_name("mta1.example.com"), Ok(()));
        assert_eq!(check_helo_name("[192.0.2.1]"), Ok(()));
        for bad in ["a\r\nMAIL FROM:<x@y>", "a b", "a\0", "bücher.example"] {
            assert!(check_helo_name(bad).is_err(), "{bad:?}");
        }
    }
}
