//! Opaque tracking tokens: what a click, open or unsubscribe URL names, sealed with
//! AES-256-GCM-SIV so that a reader of the URL learns nothing and cannot forge one.
//!
//! A token is base64url (no padding) of `version || ciphertext || tag`:
//! - `version`, one byte in clear (and the AEAD's associated data, so it is
//!   authenticated too): the layout below. A reader refuses any other version.
//! - `ciphertext`: the claims, exactly as long as their compact layout (GCM-SIV is a
//!   stream mode: no padding, no nonce stored).
//! - `tag`: GCM-SIV's 16 bytes, which authenticate version and claims.
//!
//! The claims' layout (LEB128 = unsigned little-endian base-128 varint):
//! - head, one byte: kind (bits 0–1: 1 click, 2 open, 3 unsubscribe) | how the URL
//!   starts (bits 2–3: 0 as written, 1 `http://`, 2 `https://`, left out of the bytes)
//!   | what the recipient is (bits 4–5: 0 an integer id ≥ 0, 1 a negative one, 2 text:
//!   a string id, or the address when the recipient has no id);
//! - campaign: LEB128 length, then its UTF-8;
//! - clicks only: link number (LEB128), URL (LEB128 length, then its bytes after the
//!   scheme the head names);
//! - recipient, last: an integer as LEB128 (a negative id `i` as `!i`), text as all the
//!   bytes that are left.
//!
//! The key is HKDF-SHA256 (RFC 5869) of the campaign's secret: a pass phrase of any
//! length becomes a uniform 256-bit key, bound to this use by the salt and info strings.
//! `ferrymail.tracking.verify` reads tokens through `open` below (a tracking server needs
//! the secret, not the spool: the destination URL is inside a click token).

use std::cell::RefCell;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use aws_lc_rs::hkdf;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

use crate::wire::RecipientId;

/// The layout above. Version 1 was MessagePack claims in clear with an HMAC tag.
pub const TOKEN_VERSION: u8 = 2;
/// GCM-SIV's tag (RFC 8452).
pub const TAG_LEN: usize = 16;
/// HKDF salt and info: a key made for these tokens is made for nothing else, even when
/// the user gives the same secret elsewhere.
pub(super) const HKDF_SALT: &[u8] = b"ferrymail tracking tokens";
pub(super) const HKDF_INFO: &[u8] = b"v2 AES-256-GCM-SIV";
/// Why one fixed nonce is safe here: AES-GCM-SIV (RFC 8452) is nonce-misuse resistant.
/// Its tag is a PRF of (nonce, associated data, plaintext) and the keystream starts at
/// the tag, so with a fixed nonce it is a deterministic AEAD (SIV, RFC 5297; Rogaway
/// and Shrimpton's DAE): a reader learns only whether two tokens seal the same claims,
/// and the same claims give the same token anyway (a recipient's link is one URL on
/// every retry, by design). Confidentiality would only suffer if two different
/// tokens' keystreams overlapped, which takes two tags within a few blocks of each other
/// out of 2^127: about q²·8/2^127 for q tokens of up to 8 blocks, 2^-44 after 2^40
/// tokens under one secret. A random nonce would cost 12 bytes (16 characters) in
/// every token and buy nothing that matters here.
pub(super) const NONCE: [u8; 12] = [0; 12];
/// The longest URL the renderer tracks: its tracked form (4/3 as long, plus base and
/// ids) stays under the 8 KiB request line that common web servers accept by default
/// (nginx, Apache), so a tracked link always works. A longer link is left as it is.
pub const MAX_TRACKED_URL: usize = 4096;
/// The longest token `open` reads: far above any the renderer makes (campaign and
/// recipient ids are short), low enough that a hostile request cannot make it decode
/// megabytes.
const MAX_TOKEN_CHARS: usize = 64 * 1024;

const SCHEMES: [&str; 3] = ["", "http://", "https://"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    Click = 1,
    Open = 2,
    Unsubscribe = 3,
}

impl TokenKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Click => "click",
            TokenKind::Open => "open",
            TokenKind::Unsubscribe => "unsubscribe",
        }
    }
}

