//! The campaign's templates (minijinja, Jinja2 syntax): compiled once per campaign,
//! rendered per recipient with strict undefined variables and bounded work; HTML
//! auto-escaped, nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

use minijinja::machinery::{get_compiled_template, Instruction, Instructions};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use super::plain::Plain;
use crate::error::{CompileError, RenderError};

/// The name under which the HTML part is compiled: the only auto-escaped template.
pub const HTML: &str = "html";

/// The work one part may cost for one recipient, in minijinja fuel: one per instruction
/// run and one per 64 bytes of data a template creates (strings, lists, output), so it
/// bounds both time and memory (about 64 MB). A large real template (a newsletter
/// looping over a few hundred products) uses a few ten thousand; a template that loops
/// over what one recipient's data sets (a range of 100,000 × 100,000) would otherwise
/// run for hours and hold its output in memory. Burning it all takes about 0.1 s.
pub const MAX_FUEL: u64 = 2_000_000;

/// The largest part (subject, html, text, a header…) one recipient's message may have,
/// in bytes, whichever way it is rendered (minijinja, or the splicing fast paths of
/// plain.rs, link_plan.rs and text_plan.rs, which run no loops but copy the
/// recipient's values). Receivers refuse messages much above 25 MB (Gmail's limit) and
/// clip HTML after 102 KB; a part of 10 MiB is a fault in the template or the data.
pub const MAX_PART_BYTES: usize = 10 * 1024 * 1024;

/// The error for a part over MAX_PART_BYTES.
pub fn check_part_size(part: &str, len: usize) -> Result<(), RenderError> {
    if len > MAX_PART_BYTES {
        return Err(output_limit(part));
    }
    Ok(())
}

