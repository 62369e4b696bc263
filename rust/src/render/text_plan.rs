//! The links of a plain-text part found once per campaign: the template's URLs are
//! found at compile time, and per recipient only the variables are spliced in and each
//! URL handed to the rewriter, giving the bytes that rendering and then scanning the
//! whole part (links::rewrite_text) would give.
//!
//! Why the bytes are the same: a URL of links::rewrite_text lies inside one "word" (a
//! run of bytes without whitespace, quotes or angle brackets, links::URL_STOP), and
//! needs a `:` there (`://`). The plan is made only when the word around each variable
//! has no `:` in the template text; then a value without `:` cannot make or change a
//! URL, whatever else it holds. A value with a `:` (an URL given in a variable) is
//! scanned on its own when its variable stands alone between stop bytes (as
//! `Unsubscribe: {{ unsubscribe_url }}` does), since no URL reaches across a stop
//! byte; elsewhere the caller scans the whole part as before.

use std::ops::Range;

use memchr::memchr;
use minijinja::value::Value;

use super::link_plan::{copies, Skeleton, Stretch};
use super::links::{rewrite_text, LinkRewriter, URL_STOP};
use super::plain::Plain;
use super::qp::KnownLines;

#[derive(Debug)]
enum Op {
    Copy(Stretch),
    /// A URL of the template text.
    Link(String),
}

/// The text part as text to copy and URLs to rewrite, in order.
#[derive(Debug)]
pub struct TextPlan {
    ops: Vec<Op>,
    /// Per variable: it stands alone between stop bytes (or the text's ends).
    alone: Vec<bool>,
}

/// Records where the URLs of the skeleton are, rewriting none.
struct Found<'a> {
    text: &'a str,
    urls: Vec<Range<usize>>,
}

impl LinkRewriter for Found<'_> {
    fn rewrite(&mut self, url: &str, _html: bool, _out: &mut String) -> bool {
        let start = url.as_ptr() as usize - self.text.as_ptr() as usize;
        self.urls.push(start..start + url.len());
        // Whether a URL is rewritten does not change where the scan finds the next:
        // it goes on after this URL either way.
        true
    }
}

impl TextPlan {
    /// The plan of a text template, or None when a variable could take part in a URL.
    pub fn new(plain: &Plain) -> Option<TextPlan> {
        let skeleton = Skeleton::new(plain)?;
        let b = &skeleton.bytes[..];
        let mut alone = Vec::new();
        for at in memchr::memchr_iter(0, b) {
            let start = b[..at]
                .iter()
                .rposition(|&c| URL_STOP[c as usize])
                .map_or(0, |i| i + 1);
            let end = b[at + 1..]
                .iter()
                .position(|&c| URL_STOP[c as usize])
                .map_or(b.len(), |i| at + 1 + i);
            let word = &b[start..end];
            if memchr(b':', word).is_some() || word.iter().filter(|&&c| c == 0).count() > 1 {
                return None;
            }
            alone.push(start == at && end == at + 1);
        }
        let text = std::str::from_utf8(b).expect("the template's text with NULs is UTF-8");
        let mut found = Found { text, urls: vec![] };
        rewrite_text(text, &mut found, &mut String::new());
        let mut ops = Vec::new();
        let mut copied = 0;
        for url in found.urls {
            ops.extend(copies(plain.source(), skeleton.pieces(copied..url.start)).map(Op::Copy));
            ops.push(Op::Link(text[url.clone()].to_string()));
            copied = url.end;
        }
        ops.extend(copies(plain.source(), skeleton.pieces(copied..b.len())).map(Op::Copy));
        Some(TextPlan { ops, alone })
    }

