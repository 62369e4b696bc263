//! Templates that are only text and `{{ name }}` substitutions (most subjects, text
//! parts and extra headers, and the usual HTML part): rendered by splicing, without
//! running the template engine.
//!
//! minijinja's per-render setup (template lookup, VM state, context frames) cost about
//! 3,000–5,000 instructions per part, many times the substitution itself. Only what is
//! certain to come out the same is done here: a part whose every `{{` opens `{{ name }}`
//! or `{{ name|urlencode }}`, without `{%` or `{#` (no other filters, tests, whitespace control or blocks),
//! and, per recipient, only when each name is a string or an integer; anything else
//! (a missing variable and its error included) goes to minijinja as before. In the
//! HTML part values are escaped as minijinja's HTML auto-escaping does (safe strings
//! and integers as they are).

use std::fmt::Write as _;
use std::ops::Range;

use minijinja::value::{Value, ValueKind};

use super::links::escape_with;

/// Names a `{{ }}` may not be spliced for: constants, and names the engine treats
/// specially in some places.
const NOT_VARIABLES: &[&str] = &[
    "true", "false", "none", "True", "False", "None", "loop", "self", "super", "caller", "varargs",
    "kwargs",
];

pub enum Segment {
    Text(Range<usize>),
    /// `{{ name }}`, or `{{ name|urlencode }}` when `urlencode`.
    Variable {
        name: String,
        urlencode: bool,
    },
}

pub struct Plain {
    source: String,
    segments: Vec<Segment>,
    /// Values are HTML-escaped (the HTML part's auto-escaping).
    html: bool,
}

