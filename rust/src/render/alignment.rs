//! DMARC identifier alignment (RFC 7489 §3.1.1, relaxed mode): a DKIM `d=` is aligned
//! with the From domain when both have the same organisational domain, found with the
//! Public Suffix List (the `psl` crate: ICANN and private sections, as DMARC
//! verifiers such as OpenDMARC use it).

/// The organisational domain of an ASCII (punycode), lower-case domain: its public
/// suffix and one label more. A name that is itself a public suffix is its own.
pub fn organizational_domain(domain: &str) -> &str {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    psl::domain_str(domain).unwrap_or(domain)
}

/// Relaxed alignment of two ASCII, lower-case domains.
pub fn aligned(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
        || organizational_domain(a).eq_ignore_ascii_case(organizational_domain(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisational_domains_follow_the_public_suffix_list() {
        assert_eq!(
            organizational_domain("mail.news.example.com"),
            "example.com"
        );
        assert_eq!(organizational_domain("example.com"), "example.com");
        assert_eq!(organizational_domain("a.b.example.co.uk"), "example.co.uk");
        // The private section: each github.io site is its own organisation.
        assert_eq!(
            organizational_domain("x.alice.github.io"),
            "alice.github.io"
        );
        // IDN suffixes in punycode (рф).
        assert_eq!(
            organizational_domain("mail.xn--80ak6aa92e.xn--p1ai"),
            "xn--80ak6aa92e.xn--p1ai"
        );
        assert_eq!(organizational_domain("co.uk"), "co.uk");
    }

    #[test]
    fn relaxed_alignment() {
        assert!(aligned("mail.example.com", "example.com"));
        assert!(aligned("a.example.com", "b.example.com"));
        assert!(!aligned("example.com", "example.net"));
        assert!(!aligned("example.co.uk", "other.co.uk"));
        assert!(!aligned("alice.github.io", "bob.github.io"));
        assert!(aligned("esp.example", "mail.esp.example"));
    }
}