    /// Writes the part for one recipient to `out`, URLs rewritten. False, with nothing
    /// written and the rewriter not called, when a value is not for splicing (see
    /// plain.rs) or has a `:` where the plan cannot scan it alone.
    pub fn render<'p>(
        &'p self,
        plain: &Plain,
        context: &Value,
        rewriter: &mut impl LinkRewriter,
        out: &mut String,
        known: &mut Vec<KnownLines<'p>>,
    ) -> bool {
        let mut values = String::with_capacity(256);
        let mut spans = Vec::with_capacity(16);
        if plain.values(context, &mut values, &mut spans).is_none() {
            return false;
        }
        let has_colon = |k: usize| memchr(b':', values[spans[k].clone()].as_bytes()).is_some();
        if (0..spans.len()).any(|k| has_colon(k) && !self.alone[k]) {
            return false;
        }
        let source = plain.source();
        for op in &self.ops {
            match op {
                Op::Copy(Stretch::Text(fixed)) => fixed.write(source, out, known),
                Op::Copy(Stretch::Value(k)) => {
                    let value = &values[spans[*k].clone()];
                    if has_colon(*k) {
                        rewrite_text(value, rewriter, out);
                    } else {
                        out.push_str(value);
                    }
                }
                Op::Link(url) => {
                    if !rewriter.rewrite(url, false, out) {
                        out.push_str(url);
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_known_lines_agree, ctx, xorshift, Numbered};
    use super::*;

    /// Through the plan (None when there is none or it declines), and the old way.
    /// The part as written and the URLs in the order the rewriter took them.
    type Written = (String, Vec<String>);

    fn both(source: &str, c: &Value) -> (Option<Written>, Written) {
        let plain = Plain::parse(source, false).unwrap();
        let planned = TextPlan::new(&plain).and_then(|plan| {
            let mut r = Numbered(vec![]);
            let mut out = String::new();
            let mut known = vec![];
            let planned = plan.render(&plain, c, &mut r, &mut out, &mut known);
            assert_known_lines_agree(&out, &known);
            planned.then_some((out, r.0))
        });
        let mut r = Numbered(vec![]);
        let mut out = String::new();
        rewrite_text(&plain.render(c).unwrap(), &mut r, &mut out);
        (planned, (out, r.0))
    }

    #[test]
    fn planned_urls_give_the_same_bytes_and_links() {
        let values = [
            "Ann",
            "Zoë (x), http://v.example/a.",
            "https://u.example/x?skip=1",
            "a:b",
            "",
            " x ",
            "https",
            "://y",
        ];
        let sources = [
            "Hi {{ a }},\nSee https://a.example/x. Or (http://b.example/y), xhttp://no.example\n",
            "Unsubscribe: {{ a }}\nhttps://skip.example/ {{ b }}",
            "{{ a }}https://x.example/ {{ b }}://y {{ a }}: z",
            "https://x.example/{{ a }} and {{ b }}",
            "{{ a }}{{ b }} http://c.example/(x) http://d.example/x).",
            "ftp://x {{ a }} <{{ b }}>",
        ];
        for source in sources {
            for a in values {
                for b in values {
                    let c = ctx(&[("a", a), ("b", b)]);
                    let (planned, old) = both(source, &c);
                    if let Some(planned) = planned {
                        assert_eq!(planned, old, "{source:?} a={a:?} b={b:?}");
                    }
                }
            }
        }
    }

    /// Random texts from fragments that put variables next to every URL stop byte, with
    /// values that make, end and break URLs: a plan that does not decline gives the
    /// old way's bytes and URLs.
    #[test]
    fn random_texts_give_the_old_bytes() {
        const FRAGMENTS: &[&str] = &[
            "{{ a }}",
            "{{ b }}",
            " ",
            "\n",
            "https://x.example/",
            "http://y.example/p?q=1",
            "(",
            ")",
            ".",
            ",",
            ":",
            "<",
            ">",
            "\"",
            "'",
            "Unsubscribe: ",
            "ftp://z",
            "word",
            "https",
            "://",
            "xhttp://no.example",
            "{{ a }}/path",
        ];
        let values = [
            "Ann",
            "https://u.example/x",
            "a:b",
            "",
            " x ",
            "https",
            "://y",
            "(http://p.example)",
            "Zoë.",
            "mailto:a@b.c",
        ];
        let mut random = xorshift(0x7e47_2026);
        let mut next = |n: usize| (random() % n as u64) as usize;
        let mut compared = 0;
        for _ in 0..3000 {
            let source: String = (0..1 + next(10))
                .map(|_| FRAGMENTS[next(FRAGMENTS.len())])
                .collect();
            let c = ctx(&[
                ("a", values[next(values.len())]),
                ("b", values[next(values.len())]),
            ]);
            let (planned, old) = both(&source, &c);
            if let Some(planned) = planned {
                assert_eq!(planned, old, "{source:?} with {c:?}");
                compared += 1;
            }
        }
        assert!(compared > 500, "only {compared} plans were compared");
    }

    #[test]
    fn plans_and_declines() {
        for (source, planned) in [
            (
                "Hi {{ a }},\nUnsubscribe: {{ u }}\nhttps://x.example/",
                true,
            ),
            ("Member number: {{ n }}.", true),
            ("https://x.example/?id={{ a }}", false),
            ("{{ a }}://x", false),
            ("{{ a }}{{ b }}", false),
        ] {
            let plain = Plain::parse(source, false).unwrap();
            assert_eq!(TextPlan::new(&plain).is_some(), planned, "{source}");
        }
        let plain = Plain::parse("Hi {{ a }},", false).unwrap();
        let plan = TextPlan::new(&plain).unwrap();
        let mut out = String::new();
        let c = ctx(&[("a", "http://x.example/")]);
        assert!(!plan.render(&plain, &c, &mut Numbered(vec![]), &mut out, &mut vec![]));
        assert!(out.is_empty());
    }
}
