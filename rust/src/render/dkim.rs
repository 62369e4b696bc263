//! DKIM signing (RFC 6376) of rendered messages: rsa-sha256 and ed25519-sha256 (RFC 8463),
//! relaxed or simple canonicalization, never `l=`.
//!
//! Written here rather than taken from mail-auth: its signer re-parses every message
//! and its crypto features pull in a DNS resolver, while the renderer already holds the
//! exact message it wrote. The crypto itself is AWS-LC's (aws-lc-rs).

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use memchr::memmem;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use super::address::ascii_domain;
use crate::error::CompileError;
use crate::wire::DkimKeySpec;

/// How often a header name is listed in `h=` (RFC 6376 §5.4.2: a name listed more
/// often than the field occurs signs its absence, so a verifier fails the signature
/// when a field of that name is added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Once more than the field occurs (RFC 6376 §8.15 "oversigning"): no instance can
    /// be added, above or below, without breaking the signature.
    OnceMore,
    /// As often as the field occurs; not at all when it is absent.
    WhenPresent,
    /// Exactly once, present or not: a list the campaign gave (`DkimKey(headers=...)`).
    Once,
}

/// The default signed headers, in this order. Oversigned: every field a reader sees or
/// a receiver judges the message by, and the MIME fields that say how to read the body
/// (a prepended second Subject, From or List-Unsubscribe would otherwise be shown or
/// used while the signature still verifies, and replayed mail keeps its reputation).
/// Signed when present: fields ferrymail does not write itself but a campaign may add
/// (Sender, List-Id, Feedback-ID, BIMI-Selector); they are not oversigned because a
/// mailing list that forwards the message may add its own Sender and List-Id.
const DEFAULT_SIGNED_HEADERS: &[(&str, Listing)] = &[
    ("from", Listing::OnceMore),
    ("to", Listing::OnceMore),
    ("cc", Listing::OnceMore),
    ("reply-to", Listing::OnceMore),
    ("subject", Listing::OnceMore),
    ("date", Listing::OnceMore),
    ("message-id", Listing::OnceMore),
    ("mime-version", Listing::OnceMore),
    ("content-type", Listing::OnceMore),
    ("content-transfer-encoding", Listing::OnceMore),
    ("list-unsubscribe", Listing::OnceMore),
    ("list-unsubscribe-post", Listing::OnceMore),
    ("sender", Listing::WhenPresent),
    ("list-id", Listing::WhenPresent),
    ("feedback-id", Listing::WhenPresent),
    ("bimi-selector", Listing::WhenPresent),
];

/// Built once: `memmem::find` would build its searcher on every call, which costs more
/// than searching a header field.
static DOUBLE_SPACE: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"  "));
static SPACE_CR: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b" \r"));

/// Room for one DKIM-Signature field (an RSA-4096 one with the default oversigned
/// header list is about 1,250 bytes).
pub const SIGNATURE_SIZE: usize = 1400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    Simple,
    Relaxed,
}

impl Canonicalization {
    fn name(self) -> &'static str {
        match self {
            Canonicalization::Simple => "simple",
            Canonicalization::Relaxed => "relaxed",
        }
    }
}

enum SigningKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One DKIM key, checked and loaded when the campaign is built.
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: SigningKey,
    header_canon: Canonicalization,
    body_canon: Canonicalization,
    /// Lower-case header names to sign and how often to list each.
    headers: Vec<(String, Listing)>,
    rng: SystemRandom,
}

