//! Which extra header names a campaign may set (`Campaign(headers=...)`, the campaign
//! file's `[headers]`): printable names, each once whatever its case, and none of the
//! fields that ferrymail, a receiving server or a re-sender writes.

use crate::error::CompileError;

/// Names (lower case) refused, each with the reason given to the sender. A name ending
/// in `*` refuses every name with that prefix.
const REFUSED: &[(&str, &str)] = &[
    (
        "from",
        "ferrymail writes this header itself (use from_, reply_to, subject, unsubscribe…)",
    ),
    ("to", OWN),
    ("subject", OWN),
    ("date", OWN),
    ("message-id", OWN),
    ("reply-to", OWN),
    ("mime-version", OWN),
    // RFC 2045 §9: every Content-* field is a MIME field, which the MIME writer owns.
    ("content-*", OWN),
    ("list-unsubscribe*", OWN),
    (
        "bcc",
        "a Bcc header would show every reader the hidden addresses; ferrymail sends each \
         recipient their own message",
    ),
    (
        "cc",
        "ferrymail sends each recipient their own message and delivers to nobody else; a Cc \
         header would name an address the message was not sent to",
    ),
    ("dkim-signature", SIGNATURE),
    ("domainkey-signature", SIGNATURE),
    ("received", TRACE),
    ("received-spf", TRACE),
    ("return-path", TRACE),
    ("delivered-to", TRACE),
    ("authentication-results", TRACE),
    ("arc-*", TRACE),
    (
        "resent-*",
        "Resent-* fields are added when a message is re-sent (RFC 5322 §3.6.6), never by \
         its first sender",
    ),
];

const OWN: &str = "ferrymail writes this header itself";
const SIGNATURE: &str =
    "ferrymail writes the signatures itself (give DKIM keys with dkim=, or [dkim] in the file)";
const TRACE: &str = "receiving servers write this header (a sender's copy would be forged trace \
     or authentication data, and receivers distrust or strip it)";

/// Checks every extra header name; the error names the header.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), CompileError> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        let field = format!("headers[{name:?}]");
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(CompileError::config(
                field,
                "a header name is printable ASCII without ':' or spaces",
            ));
        }
        if let Some(why) = refused(name) {
            return Err(CompileError::config(field, why));
        }
        if let Some(other) = seen.iter().find(|s| s.eq_ignore_ascii_case(name)) {
            return Err(CompileError::config(
                field,
                format!(
                    "{other:?} and {name:?} are the same header (header names are \
                     case-insensitive): give it once"
                ),
            ));
        }
        seen.push(name);
    }
    Ok(())
}

fn refused(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    REFUSED.iter().find_map(|&(refused, why)| {
        let hit = match refused.strip_suffix('*') {
            Some(prefix) => lower.starts_with(prefix),
            None => lower == refused,
        };
        hit.then_some(why)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(names: &[&str]) -> String {
        check_names(names.iter().copied()).unwrap_err().to_string()
    }

    #[test]
    fn names_a_sender_may_write_pass() {
        let ok = [
            "Feedback-ID",
            "List-Id",
            "Sender",
            "BIMI-Selector",
            "X-Campaign",
            "In-Reply-To",
            "Precedence",
        ];
        check_names(ok).unwrap();
    }

    #[test]
    fn refused_names_are_named_in_any_case() {
        for name in [
            "FROM",
            "to",
            "Content-Disposition",
            "content-transfer-encoding",
            "List-Unsubscribe-Post",
            "ARC-Seal",
            "arc-message-signature",
            "Resent-From",
            "Received",
            "Return-Path",
            "Authentication-Results",
            "DKIM-Signature",
            "Bcc",
            "Cc",
            "MIME-Version",
        ] {
            let e = error(&[name]);
            assert!(e.starts_with(&format!("headers[{name:?}]")), "{e}");
        }
        assert!(error(&["Received"]).contains("receiving servers"));
    }

    #[test]
    fn a_name_given_twice_in_two_cases_names_both() {
        let e = error(&["Feedback-ID", "X-A", "feedback-id"]);
        assert!(
            e.contains("\"Feedback-ID\"") && e.contains("\"feedback-id\""),
            "{e}"
        );
    }
}
