//! Signed tracking tokens: what a click, open or unsubscribe URL names, and its HMAC.
//!
//! A token is base64url (no padding) of `payload || tag`, where `payload` is the
//! MessagePack array `[version, kind, campaign, link, url, recipient]` and `tag` is
//! HMAC-SHA256(secret, payload) truncated to 16 bytes. A tracking server needs no
//! database to redirect a click: the URL is in the token, and the tag proves ferrymail
//! wrote it. `ferrymail.tracking.verify` (Python, stdlib hmac) is the reference reader.
//!
//! The recipient comes last on purpose: everything before it is the same for every
//! recipient of a link, so each render thread keeps, per (campaign, kind, link), the
//! HMAC state after that prefix and the prefix's base64 text. A token then costs one
//! SHA-256 block for the recipient and tag plus the outer one, and base64 of about 25
//! bytes, instead of hashing and encoding the whole URL for every recipient.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rustc_hash::FxHashMap;

use super::mac::{MacKey, MacState};

use crate::wire::RecipientId;

pub const TOKEN_VERSION: u8 = 1;
/// Truncated tag length: 128 bits is the usual floor for a MAC (NIST SP 800-107).
pub const TAG_LEN: usize = 16;
/// Prefix cache entries per render thread before it is emptied (a campaign has tens of
/// links; this bounds memory when many campaigns pass through one process).
const CACHE_LIMIT: usize = 4096;
/// Misses after which a link is treated as personalised (its URL differs per
/// recipient) and no longer re-cached.
const PERSONAL_AFTER_MISSES: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    Click = 1,
    Open = 2,
    Unsubscribe = 3,
}

/// A keyed signer, built once per campaign.
pub struct TokenSigner {
    key: MacKey,
    /// Tells this signer's cache entries apart from other campaigns' (an address
    /// could be reused after a campaign is dropped; a serial is not).
    serial: u64,
}

/// The part of a token that is the same for every recipient of one link.
struct Prefix {
    url: Option<Box<str>>,
    /// HMAC state after the prefix bytes.
    mac: MacState,
    /// base64url of the prefix's first 3·k bytes, and the 0–2 bytes left over.
    encoded: String,
    leftover: Vec<u8>,
    misses: u8,
}

/// Per render thread: the prefixes, and a scratch buffer for the per-token tail.
#[derive(Default)]
struct Cache {
    prefixes: FxHashMap<(u64, u8, u32), Prefix>,
    scratch: Vec<u8>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        Self {
            key: MacKey::new(secret),
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
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
        CACHE.with(|cache| {
            let Cache { prefixes, scratch } = &mut *cache.borrow_mut();
            if prefixes.len() >= CACHE_LIMIT {
                prefixes.clear();
            }
            let entry = prefixes
                .entry((self.serial, kind as u8, link))
                .or_insert_with(|| self.prefix(kind, campaign, link, url));
            if entry.url.as_deref() != url {
                entry.misses = entry.misses.saturating_add(1);
                if entry.misses > PERSONAL_AFTER_MISSES {
                    // A personalised link: the whole token at once, nothing cached.
                    scratch.clear();
                    write_prefix(scratch, kind, campaign, link, url);
                    let mut mac = self.key.start();
                    mac.update(scratch);
                    let start = scratch.len();
                    write_recipient(scratch, recipient);
                    let tag = self.key.finish(&mac, &scratch[start..]);
                    scratch.extend_from_slice(&tag[..TAG_LEN]);
                    push_base64url(scratch, out);
                    return;
                }
                let misses = entry.misses;
                *entry = self.prefix(kind, campaign, link, url);
                entry.misses = misses;
            }
            entry.finish(&self.key, recipient, scratch, out);
        });
    }

    fn prefix(&self, kind: TokenKind, campaign: &str, link: u32, url: Option<&str>) -> Prefix {
        let mut bytes = Vec::with_capacity(16 + campaign.len() + url.map_or(0, str::len));
        write_prefix(&mut bytes, kind, campaign, link, url);
        let mut mac = self.key.start();
        mac.update(&bytes);
        let whole = bytes.len() / 3 * 3;
        Prefix {
            url: url.map(Into::into),
            mac,
            encoded: URL_SAFE_NO_PAD.encode(&bytes[..whole]),
            leftover: bytes[whole..].to_vec(),
            misses: 0,
        }
    }
}

