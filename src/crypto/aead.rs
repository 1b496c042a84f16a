//! XChaCha20-Poly1305 sealing with a random 24-byte nonce per message.
//!
//! Wire form: `nonce (24) || ciphertext || tag (16)`.

use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Bytes a sealed message carries beyond its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The ciphertext is too short, or it does not authenticate under this key
/// and associated data (wrong key, corrupted bytes, or a renamed object).
#[derive(Debug, thiserror::Error)]
#[error("authentication failed (corrupted, truncated or tampered data, or wrong key)")]
pub struct AeadError;

/// Encrypts `plaintext`, binding `ad` (object type and id) into the tag.
pub fn seal(key: &[u8; 32], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal_into(key, ad, plaintext, Vec::new())
}

/// [`seal`] into `out` (cleared first), so callers can reuse its allocation.
pub fn seal_into(key: &[u8; 32], ad: &[u8], plaintext: &[u8], mut out: Vec<u8>) -> Vec<u8> {
    use chacha20poly1305::aead::AeadInPlace;
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce_bytes: [u8; NONCE_LEN] = crate::entropy::bytes(&[b"nonce", ad, plaintext]);
    // One buffer, encrypted in place: nonce, then ciphertext, then tag.
    out.clear();
    out.reserve_exact(OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce_bytes), ad, &mut out[NONCE_LEN..])
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    out.extend_from_slice(&tag);
    out
}

/// Decrypts and authenticates a message made by [`seal`] with the same `ad`.
pub fn open(key: &[u8; 32], ad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AeadError> {
    let mut out = Vec::new();
    open_append(key, ad, sealed, &mut out)?;
    Ok(out)
}

/// [`open`], appending the plaintext to `out` (decrypted in place there, so
/// a reused `out` costs no allocation). On failure `out` is left as it was.
pub fn open_append(
    key: &[u8; 32],
    ad: &[u8],
    sealed: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), AeadError> {
    use chacha20poly1305::aead::AeadInPlace;
    if sealed.len() < OVERHEAD {
        return Err(AeadError);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let start = out.len();
    out.extend_from_slice(ct);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(nonce), ad, &mut out[start..], tag.into())
        .map_err(|_| {
            out.truncate(start);
            AeadError
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"ad", b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(open(&key, b"ad", &sealed).unwrap(), b"hello");
        assert!(open(&key, b"other ad", &sealed).is_err());
        assert!(open(&[8u8; 32], b"ad", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(open(&key, b"ad", &bad).is_err());
        assert!(open(&key, b"ad", &sealed[..10]).is_err());

        let mut out = b"kept".to_vec();
        open_append(&key, b"ad", &sealed, &mut out).unwrap();
        assert_eq!(out, b"kepthello");
        assert!(open_append(&key, b"ad", &bad, &mut out).is_err());
        assert!(open_append(&key, b"ad", &sealed[..10], &mut out).is_err());
        assert_eq!(
            out, b"kepthello",
            "a failed open leaves the buffer as it was"
        );
    }
}
