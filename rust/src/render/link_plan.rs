//! The links of an HTML part found once per campaign: the template's text is scanned at
//! compile time, and per recipient only the variables are spliced in and each link is
//! handed to the rewriter, giving the bytes that rendering and then scanning the whole
//! part (links.rs) would give.
//!
//! Why the bytes are the same: links.rs's scan looks at `<` in running text; at the
//! first bytes after a `<`; at the names, `=`, whitespace and quotes of an `<a>` tag's
//! attributes; and for the ends of comments, scripts and styles. A variable's value
//! never contains `<`, `>`, `"` or `'` (checked per recipient: HTML escaping ensures it
//! for strings and numbers, a safe string with one takes the old path). So a variable
//! in running text, or inside a quoted attribute value, cannot move what the scan
//! finds, and an `href` with a variable in it is decoded per recipient. A template with
//! a variable anywhere else (a tag or attribute name, an unquoted value, the first bytes
//! after a `<`, a comment, script or style) gets no plan: the scan is then made on the
//! compile-time text where each variable is a NUL byte, and any decision that reads a
//! NUL gives up.

use std::ops::Range;

use memchr::{memchr, memmem};
use minijinja::value::Value;

use super::links::{decode_entities, find_ignore_case, starts_with_tag, LinkRewriter};
use super::plain::{Plain, Segment};
use super::qp::{write_quoted_printable, KnownLines};

/// A stretch of the rendered part: template text (a range of its source), or the
/// value of the n-th variable.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    Text(Range<usize>),
    Value(usize),
}

/// Template text copied as it is, with the quoted-printable of its whole lines worked
/// out once (copied by the encoder, not encoded again per recipient).
#[derive(Debug)]
pub(super) struct Fixed {
    range: Range<usize>,
    /// The whole lines, as a range of this text, and their encoding.
    lines: Option<(Range<usize>, Vec<u8>)>,
}

impl Fixed {
    pub(super) fn new(source: &str, range: Range<usize>) -> Fixed {
        let text = &source.as_bytes()[range.clone()];
        let lines = KnownLines::span(text).map(|span| {
            let mut encoded = Vec::new();
            write_quoted_printable(&mut encoded, &text[span.clone()]);
            (span, encoded)
        });
        Fixed { range, lines }
    }

    /// Appends the text to `out`, and its known lines to `known`.
    pub(super) fn write<'p>(
        &'p self,
        source: &str,
        out: &mut String,
        known: &mut Vec<KnownLines<'p>>,
    ) {
        if let Some((span, encoded)) = &self.lines {
            let at = out.len();
            known.push(KnownLines {
                range: at + span.start..at + span.end,
                encoded,
            });
        }
        out.push_str(&source[self.range.clone()]);
    }
}

/// Template text and variables as a plan's operations.
pub(super) fn copies(source: &str, pieces: Vec<Piece>) -> impl Iterator<Item = Stretch> + '_ {
    pieces.into_iter().map(move |p| match p {
        Piece::Text(r) => Stretch::Text(Fixed::new(source, r)),
        Piece::Value(k) => Stretch::Value(k),
    })
}

/// Template text, or the value of the n-th variable.
#[derive(Debug)]
pub(super) enum Stretch {
    Text(Fixed),
    Value(usize),
}

#[derive(Debug)]
enum Op {
    Copy(Stretch),
    /// An `<a href>` value as written, and its URL (entities decoded, trimmed) when it
    /// has no variable in it.
    Link {
        pieces: Vec<Piece>,
        url: Option<String>,
        quoted: bool,
    },
}

/// The HTML part as text to copy and links to rewrite, in order.
#[derive(Debug)]
pub struct LinkPlan {
    ops: Vec<Op>,
}

/// An `href` value found in a tag: its span, and whether it was quoted.
type Href = (usize, usize, bool);

/// The template text with each variable as one NUL byte, and where each segment starts.
pub(super) struct Skeleton {
    pub(super) bytes: Vec<u8>,
    /// (start in `bytes`, what is there: template text from this source offset, or a
    /// variable).
    starts: Vec<(usize, Piece)>,
}