impl Plain {
    /// The template as text and variables, or None when it uses anything else.
    pub fn parse(source: &str, html: bool) -> Option<Plain> {
        let b = source.as_bytes();
        let mut segments = Vec::new();
        let mut copied = 0;
        let mut pos = 0;
        let spaces = |from: usize| {
            b[from.min(b.len())..]
                .iter()
                .take_while(|&&c| c == b' ')
                .count()
        };
        while let Some(off) = memchr::memchr(b'{', &b[pos..]) {
            let open = pos + off;
            match b.get(open + 1) {
                Some(b'{') => {}
                Some(b'%' | b'#') => return None, // a block or a comment
                _ => {
                    // A lone `{` (CSS in a `<style>`) is text to minijinja's lexer too.
                    pos = open + 1;
                    continue;
                }
            }
            let rest = b.get(open + 2..)?;
            let lead = rest.iter().take_while(|&&c| c == b' ').count();
            let name_len = rest[lead..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_')
                .count();
            let name_start = open + 2 + lead;
            let name = &source[name_start..name_start + name_len];
            if name_len == 0 || rest[lead].is_ascii_digit() || NOT_VARIABLES.contains(&name) {
                return None;
            }
            let mut at = name_start + name_len;
            at += spaces(at);
            let urlencode = b[at..].starts_with(b"|");
            if urlencode {
                at += 1;
                at += spaces(at);
                if !b[at..].starts_with(b"urlencode") {
                    return None;
                }
                at += "urlencode".len();
                at += spaces(at);
            }
            if !b[at..].starts_with(b"}}") {
                return None;
            }
            if copied < open {
                segments.push(Segment::Text(copied..open));
            }
            segments.push(Segment::Variable {
                name: name.to_string(),
                urlencode,
            });
            pos = at + 2;
            copied = pos;
        }
        if copied < b.len() {
            segments.push(Segment::Text(copied..b.len()));
        }
        Some(Plain {
            source: source.to_string(),
            segments,
            html,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The rendered text, or None when a variable is missing or not a string or an
    /// integer (the caller then renders with minijinja, which decides).
    pub fn render(&self, context: &Value) -> Option<String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for segment in &self.segments {
            match segment {
                Segment::Text(range) => out.push_str(&self.source[range.clone()]),
                Segment::Variable { name, urlencode } => {
                    self.write_value(context, name, *urlencode, &mut out)?;
                }
            }
        }
        Some(out)
    }

    /// Appends each variable's rendered value to `values` and its span to `spans`, in
    /// template order; None as for `render`.
    pub fn values(
        &self,
        context: &Value,
        values: &mut String,
        spans: &mut Vec<Range<usize>>,
    ) -> Option<()> {
        for segment in &self.segments {
            if let Segment::Variable { name, urlencode } = segment {
                let start = values.len();
                self.write_value(context, name, *urlencode, values)?;
                spans.push(start..values.len());
            }
        }
        Some(())
    }

    fn write_value(
        &self,
        context: &Value,
        name: &str,
        urlencode: bool,
        out: &mut String,
    ) -> Option<()> {
        let value = context.get_attr(name).ok()?;
        match value.kind() {
            ValueKind::String => {}
            ValueKind::Number if value.is_integer() => {}
            _ => return None,
        }
        if urlencode {
            // The filter's own code; its result is a new, unsafe string.
            let encoded = minijinja::filters::urlencode(&value).ok()?;
            if self.html {
                escape_html(&encoded, out);
            } else {
                out.push_str(&encoded);
            }
        } else if let Some(s) = value.as_str() {
            if self.html && !value.is_safe() {
                escape_html(s, out);
            } else {
                out.push_str(s);
            }
        } else {
            // As minijinja prints a number (escaped or not): its Display.
            write!(out, "{value}").ok()?;
        }
        Some(())
    }
}

/// minijinja's HTML escaping (`HtmlEscape`): `< > & " ' /` as entities, without the
/// formatting machinery a `Display` goes through.
fn escape_html(s: &str, out: &mut String) {
    escape_with(s, out, |b| match b {
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'&' => Some("&amp;"),
        b'"' => Some("&quot;"),
        b'\'' => Some("&#x27;"),
        b'/' => Some("&#x2f;"),
        _ => None,
    });
}

#[cfg(test)]
mod tests {
    use super::super::testing::engine_as;
    use super::*;

    fn engine(source: &str, ctx: &Value) -> Result<String, minijinja::Error> {
        engine_as(source, ctx, false)
    }

    #[test]
    fn only_text_and_plain_substitutions_qualify() {
        for yes in [
            "Hi {{ a }}!",
            "{{a}}{{  b_1  }}\n",
            "no tags",
            "x }} y",
            "",
            "a { b",
            "p{color:red} {{ a }} {",
            "{{ a|urlencode }}{{a | urlencode}}",
        ] {
            assert!(Plain::parse(yes, false).is_some(), "{yes}");
        }
        for no in [
            "{{ a|upper }}",
            "{{- a }}",
            "{{ a -}}",
            "{% if a %}x{% endif %}",
            "{# c #}",
            "{{ a.b }}",
            "{{ a[0] }}",
            "{{ 1 }}",
            "{{ none }}",
            "{{ loop }}",
            "{{ a }",
            "{{ a",
            "{{\ta }}",
            "{{ é }}",
        ] {
            assert!(Plain::parse(no, false).is_none(), "{no}");
        }
    }

    #[test]
    fn splicing_gives_what_minijinja_gives_or_declines() {
        let ctx = Value::from(std::collections::BTreeMap::from([
            ("s", Value::from("Zoë <b> & {{ x }}")),
            ("safe", Value::from_safe_string("<i>".into())),
            ("i", Value::from(-42i64)),
            ("u", Value::from(u64::MAX)),
            ("f", Value::from(1.5f64)),
            ("t", Value::from(true)),
            ("n", Value::from(())),
            ("bytes", Value::from_bytes(b"ab".to_vec())),
            ("list", Value::from(vec![1, 2])),
        ]));
        let source = "Hi {{ s }}, {{safe}} {{ i }} {{ u }}\r\nend\n";
        let plain = Plain::parse(source, false).unwrap();
        assert_eq!(plain.render(&ctx).unwrap(), engine(source, &ctx).unwrap());
        for declined in [
            "{{ f }}",
            "{{ t }}",
            "{{ n }}",
            "{{ bytes }}",
            "{{ list }}",
            "{{ missing }}",
        ] {
            assert!(
                Plain::parse(declined, false)
                    .unwrap()
                    .render(&ctx)
                    .is_none(),
                "{declined}"
            );
        }
    }

    #[test]
    fn html_escaping_and_urlencode_as_minijinja() {
        let ctx = Value::from(std::collections::BTreeMap::from([
            ("s", Value::from("Zoë <b> & 'q' \"d\" a/b {{ x }} 100%")),
            ("safe", Value::from_safe_string("<i>&amp;</i>".into())),
            ("i", Value::from(-42i64)),
            ("u", Value::from(u64::MAX)),
            ("city", Value::from("Göteborg / Zürich ~x_y.z")),
        ]));
        let source = "<style>p{a:b}</style>{{ s }} {{safe}} {{ i }} {{ u }} {{ city|urlencode }}\
            {{ s | urlencode }} {{ safe|urlencode }} {{ i|urlencode }} {\n";
        for html in [false, true] {
            let plain = Plain::parse(source, html).unwrap();
            assert_eq!(
                plain.render(&ctx).unwrap(),
                engine_as(source, &ctx, html).unwrap(),
                "html {html}"
            );
        }
        let mut ours = String::new();
        let all: String = (0u8..128).map(char::from).chain("é€😀".chars()).collect();
        escape_html(&all, &mut ours);
        assert_eq!(ours, minijinja::HtmlEscape(&all).to_string());
    }
}
