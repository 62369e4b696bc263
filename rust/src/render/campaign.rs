//! A compiled campaign: validated settings and templates, and the assembly of one
//! recipient's message (headers, tracked links, open pixel, unsubscribe, MIME body).

use std::borrow::Cow;

use minijinja::value::Value;
use sha2::{Digest, Sha256};

use super::address::ascii_domain;
use super::address::Mailbox;
use super::context::vars_to_context;
use super::dkim::{sign_message, SIGNATURE_SIZE};
use super::dkim_keys::DkimKeys;
use super::extra_headers::check_names;
use super::headers::{check_value, write_unstructured, NameAddr};
use super::link_plan::LinkPlan;
use super::links::{insert_before_body_end, rewrite_html, rewrite_text, LinkRewriter};
use super::mime::{write_body, Part};
use super::qp::KnownLines;
use super::template::{check_part_size, Templates, HTML};
use super::text_plan::TextPlan;
use super::token::{is_http_url, RecipientKey, TokenKind, TokenSealer, MAX_TRACKED_URL};
use super::token_url::TokenUrl;
use super::verp::VerpSender;
use crate::error::{CompileError, RenderError};
use crate::wire::{CampaignSpec, Recipient};

const SUBJECT: &str = "subject";
const FROM: &str = "from_";
const REPLY_TO: &str = "reply_to";
const TEXT: &str = "text";

struct Tracking {
    base_url: TokenUrl,
    sealer: TokenSealer,
    opens: bool,
    clicks: bool,
}

struct Unsubscribe {
    url: Option<TokenUrl>,
    mailto: Option<String>,
    sealer: TokenSealer,
    /// `List-Id: <…>` (RFC 2919) written beside List-Unsubscribe, unless the campaign
    /// gives its own: List-Unsubscribe without List-Id reads as a forged list header to
    /// spam filters (SpamAssassin's __LIST_PARTIAL).
    list_id: Option<Vec<u8>>,
}

/// Everything about a campaign that is the same for every recipient, checked and
/// compiled once; `render` is then pure per-recipient work.
pub struct CompiledCampaign {
    id: String,
    sender: Mailbox,
    templates: Templates,
    /// The HTML part's links, found once (see link_plan.rs), when its template allows.
    html_links: Option<LinkPlan>,
    /// The text part's links, likewise (see text_plan.rs).
    text_links: Option<TextPlan>,
    /// From and Reply-To parsed and written once when their templates are plain text
    /// (the usual case): checked when the campaign is built, copied per recipient.
    from: Option<Vec<u8>>,
    reply_to: Option<Vec<u8>>,
    /// Extra headers in order: name, the name its template is compiled under, and the
    /// whole field as written when the value is fixed text (written once, not per
    /// recipient).
    headers: Vec<(String, String, Option<Vec<u8>>)>,
    tracking: Option<Tracking>,
    unsubscribe: Option<Unsubscribe>,
    /// VERP: MAIL FROM carries the recipient's spool row id, sealed, when the batch
    /// gives one (the engine does; a preview or a bare Transport does not).
    verp: Option<VerpSender>,
    dkim: DkimKeys,
    /// The From domain when it is the same for every recipient.
    from_domain: Option<String>,
}

/// The moment a batch is rendered: its Date field and DKIM `t=`.
pub struct Now {
    pub date: String,
    pub unix: i64,
}

impl Now {
    pub fn at(unix: i64) -> Self {
        Now {
            date: super::headers::format_date(unix),
            unix,
        }
    }
}

/// One recipient's finished message.
#[derive(Debug)]
pub struct Rendered {
    pub envelope_from: String,
    pub rcpt_to: String,
    pub data: Vec<u8>,
    pub message_id: String,
    pub smtputf8: bool,
}