impl Skeleton {
    pub(super) fn new(plain: &Plain) -> Option<Skeleton> {
        let source = plain.source();
        if memchr(0, source.as_bytes()).is_some() {
            return None; // NUL marks the variables
        }
        let mut bytes = Vec::with_capacity(source.len());
        let mut starts = Vec::new();
        let mut variable = 0;
        for segment in plain.segments() {
            match segment {
                Segment::Text(range) => {
                    starts.push((bytes.len(), Piece::Text(range.clone())));
                    bytes.extend_from_slice(&source.as_bytes()[range.clone()]);
                }
                Segment::Variable { .. } => {
                    starts.push((bytes.len(), Piece::Value(variable)));
                    bytes.push(0);
                    variable += 1;
                }
            }
        }
        Some(Skeleton { bytes, starts })
    }

    /// The pieces that `range` of the skeleton stands for.
    pub(super) fn pieces(&self, range: Range<usize>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (i, (start, piece)) in self.starts.iter().enumerate() {
            let end = self.starts.get(i + 1).map_or(self.bytes.len(), |s| s.0);
            let (from, to) = (range.start.max(*start), range.end.min(end));
            if from >= to {
                continue;
            }
            pieces.push(match piece {
                Piece::Text(r) => Piece::Text(r.start + from - start..r.start + to - start),
                Piece::Value(k) => Piece::Value(*k),
            });
        }
        pieces
    }

    /// None when `range` holds a variable.
    fn fixed(&self, range: Range<usize>) -> Option<()> {
        match memchr(0, &self.bytes[range.start..range.end.min(self.bytes.len())]) {
            Some(_) => None,
            None => Some(()),
        }
    }
}

impl LinkPlan {
    /// The plan of an HTML template, or None when a variable sits where it could
    /// change what the link scan finds.
    pub fn new(plain: &Plain) -> Option<LinkPlan> {
        let skeleton = Skeleton::new(plain)?;
        let b = &skeleton.bytes[..];
        let mut ops = Vec::new();
        let copy = |ops: &mut Vec<Op>, range: Range<usize>| {
            ops.extend(copies(plain.source(), skeleton.pieces(range)).map(Op::Copy));
        };
        // The same walk as links::rewrite_html, each decision taken only when the
        // bytes it reads are template text.
        let mut copied = 0;
        let mut pos = 0;
        while let Some(off) = memchr(b'<', &b[pos..]) {
            let lt = pos + off;
            let rest = &b[lt..];
            skeleton.fixed(lt..lt + 2)?;
            let next = rest.get(1).map_or(0, u8::to_ascii_lowercase);
            if next == b'!' && known_prefix(rest, b"<!--")? {
                pos = memmem::find(&rest[4..], b"-->").map_or(b.len(), |e| lt + 4 + e + 3);
                skeleton.fixed(lt..pos)?;
            } else if next == b's' && (known_tag(rest, b"script")? || known_tag(rest, b"style")?) {
                let name: &[u8] = if starts_with_tag(rest, b"script") {
                    b"</script"
                } else {
                    b"</style"
                };
                pos = find_ignore_case(&b[lt + 1..], name).map_or(b.len(), |e| lt + 1 + e);
                skeleton.fixed(lt..pos + name.len())?;
            } else if next == b'a' && known_tag(rest, b"a")? {
                let (end, href) = scan_tag(b, lt + 2)?;
                if let Some((vstart, vend, quoted)) = href {
                    copy(&mut ops, copied..vstart);
                    let url = skeleton.fixed(vstart..vend).map(|()| {
                        let raw = std::str::from_utf8(&b[vstart..vend])
                            .expect("the value lies between ASCII bytes of UTF-8 text");
                        let mut scratch = String::new();
                        decode_entities(raw, &mut scratch).trim().to_string()
                    });
                    ops.push(Op::Link {
                        pieces: skeleton.pieces(vstart..vend),
                        url,
                        quoted,
                    });
                    copied = vend;
                }
                pos = end;
            } else {
                pos = lt + 1;
            }
        }
        copy(&mut ops, copied..b.len());
        Some(LinkPlan { ops })
    }

