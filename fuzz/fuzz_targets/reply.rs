//! Fuzz target: arbitrary server bytes through the SMTP reply parser and EHLO reader, arbitrary messages through dot-stuffing.
//!
//! Besides "never panics", it checks what the parsers promise: feeding the same bytes
//! in small reads gives the same replies and error as feeding them at once, and
//! dot-stuffed output ends at its terminator and un-stuffs back to the message.

#![no_main]

use _core::smtp::{dot_stuff, stuffed_len, Capabilities, Reply, ReplyError, ReplyParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(data));

/// The first byte picks the read size for the chunked feed; the rest is the input.
fn check(data: &[u8]) {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = parse_all(input, input.len().max(1));
    let chunked = parse_all(input, usize::from(step % 16) + 1);
    assert_eq!(whole, chunked);
    for reply in &whole.0 {
        assert!((200..600).contains(&reply.code) && !reply.lines.is_empty());
        let _ = Capabilities::from_ehlo(reply);
    }
    check_dot_stuff(input);
}

/// Every reply in `input` read `step` bytes at a time, then the error or the number of
/// bytes left over. Small limits so that fuzzing reaches them.
fn parse_all(input: &[u8], step: usize) -> (Vec<Reply>, Result<usize, ReplyError>) {
    let mut parser = ReplyParser::new(64, 8);
    let mut replies = Vec::new();
    let (mut start, mut end) = (0, step.min(input.len()));
    loop {
        match parser.parse(&input[start..end]) {
            Ok(Some((reply, used))) => {
                assert!(used > 0 && start + used <= end);
                replies.push(reply);
                start += used;
            }
            Ok(None) if end == input.len() => return (replies, Ok(end - start)),
            Ok(None) => end = (end + step).min(input.len()),
            Err(err) => return (replies, Err(err)),
        }
    }
}

fn check_dot_stuff(message: &[u8]) {
    let mut out = b"prefix".to_vec();
    let result = dot_stuff(message, &mut out);
    assert_eq!(result.clone().map(|()| out.len() - 6), stuffed_len(message));
    if result.is_err() {
        assert_eq!(out, b"prefix");
        return;
    }
    let body = out[6..].strip_suffix(b".\r\n").expect("terminator");
    let mut unstuffed = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n") && line != b".\r\n");
        unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    let mut expected = message.to_vec();
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    assert_eq!(unstuffed, expected);
}