impl Prefix {
    /// Appends the whole token: the cached prefix text, then base64url of the prefix's
    /// leftover bytes, the recipient and the tag.
    fn finish(
        &self,
        key: &MacKey,
        recipient: &RecipientKey<'_>,
        scratch: &mut Vec<u8>,
        out: &mut String,
    ) {
        scratch.clear();
        scratch.extend_from_slice(&self.leftover);
        let start = scratch.len();
        write_recipient(scratch, recipient);
        let tag = key.finish(&self.mac, &scratch[start..]);
        scratch.extend_from_slice(&tag[..TAG_LEN]);
        out.push_str(&self.encoded);
        push_base64url(scratch, out);
    }
}

/// The payload up to the recipient: `[version, kind, campaign, link, url,` in
/// MessagePack (writing into a Vec cannot fail, so the io results are ignored).
fn write_prefix(
    bytes: &mut Vec<u8>,
    kind: TokenKind,
    campaign: &str,
    link: u32,
    url: Option<&str>,
) {
    let _ = rmp::encode::write_array_len(bytes, 6);
    let _ = rmp::encode::write_uint(bytes, u64::from(TOKEN_VERSION));
    let _ = rmp::encode::write_uint(bytes, kind as u64);
    let _ = rmp::encode::write_str(bytes, campaign);
    let _ = rmp::encode::write_uint(bytes, u64::from(link));
    match url {
        Some(u) => {
            let _ = rmp::encode::write_str(bytes, u);
        }
        None => {
            let _ = rmp::encode::write_nil(bytes);
        }
    }
}

/// The payload's last element, the recipient.
fn write_recipient(bytes: &mut Vec<u8>, recipient: &RecipientKey<'_>) {
    match recipient {
        RecipientKey::Int(i) => {
            let _ = rmp::encode::write_sint(bytes, *i);
        }
        RecipientKey::UInt(u) => {
            let _ = rmp::encode::write_uint(bytes, *u);
        }
        RecipientKey::Str(s) | RecipientKey::Address(s) => {
            let _ = rmp::encode::write_str(bytes, s);
        }
    }
}

/// Appends base64url without padding. The tails encoded per token are about 25 bytes,
/// where the base64 crate's per-call setup costs more than the encoding; the unit test
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
    /// No id was given: the address stands in (a string in tokens, but kept apart from
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
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    #[test]
    fn base64url_matches_the_base64_crate() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..200 {
            let mut ours = String::new();
            push_base64url(&data[..len], &mut ours);
            assert_eq!(ours, URL_SAFE_NO_PAD.encode(&data[..len]), "length {len}");
        }
    }

    fn decode(token: &str) -> (Vec<u8>, Vec<u8>) {
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
        (payload.to_vec(), tag.to_vec())
    }

    fn expected_tag(secret: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(payload);
        mac.finalize().into_bytes()[..TAG_LEN].to_vec()
    }

    #[test]
    fn token_is_payload_then_truncated_tag() {
        let signer = TokenSigner::new(b"k");
        let mut t = String::new();
        signer.append_token(
            &mut t,
            TokenKind::Click,
            "c1",
            &RecipientKey::Int(7),
            2,
            Some("https://e.com/"),
        );
        let (payload, tag) = decode(&t);
        assert_eq!(tag, expected_tag(b"k", &payload));
        let v: (u8, u8, String, u32, Option<String>, i64) =
            rmp_serde::from_slice(&payload).unwrap();
        assert_eq!(v, (1, 1, "c1".into(), 2, Some("https://e.com/".into()), 7));
    }

    #[test]
    fn cached_prefixes_give_the_same_tokens_as_fresh_ones() {
        // Same link, many recipients and URL changes (cache hits, misses, personalised
        // links): every token must decode to what was asked and carry a valid tag.
        let signer = TokenSigner::new(b"secret");
        for round in 0..4 {
            for r in 0..10i64 {
                for (link, base) in ["https://a.example/x", "https://bb.example/yy"]
                    .iter()
                    .enumerate()
                {
                    let url = if link == 1 {
                        format!("{base}?r={r}")
                    } else {
                        format!("{base}{round}")
                    };
                    let mut t = String::new();
                    let key = RecipientKey::Int(r);
                    signer.append_token(
                        &mut t,
                        TokenKind::Click,
                        "camp",
                        &key,
                        link as u32,
                        Some(&url),
                    );
                    let (payload, tag) = decode(&t);
                    assert_eq!(tag, expected_tag(b"secret", &payload));
                    let v: (u8, u8, String, u32, Option<String>, i64) =
                        rmp_serde::from_slice(&payload).unwrap();
                    assert_eq!(v, (1, 1, "camp".into(), link as u32, Some(url), r));
                }
            }
        }
    }
}