    /// Writes the part for one recipient to `out`, links rewritten. False, with nothing
    /// written and the rewriter not called, when a value is not for splicing (see
    /// plain.rs) or holds a byte the plan assumes absent: the caller then renders and
    /// scans the whole part.
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
        if plain.values(context, &mut values, &mut spans).is_none()
            || values
                .bytes()
                .any(|c| matches!(c, b'<' | b'>' | b'"' | b'\''))
        {
            return false;
        }
        let source = plain.source();
        let text = |p: &Piece| match p {
            Piece::Text(r) => &source[r.clone()],
            Piece::Value(k) => &values[spans[*k].clone()],
        };
        let mut raw = String::new();
        let mut decoded = String::new();
        for op in &self.ops {
            match op {
                Op::Copy(Stretch::Text(fixed)) => fixed.write(source, out, known),
                Op::Copy(Stretch::Value(k)) => out.push_str(&values[spans[*k].clone()]),
                Op::Link {
                    pieces,
                    url,
                    quoted,
                } => {
                    let url = match url {
                        Some(url) => url.as_str(),
                        None => {
                            raw.clear();
                            pieces.iter().for_each(|p| raw.push_str(text(p)));
                            decode_entities(&raw, &mut decoded).trim()
                        }
                    };
                    // As links::rewrite_html writes it.
                    if !quoted {
                        out.push('"');
                    }
                    let mark = out.len();
                    if rewriter.rewrite(url, true, out) {
                        if !quoted {
                            out.push('"');
                        }
                    } else {
                        out.truncate(mark - usize::from(!quoted));
                        pieces.iter().for_each(|p| out.push_str(text(p)));
                    }
                }
            }
        }
        true
    }
}

/// `s.starts_with(prefix)` (ASCII case-insensitive), or None when the answer depends
/// on a variable: a NUL is read before the answer is known.
fn known_prefix(s: &[u8], prefix: &[u8]) -> Option<bool> {
    for (i, &want) in prefix.iter().enumerate() {
        match s.get(i) {
            None => return Some(false),
            Some(0) => return None,
            Some(c) if !c.eq_ignore_ascii_case(&want) => return Some(false),
            Some(_) => {}
        }
    }
    Some(true)
}

/// links::starts_with_tag, or None when the answer depends on a variable.
fn known_tag(s: &[u8], name: &[u8]) -> Option<bool> {
    if !known_prefix(s.get(1..).unwrap_or_default(), name)? {
        return Some(false);
    }
    match s.get(name.len() + 1) {
        None => Some(false),
        Some(0) => None,
        Some(_) => Some(starts_with_tag(s, name)),
    }
}