impl DkimSigner {
    /// Loads `spec`; every error names the key as `domain/selector`.
    pub fn new(spec: &DkimKeySpec, index: usize) -> Result<Self, CompileError> {
        let who = format!("dkim[{index}] ({}/{})", spec.domain, spec.selector);
        let bad = |message: String| CompileError::config(who.clone(), message);
        let domain = ascii_domain(&spec.domain)
            .map_err(|e| bad(format!("domain: {e}")))?
            .into_owned();
        check_selector(&spec.selector).map_err(bad)?;
        let key = load_key(&spec.private_key).map_err(bad)?;
        match (spec.algorithm.as_deref(), &key) {
            (None, _)
            | (Some("rsa-sha256"), SigningKey::Rsa(_))
            | (Some("ed25519-sha256"), SigningKey::Ed25519(_)) => {}
            (Some(a @ ("rsa-sha256" | "ed25519-sha256")), _) => {
                return Err(bad(format!("algorithm {a} does not match the key's type")));
            }
            (Some(a), _) => {
                return Err(bad(format!(
                    "unknown algorithm {a:?}; use rsa-sha256 or ed25519-sha256"
                )))
            }
        }
        let (header_canon, body_canon) =
            parse_canonicalization(&spec.canonicalization).map_err(bad)?;
        let headers = spec
            .headers
            .as_ref()
            .map(|names| {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| n.trim().to_ascii_lowercase())
                    .collect();
                if !names.iter().any(|n| n == "from") {
                    return Err(bad("headers must include From (RFC 6376 §5.4)".into()));
                }
                if let Some(n) = names.iter().find(|n| {
                    n.is_empty() || n.bytes().any(|b| !(33..=126).contains(&b) || b == b':')
                }) {
                    return Err(bad(format!("{n:?} is not a header name")));
                }
                Ok(names.into_iter().map(|n| (n, Listing::Once)).collect())
            })
            .transpose()?
            .unwrap_or_else(|| {
                DEFAULT_SIGNED_HEADERS
                    .iter()
                    .map(|&(n, listing)| (n.to_string(), listing))
                    .collect()
            });
        Ok(DkimSigner {
            domain,
            selector: spec.selector.clone(),
            key,
            header_canon,
            body_canon,
            headers,
            rng: SystemRandom::new(),
        })
    }

    /// The signing domain (d=), ASCII and lower case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn algorithm(&self) -> &'static str {
        match self.key {
            SigningKey::Rsa(_) => "rsa-sha256",
            SigningKey::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// Appends this key's DKIM-Signature field (with CRLF) for `message` to `out`.
    fn sign(&self, message: &Message<'_>, body_hash: &[u8], unix_time: i64, out: &mut Vec<u8>) {
        let mut h = String::new();
        let mut signed = Vec::with_capacity(1024);
        let mut used = vec![false; message.fields.len()];
        for (name, listing) in &self.headers {
            // Bottom-up: each listing of a name takes the next instance from the end.
            loop {
                let found = (0..message.fields.len()).rev().find(|&i| {
                    !used[i] && message.fields[i].name.eq_ignore_ascii_case(name.as_bytes())
                });
                if let Some(i) = found {
                    used[i] = true;
                    canonicalize_field(self.header_canon, message.fields[i].raw, &mut signed);
                } else if *listing == Listing::WhenPresent {
                    break;
                }
                if !h.is_empty() {
                    h.push(':');
                }
                h.push_str(name);
                // Once: one listing. OnceMore: until a listing found no instance.
                if *listing == Listing::Once || found.is_none() {
                    break;
                }
            }
        }
        let mut field = Vec::with_capacity(600);
        field.extend_from_slice(b"DKIM-Signature: v=1; a=");
        field.extend_from_slice(self.algorithm().as_bytes());
        field.extend_from_slice(b"; c=");
        field.extend_from_slice(self.header_canon.name().as_bytes());
        field.push(b'/');
        field.extend_from_slice(self.body_canon.name().as_bytes());
        // d= and s= on a line of their own keeps the lines within 78 characters.
        field.extend_from_slice(b";\r\n d=");
        field.extend_from_slice(self.domain.as_bytes());
        field.extend_from_slice(b"; s=");
        field.extend_from_slice(self.selector.as_bytes());
        let t = unix_time.to_string();
        field.extend_from_slice(b";\r\n t=");
        field.extend_from_slice(t.as_bytes());
        field.extend_from_slice(b"; h=");
        fold_list(&h, " t=; h=".len() + t.len(), &mut field);
        field.extend_from_slice(b";\r\n bh=");
        field.extend_from_slice(STANDARD.encode(body_hash).as_bytes());
        field.extend_from_slice(b";\r\n b=");
        canonicalize_field(self.header_canon, &field, &mut signed);
        if self.header_canon == Canonicalization::Relaxed {
            signed.truncate(signed.len() - 2); // the signature field is hashed without its CRLF
        }

        let signature = match &self.key {
            SigningKey::Rsa(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &self.rng, &signed, &mut sig)
                    .expect("RSA signing with a loaded key does not fail");
                sig
            }
            // RFC 8463: Ed25519 signs the SHA-256 hash of the canonicalized data.
            SigningKey::Ed25519(key) => key.sign(&Sha256::digest(&signed)).as_ref().to_vec(),
        };
        out.extend_from_slice(&field);
        let b = STANDARD.encode(signature);
        for (i, chunk) in b.as_bytes().chunks(72).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n ");
            }
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Signs `message` with every key; returns the message with the DKIM-Signature fields
/// in front (one per key, in the order given). The message's lines end in CRLF, as the
/// renderer writes them.
pub fn sign_message(signers: &[&DkimSigner], mut message: Vec<u8>, unix_time: i64) -> Vec<u8> {
    if signers.is_empty() {
        return message;
    }
    let mut fields = Vec::with_capacity(SIGNATURE_SIZE * signers.len());
    {
        let parsed = Message::parse(&message);
        let mut body_hashes: [Option<[u8; 32]>; 2] = [None, None];
        for signer in signers {
            let slot = signer.body_canon as usize;
            let hash =
                *body_hashes[slot].get_or_insert_with(|| body_hash(signer.body_canon, parsed.body));
            signer.sign(&parsed, &hash, unix_time, &mut fields);
        }
    }
    // Prepend in place: the renderer leaves room for the signatures, so this moves the
    // message within its buffer instead of copying it to a new one.
    let len = message.len();
    message.resize(len + fields.len(), 0);
    message.copy_within(..len, fields.len());
    message[..fields.len()].copy_from_slice(&fields);
    message
}

