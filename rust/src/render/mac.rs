//! HMAC-SHA256 (RFC 2104) kept as plain state after a message prefix and finished with
//! SHA-256's block function directly: the tracking tokens' tag.
//!
//! The hmac crate gives the same tags, but a token used to clone its whole `Hmac`
//! (inner and outer hashers with their buffers) and run two generic finalisations:
//! about 600 instructions a token besides the compressions themselves. Here a saved
//! prefix is 32 bytes of state, a partial block and a length, and finishing is padding
//! by hand. The unit tests check every tag against the hmac crate.

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};

const BLOCK: usize = 64;
/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A secret as HMAC uses it: the SHA-256 states after its inner and outer pad blocks.
#[derive(Clone)]
pub struct MacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl MacKey {
    pub fn new(secret: &[u8]) -> MacKey {
        // RFC 2104 §2: a key longer than the block is hashed first, then zero-padded.
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let padded = |pad: u8| {
            let mut state = IV;
            compress256(&mut state, &[key.map(|b| b ^ pad)]);
            state
        };
        MacKey {
            inner: padded(0x36),
            outer: padded(0x5c),
        }
    }

    /// The MAC state before any message byte.
    pub fn start(&self) -> MacState {
        MacState {
            state: self.inner,
            block: [0; BLOCK],
            filled: 0,
            // The inner pad block counts in the message length.
            length: BLOCK as u64,
        }
    }

    /// HMAC(secret, everything given to `mac`, then `tail`): the full 32-byte tag.
    pub fn finish(&self, mac: &MacState, tail: &[u8]) -> [u8; 32] {
        let mut inner = mac.clone();
        inner.update(tail);
        let mut block = [0u8; BLOCK];
        block[..32].copy_from_slice(&inner.digest());
        let mut state = self.outer;
        pad_last(&mut state, &mut block, 32, (BLOCK + 32) as u64);
        to_bytes(&state)
    }
}

/// The inner hash of an HMAC part way through its message.
#[derive(Clone)]
pub struct MacState {
    state: [u32; 8],
    block: [u8; BLOCK],
    filled: usize,
    length: u64,
}

impl MacState {
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if self.filled > 0 {
            let take = data.len().min(BLOCK - self.filled);
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < BLOCK {
                return;
            }
            compress256(&mut self.state, &[self.block]);
            self.filled = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK);
        for b in &mut blocks {
            compress256(&mut self.state, &[b.try_into().expect("a whole block")]);
        }
        let rest = blocks.remainder();
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn digest(mut self) -> [u8; 32] {
        pad_last(&mut self.state, &mut self.block, self.filled, self.length);
        to_bytes(&self.state)
    }
}

/// Pads the last `filled` bytes of `block` (FIPS 180-4 §5.1.1: 0x80, zeros, the
/// length in bits) and compresses it, spilling into one more block when needed.
fn pad_last(state: &mut [u32; 8], block: &mut [u8; BLOCK], filled: usize, length: u64) {
    block[filled] = 0x80;
    block[filled + 1..].fill(0);
    if filled + 1 > BLOCK - 8 {
        compress256(state, &[*block]);
        block.fill(0);
    }
    block[BLOCK - 8..].copy_from_slice(&(length * 8).to_be_bytes());
    compress256(state, &[*block]);
}

fn to_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};

    #[test]
    fn same_tags_as_the_hmac_crate() {
        let data: Vec<u8> = (0..400u32).map(|i| (i * 7919 % 251) as u8).collect();
        for key_len in [1, 16, 63, 64, 65, 200] {
            let secret = &data[..key_len];
            let key = MacKey::new(secret);
            for prefix in (0..200).step_by(7).chain([55, 56, 63, 64, 119, 120, 128]) {
                let mut mac = key.start();
                mac.update(&data[..prefix]);
                for tail in (0..140).step_by(3).chain([8, 9, 55, 56, 64]) {
                    let message = &data[..prefix + tail];
                    let mut theirs = Hmac::<Sha256>::new_from_slice(secret).unwrap();
                    theirs.update(message);
                    let ours = key.finish(&mac, &data[prefix..prefix + tail]);
                    assert_eq!(
                        ours[..],
                        theirs.finalize().into_bytes()[..],
                        "key {key_len} prefix {prefix} tail {tail}"
                    );
                }
            }
        }
    }
}
