//! Finds the links of a rendered body and rewrites them: `a href` in HTML, bare http(s)
//! URLs in plain text; and places the open-tracking pixel.
//!
//! This runs on the rendered output, not on the template: links that come from variables
//! (`href="{{ product.url }}"`) are tracked like literal ones, and Jinja tags inside an
//! HTML tag cannot confuse the scan. The scan is a small tokenizer, not an HTML parser:
//! it skips comments, `<script>` and `<style>`, reads the attributes of `<a>` tags, and
//! copies everything else through untouched (a full parser costs tens of µs per message).

use memchr::{memchr, memmem};

/// Decides what a link becomes. To replace `url`, append the replacement to `out` (in
/// HTML, already attribute-escaped) and return true; return false to leave it as it is.
pub trait LinkRewriter {
    fn rewrite(&mut self, url: &str, html: bool, out: &mut String) -> bool;
}

/// Copies `html` to `out`, passing the value of each `<a href>` (entities decoded) to
/// `rewriter`, which writes the replacement.
pub fn rewrite_html(html: &str, rewriter: &mut impl LinkRewriter, out: &mut String) {
    let bytes = html.as_bytes();
    let mut decoded = String::new();
    let mut copied = 0; // bytes[..copied] are already in `out`
    let mut pos = 0;
    while let Some(off) = memchr(b'<', &bytes[pos..]) {
        let lt = pos + off;
        let rest = &bytes[lt..];
        // Dispatch on the byte after '<': most tags are none of the three we care about.
        let next = rest.get(1).map_or(0, u8::to_ascii_lowercase);
        if next == b'!' && rest.starts_with(b"<!--") {
            pos = memmem::find(&rest[4..], b"-->").map_or(bytes.len(), |e| lt + 4 + e + 3);
        } else if next == b's'
            && (starts_with_tag(rest, b"script") || starts_with_tag(rest, b"style"))
        {
            let name: &[u8] = if starts_with_tag(rest, b"script") {
                b"</script"
            } else {
                b"</style"
            };
            pos = find_ignore_case(&bytes[lt + 1..], name).map_or(bytes.len(), |e| lt + 1 + e);
        } else if next == b'a' && starts_with_tag(rest, b"a") {
            let (end, href) = scan_tag(bytes, lt + 2);
            if let Some((vstart, vend, quoted)) = href {
                let url = decode_entities(&html[vstart..vend], &mut decoded).trim();
                out.push_str(&html[copied..vstart]);
                copied = vstart;
                if !quoted {
                    out.push('"');
                }
                let mark = out.len();
                if rewriter.rewrite(url, true, out) {
                    copied = vend;
                    if !quoted {
                        out.push('"');
                    }
                } else {
                    out.truncate(mark - usize::from(!quoted));
                }
            }
            pos = end;
        } else {
            pos = lt + 1;
        }
    }
    out.push_str(&html[copied..]);
}

/// True when `s` starts with `<name` followed by whitespace, `>` or `/` (ASCII case-insensitive).
pub(super) fn starts_with_tag(s: &[u8], name: &[u8]) -> bool {
    s.len() > name.len() + 1
        && s[1..=name.len()].eq_ignore_ascii_case(name)
        && matches!(
            s[name.len() + 1],
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'>' | b'/'
        )
}

pub(super) fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Reads the attributes of a tag from `pos` (just after its name) to its `>`. Returns the
/// position after the tag and, if it has an `href`, its value's span and whether quoted.
fn scan_tag(b: &[u8], mut pos: usize) -> (usize, Option<(usize, usize, bool)>) {
    let mut href = None;
    loop {
        while pos < b.len() && (b[pos].is_ascii_whitespace() || b[pos] == b'/') {
            pos += 1;
        }
        if pos >= b.len() {
            return (b.len(), href);
        }
        if b[pos] == b'>' {
            return (pos + 1, href);
        }
        let name_start = pos;
        while pos < b.len()
            && !matches!(b[pos], b'=' | b'>' | b'/')
            && !b[pos].is_ascii_whitespace()
        {
            pos += 1;
        }
        let name = &b[name_start..pos];
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= b.len() || b[pos] != b'=' {
            continue; // attribute without a value
        }
        pos += 1;
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= b.len() {
            return (b.len(), href);
        }
        let value = if b[pos] == b'"' || b[pos] == b'\'' {
            let quote = b[pos];
            let start = pos + 1;
            let end = memchr(quote, &b[start..]).map_or(b.len(), |e| start + e);
            pos = (end + 1).min(b.len());
            (start, end, true)
        } else {
            let start = pos;
            while pos < b.len() && !b[pos].is_ascii_whitespace() && b[pos] != b'>' {
                pos += 1;
            }
            (start, pos, false)
        };
        if href.is_none() && name.eq_ignore_ascii_case(b"href") {
            href = Some(value);
        }
    }
}

