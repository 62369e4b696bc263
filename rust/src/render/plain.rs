//! Templates that are only text and `{{ name }}` substitutions (most subjects, text
//! parts and extra headers): rendered by splicing, without running the template engine.
//!
//! minijinja's per-render setup (template lookup, VM state, context frames) cost about
//! 3,000–5,000 instructions per part, many times the substitution itself. Only what is
//! certain to come out the same is done here: a part that is not HTML (no escaping),
//! whose every `{` opens `{{ name }}` (no filters, tests, whitespace control or blocks),
//! and, per recipient, only when each name is a string or an integer; anything else
//! (a missing variable and its error included) goes to minijinja as before.

use std::fmt::Write as _;
use std::ops::Range;

use minijinja::value::{Value, ValueKind};

/// Names a `{{ }}` may not be spliced for: constants, and names the engine treats
/// specially in some places.
const NOT_VARIABLES: &[&str] = &[
    "true", "false", "none", "True", "False", "None", "loop", "self", "super", "caller", "varargs",
    "kwargs",
];

enum Segment {
    Text(Range<usize>),
    Variable(String),
}

pub struct Plain {
    source: String,
    segments: Vec<Segment>,
}

impl Plain {
    /// The template as text and variables, or None when it uses anything else.
    pub fn parse(source: &str) -> Option<Plain> {
        let b = source.as_bytes();
        let mut segments = Vec::new();
        let mut copied = 0;
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'{', &b[pos..]) {
            let open = pos + off;
            let rest = b.get(open + 2..)?;
            if b.get(open + 1) != Some(&b'{') {
                return None; // `{%`, `{#`, or a lone `{` we do not try to reason about
            }
            let lead = rest.iter().take_while(|&&c| c == b' ').count();
            let name_len = rest[lead..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_')
                .count();
            let after = &rest[lead + name_len..];
            let trail = after.iter().take_while(|&&c| c == b' ').count();
            let name = &source[open + 2 + lead..open + 2 + lead + name_len];
            if name_len == 0
                || rest[lead].is_ascii_digit()
                || NOT_VARIABLES.contains(&name)
                || !after[trail..].starts_with(b"}}")
            {
                return None;
            }
            if copied < open {
                segments.push(Segment::Text(copied..open));
            }
            segments.push(Segment::Variable(name.to_string()));
            pos = open + 2 + lead + name_len + trail + 2;
            copied = pos;
        }
        if copied < b.len() {
            segments.push(Segment::Text(copied..b.len()));
        }
        Some(Plain {
            source: source.to_string(),
            segments,
        })
    }

    /// The rendered text, or None when a variable is missing or not a string or an
    /// integer (the caller then renders with minijinja, which decides).
    pub fn render(&self, context: &Value) -> Option<String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for segment in &self.segments {
            match segment {
                Segment::Text(range) => out.push_str(&self.source[range.clone()]),
                Segment::Variable(name) => {
                    let value = context.get_attr(name).ok()?;
                    match value.kind() {
                        ValueKind::String => out.push_str(value.as_str()?),
                        // As minijinja prints a number: its Display.
                        ValueKind::Number if value.is_integer() => {
                            write!(out, "{value}").ok()?;
                        }
                        _ => return None,
                    }
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{Environment, UndefinedBehavior};

    fn engine(source: &str, ctx: &Value) -> Result<String, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .unwrap(),
        );
        env.render_str(source, ctx.clone())
    }

    #[test]
    fn only_text_and_plain_substitutions_qualify() {
        for yes in ["Hi {{ a }}!", "{{a}}{{  b_1  }}\n", "no tags", "x }} y", ""] {
            assert!(Plain::parse(yes).is_some(), "{yes}");
        }
        for no in [
            "{{ a|upper }}",
            "{{- a }}",
            "{{ a -}}",
            "{% if a %}x{% endif %}",
            "{# c #}",
            "a { b",
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
            assert!(Plain::parse(no).is_none(), "{no}");
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
        let plain = Plain::parse(source).unwrap();
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
                Plain::parse(declined).unwrap().render(&ctx).is_none(),
                "{declined}"
            );
        }
    }
}
