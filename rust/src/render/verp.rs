//! VERP tokens (variable envelope return path): the spool row of a message's recipient,
//! sealed into its envelope sender (`bounces+TOKEN@bounces.example.com`), so that a late
//! bounce names its recipient however mangled the DSN it comes in.
//!
//! A token is lower-case base32 (RFC 4648 alphabet, no padding) of `ciphertext || tag`:
//! - `ciphertext`: the row id (the spool's integer primary key) as 8 bytes big-endian,
//!   under AES-256-GCM-SIV with the fixed nonce token.rs explains (the same row always
//!   gives the same token, on every retry);
//! - `tag`: GCM-SIV's 16 bytes; the version byte below is the associated data, so a
//!   later layout cannot be mistaken for this one, yet costs no character.
//!
//! 24 bytes make 39 characters: `bounces+` and a token are 47 octets, within the 64 of a
//! local part (RFC 5321 §4.5.3.1.1). Base32, not base64: many MTAs and forwarders
//! lower-case local parts, so `open` reads a token in any case. The key is HKDF-SHA256
//! of the campaign's VERP secret with salt and info strings of its own, so it differs
//! from the tracking tokens' key even when both come from one secret. The inbound
//! listener opens tokens through `ferrymail.verp.open_token`.

use std::sync::LazyLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};
use data_encoding::{Encoding, Specification};
use thiserror::Error;

use super::address::Mailbox;
use super::token::{derive_key, NONCE, TAG_LEN};

/// The layout above; the AEAD's associated data, never written into the token.
pub const VERP_VERSION: u8 = 1;
/// HKDF salt and info: a key made for VERP tokens is made for nothing else.
const HKDF_SALT: &[u8] = b"ferrymail verp tokens";
const HKDF_INFO: &[u8] = b"v1 AES-256-GCM-SIV";
/// The row id, as 8 bytes (a bigint on the PostgreSQL spool, an INTEGER on SQLite's).
const ROW_ID_LEN: usize = 8;
/// A token's bytes: ciphertext and tag.
pub const TOKEN_LEN: usize = ROW_ID_LEN + TAG_LEN;
/// A token's characters: 5 bits each.
pub const TOKEN_CHARS: usize = (TOKEN_LEN * 8).div_ceil(5);
/// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets.
const MAX_MAILBOX: usize = 254;

/// RFC 4648 base32 in lower case, reading upper case too. data-encoding checks the
/// trailing bits, so each token has one spelling (up to case).
static BASE32_LOWER: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.encoding().expect("a valid base32 specification")
});

/// Why a VERP token was refused. The inbound listener then matches the bounce by its
/// Message-ID or tracking links instead.
#[derive(Debug, Error, PartialEq)]
pub enum VerpError {
    #[error("a VERP token is {TOKEN_CHARS} characters, not {0}")]
    Length(usize),
    #[error("a VERP token is base32 (the letters a-z and the digits 2-7)")]
    NotBase32,
    #[error("the VERP token does not authenticate (tampered, or sealed with another secret)")]
    Forged,
}

/// A key that seals and opens VERP tokens, derived once per campaign (or per secret the
/// listener tries).
pub struct VerpSealer {
    key: LessSafeKey,
}

impl VerpSealer {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: derive_key(secret, HKDF_SALT, HKDF_INFO),
        }
    }

    /// Appends the token of spool row `row_id` to `out`.
    pub fn append_token(&self, row_id: u64, out: &mut String) {
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[..ROW_ID_LEN].copy_from_slice(&row_id.to_be_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from([VERP_VERSION]),
                &mut bytes[..ROW_ID_LEN],
            )
            .expect("GCM-SIV seals 8 bytes");
        bytes[ROW_ID_LEN..].copy_from_slice(tag.as_ref());
        BASE32_LOWER.encode_append(&bytes, out);
    }

    /// The token of spool row `row_id`.
    pub fn token(&self, row_id: u64) -> String {
        let mut out = String::with_capacity(TOKEN_CHARS);
        self.append_token(row_id, &mut out);
        out
    }

    /// The row id a token names, or why it is not one of ours. Any case is read.
    pub fn open(&self, token: &str) -> Result<u64, VerpError> {
        if token.len() != TOKEN_CHARS {
            // Counted only here, and only up to what the message needs: a hostile
            // token of megabytes is refused without being walked.
            return Err(VerpError::Length(token.chars().take(1000).count()));
        }
        let mut bytes = [0u8; TOKEN_LEN];
        BASE32_LOWER
            .decode_mut(token.as_bytes(), &mut bytes)
            .map_err(|_| VerpError::NotBase32)?;
        let row_id = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from([VERP_VERSION]),
                &mut bytes,
            )
            .map_err(|_| VerpError::Forged)?;
        let row_id: [u8; ROW_ID_LEN] = row_id.try_into().map_err(|_| VerpError::Forged)?;
        Ok(u64::from_be_bytes(row_id))
    }
}