/// Decodes the character references that occur in URLs (`&amp;` and friends, numeric
/// ones), using `scratch` when there are any.
pub(super) fn decode_entities<'a>(s: &'a str, scratch: &'a mut String) -> &'a str {
    if memchr(b'&', s.as_bytes()).is_none() {
        return s;
    }
    let out = scratch;
    out.clear();
    let mut rest = s;
    while let Some(i) = memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = memchr(b';', &rest.as_bytes()[..rest.len().min(11)]).and_then(|e| {
            let c = match &rest[1..e] {
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "lt" => Some('<'),
                "gt" => Some('>'),
                n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                    .ok()
                    .and_then(char::from_u32),
                n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes a value for a double-quoted HTML attribute.
pub fn escape_attribute(s: &str, out: &mut String) {
    // Tracking URLs rarely need escaping: two SIMD scans beat a byte loop.
    if memchr::memchr3(b'&', b'"', b'<', s.as_bytes()).is_none()
        && memchr(b'>', s.as_bytes()).is_none()
    {
        out.push_str(s);
        return;
    }
    escape_with(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'"' => Some("&quot;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        _ => None,
    });
}

/// Copies `s` to `out` with each byte `entity` names replaced (only ASCII bytes may be
/// named: `s` is cut at them).
pub(super) fn escape_with(s: &str, out: &mut String, entity: impl Fn(u8) -> Option<&'static str>) {
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(entity) = entity(b) {
            out.push_str(&s[copied..i]);
            out.push_str(entity);
            copied = i + 1;
        }
    }
    out.push_str(&s[copied..]);
}

/// Copies plain `text` to `out`, offering every bare http(s) URL to `rewriter`.
pub fn rewrite_text(text: &str, rewriter: &mut impl LinkRewriter, out: &mut String) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let finder = memmem::Finder::new(b"://");
    let mut pos = 0;
    while let Some(off) = finder.find(&bytes[pos..]) {
        let sep = pos + off;
        pos = sep + 3;
        let start = if sep >= 5 && bytes[sep - 5..sep].eq_ignore_ascii_case(b"https") {
            sep - 5
        } else if sep >= 4 && bytes[sep - 4..sep].eq_ignore_ascii_case(b"http") {
            sep - 4
        } else {
            continue;
        };
        if start < copied || (start > 0 && bytes[start - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let end = url_end(bytes, pos);
        if end == pos {
            continue;
        }
        out.push_str(&text[copied..start]);
        copied = if rewriter.rewrite(&text[start..end], false, out) {
            end
        } else {
            start
        };
        pos = end;
    }
    out.push_str(&text[copied..]);
}

/// The bytes that end a URL in running text (text_plan.rs relies on this too).
pub(super) const URL_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let stops = b" \t\n\r\x0c<>\"'`";
    let mut k = 0;
    while k < stops.len() {
        t[stops[k] as usize] = true;
        k += 1;
    }
    t
};

/// Where a URL in running text ends: at whitespace, a quote or angle bracket, minus
/// trailing sentence punctuation (and a closing parenthesis it did not open).
fn url_end(b: &[u8], from: usize) -> usize {
    let end = b[from..]
        .iter()
        .position(|&c| URL_STOP[c as usize])
        .map_or(b.len(), |i| from + i);
    let mut end = end;
    while end > from {
        match b[end - 1] {
            b'.' | b',' | b';' | b':' | b'!' | b'?' | b']' | b'}' => end -= 1,
            b')' if !b[from..end].contains(&b'(') => end -= 1,
            _ => break,
        }
    }
    end
}

/// Inserts `pixel` before the last `</body>`, or appends it when there is none;
/// returns where it went.
pub fn insert_before_body_end(html: &mut String, pixel: &str) -> usize {
    let bytes = html.as_bytes();
    let mut at = bytes.len();
    let mut search_end = bytes.len();
    while let Some(i) = memmem::rfind(&bytes[..search_end], b"</") {
        if bytes.len() >= i + 6 && bytes[i + 2..i + 6].eq_ignore_ascii_case(b"body") {
            at = i;
            break;
        }
        search_end = i;
    }
    html.insert_str(at, pixel);
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper(Vec<String>);
    impl LinkRewriter for Upper {
        fn rewrite(&mut self, url: &str, html: bool, out: &mut String) -> bool {
            self.0.push(url.to_string());
            if !url.starts_with("http") {
                return false;
            }
            out.push_str("T[");
            if html {
                escape_attribute(url, out);
            } else {
                out.push_str(url);
            }
            out.push(']');
            true
        }
    }

    #[test]
    fn html_hrefs_are_rewritten_and_the_rest_copied() {
        let html = "<p><A class=x HREF='https://a.example/?x=1&amp;y=2'>a</A>\
            <!-- <a href=\"http://comment.example\"> -->\
            <a href=http://b.example/p>b</a><a href=\"mailto:x@y.z\">m</a>\
            <script>var s='<a href=\"http://js.example\">'</script><area href=\"http://c\"></p>";
        let mut r = Upper(vec![]);
        let mut out = String::new();
        rewrite_html(html, &mut r, &mut out);
        assert_eq!(
            r.0,
            [
                "https://a.example/?x=1&y=2",
                "http://b.example/p",
                "mailto:x@y.z"
            ]
        );
        assert!(
            out.contains("HREF='T[https://a.example/?x=1&amp;y=2]'"),
            "{out}"
        );
        assert!(
            out.contains("<a href=\"T[http://b.example/p]\">b</a>"),
            "{out}"
        );
        assert!(out.contains("http://comment.example") && out.contains("http://js.example"));
        assert!(out.contains("href=\"mailto:x@y.z\""));
    }

    #[test]
    fn text_urls_stop_at_space_and_trailing_punctuation() {
        let text = "See https://a.example/x. Or (http://b.example/y), xhttp://no.example";
        let mut r = Upper(vec![]);
        let mut out = String::new();
        rewrite_text(text, &mut r, &mut out);
        assert_eq!(r.0, ["https://a.example/x", "http://b.example/y"]);
        assert_eq!(
            out,
            "See T[https://a.example/x]. Or (T[http://b.example/y]), xhttp://no.example"
        );
    }

    #[test]
    fn pixel_goes_before_body_end_or_at_the_end() {
        let mut h = "<html><body>hi</BODY></html>".to_string();
        insert_before_body_end(&mut h, "<img>");
        assert_eq!(h, "<html><body>hi<img></BODY></html>");
        let mut h = "<p>hi</p>".to_string();
        insert_before_body_end(&mut h, "<img>");
        assert_eq!(h, "<p>hi</p><img>");
    }
}
