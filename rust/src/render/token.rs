//! Signed tracking tokens: what a click, open or unsubscribe URL names, and its HMAC.
//!
//! A token is base64url (no padding) of `payload || tag`, where `payload` is the
//! MessagePack array `[version, kind, campaign, recipient, link, url]` and `tag` is
//! HMAC-SHA256(secret, payload) truncated to 16 bytes. A tracking server needs no
//! database to redirect a click: the URL is in the token, and the tag proves ferrymail
//! wrote it. `ferrymail.tracking.verify` (Python, stdlib hmac) is the reference reader.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::wire::RecipientId;

pub const TOKEN_VERSION: u8 = 1;
/// Truncated tag length: 128 bits is the usual floor for a MAC (NIST SP 800-107).
pub const TAG_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    Click = 1,
    Open = 2,
    Unsubscribe = 3,
}

/// A keyed signer, built once per campaign; cloning the keyed HMAC state per token
/// skips re-hashing the key pads.
#[derive(Clone)]
pub struct TokenSigner {
    mac: Hmac<Sha256>,
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Appends the token for (kind, campaign, recipient, link, url) to `out`.
    pub fn append_token(
        &self,
        out: &mut String,
        kind: TokenKind,
        campaign: &str,
        recipient: &RecipientKey<'_>,
        link: u32,
        url: Option<&str>,
    ) {
        let mut buf = Vec::with_capacity(32 + campaign.len() + url.map_or(0, str::len));
        write_payload(&mut buf, kind, campaign, recipient, link, url);
        let mut mac = self.mac.clone();
        mac.update(&buf);
        let tag = mac.finalize().into_bytes();
        buf.extend_from_slice(&tag[..TAG_LEN]);
        // encode_string goes through a chunked String sink, several times slower than
        // encoding a slice; tokens are short, so a stack buffer nearly always suffices.
        let mut encoded = [0u8; 512];
        match URL_SAFE_NO_PAD.encode_slice(&buf, &mut encoded) {
            Ok(n) => out.push_str(std::str::from_utf8(&encoded[..n]).expect("base64 is ASCII")),
            Err(_) => URL_SAFE_NO_PAD.encode_string(&buf, out),
        }
    }
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

fn write_payload(
    buf: &mut Vec<u8>,
    kind: TokenKind,
    campaign: &str,
    recipient: &RecipientKey<'_>,
    link: u32,
    url: Option<&str>,
) {
    // Writing into a Vec cannot fail, so the io results are ignored on purpose.
    let _ = rmp::encode::write_array_len(buf, 6);
    let _ = rmp::encode::write_uint(buf, u64::from(TOKEN_VERSION));
    let _ = rmp::encode::write_uint(buf, kind as u64);
    let _ = rmp::encode::write_str(buf, campaign);
    match recipient {
        RecipientKey::Int(i) => {
            let _ = rmp::encode::write_sint(buf, *i);
        }
        RecipientKey::UInt(u) => {
            let _ = rmp::encode::write_uint(buf, *u);
        }
        RecipientKey::Str(s) | RecipientKey::Address(s) => {
            let _ = rmp::encode::write_str(buf, s);
        }
    }
    let _ = rmp::encode::write_uint(buf, u64::from(link));
    match url {
        Some(u) => {
            let _ = rmp::encode::write_str(buf, u);
        }
        None => {
            let _ = rmp::encode::write_nil(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Some("https://example.com/"),
        );
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(payload);
        assert_eq!(&mac.finalize().into_bytes()[..TAG_LEN], tag);
        let v: (u8, u8, String, i64, u32, Option<String>) = rmp_serde::from_slice(payload).unwrap();
        assert_eq!(
            v,
            (1, 1, "c1".into(), 7, 2, Some("https://example.com/".into()))
        );
    }
}
