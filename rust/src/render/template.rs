//! The campaign's templates (minijinja, Jinja2 syntax): compiled once per campaign,
//! rendered per recipient with strict undefined variables; HTML auto-escaped, nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use super::plain::Plain;
use crate::error::{CompileError, RenderError};

/// The name under which the HTML part is compiled: the only auto-escaped template.
pub const HTML: &str = "html";

/// One compiled template per campaign part (subject, html, text, From, headers…).
pub struct Templates {
    env: Environment<'static>,
    /// Top-level variables each part reads, to name the missing one in an error.
    variables: BTreeMap<String, BTreeSet<String>>,
    /// Parts without any template tag (a fixed From, most extra headers): their text,
    /// handed out as is instead of running the template engine per recipient.
    literals: BTreeMap<String, String>,
    /// Parts that only substitute variables: spliced without the engine when the
    /// recipient's values allow (see plain.rs).
    plain: BTreeMap<String, Plain>,
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name == HTML {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // Keep the final newline: a text part ending in one should still end in one.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        Templates {
            env,
            variables: BTreeMap::new(),
            literals: BTreeMap::new(),
            plain: BTreeMap::new(),
        }
    }

    /// Compiles `source` as `part`; a syntax error names the part, line and column.
    pub fn add(&mut self, part: &str, source: &str) -> Result<(), CompileError> {
        self.env
            .add_template_owned(part.to_string(), source.to_string())
            .map_err(|e| {
                let (line, column) = position(source, &e);
                CompileError::Template {
                    part: part.to_string(),
                    line,
                    column,
                    message: e.detail().unwrap_or(&e.kind().to_string()).to_string(),
                }
            })?;
        let template = self.env.get_template(part).expect("just added");
        let vars = template
            .undeclared_variables(false)
            .into_iter()
            .collect::<BTreeSet<_>>();
        self.variables.insert(part.to_string(), vars);
        if !source.contains('{') {
            // No `{{`, `{%` or `{#`: rendering would return the source unchanged.
            self.literals.insert(part.to_string(), source.to_string());
        }
        // A literal part has a plain form too: the link plans work on it.
        if let Some(plain) = Plain::parse(source, part == HTML) {
            self.plain.insert(part.to_string(), plain);
        }
        Ok(())
    }

    /// The text of a part without any template tag, which renders as itself.
    pub fn literal(&self, part: &str) -> Option<&str> {
        self.literals.get(part).map(String::as_str)
    }

    /// The part as text and variables, when it is only that (see plain.rs).
    pub fn plain(&self, part: &str) -> Option<&Plain> {
        self.plain.get(part)
    }

    pub fn has(&self, part: &str) -> bool {
        self.variables.contains_key(part)
    }

    /// Renders `part` for one recipient. An undefined variable names the variable.
    pub fn render(&self, part: &str, context: &Value) -> Result<Cow<'_, str>, RenderError> {
        if let Some(literal) = self.literals.get(part) {
            return Ok(Cow::Borrowed(literal));
        }
        if let Some(text) = self.plain.get(part).and_then(|p| p.render(context)) {
            return Ok(Cow::Owned(text));
        }
        let template = self
            .env
            .get_template(part)
            .map_err(|e| RenderError::Internal(e.to_string()))?;
        template
            .render(context.clone())
            .map(Cow::Owned)
            .map_err(|e| self.explain(part, context, &e))
    }

    fn explain(&self, part: &str, context: &Value, e: &minijinja::Error) -> RenderError {
        let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
        let message = if e.kind() == ErrorKind::UndefinedError {
            let missing: Vec<&str> = self.variables[part]
                .iter()
                .filter(|v| context.get_attr(v).map_or(true, |v| v.is_undefined()))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                format!(
                    "undefined value{line}: {}",
                    e.detail().unwrap_or("an attribute or item is missing")
                )
            } else {
                format!(
                    "undefined variable {}{line} (give it in the recipient's vars, or use the `default` filter)",
                    missing.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
                )
            }
        } else {
            format!("{}{line}: {}", e.kind(), e.detail().unwrap_or(""))
        };
        RenderError::Template {
            part: part.to_string(),
            message,
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Line and column (1-based, in characters) of a syntax error.
fn position(source: &str, e: &minijinja::Error) -> (usize, usize) {
    match e.range() {
        Some(range) => {
            let start = range.start.min(source.len());
            let before = &source[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (e.line().unwrap_or(1), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::ctx;
    use super::*;

    #[test]
    fn syntax_error_has_part_line_and_column() {
        let mut t = Templates::new();
        let err = t.add("html", "<p>\n  {{ name }\n</p>").unwrap_err();
        match err {
            CompileError::Template {
                part, line, column, ..
            } => {
                assert_eq!((part.as_str(), line), ("html", 2));
                assert!(column > 1, "column {column}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn html_is_escaped_text_is_not_and_undefined_is_named() {
        let mut t = Templates::new();
        t.add("html", "<b>{{ name }}</b>").unwrap();
        t.add("text", "Hi {{ name }} {{ missing|default('x') }}")
            .unwrap();
        t.add("subject", "Hi {{ first_name }}").unwrap();
        let c = ctx(&[("name", "<Ann & co>")]);
        assert_eq!(t.render("html", &c).unwrap(), "<b>&lt;Ann &amp; co&gt;</b>");
        assert_eq!(t.render("text", &c).unwrap(), "Hi <Ann & co> x");
        let err = t.render("subject", &c).unwrap_err().to_string();
        assert!(
            err.contains("`first_name`") && err.contains("subject"),
            "{err}"
        );
    }
}
