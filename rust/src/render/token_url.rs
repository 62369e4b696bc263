//! Where a token goes in a tracking or unsubscribe URL: the base URL a campaign gives,
//! checked once and split around the token's place.
//!
//! The token is a path segment of its own, whatever the user wrote:
//! `https://t.example.net` and `https://t.example.net/` give `https://t.example.net/TOKEN`,
//! `https://t.example.net/c` and `…/c/` give `…/c/TOKEN`. A base with a query keeps it
//! after the token (`https://t.example.net/c?src=mail` gives `…/c/TOKEN?src=mail`), so
//! the server still finds the token as the last path segment and its own parameters
//! where they were. A fragment is refused: browsers never send it, and a token after
//! it would never reach the server.

use super::links::escape_attribute;
use crate::error::CompileError;

/// A checked base URL, split where the token goes.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenUrl {
    /// Everything before the token; ends with '/'.
    prefix: String,
    /// The base's query (with its '?'), or empty.
    suffix: String,
    /// Both escaped for an HTML attribute (a query's '&' becomes `&amp;`).
    prefix_html: String,
    suffix_html: String,
}

impl TokenUrl {
    /// Checks `base` (the setting `field`) and splits it. `https_only` refuses http://
    /// (RFC 8058 one-click unsubscribe requires HTTPS).
    pub fn parse(field: &str, base: &str, https_only: bool) -> Result<TokenUrl, CompileError> {
        let refuse = |why: &str| CompileError::config(field, format!("{base:?}: {why}"));
        if let Some(c) = base
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '"' | '<' | '>' | '\\' | '`'))
        {
            return Err(refuse(&format!(
                "{c:?} is not allowed: give an absolute http(s) URL of printable ASCII \
                 (percent-encode anything else)"
            )));
        }
        let scheme_len = if starts_with_ignore_case(base, "https://") {
            8
        } else if starts_with_ignore_case(base, "http://") {
            if https_only {
                return Err(refuse(
                    "one-click unsubscribe (RFC 8058) requires an https:// URL",
                ));
            }
            7
        } else {
            return Err(refuse(
                "not an absolute http(s) URL (it must start with https:// or http://)",
            ));
        };
        if base.contains('#') {
            return Err(refuse(
                "a fragment (#…) is never sent to the server, and the token would follow it",
            ));
        }
        let rest = &base[scheme_len..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        check_authority(authority).map_err(refuse)?;
        let (path, query) = base.split_at(base.find('?').unwrap_or(base.len()));
        let mut prefix = path.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut prefix_html = String::new();
        escape_attribute(&prefix, &mut prefix_html);
        let mut suffix_html = String::new();
        escape_attribute(query, &mut suffix_html);
        Ok(TokenUrl {
            prefix,
            suffix: query.to_string(),
            prefix_html,
            suffix_html,
        })
    }

    /// What every URL made from this base starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Appends base + the token `token` appends + the base's query to `out`, escaped
    /// for an HTML attribute when `html`.
    pub fn write(&self, out: &mut String, html: bool, token: impl FnOnce(&mut String)) {
        out.push_str(if html {
            &self.prefix_html
        } else {
            &self.prefix
        });
        token(out);
        out.push_str(if html {
            &self.suffix_html
        } else {
            &self.suffix
        });
    }
}

/// host[:port], the host a name or an IP literal, no user info.
fn check_authority(authority: &str) -> Result<(), &'static str> {
    if authority.contains('@') {
        return Err("user info (…@) in a tracking URL is refused: it hides the real host");
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host_ok = if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !ip.is_empty()
            && ip
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host.split('.').enumerate().all(|(i, label)| {
                // A trailing dot (an absolute name) leaves one empty last label.
                (label.is_empty() && i > 0 && host.ends_with('.') && host.len() > 1)
                    || (!label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            })
    };
    if !host_ok {
        return Err("no valid host name after the scheme");
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the port is not a number");
        }
    }
    Ok(())
}

pub(super) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(base: &str) -> String {
        let url = TokenUrl::parse("tracking.base_url", base, false).unwrap();
        let mut out = String::new();
        url.write(&mut out, false, |o| o.push_str("TOKEN"));
        out
    }

    #[test]
    fn the_token_is_a_path_segment_of_its_own() {
        for (base, url) in [
            ("https://t.example.net", "https://t.example.net/TOKEN"),
            ("https://t.example.net/", "https://t.example.net/TOKEN"),
            ("https://t.example.net/c", "https://t.example.net/c/TOKEN"),
            ("https://t.example.net/c/", "https://t.example.net/c/TOKEN"),
            (
                "HTTP://T.example.net:8080/c",
                "HTTP://T.example.net:8080/c/TOKEN",
            ),
            (
                "https://t.example.net?src=mail",
                "https://t.example.net/TOKEN?src=mail",
            ),
            (
                "https://t.example.net/c?a=1&b=2",
                "https://t.example.net/c/TOKEN?a=1&b=2",
            ),
            ("http://127.0.0.1:8000/t", "http://127.0.0.1:8000/t/TOKEN"),
            ("http://[::1]:8000/t/", "http://[::1]:8000/t/TOKEN"),
        ] {
            assert_eq!(joined(base), url, "{base}");
        }
        let url = TokenUrl::parse("f", "https://t.example.net/c?a=1&b=2", false).unwrap();
        let mut html = String::new();
        url.write(&mut html, true, |o| o.push('T'));
        assert_eq!(html, "https://t.example.net/c/T?a=1&amp;b=2");
    }

    #[test]
    fn what_is_not_an_absolute_http_url_is_refused_naming_the_field() {
        for base in [
            "",
            "t.example.net/c/",
            "//t.example.net/c/",
            "/c/",
            "ftp://t.example.net/",
            "javascript:alert(1)",
            "https://",
            "https:///c",
            "https://t.example.net/c#x",
            "https://user@t.example.net/",
            "https://t.example.net:http/",
            "https://t.exämple.net/",
            "https://t.example.net/ x",
            "https://t.example.net/\"",
            "https://t.example.net\\c",
            "https://t..example.net/",
        ] {
            let e = TokenUrl::parse("tracking.base_url", base, false).unwrap_err();
            assert!(
                matches!(&e, CompileError::Config { field, .. } if field == "tracking.base_url"),
                "{base}: {e}"
            );
        }
    }

    #[test]
    fn https_only_refuses_http() {
        assert!(TokenUrl::parse("unsubscribe.url", "http://u.example.net/", true).is_err());
        assert!(TokenUrl::parse("unsubscribe.url", "HTTPS://u.example.net/", true).is_ok());
    }
}