/// Why a token was refused. The tracking server answers such a request with an error
/// page and never redirects.
#[derive(Debug, Error, PartialEq)]
pub enum TokenError {
    #[error("token is not canonical base64url")]
    NotBase64,
    #[error("token is too short")]
    TooShort,
    #[error("token is longer than {MAX_TOKEN_CHARS} characters")]
    TooLong,
    #[error("unknown token version {0} (this ferrymail reads version {TOKEN_VERSION})")]
    Version(u8),
    #[error("token does not authenticate (tampered, or sealed with another secret)")]
    Forged,
    #[error("token claims are malformed: {0}")]
    Malformed(&'static str),
}

/// What a token names, as `open` reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub kind: TokenKind,
    pub campaign: String,
    pub recipient: ClaimedRecipient,
    /// Clicks only: the link's number in its message, and its URL (always http(s)).
    pub link: Option<u32>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimedRecipient {
    Int(i64),
    UInt(u64),
    /// A string id, or the address of a recipient without an id.
    Text(String),
}

/// A key that seals and opens tokens, derived once per campaign.
pub struct TokenSealer {
    key: LessSafeKey,
}

thread_local! {
    /// Per render thread: the token being built (version, claims, tag), reused.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// An AES-256-GCM-SIV key for one kind of token: HKDF-SHA256 (RFC 5869) of `secret`,
/// bound to its use by `salt` and `info`, so that one secret given for two uses (tracking
/// and VERP tokens) makes two unrelated keys.
pub(super) fn derive_key(secret: &[u8], salt: &[u8], info: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
    let info = [info];
    let okm = prk
        .expand(&info, &AES_256_GCM_SIV)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

impl TokenSealer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: derive_key(secret, HKDF_SALT, HKDF_INFO),
        }
    }

    /// Appends the token for (kind, campaign, link, url, recipient) to `out`.
    pub fn append_token(
        &self,
        out: &mut String,
        kind: TokenKind,
        campaign: &str,
        recipient: &RecipientKey<'_>,
        link: u32,
        url: Option<&str>,
    ) {
        SCRATCH.with(|scratch| {
            let bytes = &mut *scratch.borrow_mut();
            bytes.clear();
            bytes.push(TOKEN_VERSION);
            write_claims(bytes, kind, campaign, recipient, link, url);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from([TOKEN_VERSION]),
                    &mut bytes[1..],
                )
                .expect("GCM-SIV seals any input shorter than 2^36 bytes");
            bytes.extend_from_slice(tag.as_ref());
            push_base64url(bytes, out);
        });
    }

    /// Reads a token back: its claims, or why it is not one of ours.
    pub fn open(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::NotBase64)?;
        if raw.len() < 1 + 1 + TAG_LEN {
            return Err(TokenError::TooShort);
        }
        if raw[0] != TOKEN_VERSION {
            return Err(TokenError::Version(raw[0]));
        }
        let claims = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from([TOKEN_VERSION]),
                &mut raw[1..],
            )
            .map_err(|_| TokenError::Forged)?;
        read_claims(claims)
    }
}

/// The claims' bytes as the module comment lays them out.
fn write_claims(
    bytes: &mut Vec<u8>,
    kind: TokenKind,
    campaign: &str,
    recipient: &RecipientKey<'_>,
    link: u32,
    url: Option<&str>,
) {
    let (scheme, rest) = match url {
        Some(u) if kind == TokenKind::Click => {
            match SCHEMES[1..].iter().position(|s| u.starts_with(s)) {
                Some(i) => (i as u8 + 1, &u[SCHEMES[i + 1].len()..]),
                None => (0, u),
            }
        }
        _ => (0, ""),
    };
    let form = match recipient {
        RecipientKey::Int(i) if *i < 0 => 1,
        RecipientKey::Int(_) | RecipientKey::UInt(_) => 0,
        RecipientKey::Str(_) | RecipientKey::Address(_) => 2,
    };
    bytes.push(kind as u8 | scheme << 2 | form << 4);
    write_varint(bytes, campaign.len() as u64);
    bytes.extend_from_slice(campaign.as_bytes());
    if kind == TokenKind::Click {
        write_varint(bytes, u64::from(link));
        write_varint(bytes, rest.len() as u64);
        bytes.extend_from_slice(rest.as_bytes());
    }
    match recipient {
        RecipientKey::Int(i) if *i < 0 => write_varint(bytes, !*i as u64),
        RecipientKey::Int(i) => write_varint(bytes, *i as u64),
        RecipientKey::UInt(u) => write_varint(bytes, *u),
        RecipientKey::Str(s) | RecipientKey::Address(s) => bytes.extend_from_slice(s.as_bytes()),
    }
}

