//! Fuzz target: arbitrary text through the command-argument checks (smtp/argument.rs), which guard every MAIL, RCPT and EHLO line.
//!
//! Whatever passes must keep the command line whole: no CR, LF, NUL or other control
//! character, ASCII only without SMTPUTF8, and no angle bracket that would end the
//! path outside a quoted local part.

#![no_main]

use _core::smtp::argument::{check_helo_name, check_mailbox};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(data));

/// The first byte says whether the transaction declares SMTPUTF8; the rest is the text.
fn check(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let utf8 = flags & 1 == 1;
    let text = String::from_utf8_lossy(rest);
    if check_mailbox("recipient address", &text, utf8).is_ok() {
        assert!(!text.chars().any(|c| c.is_control()));
        assert!(utf8 || text.is_ascii());
        // A server never finds the path's end before ours (it may find none, where an
        // unmatched quote follows the local part: a syntax error, nothing smuggled).
        if let Some(end) = path_end(&format!("<{text}>")) {
            assert_eq!(end, text.len() + 1);
        }
    }
    if check_helo_name(&text).is_ok() {
        assert!(text.is_ascii() && !text.bytes().any(|b| b.is_ascii_control() || b == b' '));
    }
}

/// Where a server reading `<…>` finds the path's closing bracket: the first '>' outside
/// a quoted string (RFC 5321 §4.1.2).
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