/// links::scan_tag on the skeleton, or None when a variable sits anywhere but inside a
/// quoted attribute value.
fn scan_tag(b: &[u8], mut pos: usize) -> Option<(usize, Option<Href>)> {
    let mut href = None;
    loop {
        while pos < b.len() && (b[pos].is_ascii_whitespace() || b[pos] == b'/') {
            pos += 1;
        }
        if pos >= b.len() {
            return Some((b.len(), href));
        }
        match b[pos] {
            0 => return None,
            b'>' => return Some((pos + 1, href)),
            _ => {}
        }
        let name_start = pos;
        while pos < b.len()
            && !matches!(b[pos], b'=' | b'>' | b'/')
            && !b[pos].is_ascii_whitespace()
        {
            if b[pos] == 0 {
                return None;
            }
            pos += 1;
        }
        let name = &b[name_start..pos];
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= b.len() || b[pos] != b'=' {
            continue; // attribute without a value (a NUL here is caught above)
        }
        pos += 1;
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= b.len() {
            return Some((b.len(), href));
        }
        let value = match b[pos] {
            0 => return None,
            quote @ (b'"' | b'\'') => {
                // Values hold no quote, so the closing one is template text.
                let start = pos + 1;
                let end = memchr(quote, &b[start..]).map_or(b.len(), |e| start + e);
                pos = (end + 1).min(b.len());
                (start, end, true)
            }
            _ => {
                let start = pos;
                while pos < b.len() && !b[pos].is_ascii_whitespace() && b[pos] != b'>' {
                    if b[pos] == 0 {
                        return None;
                    }
                    pos += 1;
                }
                (start, pos, false)
            }
        };
        if href.is_none() && name.eq_ignore_ascii_case(b"href") {
            href = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::links::rewrite_html;
    use super::super::testing::{assert_known_lines_agree, ctx, engine_as, xorshift, Numbered};
    use super::*;

    /// Through the plan when there is one, else None; and the old way.
    /// The part as written and the links in the order the rewriter saw them.
    type Written = (String, Vec<String>);

    fn both(source: &str, ctx: &Value) -> (Option<Written>, Written) {
        let plain = Plain::parse(source, true).unwrap();
        let planned = LinkPlan::new(&plain).and_then(|plan| {
            let mut r = Numbered(vec![]);
            let mut out = String::new();
            let mut known = vec![];
            let planned = plan.render(&plain, ctx, &mut r, &mut out, &mut known);
            assert_known_lines_agree(&out, &known);
            planned.then_some((out, r.0))
        });
        let mut r = Numbered(vec![]);
        let mut out = String::new();
        rewrite_html(&engine_as(source, ctx, true).unwrap(), &mut r, &mut out);
        (planned, (out, r.0))
    }

    #[test]
    fn planned_links_give_the_same_bytes_and_links() {
        let c = ctx(&[
            ("name", Value::from("Zoë & <co> 'x' \"y\" /")),
            ("city", Value::from("Göteborg / Sø")),
            ("n", Value::from(42)),
            (
                "u",
                Value::from_safe_string("https://u.example/x?a=1&b=2".into()),
            ),
        ]);
        for source in [
            "<p>Hi {{ name }}</p><a href=\"https://a.example/?x=1&amp;y=2\">a</a>",
            "<a href=\"https://s.example/?c={{ city|urlencode }}&amp;n={{n}}\">s</a>{{ name }}",
            "<A class=x HREF='https://a.example/{{ n }}'>a</A><a href={{u}}>",
            "<a title=\"{{ name }}\" href=\" {{ u }} \">u</a><a href=\"{{u}}\">again</a>",
            "<!-- <a href=\"http://c.example\"> --><script>x='<a href=\"http://j\">'</script>{{name}}",
            "<a href=http://b.example/p>b</a><a href=\"mailto:x@y.z\">m</a><span>{{ n }}</span>",
            "<strong>{{ n }}</strong><s>{{ name }}</s><a>{{ name }}</a><a href>x</a>",
            "<a href=\"{{ u }}\"",
            "<a href='http://x' ",
            "text {{ name }} <",
            "<sty{{ n }}le>",
            "<a{{ n }} href=\"http://x\">",
            "<a h{{ n }}ref=\"http://x\">",
            "<!-{{ n }}- x -->",
            "<!-- {{ n }} -->",
            "<script>{{ n }}</script>",
            "<a href=http://x/{{ n }}>",
            "<a href={{ n }}>",
            "<{{ n }}a href=\"http://x\">",
        ] {
            let (planned, old) = both(source, &c);
            if let Some(planned) = planned {
                assert_eq!(planned, old, "{source}");
            }
        }
    }

    /// Templates pieced together at random from fragments that put variables in every
    /// place the scan looks, with values of every awkward kind: wherever there is a plan
    /// and it does not decline, its bytes and links are the old way's.
    #[test]
    fn random_templates_give_the_old_bytes() {
        const FRAGMENTS: &[&str] = &[
            "<p>",
            "</p>",
            "{{ a }}",
            "{{ b }}",
            "{{ a|urlencode }}",
            " ",
            "\n",
            "x&amp;y",
            "<a href=\"",
            "<a href='",
            "<A HREF=",
            "\">",
            "'>",
            ">",
            "</a>",
            "https://h.example/",
            "http://i.example/p?q=1&amp;r=2",
            "mailto:m@x.example",
            "#top",
            "<!--",
            "-->",
            "<script>",
            "</script>",
            "<style>",
            "</style>",
            "<",
            "=",
            "\"",
            "'",
            "title=\"",
            "<img src=\"https://c.example/i.png\">",
            "</body>",
            "<body>",
            "{{ n }}",
            "<a title=\"{{ a }}\" href=\"https://t.example/{{ b }}\">t</a>",
        ];
        let values = [
            Value::from("Ann"),
            Value::from("Zoë & co"),
            Value::from("https://v.example/x?y=1"),
            Value::from("a\"b'c<d>e"),
            Value::from(""),
            Value::from("-->"),
            Value::from_safe_string("<a href=\"http://s.example\">s</a>".into()),
            Value::from_safe_string("https://safe.example/".into()),
            Value::from(7),
        ];
        let mut random = xorshift(0x5eed_2026);
        let mut next = |n: usize| (random() % n as u64) as usize;
        let mut planned_and_kept = 0;
        for _ in 0..3000 {
            let source: String = (0..1 + next(12))
                .map(|_| FRAGMENTS[next(FRAGMENTS.len())])
                .collect();
            let c = ctx(&[
                ("a", values[next(values.len())].clone()),
                ("b", values[next(values.len())].clone()),
                ("n", Value::from(next(1000))),
            ]);
            let (planned, old) = both(&source, &c);
            if let Some(planned) = planned {
                assert_eq!(planned, old, "{source:?} with {c:?}");
                planned_and_kept += 1;
            }
        }
        assert!(
            planned_and_kept > 500,
            "only {planned_and_kept} plans were compared"
        );
    }

    #[test]
    fn variables_that_could_move_the_scan_get_no_plan() {
        for (source, planned) in [
            ("<p>{{ a }}</p><a href=\"https://x/{{ a }}\">x</a>", true),
            (
                "<strong>{{ a }}</strong><a title='{{ a }}' href=\"h\">",
                true,
            ),
            ("<a{{ a }} href=\"http://x\">", false),
            ("<a h{{ a }}ref=\"http://x\">", false),
            ("<a href=http://x/{{ a }}>", false),
            ("<!-- {{ a }} -->", false),
            ("<script>{{ a }}</script>", false),
            ("<{{ a }}", false),
            ("<s{{ a }}", false),
            ("<sty{{ a }}le>", false),
            ("<span>{{ a }}</span>", true),
        ] {
            let plain = Plain::parse(source, true).unwrap();
            assert_eq!(LinkPlan::new(&plain).is_some(), planned, "{source}");
        }
    }

    #[test]
    fn a_safe_value_with_markup_takes_the_old_path() {
        let plain = Plain::parse("<p>{{ a }}</p>", true).unwrap();
        let plan = LinkPlan::new(&plain).unwrap();
        let c = ctx(&[("a", Value::from_safe_string("<a href=\"http://x\">".into()))]);
        let mut out = String::new();
        assert!(!plan.render(&plain, &c, &mut Numbered(vec![]), &mut out, &mut vec![]));
        assert!(out.is_empty());
    }

    #[test]
    fn the_sample_html_has_a_plan_and_the_same_output() {
        let html = concat!(
            "<!DOCTYPE html>\n<html><head><style>a{color:#0b5394}</style></head><body>\n",
            "<a href=\"https://shop.example.com/?utm_source=news&amp;utm_campaign=autumn\">\n",
            "<img src=\"https://cdn.example.com/logo.png\" alt=\"F\" width=\"180\"></a>\n",
            "<h1>Hello {{ first_name }},</h1><p>in {{ city }} <strong>{{ member_id }}</strong>\n",
            "<p><a href=\"https://shop.example.com/stores?city={{ city|urlencode }}\">Find</a> ·\n",
            "<a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p></body></html>\n"
        );
        let c = ctx(&[
            ("first_name", Value::from("Émilie")),
            ("city", Value::from("Zürich am See")),
            ("member_id", Value::from(100_007)),
            (
                "unsubscribe_url",
                Value::from_safe_string("https://t.example.com/u/AbC-_".into()),
            ),
        ]);
        let (planned, old) = both(html, &c);
        assert_eq!(planned.expect("a plan"), old);
    }
}