fn read_claims(mut b: &[u8]) -> Result<Claims, TokenError> {
    let head = take(&mut b, 1)?[0];
    let kind = match head & 3 {
        1 => TokenKind::Click,
        2 => TokenKind::Open,
        3 => TokenKind::Unsubscribe,
        _ => return Err(TokenError::Malformed("unknown kind")),
    };
    let scheme = usize::from(head >> 2 & 3);
    let form = head >> 4;
    if scheme == 3 || form > 2 || (kind != TokenKind::Click && scheme != 0) {
        return Err(TokenError::Malformed("unknown flags"));
    }
    let campaign_len = read_varint(&mut b)?;
    let campaign = text(take(&mut b, campaign_len)?)?;
    let (link, url) = if kind == TokenKind::Click {
        let link = u32::try_from(read_varint(&mut b)?)
            .map_err(|_| TokenError::Malformed("link number"))?;
        let url_len = read_varint(&mut b)?;
        let url = [SCHEMES[scheme], &text(take(&mut b, url_len)?)?].concat();
        // Only http(s) links are ever sealed: anything else is no redirect target.
        if !is_http_url(&url) {
            return Err(TokenError::Malformed("the URL is not http(s)"));
        }
        (Some(link), Some(url))
    } else {
        (None, None)
    };
    let recipient = match form {
        0 => ClaimedRecipient::UInt(read_varint(&mut b)?),
        1 => ClaimedRecipient::Int(
            !i64::try_from(read_varint(&mut b)?)
                .map_err(|_| TokenError::Malformed("recipient id"))?,
        ),
        _ => ClaimedRecipient::Text(text(std::mem::take(&mut b))?),
    };
    if !b.is_empty() {
        return Err(TokenError::Malformed("bytes after the recipient"));
    }
    Ok(Claims {
        kind,
        campaign,
        recipient,
        link,
        url,
    })
}

/// `http://` or `https://` (any case) and no control character: what the renderer
/// rewrites, so what a redirect may go to.
pub fn is_http_url(url: &str) -> bool {
    let b = url.as_bytes();
    let scheme = |s: &str| b.len() > s.len() && b[..s.len()].eq_ignore_ascii_case(s.as_bytes());
    // A fold without an early exit: the compiler turns it into SIMD compares, 16 or 32
    // bytes a step (this runs on every link of every message).
    let controls = b
        .iter()
        .fold(false, |found, &c| found | (c < 0x20) | (c == 0x7f));
    (scheme("http://") || scheme("https://")) && !controls
}

fn take<'a>(b: &mut &'a [u8], n: u64) -> Result<&'a [u8], TokenError> {
    let n = usize::try_from(n).map_err(|_| TokenError::Malformed("length"))?;
    if n > b.len() {
        return Err(TokenError::Malformed("cut short"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn text(b: &[u8]) -> Result<String, TokenError> {
    String::from_utf8(b.to_vec()).map_err(|_| TokenError::Malformed("text is not UTF-8"))
}

fn write_varint(bytes: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        bytes.push(v as u8 | 0x80);
        v >>= 7;
    }
    bytes.push(v as u8);
}

fn read_varint(b: &mut &[u8]) -> Result<u64, TokenError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = take(b, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(TokenError::Malformed("number too large"));
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            // One way to write a number: no trailing zero groups.
            if byte == 0 && shift > 0 {
                return Err(TokenError::Malformed("number not minimal"));
            }
            return Ok(v);
        }
    }
    Err(TokenError::Malformed("number too long"))
}

