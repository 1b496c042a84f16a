//! Key files: the master secret sealed under a key derived from a password
//! with Argon2id. Several key files mean several passwords for one repository.
//!
//! A key file is JSON (see docs/FORMAT.md). Its Argon2id parameters are stored
//! in it, and bounded on read so a hostile file cannot make us allocate
//! unbounded memory or spin for hours.

use anyhow::{Context, Result, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{MasterKey, aead};

const KEYFILE_AD: &[u8] = b"strata:keyfile:v1";
const SALT_LEN: usize = 32;

/// Upper bounds accepted when reading a key file.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 64;
const MAX_KEYFILE_BYTES: usize = 64 * 1024;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 32 MiB and 8 passes: the memory restic's scrypt key files take (a
    /// sidecar's memory limit must hold it at every start), with more passes
    /// than RFC 9106's 64 MiB / 3 to keep the work per guess. About 0.15 s on
    /// one core. 4 lanes so a parallel implementation could use more cores.
    fn default() -> Self {
        KdfParams {
            memory_kib: 32 * 1024,
            iterations: 8,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    fn validate(&self) -> Result<()> {
        if u64::from(self.memory_kib) < 8 * u64::from(self.parallelism.max(1))
            || self.memory_kib > MAX_MEMORY_KIB
            || self.iterations == 0
            || self.iterations > MAX_ITERATIONS
            || self.parallelism == 0
            || self.parallelism > MAX_PARALLELISM
        {
            bail!(
                "Argon2id parameters out of range (memory {} KiB, {} iterations, {} lanes)",
                self.memory_kib,
                self.iterations,
                self.parallelism
            );
        }
        Ok(())
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate()?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| anyhow::anyhow!("Argon2id parameters rejected: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| anyhow::anyhow!("Argon2id failed: {e}"))?;
        Ok(out)
    }
}

/// The on-disk key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Format version of the key file (1).
    pub version: u32,
    /// When the key was created (RFC 3339).
    pub created: String,
    /// Host the key was created on.
    pub hostname: String,
    /// User who created the key.
    pub username: String,
    /// Always "argon2id".
    pub kdf: String,
    /// Argon2id parameters.
    pub params: KdfParams,
    /// Base64 salt.
    pub salt: String,
    /// Base64 of `nonce || ciphertext || tag` sealing the [`SealedPayload`].
    pub data: String,
}

/// What a key file seals: the master secret and the repository id it belongs to.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedPayload {
    master: String,
    repository: String,
}

impl Drop for SealedPayload {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.master.zeroize();
    }
}

impl KeyFile {
    /// Seals `master` under `password`.
    pub fn create(
        master: &MasterKey,
        repository_id: &str,
        password: &[u8],
        params: KdfParams,
    ) -> Result<KeyFile> {
        params.validate()?;
        let salt: [u8; SALT_LEN] = rand::random();
        let kek = params.derive(password, &salt)?;
        let payload = SealedPayload {
            master: B64.encode(master.secret()),
            repository: repository_id.to_string(),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&payload)?);
        let sealed = aead::seal(&kek, KEYFILE_AD, &plain);
        Ok(KeyFile {
            version: 1,
            created: chrono::Utc::now().to_rfc3339(),
            hostname: crate::sysinfo::hostname(),
            username: crate::sysinfo::username(),
            kdf: "argon2id".into(),
            params,
            salt: B64.encode(salt),
            data: B64.encode(sealed),
        })
    }

    /// Parses a key file, refusing oversized or malformed input.
    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        if bytes.len() > MAX_KEYFILE_BYTES {
            bail!("key file is too large ({} bytes)", bytes.len());
        }
        let kf: KeyFile = serde_json::from_slice(bytes).context("key file is not valid")?;
        if kf.version != 1 {
            bail!(
                "key file version {} is not supported by this strata",
                kf.version
            );
        }
        if kf.kdf != "argon2id" {
            bail!("key file uses unknown KDF {:?}", kf.kdf);
        }
        kf.params.validate()?;
        Ok(kf)
    }

    /// Serializes the key file.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    /// Opens the key file with `password`. `Ok(None)` means the password does
    /// not fit this key; errors mean the file itself is broken.
    pub fn open(&self, password: &[u8]) -> Result<Option<(MasterKey, String)>> {
        let salt = B64
            .decode(&self.salt)
            .context("key file salt is not base64")?;
        let sealed = B64
            .decode(&self.data)
            .context("key file data is not base64")?;
        let kek = self.params.derive(password, &salt)?;
        let Ok(plain) = aead::open(&kek, KEYFILE_AD, &sealed) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let payload: SealedPayload =
            serde_json::from_slice(&plain).context("key file payload is not valid")?;
        let secret = Zeroizing::new(B64.decode(&payload.master).context("bad master key")?);
        let secret: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("master key in key file has the wrong length"))?;
        Ok(Some((
            MasterKey::from_secret(secret),
            payload.repository.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn seal_and_open() {
        let master = MasterKey::generate();
        let kf = KeyFile::create(&master, "repo", b"pw", FAST).unwrap();
        let decoded = KeyFile::decode(&kf.encode()).unwrap();
        let (got, repo) = decoded.open(b"pw").unwrap().unwrap();
        assert_eq!(got.secret(), master.secret());
        assert_eq!(repo, "repo");
        assert!(decoded.open(b"wrong").unwrap().is_none());
    }

    #[test]
    fn hostile_params_are_refused() {
        let master = MasterKey::generate();
        let mut kf = KeyFile::create(&master, "repo", b"pw", FAST).unwrap();
        kf.params.memory_kib = u32::MAX;
        assert!(KeyFile::decode(&kf.encode()).is_err());
        assert!(KeyFile::decode(b"\xff\x00garbage").is_err());
    }
}