/// A header field as written: its name and raw bytes including the final CRLF.
struct Field<'a> {
    name: &'a [u8],
    raw: &'a [u8],
}

struct Message<'a> {
    fields: Vec<Field<'a>>,
    body: &'a [u8],
}

impl<'a> Message<'a> {
    fn parse(message: &'a [u8]) -> Self {
        let (head, body) = match memmem::find(message, b"\r\n\r\n") {
            Some(i) => (&message[..i + 2], &message[i + 4..]),
            None => (message, &message[message.len()..]),
        };
        let mut fields: Vec<Field<'a>> = Vec::with_capacity(16);
        let mut start = 0;
        while start < head.len() {
            // A field runs until a line that does not start with whitespace.
            let mut end = start;
            loop {
                end = memchr::memchr(b'\n', &head[end..]).map_or(head.len(), |i| end + i + 1);
                if end >= head.len() || !matches!(head[end], b' ' | b'\t') {
                    break;
                }
            }
            let raw = &head[start..end];
            let name_end = memchr::memchr(b':', raw).unwrap_or(raw.len());
            fields.push(Field {
                name: trim_wsp(&raw[..name_end]),
                raw,
            });
            start = end;
        }
        Message { fields, body }
    }
}

fn trim_wsp(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// RFC 6376 §3.4.1 (simple: as is) and §3.4.2 (relaxed: lower-case name, unfolded,
/// whitespace runs to one space, none around the colon or at the end), plus CRLF.
fn canonicalize_field(canon: Canonicalization, raw: &[u8], out: &mut Vec<u8>) {
    if canon == Canonicalization::Simple {
        out.extend_from_slice(raw);
        return;
    }
    let colon = memchr::memchr(b':', raw).unwrap_or(raw.len());
    out.extend(trim_wsp(&raw[..colon]).iter().map(u8::to_ascii_lowercase));
    out.push(b':');
    let value = raw.get(colon + 1..).unwrap_or_default();
    // The fields the renderer writes have single spaces and no tabs, folded or not:
    // then relaxed is each line trimmed, the lines joined by one space.
    if memchr::memchr(b'\t', value).is_none() && DOUBLE_SPACE.find(value).is_none() {
        let mut start = 0;
        let mut first = true;
        for end in memchr::memchr_iter(b'\n', value).chain([value.len()]) {
            let line = &value[start..end];
            let line = trim_wsp(line.strip_suffix(b"\r").unwrap_or(line));
            if !line.is_empty() {
                if !first {
                    out.push(b' ');
                }
                out.extend_from_slice(line);
                first = false;
            }
            start = (end + 1).min(value.len());
        }
        out.extend_from_slice(b"\r\n");
        return;
    }
    // Copy the runs between whitespace whole; each whitespace run (folding included)
    // becomes one space, except at the start and the end of the value.
    let mut pending_space = false;
    let mut wrote_value = false;
    let mut rest = value;
    while !rest.is_empty() {
        let run = memchr::memchr3(b' ', b'\t', b'\r', rest).unwrap_or(rest.len());
        let run = rest[..run].iter().position(|&b| b == b'\n').unwrap_or(run);
        if run > 0 {
            if pending_space && wrote_value {
                out.push(b' ');
            }
            out.extend_from_slice(&rest[..run]);
            pending_space = false;
            wrote_value = true;
        }
        if run < rest.len() {
            pending_space = true;
            rest = &rest[run + 1..];
        } else {
            rest = &[];
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// SHA-256 of the canonicalized body (RFC 6376 §3.4.3, §3.4.4).
fn body_hash(canon: Canonicalization, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Drop the trailing empty lines first: both canonicalizations ignore them.
    let mut end = body.len();
    while end >= 2
        && &body[end - 2..end] == b"\r\n"
        && (end == 2 || body[..end - 2].ends_with(b"\r\n"))
    {
        end -= 2;
    }
    let body = &body[..end];
    match canon {
        Canonicalization::Simple => {
            if body.is_empty() {
                hasher.update(b"\r\n");
            } else {
                hasher.update(body);
                if !body.ends_with(b"\r\n") {
                    hasher.update(b"\r\n");
                }
            }
        }
        Canonicalization::Relaxed if !needs_relaxing(body) => {
            // The usual case for a rendered body (quoted-printable encodes trailing
            // whitespace, and text rarely has runs of blanks): relaxed changes nothing.
            hasher.update(body);
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                hasher.update(b"\r\n");
            }
        }
        Canonicalization::Relaxed => {
            let mut staged = Vec::with_capacity(body.len() + 2);
            let mut empty_lines = 0;
            for line in body.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let start = staged.len();
                let mut pending_space = false;
                for &b in line {
                    if b == b' ' || b == b'\t' {
                        pending_space = true;
                    } else {
                        if pending_space {
                            staged.push(b' ');
                            pending_space = false;
                        }
                        staged.push(b);
                    }
                }
                if staged.len() == start {
                    empty_lines += 1; // held back: only lines before content count
                } else {
                    let content = staged.split_off(start);
                    staged.extend(std::iter::repeat_n([b'\r', b'\n'], empty_lines).flatten());
                    staged.extend_from_slice(&content);
                    staged.extend_from_slice(b"\r\n");
                    empty_lines = 0;
                }
            }
            if body.is_empty() {
                staged.clear();
            }
            hasher.update(&staged);
        }
    }
    hasher.finalize().into()
}

/// True when relaxed body canonicalization would change something other than trailing
/// empty lines: a tab, two blanks in a row, or a blank before a line break. Line breaks
/// are CRLF: the renderer writes no other (and DATA refuses any other, see smtp/dot.rs).
fn needs_relaxing(body: &[u8]) -> bool {
    memchr::memchr(b'\t', body).is_some()
        || DOUBLE_SPACE.find(body).is_some()
        || SPACE_CR.find(body).is_some()
        || body.ends_with(b" ")
}

/// Writes a colon-separated list from `column` on, folding before a name when the
/// line would pass 78 characters.
fn fold_list(list: &str, mut column: usize, out: &mut Vec<u8>) {
    for (i, name) in list.split(':').enumerate() {
        if i > 0 {
            out.push(b':');
            if column + name.len() + 2 > 78 {
                out.extend_from_slice(b"\r\n ");
                column = 1;
            }
        }
        out.extend_from_slice(name.as_bytes());
        column += name.len() + 1;
    }
}

fn load_key(pem: &str) -> Result<SigningKey, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        format!("private_key is not a readable PEM private key ({e}); expected PKCS#1 or PKCS#8")
    })?;
    let rsa_size_hint =
        "RSA keys must have 2048 to 8192 bits (1024-bit keys are refused: RFC 8301 \
                         calls them weak and receivers discount them; generate a 2048-bit key)";
    match der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
            .map(SigningKey::Rsa)
            .map_err(|e| rsa_error(&e.to_string(), rsa_size_hint)),
        PrivateKeyDer::Pkcs8(k) => {
            let der = k.secret_pkcs8_der();
            if let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                return Ok(SigningKey::Ed25519(key));
            }
            RsaKeyPair::from_pkcs8(der)
                .map(SigningKey::Rsa)
                .map_err(|e| {
                    rsa_error(
                        &e.to_string(),
                        "a PKCS#8 key must be RSA (2048 to 8192 bits) or Ed25519",
                    )
                })
        }
        PrivateKeyDer::Sec1(_) => {
            Err("EC (SEC1) keys are not used by DKIM; use an RSA or Ed25519 key".into())
        }
        _ => Err("unsupported private key type; use an RSA or Ed25519 key".into()),
    }
}