/// The envelope sender of a campaign with VERP: `local+TOKEN@domain` per recipient.
/// The domain is the sender's, so SPF and DMARC alignment are as without VERP.
pub struct VerpSender {
    /// `local+`, written once.
    head: String,
    /// `@domain` (A-label), written once.
    tail: String,
    sealer: VerpSealer,
}

impl VerpSender {
    /// Checks that `sender` can carry a token; the error says why not, in words for the
    /// `sender` setting.
    pub fn new(sender: &Mailbox, secret: &[u8]) -> Result<Self, String> {
        let address = sender.address();
        if sender.local.starts_with('"') {
            return Err(format!(
                "{address} has a quoted local part, which VERP cannot extend with +TOKEN: \
                 use a plain one (bounces@...)"
            ));
        }
        if sender.local.contains('+') {
            return Err(format!(
                "{address} already has a '+' in its local part, where VERP puts its token \
                 (local+TOKEN@domain): use a sender without one"
            ));
        }
        let most = MAX_LOCAL_PART - 1 - TOKEN_CHARS;
        if sender.local.len() > most {
            return Err(format!(
                "the local part of {address} is {} octets; with VERP's +TOKEN ({} octets) \
                 it would pass the {MAX_LOCAL_PART} octets RFC 5321 allows: use one of at \
                 most {most} octets",
                sender.local.len(),
                1 + TOKEN_CHARS,
            ));
        }
        if address.len() + 1 + TOKEN_CHARS > MAX_MAILBOX {
            return Err(format!(
                "{address} with VERP's +TOKEN would be longer than the {MAX_MAILBOX} octets \
                 RFC 5321 allows a path"
            ));
        }
        Ok(Self {
            head: [sender.local.as_str(), "+"].concat(),
            tail: ["@", sender.domain.as_str()].concat(),
            sealer: VerpSealer::new(secret),
        })
    }

    /// MAIL FROM for the recipient in spool row `row_id`.
    pub fn address(&self, row_id: u64) -> String {
        let mut out = String::with_capacity(self.head.len() + TOKEN_CHARS + self.tail.len());
        out.push_str(&self.head);
        self.sealer.append_token(row_id, &mut out);
        out.push_str(&self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::token::{RecipientKey, TokenKind, TokenSealer};
    use super::super::token::{HKDF_INFO as TRACKING_INFO, HKDF_SALT as TRACKING_SALT};
    use super::*;

    const SECRET: &[u8] = b"sample-secret-0123456789abcdef";

    fn sender(address: &str) -> Mailbox {
        Mailbox::parse(address).unwrap()
    }

    #[test]
    fn tokens_open_to_the_row_they_seal() {
        let sealer = VerpSealer::new(SECRET);
        for row_id in [0, 1, 2, 255, 256, 1 << 32, i64::MAX as u64, u64::MAX] {
            let token = sealer.token(row_id);
            assert_eq!(token.len(), TOKEN_CHARS);
            assert!(
                token
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c)),
                "{token}"
            );
            assert_eq!(sealer.open(&token), Ok(row_id));
            // The same row, the same token: a retry's bounce names the same row.
            assert_eq!(sealer.token(row_id), token);
        }
        assert_ne!(sealer.token(1), sealer.token(2));
        assert_eq!(TOKEN_CHARS, 39);
    }

    #[test]
    fn tokens_open_in_any_case() {
        let sealer = VerpSealer::new(SECRET);
        let token = sealer.token(123_456_789);
        assert_eq!(sealer.open(&token.to_ascii_uppercase()), Ok(123_456_789));
        let mixed: String = token
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(sealer.open(&mixed), Ok(123_456_789));
    }