impl CompiledCampaign {
    pub fn compile(spec: &CampaignSpec) -> Result<Self, CompileError> {
        let sender = Mailbox::parse(&spec.sender).map_err(|e| CompileError::config("sender", e))?;
        if spec.html.is_none() && spec.text.is_none() {
            return Err(CompileError::config(
                "html/text",
                "a campaign needs an html or a text part",
            ));
        }
        let mut templates = Templates::new();
        check_header_template("subject", &spec.subject)?;
        templates.add(SUBJECT, &spec.subject)?;
        check_header_template("from_", &spec.from_)?;
        templates.add(FROM, &spec.from_)?;
        if let Some(reply_to) = &spec.reply_to {
            check_header_template("reply_to", reply_to)?;
            templates.add(REPLY_TO, reply_to)?;
        }
        if let Some(html) = &spec.html {
            templates.add(HTML, html)?;
        }
        if let Some(text) = &spec.text {
            templates.add(TEXT, text)?;
        }
        check_names(spec.headers.iter().map(|(name, _)| name.as_str()))?;
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (name, value) in &spec.headers {
            let part = format!("headers[{name:?}]");
            check_header_template(&part, value)?;
            templates.add(&part, value)?;
            // A fixed value that check_value refuses keeps failing per recipient, as
            // before, rather than failing the campaign.
            let written = templates
                .literal(&part)
                .filter(|v| check_value(name, v).is_ok())
                .map(|v| {
                    let mut field = Vec::new();
                    write_unstructured(&mut field, name, v);
                    field
                });
            headers.push((name.clone(), part, written));
        }
        let tracking = spec
            .tracking
            .as_ref()
            .map(|t| -> Result<Tracking, CompileError> {
                let base_url = TokenUrl::parse("tracking.base_url", &t.base_url, false)?;
                check_secret("tracking.secret", &t.secret)?;
                Ok(Tracking {
                    base_url,
                    sealer: TokenSealer::new(&t.secret),
                    opens: t.opens,
                    clicks: t.clicks,
                })
            })
            .transpose()?;
        let unsubscribe = spec
            .unsubscribe
            .as_ref()
            .map(|u| -> Result<Unsubscribe, CompileError> {
                if u.url.is_none() && u.mailto.is_none() {
                    return Err(CompileError::config(
                        "unsubscribe",
                        "give a url, a mailto, or both",
                    ));
                }
                // RFC 8058 §3.1: the one-click URI must be HTTPS. Refused rather than
                // sent without List-Unsubscribe-Post: a GET to a plain http URL would
                // carry the token in clear, and a receiver's one-click would not work.
                let url = u
                    .url
                    .as_deref()
                    .map(|url| TokenUrl::parse("unsubscribe.url", url, true))
                    .transpose()?;
                let mailto = u
                    .mailto
                    .as_deref()
                    .map(|m| Mailbox::parse(m).map(|m| m.address()))
                    .transpose()
                    .map_err(|e| CompileError::config("unsubscribe.mailto", e))?;
                // The mailto subject carries a token too: unsigned, anyone could
                // unsubscribe anyone.
                check_secret("unsubscribe.secret", &u.secret)?;
                let has_list_id = spec
                    .headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("list-id"));
                Ok(Unsubscribe {
                    url,
                    mailto,
                    sealer: TokenSealer::new(&u.secret),
                    list_id: (!has_list_id)
                        .then(|| list_id(&spec.id, &sender.domain))
                        .flatten(),
                })
            })
            .transpose()?;
        let verp = spec
            .verp
            .as_ref()
            .map(|v| -> Result<VerpSender, CompileError> {
                check_secret("verp.secret", &v.secret)?;
                VerpSender::new(&sender, &v.secret).map_err(|e| CompileError::config("sender", e))
            })
            .transpose()?;
        let literal =
            |field: &str, header: &str, source: &str| -> Result<Option<Vec<u8>>, CompileError> {
                if source.contains('{') {
                    return Ok(None);
                }
                let mut written = Vec::new();
                NameAddr::parse(header, source)
                    .map_err(|e| CompileError::config(field, e.to_string()))?
                    .write(&mut written, header);
                Ok(Some(written))
            };
        let from = literal("from_", "From", &spec.from_)?;
        let from_domain = if from.is_some() {
            NameAddr::parse("From", &spec.from_)
                .ok()
                .map(|from| from.mailbox.domain)
        } else {
            fixed_domain(&spec.from_)
        };
        let dkim = DkimKeys::new(&spec.dkim, from_domain.as_deref())?;
        let reply_to = match &spec.reply_to {
            Some(r) => literal("reply_to", "Reply-To", r)?,
            None => None,
        };
        let html_links = templates.plain(HTML).and_then(LinkPlan::new);
        let text_links = templates.plain(TEXT).and_then(TextPlan::new);
        Ok(CompiledCampaign {
            html_links,
            text_links,
            from,
            reply_to,
            dkim,
            from_domain,
            id: spec.id.clone(),
            sender,
            templates,
            headers,
            tracking,
            unsubscribe,
            verp,
        })
    }

    /// MAIL FROM of this campaign's messages without a spool row id (with VERP, each
    /// message's own is `envelope_from_for`).
    pub fn envelope_from(&self) -> String {
        self.sender.address()
    }

    /// MAIL FROM of `recipient`'s message: with VERP and a spool row id, the sender
    /// with the row's token (`bounces+TOKEN@domain`); else the plain sender.
    pub fn envelope_from_for(&self, recipient: &Recipient) -> String {
        match (&self.verp, recipient.envelope_id) {
            (Some(verp), Some(row_id)) => verp.address(row_id),
            _ => self.sender.address(),
        }
    }

    /// True when the campaign seals spool row ids into its envelope senders: the
    /// engine then passes them with each batch.
    pub fn has_verp(&self) -> bool {
        self.verp.is_some()
    }

    /// Renders (and signs) one recipient's message at `now`, shared by a batch.
    pub fn render(&self, recipient: &Recipient, now: &Now) -> Result<Rendered, RenderError> {
        let rcpt = Mailbox::parse(&recipient.address).map_err(|reason| RenderError::Address {
            address: recipient.address.clone(),
            reason,
        })?;
        let rcpt_to = rcpt.address();
        let key = RecipientKey::new(recipient.id.as_ref(), &rcpt_to);

        let mut vars = vars_to_context(&recipient.vars).map_err(RenderError::Vars)?;
        let (unsubscribe_url, unsubscribe_mailto) = self.unsubscribe_links(&key);
        if let Some(url) = &unsubscribe_url {
            // check_url allows no quotes or angle brackets, and the token is base64url:
            // without '&' the URL is already HTML-safe, and escaping it would only turn
            // its slashes into &#x2f; in the html part.
            let value = if url.contains('&') {
                Value::from(url.as_str())
            } else {
                Value::from_safe_string(url.clone())
            };
            vars.insert("unsubscribe_url".into(), value);
        }
        let context = Value::from(vars);

        let subject = self.header_value(SUBJECT, "Subject", &context)?;
        let (from, from_domain) = match (&self.from, &self.from_domain) {
            (Some(from), Some(domain)) => (Cow::Borrowed(from.as_slice()), Cow::Borrowed(domain)),
            _ => {
                let mut written = Vec::with_capacity(128);
                let from = NameAddr::parse("From", &self.header_value(FROM, "From", &context)?)?;
                from.write(&mut written, "From");
                (Cow::Owned(written), Cow::Owned(from.mailbox.domain))
            }
        };
        // Before the body is rendered: a From domain no key may sign for fails early.
        let signers = self.dkim.for_message(&from_domain)?;
        let reply_to = match &self.reply_to {
            Some(reply_to) => Some(Cow::Borrowed(reply_to.as_slice())),
            None if self.templates.has(REPLY_TO) => {
                let mut written = Vec::with_capacity(128);
                NameAddr::parse(
                    "Reply-To",
                    &self.header_value(REPLY_TO, "Reply-To", &context)?,
                )?
                .write(&mut written, "Reply-To");
                Some(Cow::Owned(written))
            }
            None => None,
        };
        let mut extra = Vec::with_capacity(self.headers.len());
        for (name, part, written) in &self.headers {
            extra.push(match written {
                Some(field) => ExtraField::Written(field),
                None => ExtraField::Value(name, self.header_value(part, name, &context)?),
            });
        }

        let mut links = RecipientLinks {
            campaign: self,
            key,
            unsubscribe_url: unsubscribe_url.as_deref(),
            // Sized for a typical campaign's links, so they rarely grow (each growth
            // is an allocation and a copy).
            seen: Vec::with_capacity(32),
            seen_urls: String::with_capacity(2048),
        };
        // The size limit holds whichever way a part was rendered (the link plans splice
        // the recipient's values without the template engine).
        let html = if self.templates.has(HTML) {
            let html = self.html_part(&context, &mut links)?;
            check_part_size(HTML, html.0.len())?;
            Some(html)
        } else {
            None
        };
        let text = if self.templates.has(TEXT) {
            let text = self.text_part(&context, &mut links)?;
            check_part_size(TEXT, text.0.len())?;
            Some(text)
        } else {
            None
        };

        let digest = message_digest(&self.id, &key);
        // Built by hand: format! costs several hundred instructions a call in core::fmt.
        let message_id = concat(&["<", &digest, "@", &self.sender.domain, ">"]);
        let size_hint =
            html.as_ref().map_or(0, |h| h.0.len()) + text.as_ref().map_or(0, |t| t.0.len());
        // Room for quoted-printable growth and the headers, so the buffer never moves.
        let mut out =
            Vec::with_capacity(size_hint + size_hint / 4 + 2048 + SIGNATURE_SIZE * self.dkim.len());
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(now.date.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&from);
        out.extend_from_slice(b"To: ");
        out.extend_from_slice(rcpt_to.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_unstructured(&mut out, "Subject", &subject);
        out.extend_from_slice(b"Message-ID: ");
        out.extend_from_slice(message_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(reply_to) = reply_to {
            out.extend_from_slice(&reply_to);
        }
        write_list_unsubscribe(
            &mut out,
            unsubscribe_url.as_deref(),
            unsubscribe_mailto.as_deref(),
        );
        if let Some(list_id) = self.unsubscribe.as_ref().and_then(|u| u.list_id.as_ref()) {
            out.extend_from_slice(list_id);
        }
        for field in &extra {
            match field {
                ExtraField::Written(field) => out.extend_from_slice(field),
                ExtraField::Value(name, value) => write_unstructured(&mut out, name, value),
            }
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        let parts: Vec<Part<'_>> = [
            text.as_ref().map(|(t, known)| Part {
                media_type: "text/plain",
                text: t,
                known,
            }),
            html.as_ref().map(|(h, known)| Part {
                media_type: "text/html",
                text: h,
                known,
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        write_body(&mut out, &parts, &digest);
        let out = sign_message(&signers, out, now.unix);

        Ok(Rendered {
            envelope_from: self.envelope_from_for(recipient),
            smtputf8: rcpt.smtputf8 || self.sender.smtputf8,
            rcpt_to,
            data: out,
            message_id,
        })
    }

    fn header_value(
        &self,
        part: &str,
        header: &str,
        context: &Value,
    ) -> Result<Cow<'_, str>, RenderError> {
        let value = self.templates.render(part, context)?;
        check_value(header, &value)?;
        Ok(value)
    }

    /// The HTML part with tracked links and pixel, and the lines of it whose
    /// quoted-printable is known ahead.
    fn html_part(
        &self,
        context: &Value,
        links: &mut RecipientLinks<'_>,
    ) -> Result<(String, Vec<KnownLines<'_>>), RenderError> {
        let Some(tracking) = &self.tracking else {
            return Ok((self.templates.render(HTML, context)?.into_owned(), vec![]));
        };
        let mut known = Vec::new();
        let mut out = if tracking.clicks {
            let planned = match (&self.html_links, self.templates.plain(HTML)) {
                (Some(plan), Some(plain)) => {
                    // Tracked links are longer than the originals (the URL rides in
                    // the token) and the pixel follows: size for that, so the buffer
                    // is never reallocated.
                    let mut out = String::with_capacity(plain.source().len() * 2 + 1024);
                    known.reserve(64);
                    plan.render(plain, context, links, &mut out, &mut known)
                        .then_some(out)
                }
                _ => None,
            };
            match planned {
                Some(out) => out,
                None => {
                    let html = self.templates.render(HTML, context)?;
                    let mut out = String::with_capacity(html.len() * 2 + 1024);
                    rewrite_html(&html, links, &mut out);
                    out
                }
            }
        } else {
            self.templates.render(HTML, context)?.into_owned()
        };
        if tracking.opens {
            let mut pixel = String::with_capacity(200);
            pixel.push_str("<img src=\"");
            tracking.base_url.write(&mut pixel, true, |out| {
                tracking
                    .sealer
                    .append_token(out, TokenKind::Open, &self.id, &links.key, 0, None);
            });
            pixel.push_str("\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">");
            let at = insert_before_body_end(&mut out, &pixel);
            // Lines after the pixel moved; the line it went into is no longer known.
            known.retain_mut(|k| {
                if k.range.start > at {
                    k.range = k.range.start + pixel.len()..k.range.end + pixel.len();
                }
                k.range.end <= at || k.range.start > at
            });
        }
        Ok((out, known))
    }

    fn text_part(
        &self,
        context: &Value,
        links: &mut RecipientLinks<'_>,
    ) -> Result<(String, Vec<KnownLines<'_>>), RenderError> {
        match &self.tracking {
            Some(t) if t.clicks => {
                if let (Some(plan), Some(plain)) = (&self.text_links, self.templates.plain(TEXT)) {
                    let mut out = String::with_capacity(plain.source().len() * 2 + 1024);
                    let mut known = Vec::with_capacity(32);
                    if plan.render(plain, context, links, &mut out, &mut known) {
                        return Ok((out, known));
                    }
                }
                let text = self.templates.render(TEXT, context)?;
                let mut out = String::with_capacity(text.len() * 2 + 1024);
                rewrite_text(&text, links, &mut out);
                Ok((out, vec![]))
            }
            _ => Ok((self.templates.render(TEXT, context)?.into_owned(), vec![])),
        }
    }

    /// The recipient's one-click unsubscribe URL and mailto URI, each with its token.
    fn unsubscribe_links(&self, key: &RecipientKey<'_>) -> (Option<String>, Option<String>) {
        let Some(u) = &self.unsubscribe else {
            return (None, None);
        };
        let mut token = String::with_capacity(64);
        u.sealer
            .append_token(&mut token, TokenKind::Unsubscribe, &self.id, key, 0, None);
        let url = u.url.as_ref().map(|base| {
            let mut url = String::with_capacity(base.prefix().len() + token.len() + 32);
            base.write(&mut url, false, |out| out.push_str(&token));
            url
        });
        let mailto = u
            .mailto
            .as_ref()
            .map(|m| concat(&["mailto:", m, "?subject=unsubscribe-", &token]));
        (url, mailto)
    }
}

/// The pieces joined, in one allocation of the right size.
fn concat(pieces: &[&str]) -> String {
    let mut s = String::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for p in pieces {
        s.push_str(p);
    }
    s
}

/// An extra header of one message: written once for the campaign, or this value.
enum ExtraField<'a> {
    Written(&'a [u8]),
    Value(&'a str, Cow<'a, str>),
}

/// RFC 2369 List-Unsubscribe, and RFC 8058's one-click marker when there is a URL.
fn write_list_unsubscribe(out: &mut Vec<u8>, url: Option<&str>, mailto: Option<&str>) {
    if url.is_none() && mailto.is_none() {
        return;
    }
    out.extend_from_slice(b"List-Unsubscribe:");
    let mut first = true;
    for uri in [url, mailto].into_iter().flatten() {
        if !first {
            out.extend_from_slice(b",\r\n");
        }
        out.extend_from_slice(b" <");
        out.extend_from_slice(uri.as_bytes());
        out.extend_from_slice(b">");
        first = false;
    }
    out.extend_from_slice(b"\r\n");
    if url.is_some() {
        out.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
}

/// Replaces each http(s) link with its tracking URL; numbers links by distinct URL in
/// order of first appearance (html, then text), so one link is one number in both parts.
struct RecipientLinks<'a> {
    campaign: &'a CompiledCampaign,
    key: RecipientKey<'a>,
    unsubscribe_url: Option<&'a str>,
    /// Distinct URLs so far, in `seen_urls` one after the other (one buffer, not one
    /// String each), and their lengths: the search compares lengths first, in a tight
    /// loop, and bytes only where they match.
    seen: Vec<usize>,
    seen_urls: String,
}

impl LinkRewriter for RecipientLinks<'_> {
    fn rewrite(&mut self, url: &str, html: bool, out: &mut String) -> bool {
        let Some(tracking) = self.campaign.tracking.as_ref() else {
            return false;
        };
        // Only http(s) links without control characters are tracked: javascript:,
        // data: and every other scheme stay as they are and never become a redirect.
        // So does a link too long to keep working once tracked.
        if !is_http(url)
            || !is_http_url(url)
            || url.len() > MAX_TRACKED_URL
            || Some(url) == self.unsubscribe_url
            || url.starts_with(tracking.base_url.prefix())
        {
            return false;
        }
        let mut start = 0;
        let mut found = None;
        for (i, &len) in self.seen.iter().enumerate() {
            if len == url.len() && self.seen_urls.as_bytes()[start..start + len] == *url.as_bytes()
            {
                found = Some(i);
                break;
            }
            start += len;
        }
        let index = found.unwrap_or_else(|| {
            self.seen_urls.push_str(url);
            self.seen.push(url.len());
            self.seen.len() - 1
        });
        let (campaign, key) = (&self.campaign.id, &self.key);
        tracking.base_url.write(out, html, |out| {
            tracking.sealer.append_token(
                out,
                TokenKind::Click,
                campaign,
                key,
                index as u32,
                Some(url),
            );
        });
        true
    }
}

/// `http://` or `https://`, the scheme in any case: the same answer as two
/// `starts_with_ignore_case`, with one 4-byte compare instead of two byte loops (this
/// runs for every link of every message).
fn is_http(url: &str) -> bool {
    let b = url.as_bytes();
    // OR-ing 0x20 lowercases a letter and maps no other byte onto one of these letters.
    let scheme = |w: &[u8]| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | 0x2020_2020;
    b.len() >= 7
        && scheme(b) == u32::from_le_bytes(*b"http")
        && (b[4..7] == *b"://" || (b.len() >= 8 && b[4] | 0x20 == b's' && b[5..8] == *b"://"))
}

/// 128 bits of SHA-256 over (campaign, recipient key), hex: the same for a recipient on
/// every retry, distinct across recipients and campaigns.
fn message_digest(campaign: &str, key: &RecipientKey<'_>) -> String {
    let mut h = Sha256::new();
    h.update((campaign.len() as u64).to_be_bytes());
    h.update(campaign.as_bytes());
    match key {
        RecipientKey::Int(i) => {
            h.update(b"i");
            h.update(i.to_be_bytes());
        }
        RecipientKey::UInt(u) => {
            h.update(b"u");
            h.update(u.to_be_bytes());
        }
        RecipientKey::Str(s) => {
            h.update(b"s");
            h.update(s.as_bytes());
        }
        RecipientKey::Address(a) => {
            h.update(b"a");
            h.update(a.as_bytes());
        }
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(32);
    for b in &digest[..16] {
        hex.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        hex.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    hex
}

/// A line break typed into a header template would fail every recipient: say so now.
/// The From domain of a From template whose address part after `@` is fixed text
/// (`{{ brand }} <news@example.com>`, `{{ local }}@example.com`): it cannot change per
/// recipient, so DKIM alignment is checked once. NameAddr::parse reads the address
/// after the last `<` of a value ending in `>`, so a variable before it cannot move it.
fn fixed_domain(source: &str) -> Option<String> {
    let source = source.trim();
    let address = match source.strip_suffix('>') {
        Some(v) => &v[v.rfind('<')? + 1..],
        None => source,
    };
    let domain = &address[address.rfind('@')? + 1..];
    if domain.contains(['{', '}', '%', '#']) {
        return None;
    }
    ascii_domain(domain).ok().map(|d| d.into_owned())
}

fn check_header_template(field: &str, source: &str) -> Result<(), CompileError> {
    if source.contains(['\r', '\n']) {
        return Err(CompileError::config(
            field,
            "a header template cannot contain a line break",
        ));
    }
    Ok(())
}

/// `List-Id: <label.domain>` for a campaign: its id as a dot-atom label (other
/// characters become '-'), under the envelope sender's domain, which the sender
/// controls (RFC 2919 §2). None when that domain is not ASCII (a header without
/// SMTPUTF8 must be).
fn list_id(campaign: &str, domain: &str) -> Option<Vec<u8>> {
    if !domain.is_ascii() || domain.is_empty() {
        return None;
    }
    let label: String = campaign
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "campaign" } else { label };
    Some(format!("List-Id: <{label}.{domain}>\r\n").into_bytes())
}

fn check_secret(field: &str, secret: &[u8]) -> Result<(), CompileError> {
    if secret.is_empty() {
        return Err(CompileError::config(
            field,
            "no signing secret: give one here or in Tracking(secret=...)",
        ));
    }
    if secret.len() < 16 {
        return Err(CompileError::config(
            field,
            "a signing secret needs at least 16 bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::token_url::starts_with_ignore_case;
    use super::*;

    #[test]
    fn is_http_agrees_with_the_prefix_test() {
        let schemes = [
            "http://",
            "https://",
            "HTTP://",
            "HtTpS://",
            "http:/",
            "https:/",
            "http",
            "hxxp://",
            "httpx://",
            "http//",
            "https//x",
            "mailto:",
            "",
            "h",
            "http:// ",
            "HTTPS://x",
        ];
        let bytes: Vec<char> = (0u8..128).map(char::from).collect();
        for s in schemes {
            let expected =
                starts_with_ignore_case(s, "http://") || starts_with_ignore_case(s, "https://");
            assert_eq!(is_http(s), expected, "{s:?}");
            // Every byte in every position of the scheme.
            for at in 0..s.len().min(8) {
                for &c in &bytes {
                    let mut t: Vec<char> = s.chars().collect();
                    t[at] = c;
                    let t: String = t.into_iter().collect();
                    let expected = starts_with_ignore_case(&t, "http://")
                        || starts_with_ignore_case(&t, "https://");
                    assert_eq!(is_http(&t), expected, "{t:?}");
                }
            }
        }
    }
}
