//! Mailbox validation (RFC 5321 §4.1.2 syntax, §4.5.3.1 size limits) and IDN domains as A-labels.

use std::borrow::Cow;

/// RFC 5321 §4.5.3.1.1: the local part is at most 64 octets.
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.3: a reverse or forward path is at most 256 octets including the
/// angle brackets, so the mailbox itself is at most 254.
const MAX_MAILBOX: usize = 254;
/// RFC 1035 §2.3.4: labels of at most 63 octets, names of at most 253 in text form.
const MAX_LABEL: usize = 63;
const MAX_DOMAIN: usize = 253;

/// A mailbox that is valid to use in MAIL FROM / RCPT TO, with its domain as A-labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    /// Lower-case, A-label (punycode) form of the domain.
    pub domain: String,
    /// True when the local part is not ASCII: delivery needs SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

impl Mailbox {
    /// Parses and validates one mailbox; surrounding whitespace is ignored, as ESP lists
    /// routinely carry it. The error says what is wrong in words a list owner understands.
    pub fn parse(input: &str) -> Result<Mailbox, String> {
        let address = input.trim();
        if address.is_empty() {
            return Err("address is empty".into());
        }
        let at = address
            .rfind('@')
            .ok_or_else(|| "missing '@' between local part and domain".to_string())?;
        let (local, domain) = (&address[..at], &address[at + 1..]);
        check_local_part(local)?;
        let domain = ascii_domain(domain)?;
        if local.len() + 1 + domain.len() > MAX_MAILBOX {
            return Err(format!("address is longer than {MAX_MAILBOX} octets"));
        }
        Ok(Mailbox {
            smtputf8: !local.is_ascii(),
            local: local.to_string(),
            domain: domain.into_owned(),
        })
    }

    /// The mailbox as it goes on the wire: `local@a-label.domain`.
    pub fn address(&self) -> String {
        let mut s = String::with_capacity(self.local.len() + 1 + self.domain.len());
        s.push_str(&self.local);
        s.push('@');
        s.push_str(&self.domain);
        s
    }
}

/// RFC 5321 atext plus, per RFC 6531, any non-ASCII UTF-8.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn check_local_part(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("local part (before '@') is empty".into());
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(format!(
            "local part is {} octets, more than the {MAX_LOCAL_PART} allowed",
            local.len()
        ));
    }
    if let Some(quoted) = local.strip_prefix('"') {
        return check_quoted_string(quoted);
    }
    // Dot-string: atoms separated by single dots.
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err("local part has a leading, trailing or double dot".into());
        }
        if let Some(bad) = atom.chars().find(|&c| !is_atext(c)) {
            return Err(format!("local part contains {bad:?}, which needs quoting"));
        }
    }
    Ok(())
}

/// The rest of a Quoted-string after its opening quote (RFC 5321 qtextSMTP / quoted-pairSMTP).
fn check_quoted_string(rest: &str) -> Result<(), String> {
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(())
                } else {
                    Err("text after the closing quote of the local part".into())
                };
            }
            '\\' => match chars.next() {
                Some(' '..='~') => {}
                _ => return Err("bad escape in quoted local part".into()),
            },
            ' ' | '!' | '#'..='[' | ']'..='~' => {}
            c if !c.is_ascii() => {}
            c => return Err(format!("quoted local part contains {c:?}")),
        }
    }
    Err("quoted local part has no closing quote".into())
}

/// Validates a domain and returns it lower-case in A-labels (IDNA 2008 / UTS 46 for
/// non-ASCII names).
pub fn ascii_domain(domain: &str) -> Result<Cow<'_, str>, String> {
    if domain.is_empty() {
        return Err("domain (after '@') is empty".into());
    }
    if domain.starts_with('[') {
        return Err("address literals like [192.0.2.1] are not accepted; use a domain".into());
    }
    let ascii: Cow<'_, str> = if domain.is_ascii() {
        if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        }
    } else {
        Cow::Owned(
            idna::domain_to_ascii_strict(domain)
                .map_err(|_| format!("domain {domain:?} is not a valid internationalized name"))?,
        )
    };
    check_ldh_domain(&ascii)?;
    Ok(ascii)
}

/// Letters, digits and hyphens, at least two labels, sizes within DNS limits.
fn check_ldh_domain(domain: &str) -> Result<(), String> {
    if domain.len() > MAX_DOMAIN {
        return Err(format!("domain is longer than {MAX_DOMAIN} octets"));
    }
    if domain.ends_with('.') {
        return Err("domain ends with a dot".into());
    }
    if !domain.contains('.') {
        return Err(format!("domain {domain:?} has no dot"));
    }
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label (two dots in a row)".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!("domain label is longer than {MAX_LABEL} octets"));
        }
        if let Some(bad) = label
            .bytes()
            .find(|&b| !(b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(format!("domain contains {:?}", bad as char));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("domain label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("domain's last label is numeric (an IP address is not a domain)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_quoted_mailboxes() {
        let m = Mailbox::parse(" Ann.Lee+news@Example.COM ").unwrap();
        assert_eq!(m.address(), "Ann.Lee+news@example.com");
        assert!(!m.smtputf8);
        assert!(Mailbox::parse("\"ann lee\"@example.com").is_ok());
    }

    #[test]
    fn idn_domain_becomes_a_labels_and_utf8_local_needs_smtputf8() {
        let m = Mailbox::parse("jürgen@bücher.example").unwrap();
        assert_eq!(m.domain, "xn--bcher-kva.example");
        assert!(m.smtputf8);
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("ann.example.com", "missing '@'"),
            ("@example.com", "local part"),
            ("ann@", "domain"),
            ("ann@localhost", "no dot"),
            ("ann..lee@example.com", "double dot"),
            ("ann lee@example.com", "needs quoting"),
            ("ann@exa_mple.com", "contains '_'"),
            ("ann@[192.0.2.1]", "address literals"),
            ("ann@-x.example.com", "starts or ends"),
            ("ann@192.0.2.1", "numeric"),
        ];
        for (input, why) in cases {
            let err = Mailbox::parse(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Mailbox::parse(&long_local).unwrap_err().contains("64"));
    }
}
