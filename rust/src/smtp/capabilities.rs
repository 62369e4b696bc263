//! What a server offers, read from its EHLO reply (RFC 5321 §4.1.1.1): the extensions the session uses.

use super::reply::Reply;

/// The EHLO extensions the session acts on. Keywords are matched without regard to
/// case; parameters that cannot be read leave the extension offered without them.
/// Extensions not listed here are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The name the server gives itself, first word of the first line ("" if none).
    pub domain: String,
    /// PIPELINING (RFC 2920): the session sends MAIL and all RCPTs in one write.
    pub pipelining: bool,
    /// SIZE (RFC 1870): the session declares `SIZE=` on MAIL FROM.
    pub size: bool,
    /// The SIZE limit in bytes, when the server gave a non-zero one (`SIZE 0` or bare
    /// `SIZE` means no fixed limit). A larger message is not sent: it would bounce.
    pub max_size: Option<u64>,
    /// 8BITMIME (RFC 6152): `BODY=8BITMIME` may be declared.
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531): addresses may be UTF-8.
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207): the session upgrades when its TLS policy says so.
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034): replies should carry enhanced codes.
    pub enhanced_status_codes: bool,
    /// CHUNKING (RFC 3030): BDAT may replace DATA.
    pub chunking: bool,
    /// AUTH (RFC 4954) mechanisms, upper case, in the server's order, without
    /// repeats. Also read from the old `AUTH=MECH ...` form some servers still send.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// Reads the capabilities from an EHLO reply. The caller checks the reply code
    /// first: this reads the lines whatever the code is.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        let mut lines = reply.lines.iter();
        if let Some(greeting) = lines.next() {
            caps.domain = greeting
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .into();
        }
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let (keyword, first_param) = match keyword.split_once('=') {
                Some((keyword, param)) => (keyword, Some(param)),
                None => (keyword, None),
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = true;
                let limit = first_param.or_else(|| words.next());
                caps.max_size = limit.and_then(|l| l.parse().ok()).filter(|&l| l > 0);
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("AUTH") {
                for mechanism in first_param.into_iter().chain(words) {
                    let mechanism = mechanism.to_ascii_uppercase();
                    if !mechanism.is_empty() && !caps.auth.contains(&mechanism) {
                        caps.auth.push(mechanism);
                    }
                }
            }
        }
        caps
    }

    /// Whether the server offers the AUTH mechanism `name` (any case).
    pub fn offers_auth(&self, name: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::ReplyParser;

    fn caps(input: &[u8]) -> Capabilities {
        let (reply, _) = ReplyParser::default().parse(input).unwrap().unwrap();
        Capabilities::from_ehlo(&reply)
    }

    #[test]
    fn postfix_style_ehlo() {
        let c = caps(
            b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
              250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n\
              250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
              250 CHUNKING\r\n",
        );
        assert_eq!(
            c,
            Capabilities {
                domain: "mx.example.com".into(),
                pipelining: true,
                size: true,
                max_size: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                enhanced_status_codes: true,
                chunking: true,
                auth: vec!["PLAIN".into(), "LOGIN".into()],
            }
        );
        assert!(c.offers_auth("plain") && !c.offers_auth("CRAM-MD5"));
    }

    #[test]
    fn lower_case_keywords() {
        let c = caps(
            b"250-mx.example.com Hello [127.0.0.1]\r\n250-pipelining\r\n250-size\r\n\
              250-StartTLS\r\n250-auth cram-md5 plain\r\n250 enhancedstatuscodes\r\n",
        );
        assert_eq!(c.domain, "mx.example.com");
        assert!(c.pipelining && c.starttls && c.enhanced_status_codes);
        assert!(c.size && c.max_size.is_none());
        assert_eq!(c.auth, ["CRAM-MD5", "PLAIN"]);
        assert!(!c.chunking && !c.eight_bit_mime && !c.smtputf8);
    }

    #[test]
    fn size_without_a_usable_limit() {
        for input in [
            &b"250-mx\r\n250 SIZE\r\n"[..],
            b"250-mx\r\n250 SIZE 0\r\n",
            b"250-mx\r\n250 SIZE lots\r\n",
            b"250-mx\r\n250 SIZE -5\r\n",
        ] {
            let c = caps(input);
            assert!(c.size && c.max_size.is_none(), "{input:?}");
        }
        assert_eq!(
            caps(b"250-mx\r\n250 SIZE=52428800\r\n").max_size,
            Some(52_428_800)
        );
    }

    #[test]
    fn old_auth_form_and_repeats() {
        let c = caps(b"250-mx\r\n250-AUTH LOGIN PLAIN\r\n250 AUTH=LOGIN PLAIN XOAUTH2\r\n");
        assert_eq!(c.auth, ["LOGIN", "PLAIN", "XOAUTH2"]);
    }

    #[test]
    fn single_line_ehlo_and_odd_lines() {
        let c = caps(b"250 mx.example.com\r\n");
        assert_eq!(
            c,
            Capabilities {
                domain: "mx.example.com".into(),
                ..Capabilities::default()
            }
        );
        // The greeting line is never a keyword; empty lines and unknown ones are skipped.
        let c = caps(b"250-PIPELINING\r\n250-\r\n250-X-UNKNOWN 1\r\n250 STARTTLS\r\n");
        assert_eq!(c.domain, "PIPELINING");
        assert!(!c.pipelining && c.starttls);
        // Keywords are whole words.
        let c = caps(b"250-mx\r\n250-PIPELININGX\r\n250 SIZEX 100\r\n");
        assert!(!c.pipelining && !c.size);
    }
}
