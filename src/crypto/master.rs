//! The repository master secret and the sub-keys derived from it.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::id::Id;

const CTX_ENCRYPTION: &str = "strata 2026-11 object encryption key v1";
const CTX_BLOB_ID: &str = "strata 2026-11 keyed blob id v1";
const CTX_GEAR: &str = "strata 2026-11 fastcdc gear table v1";

/// The 32-byte master secret of a repository, and the keys derived from it.
///
/// Only the master secret is stored (sealed in key files); everything else is
/// derived with BLAKE3's key derivation so one secret serves every purpose
/// without key reuse across them. All key material is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    secret: [u8; 32],
    encryption: [u8; 32],
    blob_id: [u8; 32],
    gear: [u8; 32],
}

impl MasterKey {
    /// Derives all sub-keys from a master secret.
    pub fn from_secret(secret: [u8; 32]) -> MasterKey {
        MasterKey {
            secret,
            encryption: blake3::derive_key(CTX_ENCRYPTION, &secret),
            blob_id: blake3::derive_key(CTX_BLOB_ID, &secret),
            gear: blake3::derive_key(CTX_GEAR, &secret),
        }
    }

    /// A fresh random master key.
    pub fn generate() -> MasterKey {
        MasterKey::from_secret(crate::entropy::bytes(&[b"master secret"]))
    }

    /// The master secret, for sealing into a key file.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The key every repository object is encrypted with.
    pub fn encryption_key(&self) -> &[u8; 32] {
        &self.encryption
    }

    /// The keyed id of a piece of plaintext (chunk, tree, index, snapshot).
    pub fn id_of(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// The secret FastCDC gear table: 256 pseudo-random u64 values drawn from
    /// BLAKE3's extendable output under a key derived from the master secret.
    pub fn gear_table(&self) -> Box<[u64; 256]> {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&self.gear)
            .finalize_xof()
            .fill(&mut bytes);
        let mut table = Box::new([0u64; 256]);
        for (slot, chunk) in table.iter_mut().zip(bytes.chunks_exact(8)) {
            *slot = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        bytes.zeroize();
        table
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_and_are_deterministic() {
        let a = MasterKey::from_secret([1; 32]);
        let b = MasterKey::from_secret([1; 32]);
        assert_eq!(a.id_of(b"x"), b.id_of(b"x"));
        assert_ne!(a.encryption_key(), &a.blob_id);
        assert_ne!(a.id_of(b"x"), MasterKey::from_secret([2; 32]).id_of(b"x"));
        assert_eq!(a.gear_table(), b.gear_table());
        assert_ne!(a.gear_table(), MasterKey::from_secret([2; 32]).gear_table());
    }
}