fn rsa_error(rejected: &str, hint: &str) -> String {
    if rejected.contains("TooSmall") {
        hint.to_string()
    } else {
        format!("key rejected ({rejected}); {hint}")
    }
}

fn parse_canonicalization(c: &str) -> Result<(Canonicalization, Canonicalization), String> {
    let one = |s: &str| match s {
        "relaxed" => Ok(Canonicalization::Relaxed),
        "simple" => Ok(Canonicalization::Simple),
        other => Err(format!("canonicalization {other:?}: use relaxed or simple")),
    };
    match c.split_once('/') {
        Some((h, b)) => Ok((one(h)?, one(b)?)),
        None => Ok((one(c)?, Canonicalization::Simple)), // RFC 6376 §3.5: c=x means x/simple
    }
}

fn check_selector(selector: &str) -> Result<(), String> {
    let ok = !selector.is_empty()
        && selector.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "selector {selector:?} must be DNS labels (letters, digits, '-', '_')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_header_canonicalization() {
        let mut out = Vec::new();
        canonicalize_field(
            Canonicalization::Relaxed,
            b"SubJect :  a  b\r\n\t c \r\n",
            &mut out,
        );
        assert_eq!(out, b"subject:a b c\r\n");
    }

    #[test]
    fn body_canonicalization_of_rfc6376_example() {
        // RFC 6376 §3.4.5: " C \r\nD \t E\r\n\r\n\r\n" relaxed is " C\r\nD E\r\n".
        let relaxed = body_hash(Canonicalization::Relaxed, b" C \r\nD \t E\r\n\r\n\r\n");
        assert_eq!(relaxed, <[u8; 32]>::from(Sha256::digest(b" C\r\nD E\r\n")));
        let simple = body_hash(Canonicalization::Simple, b" C \r\nD \t E\r\n\r\n\r\n");
        assert_eq!(
            simple,
            <[u8; 32]>::from(Sha256::digest(b" C \r\nD \t E\r\n"))
        );
        assert_eq!(
            body_hash(Canonicalization::Simple, b""),
            <[u8; 32]>::from(Sha256::digest(b"\r\n"))
        );
        assert_eq!(
            body_hash(Canonicalization::Relaxed, b""),
            <[u8; 32]>::from(Sha256::digest(b""))
        );
    }

    #[test]
    fn fields_are_split_with_their_continuation_lines() {
        let m = Message::parse(b"From: a@b.c\r\nSubject: x\r\n y\r\nTo: d@e.f\r\n\r\nbody\r\n");
        let names: Vec<&[u8]> = m.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, [&b"From"[..], b"Subject", b"To"]);
        assert_eq!(m.fields[1].raw, b"Subject: x\r\n y\r\n");
        assert_eq!(m.body, b"body\r\n");
    }

    #[test]
    fn relaxed_unfolds_folded_fields() {
        let mut out = Vec::new();
        canonicalize_field(
            Canonicalization::Relaxed,
            b"Subject: =?utf-8?B?QQ==?=\r\n =?utf-8?B?Qg==?= \r\n",
            &mut out,
        );
        assert_eq!(out, b"subject:=?utf-8?B?QQ==?= =?utf-8?B?Qg==?=\r\n");
        out.clear();
        canonicalize_field(
            Canonicalization::Relaxed,
            b"DKIM-Signature: v=1; h=from:\r\n to; b=",
            &mut out,
        );
        assert_eq!(out, b"dkim-signature:v=1; h=from: to; b=\r\n");
    }

    #[test]
    fn relaxed_header_keeps_colons_inside_the_value() {
        let mut out = Vec::new();
        canonicalize_field(
            Canonicalization::Relaxed,
            b"X-Note: x:  y\t:z\r\n",
            &mut out,
        );
        assert_eq!(out, b"x-note:x: y :z\r\n");
    }

    /// The relaxed body rules written out plainly, to check the fast path against.
    fn relaxed_by_the_book(body: &[u8]) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut canon = Vec::new();
            for &b in line {
                let wsp = b == b' ' || b == b'\t';
                if wsp {
                    if canon.last() != Some(&b' ') {
                        canon.push(b' ');
                    }
                } else {
                    canon.push(b);
                }
            }
            while canon.last() == Some(&b' ') {
                canon.pop();
            }
            lines.push(canon);
        }
        while lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        lines
            .into_iter()
            .flat_map(|mut l| {
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect()
    }

    #[test]
    fn relaxed_body_fast_path_agrees_with_the_rules() {
        let bodies: [&[u8]; 9] = [
            b"a b\r\nc\r\n\r\n",
            b"a  b\r\n",
            b"a\tb\r\n",
            b"a \r\n",
            b"a\r\nb\r\n",
            b"x",
            b"",
            b" lead\r\n",
            b"a\r\n \r\n",
        ];
        for body in bodies {
            let expected = <[u8; 32]>::from(Sha256::digest(relaxed_by_the_book(body)));
            assert_eq!(
                body_hash(Canonicalization::Relaxed, body),
                expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