fn output_limit(part: &str) -> RenderError {
    RenderError::Template {
        part: part.to_string(),
        message: format!(
            "output limit: the rendered part would be larger than {} MiB (MAX_PART_BYTES); \
             check the template's loops and this recipient's values",
            MAX_PART_BYTES >> 20
        ),
    }
}

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
        env.set_fuel(Some(MAX_FUEL));
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
        if source.len() > MAX_PART_BYTES {
            return Err(CompileError::config(
                part,
                format!(
                    "the template is larger than {} MiB (MAX_PART_BYTES), the most a \
                     rendered part may be",
                    MAX_PART_BYTES >> 20
                ),
            ));
        }
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
        let compiled = get_compiled_template(&template);
        for instructions in std::iter::once(&compiled.instructions).chain(compiled.blocks.values())
        {
            self.check_filters_and_tests(part, source, instructions)?;
        }
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
            check_part_size(part, text.len())?;
            return Ok(Cow::Owned(text));
        }
        let template = self
            .env
            .get_template(part)
            .map_err(|e| RenderError::Internal(e.to_string()))?;
        let hint = get_compiled_template(&template).buffer_size_hint;
        let mut out = Capped(Vec::with_capacity(hint.min(MAX_PART_BYTES)));
        match template.render_captured_to(context.clone(), &mut out) {
            Ok(_) => String::from_utf8(out.0)
                .map(Cow::Owned)
                .map_err(|e| RenderError::Internal(e.to_string())),
            Err(_) if out.0.len() > MAX_PART_BYTES => Err(output_limit(part)),
            Err(e) => Err(self.explain(part, context, &e)),
        }
    }

    /// An unknown filter or test fails every render that reaches it: refuse the part
    /// now, naming the name and where it is.
    fn check_filters_and_tests(
        &self,
        part: &str,
        source: &str,
        instructions: &Instructions<'_>,
    ) -> Result<(), CompileError> {
        let mut idx = 0;
        while let Some(instruction) = instructions.get(idx) {
            let (name, test) = match instruction {
                Instruction::ApplyFilter(name, ..) => (*name, false),
                Instruction::PerformTest(name, ..) => (*name, true),
                _ => {
                    idx += 1;
                    continue;
                }
            };
            // The engine looks names up with whitespace removed (`a . b`).
            let name: String = name.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            if !self.exists(&name, test) {
                let line = instructions.get_line(idx).unwrap_or(1);
                let span = instructions
                    .get_span(idx)
                    .filter(|s| usize::from(s.start_line) == line);
                let (line, column) = name_position(source, line, span, &name);
                let what = if test { "test" } else { "filter" };
                return Err(CompileError::Template {
                    part: part.to_string(),
                    line,
                    column,
                    message: format!("unknown {what} `{name}`"),
                });
            }
            idx += 1;
        }
        Ok(())
    }

    /// Whether the environment has this filter (or test): the engine has no public
    /// lookup, so apply it to `none` and see whether the error says it is unknown.
    fn exists(&self, name: &str, test: bool) -> bool {
        let probe = if test {
            format!("{{{{ none is {name} }}}}")
        } else {
            format!("{{{{ none|{name} }}}}")
        };
        match self.env.render_str(&probe, ()) {
            Err(e) => !matches!(e.kind(), ErrorKind::UnknownFilter | ErrorKind::UnknownTest),
            Ok(_) => true,
        }
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
        } else if e.kind() == ErrorKind::OutOfFuel {
            format!(
                "work limit{line}: the template ran out of its budget of {MAX_FUEL} fuel \
                 (MAX_FUEL: instructions run and data made) for this recipient; check the \
                 template's loops and this recipient's values"
            )
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

/// A Vec that refuses to grow past MAX_PART_BYTES: the render stops there instead of
/// building the whole oversized output first.
struct Capped(Vec<u8>);

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_PART_BYTES {
            // Marks the overflow for `render`, which reads the length.
            self.0.resize(MAX_PART_BYTES + 1, 0);
            return Err(io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Line and column (1-based) of a filter or test name used on `line`: its place in the
/// expression's span when there is one, else its first place on the line.
fn name_position(
    source: &str,
    line: usize,
    span: Option<minijinja::machinery::Span>,
    name: &str,
) -> (usize, usize) {
    let line_start = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        .min(source.len());
    let (from, to) = match span {
        Some(s) => (s.start_offset as usize, s.end_offset as usize),
        None => (
            line_start,
            source[line_start..]
                .find('\n')
                .map_or(source.len(), |i| line_start + i),
        ),
    };
    let (from, to) = (from.min(source.len()), to.min(source.len()).max(from));
    let at = source
        .get(from..to)
        .and_then(|s| s.rfind(name))
        .map_or(from, |i| from + i);
    let at = at.max(line_start);
    let column = source[line_start..at].chars().count() + 1;
    (line, column)
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

    fn template_error(part: &str, source: &str) -> (usize, usize, String) {
        match Templates::new().add(part, source).unwrap_err() {
            CompileError::Template {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_filters_and_tests_fail_the_build_with_their_place() {
        assert_eq!(
            template_error("subject", "Hi {{ name|nosuchfilter }}"),
            (1, 12, "unknown filter `nosuchfilter`".to_string())
        );
        assert_eq!(
            template_error("html", "<p>\n{% if x is nosuchtest %}y{% endif %}</p>"),
            (2, 12, "unknown test `nosuchtest`".to_string())
        );
        let (line, _, message) = template_error(
            "text",
            "a\nb\n{% filter nosuch %}x{% endfilter %}\n{% macro m() %}{{ 1|nope }}{% endmacro %}",
        );
        assert_eq!((line, message.as_str()), (3, "unknown filter `nosuch`"));
        let (line, column, message) = template_error("text", "{{ x|upper|nope2 }}");
        assert_eq!(
            (line, column, message.as_str()),
            (1, 12, "unknown filter `nope2`")
        );
    }

    #[test]
    fn known_filters_and_tests_and_filter_blocks_still_work() {
        let mut t = Templates::new();
        t.add(
            "text",
            "{% filter upper %}{{ name|default('x')|title }}{% endfilter %}\
             {% if name is defined and name is string %}!{% endif %}\
             {% macro m(v) %}{{ v|lower }}{% endmacro %}{{ m('AB') }}",
        )
        .unwrap();
        assert_eq!(
            t.render("text", &ctx(&[("name", "ann")])).unwrap(),
            "ANN!ab"
        );
    }

    #[test]
    fn unbounded_work_fails_the_recipient_naming_the_limit() {
        let mut t = Templates::new();
        t.add(
            "html",
            "{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let small = t.render("html", &ctx(&[("n", 3)])).unwrap();
        assert_eq!(small, "x".repeat(9));
        let err = t.render("html", &ctx(&[("n", 100_000)])).unwrap_err();
        assert!(err.to_string().contains("work limit"), "{err}");
        // Doubling a string needs few instructions: the data it makes is charged too.
        t.add(
            "text",
            "{% macro d(s, k) %}{% if k %}{{ d(s ~ s, k - 1) }}{% else %}{{ s|length }}\
             {% endif %}{% endmacro %}{{ d('x', k) }}",
        )
        .unwrap();
        assert_eq!(t.render("text", &ctx(&[("k", 4)])).unwrap(), "16");
        let err = t.render("text", &ctx(&[("k", 40)])).unwrap_err();
        assert!(err.to_string().contains("work limit"), "{err}");
    }

    #[test]
    fn oversized_output_fails_naming_the_limit_on_every_path() {
        let mut t = Templates::new();
        t.add("text", "{{ s }}{{ s }}").unwrap(); // the plain path
        t.add("html", "{% for i in range(3) %}{{ s }}{% endfor %}")
            .unwrap(); // minijinja
        let big = "y".repeat(MAX_PART_BYTES / 2 + 1);
        for part in ["text", "html"] {
            let err = t.render(part, &ctx(&[("s", big.as_str())])).unwrap_err();
            assert!(err.to_string().contains("output limit"), "{part}: {err}");
            assert!(t.render(part, &ctx(&[("s", "ok")])).is_ok());
        }
    }
}