/// Appends base64url without padding. The tokens encoded are about 30–150 bytes, where
/// the base64 crate's per-call setup costs more than the encoding; the unit test
/// checks this against the crate. Written straight into `out`'s spare room: about 12
/// instructions per 3 bytes, where a staging array and its copies cost twice that.
fn push_base64url(input: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let char_at = |v: u32, shift: u32| ALPHABET[(v >> shift) as usize & 63];
    let len = input.len() / 3 * 4 + [0, 2, 3][input.len() % 3];
    // SAFETY: only ALPHABET bytes (ASCII) are written, so `out` stays UTF-8.
    let bytes = unsafe { out.as_mut_vec() };
    bytes.reserve(len);
    let start = bytes.len();
    let spare = &mut bytes.spare_capacity_mut()[..len];
    let mut triples = input.chunks_exact(3);
    for (t, slot) in (&mut triples).zip(spare.chunks_exact_mut(4)) {
        let v = u32::from(t[0]) << 16 | u32::from(t[1]) << 8 | u32::from(t[2]);
        slot[0].write(char_at(v, 18));
        slot[1].write(char_at(v, 12));
        slot[2].write(char_at(v, 6));
        slot[3].write(char_at(v, 0));
    }
    let rest = triples.remainder();
    if !rest.is_empty() {
        let v = u32::from(rest[0]) << 16 | rest.get(1).map_or(0, |&b| u32::from(b) << 8);
        let tail = &mut spare[len - rest.len() - 1..];
        tail[0].write(char_at(v, 18));
        tail[1].write(char_at(v, 12));
        if rest.len() == 2 {
            tail[2].write(char_at(v, 6));
        }
    }
    // SAFETY: all `len` bytes after `start` were written above.
    unsafe { bytes.set_len(start + len) };
}