    #[test]
    fn tampered_short_long_and_garbage_tokens_are_refused() {
        let sealer = VerpSealer::new(SECRET);
        let token = sealer.token(42);
        let mut bytes = [0u8; TOKEN_LEN];
        BASE32_LOWER
            .decode_mut(token.as_bytes(), &mut bytes)
            .unwrap();
        for i in 0..TOKEN_LEN {
            for bit in 0..8 {
                bytes[i] ^= 1 << bit;
                let flipped = BASE32_LOWER.encode(&bytes);
                assert_eq!(sealer.open(&flipped), Err(VerpError::Forged), "{i}/{bit}");
                bytes[i] ^= 1 << bit;
            }
        }
        assert_eq!(sealer.open(&token[1..]), Err(VerpError::Length(38)));
        assert_eq!(
            sealer.open(&[&token, "a"].concat()),
            Err(VerpError::Length(40))
        );
        assert_eq!(sealer.open(""), Err(VerpError::Length(0)));
        assert_eq!(
            sealer.open(&"a".repeat(1 << 20)),
            Err(VerpError::Length(1000))
        );
        for garbage in [
            "0".repeat(TOKEN_CHARS),
            "1".repeat(TOKEN_CHARS),
            "=".repeat(TOKEN_CHARS),
            [&token[..38], "-"].concat(),
            [&token[..37], "é"].concat(),
        ] {
            assert_eq!(
                sealer.open(&garbage),
                Err(VerpError::NotBase32),
                "{garbage}"
            );
        }
        // The last character carries 2 bits of the token and 3 zero bits: spelled with
        // those bits set it is refused, so a token has one spelling (up to case).
        let last = token.as_bytes()[TOKEN_CHARS - 1];
        let noncanonical = [&token[..TOKEN_CHARS - 1], &char::from(last + 1).to_string()].concat();
        assert_eq!(sealer.open(&noncanonical), Err(VerpError::NotBase32));
        // Right length, right alphabet, random: forged.
        assert_eq!(
            sealer.open(&"a".repeat(TOKEN_CHARS - 1)),
            Err(VerpError::Length(38))
        );
        assert_eq!(
            sealer.open(&["b".repeat(38), "a".into()].concat()),
            Err(VerpError::Forged)
        );
    }

    #[test]
    fn another_secret_does_not_open_a_token() {
        let token = VerpSealer::new(SECRET).token(7);
        let other = VerpSealer::new(b"another-secret-0123456789abcdef");
        assert_eq!(other.open(&token), Err(VerpError::Forged));
    }

    #[test]
    fn the_tracking_key_is_not_the_verp_key() {
        // The same plaintext and associated data sealed with the tracking tokens' key
        // derivation from the same secret: a VERP sealer must refuse it, so a leaked
        // tracking key forges no bounce and the reverse.
        let tracking = derive_key(SECRET, TRACKING_SALT, TRACKING_INFO);
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[..ROW_ID_LEN].copy_from_slice(&7u64.to_be_bytes());
        let tag = tracking
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(NONCE),
                Aad::from([VERP_VERSION]),
                &mut bytes[..ROW_ID_LEN],
            )
            .unwrap();
        bytes[ROW_ID_LEN..].copy_from_slice(tag.as_ref());
        let sealer = VerpSealer::new(SECRET);
        assert_eq!(
            sealer.open(&BASE32_LOWER.encode(&bytes)),
            Err(VerpError::Forged)
        );
        assert_ne!(BASE32_LOWER.encode(&bytes), sealer.token(7));
        // And a real tracking token is no VERP token either.
        let mut tracking_token = String::new();
        TokenSealer::new(SECRET).append_token(
            &mut tracking_token,
            TokenKind::Open,
            "c1",
            &RecipientKey::Int(7),
            0,
            None,
        );
        assert!(sealer.open(&tracking_token).is_err());
        assert!(sealer.open(&tracking_token.to_ascii_lowercase()).is_err());
    }

    #[test]
    fn the_envelope_sender_keeps_its_domain_and_fits_64_octets() {
        let verp = VerpSender::new(&sender("bounces@Bounces.Example.com"), SECRET).unwrap();
        let address = verp.address(u64::MAX);
        let (local, domain) = address.rsplit_once('@').unwrap();
        assert_eq!(domain, "bounces.example.com");
        let token = local.strip_prefix("bounces+").unwrap();
        assert_eq!(VerpSealer::new(SECRET).open(token), Ok(u64::MAX));
        assert_eq!(local.len(), "bounces+".len() + TOKEN_CHARS);
        assert!(local.len() <= MAX_LOCAL_PART);
        // The longest sender local part VERP allows makes exactly 64 octets, and parses.
        let longest = "b".repeat(MAX_LOCAL_PART - 1 - TOKEN_CHARS);
        let verp = VerpSender::new(&sender(&format!("{longest}@x.example")), SECRET).unwrap();
        let address = verp.address(u64::MAX);
        assert_eq!(address.rsplit_once('@').unwrap().0.len(), MAX_LOCAL_PART);
        assert_eq!(Mailbox::parse(&address).unwrap().address(), address);
    }

    #[test]
    fn senders_that_cannot_carry_a_token_are_refused() {
        let too_long = format!("{}@x.example", "b".repeat(MAX_LOCAL_PART - TOKEN_CHARS));
        for (address, why) in [
            ("bounces+x@x.example", "already has a '+'"),
            ("\"bo unces\"@x.example", "quoted local part"),
            (too_long.as_str(), "use one of at most 24 octets"),
        ] {
            let err = VerpSender::new(&sender(address), SECRET).err().unwrap();
            assert!(err.contains(why), "{address}: {err}");
        }
        let long_domain = format!("b@{}.example", vec!["a".repeat(60); 4].join("."));
        let err = VerpSender::new(&sender(&long_domain), SECRET)
            .err()
            .unwrap();
        assert!(err.contains("254 octets"), "{err}");
    }
}
