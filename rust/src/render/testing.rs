//! What the renderer's unit tests share: contexts, minijinja as the reference, a link
//! rewriter that numbers links, a seeded random generator, and the check that
//! pre-encoded lines change nothing.

use std::collections::BTreeMap;

use minijinja::value::Value;

use super::links::LinkRewriter;
use super::qp::{write_quoted_printable_with, KnownLines};

/// A template context from name/value pairs.
pub fn ctx<V: Clone + Into<Value>>(pairs: &[(&str, V)]) -> Value {
    Value::from(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect::<BTreeMap<String, Value>>(),
    )
}

/// What minijinja itself renders, configured as the campaign's templates are (HTML
/// auto-escaping for the html part, undefined variables an error, trailing newline kept).
pub fn engine_as(source: &str, ctx: &Value, html: bool) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    if html {
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    }
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .unwrap(),
    );
    env.render_str(source, ctx.clone())
}

/// Rewrites http(s) links to a numbered marker (one number per distinct URL), as the
/// campaign's rewriter does; leaves other links, and any with "skip" in them, alone.
pub struct Numbered(pub Vec<String>);

impl LinkRewriter for Numbered {
    fn rewrite(&mut self, url: &str, _html: bool, out: &mut String) -> bool {
        if !url.starts_with("http") || url.contains("skip") {
            return false;
        }
        let n = match self.0.iter().position(|u| u == url) {
            Some(n) => n,
            None => {
                self.0.push(url.to_string());
                self.0.len() - 1
            }
        };
        out.push_str(&format!("T{n}"));
        true
    }
}

/// A small, seeded xorshift generator: random test inputs that are the same every run.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// The lines a plan encoded ahead give the encoder's own bytes.
pub fn assert_known_lines_agree(out: &str, known: &[KnownLines<'_>]) {
    let (mut ahead, mut afresh) = (vec![], vec![]);
    write_quoted_printable_with(&mut ahead, out.as_bytes(), known);
    write_quoted_printable_with(&mut afresh, out.as_bytes(), &[]);
    assert_eq!(ahead, afresh);
}