/// What a token names as the recipient: the ESP's id, or the address when it gave none.
#[derive(Debug, Clone, Copy)]
pub enum RecipientKey<'a> {
    Int(i64),
    UInt(u64),
    Str(&'a str),
    /// No id was given: the address stands in (text in tokens, but kept apart from
    /// string ids in Message-IDs, so id "bob@x.org" and address bob@x.org differ).
    Address(&'a str),
}

impl<'a> RecipientKey<'a> {
    pub fn new(id: Option<&'a RecipientId>, address: &'a str) -> Self {
        match id {
            Some(RecipientId::Int(i)) => RecipientKey::Int(*i),
            Some(RecipientId::UInt(u)) => RecipientKey::UInt(*u),
            Some(RecipientId::Str(s)) => RecipientKey::Str(s),
            None => RecipientKey::Address(address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_base64_crate() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..200 {
            let mut ours = String::new();
            push_base64url(&data[..len], &mut ours);
            assert_eq!(ours, URL_SAFE_NO_PAD.encode(&data[..len]), "length {len}");
        }
    }

    fn seal(
        sealer: &TokenSealer,
        kind: TokenKind,
        recipient: RecipientKey<'_>,
        link: u32,
        url: Option<&str>,
    ) -> String {
        let mut t = String::new();
        sealer.append_token(&mut t, kind, "autumn-2026", &recipient, link, url);
        t
    }

    #[test]
    fn tokens_open_to_what_was_sealed() {
        let sealer = TokenSealer::new(b"sample-secret-0123456789abcdef");
        let urls = [
            "https://shop.example.com/jackets?utm_source=news",
            "http://a.example/",
            "HTTP://Shop.Example.com/Upper",
            "https://zoë.example/ü",
        ];
        let recipients = [
            (RecipientKey::Int(0), ClaimedRecipient::UInt(0)),
            (RecipientKey::Int(-1), ClaimedRecipient::Int(-1)),
            (RecipientKey::Int(i64::MIN), ClaimedRecipient::Int(i64::MIN)),
            (
                RecipientKey::UInt(u64::MAX),
                ClaimedRecipient::UInt(u64::MAX),
            ),
            (
                RecipientKey::Str("crm-42"),
                ClaimedRecipient::Text("crm-42".into()),
            ),
            (
                RecipientKey::Address("a@b.c"),
                ClaimedRecipient::Text("a@b.c".into()),
            ),
            (RecipientKey::Str(""), ClaimedRecipient::Text(String::new())),
        ];
        for (key, claimed) in recipients {
            for (link, url) in urls.iter().enumerate() {
                let t = seal(&sealer, TokenKind::Click, key, link as u32 * 300, Some(url));
                let claims = sealer.open(&t).unwrap();
                assert_eq!(claims.kind, TokenKind::Click);
                assert_eq!(claims.campaign, "autumn-2026");
                assert_eq!(claims.recipient, claimed);
                assert_eq!(claims.link, Some(link as u32 * 300));
                assert_eq!(claims.url.as_deref(), Some(*url));
            }
            for kind in [TokenKind::Open, TokenKind::Unsubscribe] {
                let claims = sealer.open(&seal(&sealer, kind, key, 0, None)).unwrap();
                assert_eq!((claims.kind, claims.link, claims.url), (kind, None, None));
                assert_eq!(claims.recipient, claimed);
            }
        }
    }

    #[test]
    fn tokens_are_opaque_short_and_deterministic() {
        let sealer = TokenSealer::new(b"sample-secret-0123456789abcdef");
        let url = "https://shop.example.com/jackets?utm_source=news";
        let a = seal(
            &sealer,
            TokenKind::Click,
            RecipientKey::Address("ann@example.net"),
            3,
            Some(url),
        );
        assert_eq!(
            a,
            seal(
                &sealer,
                TokenKind::Click,
                RecipientKey::Address("ann@example.net"),
                3,
                Some(url)
            )
        );
        let raw = URL_SAFE_NO_PAD.decode(&a).unwrap();
        for clear in [&b"ann@example"[..], b"shop.example", b"autumn", b"jackets"] {
            assert!(
                !raw.windows(clear.len()).any(|w| w == clear),
                "{clear:?} readable"
            );
        }
        // version + head + campaign (1 + 11) + link + URL (1 + 40) + address + tag.
        assert_eq!(raw.len(), 1 + 1 + 12 + 1 + 41 + 15 + TAG_LEN);
        let open = seal(&sealer, TokenKind::Open, RecipientKey::Int(1000), 0, None);
        assert_eq!(open.len(), (1 + 1 + 12 + 2 + TAG_LEN) * 4 / 3 + 1);
    }

    #[test]
    fn tampered_foreign_and_unknown_tokens_are_refused() {
        let sealer = TokenSealer::new(b"sample-secret-0123456789abcdef");
        let t = seal(&sealer, TokenKind::Open, RecipientKey::Int(7), 0, None);
        let other = TokenSealer::new(b"another-secret-0123456789abcdef");
        assert_eq!(other.open(&t), Err(TokenError::Forged));
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 1..raw.len() {
            raw[i] ^= 1;
            let flipped = URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(sealer.open(&flipped), Err(TokenError::Forged), "byte {i}");
            raw[i] ^= 1;
        }
        raw[0] = 1;
        assert_eq!(
            sealer.open(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::Version(1))
        );
        assert_eq!(sealer.open("a+b/"), Err(TokenError::NotBase64));
        assert_eq!(sealer.open("AgAA"), Err(TokenError::TooShort));
        assert_eq!(
            sealer.open(&"A".repeat(MAX_TOKEN_CHARS + 4)),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn only_http_urls_come_out_of_a_token() {
        // The renderer never seals another scheme; a token that did is refused.
        let sealer = TokenSealer::new(b"sample-secret-0123456789abcdef");
        for url in [
            "javascript:alert(1)",
            "data:text/html,x",
            "https://a.example/\nx",
            "ftp://x",
        ] {
            let t = seal(
                &sealer,
                TokenKind::Click,
                RecipientKey::Int(1),
                0,
                Some(url),
            );
            assert!(
                matches!(sealer.open(&t), Err(TokenError::Malformed(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn varints_round_trip_and_are_minimal() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = vec![];
            write_varint(&mut b, v);
            assert_eq!(read_varint(&mut &b[..]), Ok(v));
        }
        assert!(read_varint(&mut &[0x80, 0x00][..]).is_err());
        assert!(read_varint(&mut &[0xff; 10][..]).is_err());
    }
}
