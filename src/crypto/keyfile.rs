//! Key files: the master secret sealed under a key derived from a password
//! with Argon2id. Several key files mean several passwords for one repository.
//!
//! A key file is JSON (see docs/FORMAT.md). Its Argon2id parameters are stored
//! in it. Anyone who can write `keys/` can add a key file, and every command
//! may try it, so its cost is bounded twice: [`FORMAT_BOUNDS`] for a file to
//! be well-formed at all, and the much lower [`OPEN_BOUNDS`] before strata
//! derives a key from a file it does not know (about a second at most here).
//! A key file this machine opened before (see `Repository::unlock`) is
//! derived within the format bounds, so keys made by earlier versions with
//! costlier parameters still open where they were used.

use anyhow::{Context, Result, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{MasterKey, aead};

const KEYFILE_AD: &[u8] = b"strata:keyfile:v1";
const SALT_LEN: usize = 32;

/// The largest key file read. A key file written by strata is about 530
/// bytes, and at most about 3.5 KiB with the longest host and user names it
/// records (255 bytes each, every byte escaped).
pub const MAX_KEYFILE_BYTES: u64 = 4096;

/// Longest host or user name recorded in a key file, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// Upper bounds on Argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfBounds {
    /// Most memory, in KiB.
    pub max_memory_kib: u32,
    /// Most passes.
    pub max_iterations: u32,
    /// Most lanes.
    pub max_parallelism: u32,
    /// Most memory × passes, in KiB (the work of one derivation: this
    /// implementation fills the lanes one after the other).
    pub max_work_kib: u64,
}

/// What a key file may hold at all (the bounds every strata version
/// accepted; a file beyond them is malformed). Derived only for a key file
/// this machine opened before.
pub const FORMAT_BOUNDS: KdfBounds = KdfBounds {
    max_memory_kib: 4 * 1024 * 1024,
    max_iterations: 64,
    max_parallelism: 64,
    max_work_kib: 64 * 4 * 1024 * 1024,
};

/// What strata derives from a key file it does not know, and the most `init`
/// and `key add` write: 256 MiB, and memory × passes at most twice the
/// default's (512 MiB, e.g. 256 MiB × 2 or 32 MiB × 16). One derivation at
/// the bound takes about 0.4 s on one idle core here (1 s with the machine
/// loaded three times over), so a planted key file costs at most that.
pub const OPEN_BOUNDS: KdfBounds = KdfBounds {
    max_memory_kib: 256 * 1024,
    max_iterations: 64,
    max_parallelism: 64,
    max_work_kib: 512 * 1024,
};

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
    /// Checks the parameters against `bounds` (and Argon2id's own minimums:
    /// one pass, one lane, 8 KiB per lane).
    pub fn validate(&self, bounds: &KdfBounds) -> Result<()> {
        let work = u64::from(self.memory_kib) * u64::from(self.iterations);
        if u64::from(self.memory_kib) < 8 * u64::from(self.parallelism.max(1))
            || self.memory_kib > bounds.max_memory_kib
            || self.iterations == 0
            || self.iterations > bounds.max_iterations
            || self.parallelism == 0
            || self.parallelism > bounds.max_parallelism
            || work > bounds.max_work_kib
        {
            bail!(
                "Argon2id parameters out of range (memory {} KiB, {} passes, {} lanes; accepted: \
                 memory 8 KiB per lane to {} KiB, 1 to {} passes, 1 to {} lanes, memory × passes \
                 at most {} KiB)",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                bounds.max_memory_kib,
                bounds.max_iterations,
                bounds.max_parallelism,
                bounds.max_work_kib
            );
        }
        Ok(())
    }

    fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
        bounds: &KdfBounds,
    ) -> Result<Zeroizing<[u8; 32]>> {
        self.validate(bounds)?;
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
    /// Seals `master` under `password`. The parameters must be within
    /// [`OPEN_BOUNDS`], so that the key opens on any machine.
    pub fn create(
        master: &MasterKey,
        repository_id: &str,
        password: &[u8],
        params: KdfParams,
    ) -> Result<KeyFile> {
        params.validate(&OPEN_BOUNDS)?;
        let salt: [u8; SALT_LEN] = crate::entropy::bytes(&[b"key file salt"]);
        let kek = params.derive(password, &salt, &OPEN_BOUNDS)?;
        let payload = SealedPayload {
            master: B64.encode(master.secret()),
            repository: repository_id.to_string(),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&payload)?);
        let sealed = aead::seal(&kek, KEYFILE_AD, &plain);
        let kf = KeyFile {
            version: 1,
            created: crate::entropy::now().to_rfc3339(),
            hostname: truncated(crate::sysinfo::hostname()),
            username: truncated(crate::sysinfo::username()),
            kdf: "argon2id".into(),
            params,
            salt: B64.encode(salt),
            data: B64.encode(sealed),
        };
        let len = kf.encode().len();
        if len as u64 > MAX_KEYFILE_BYTES {
            bail!("the key file would be {len} bytes, more than the {MAX_KEYFILE_BYTES} read back");
        }
        Ok(kf)
    }

    /// Parses a key file, refusing oversized or malformed input (parameters
    /// beyond [`FORMAT_BOUNDS`] included).
    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        if bytes.len() as u64 > MAX_KEYFILE_BYTES {
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
        kf.params.validate(&FORMAT_BOUNDS)?;
        Ok(kf)
    }

    /// Serializes the key file.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    /// Opens the key file with `password`, deriving only within
    /// [`OPEN_BOUNDS`]. `Ok(None)` means the password does not fit this key;
    /// errors mean the file itself is broken or too costly to try.
    pub fn open(&self, password: &[u8]) -> Result<Option<(MasterKey, String)>> {
        self.open_within(password, &OPEN_BOUNDS)
    }

    /// [`KeyFile::open`] within other bounds ([`FORMAT_BOUNDS`] for a key
    /// file known to be genuine).
    pub fn open_within(
        &self,
        password: &[u8],
        bounds: &KdfBounds,
    ) -> Result<Option<(MasterKey, String)>> {
        // Refuse before decoding anything else: a hostile file costs nothing.
        self.params.validate(bounds)?;
        let salt = B64
            .decode(&self.salt)
            .context("key file salt is not base64")?;
        let sealed = B64
            .decode(&self.data)
            .context("key file data is not base64")?;
        let kek = self.params.derive(password, &salt, bounds)?;
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

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary.
fn truncated(mut name: String) -> String {
    if name.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    /// Key files written by any strata version must keep opening: the
    /// derivation is checked against output of the argon2 0.5 crate (the
    /// implementation before the parallel one), 4 lanes as by default.
    #[test]
    fn derivation_matches_the_earlier_implementation() {
        let params = KdfParams {
            memory_kib: 1024,
            iterations: 2,
            parallelism: 4,
        };
        let out = params
            .derive(
                b"correct horse battery staple",
                b"strata known-answer salt 32 byte",
                &FORMAT_BOUNDS,
            )
            .unwrap();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "07e3e29448c7f15a76bde143bdfbdc35813d9d94d338640ab79aedf35e47bf96"
        );
    }

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

    fn params(memory_kib: u32, iterations: u32, parallelism: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    #[test]
    fn open_bounds_take_the_default_and_refuse_costly_parameters() {
        let ok = |p: KdfParams| p.validate(&OPEN_BOUNDS).is_ok();
        assert!(ok(KdfParams::default()));
        assert!(ok(params(256 * 1024, 2, 4)));
        assert!(ok(params(32 * 1024, 16, 4)));
        assert!(ok(params(8, 1, 1)));
        assert!(!ok(params(256 * 1024 + 1, 1, 1)), "memory");
        assert!(!ok(params(256 * 1024, 3, 4)), "memory × passes");
        assert!(!ok(params(32 * 1024, 17, 4)), "memory × passes");
        assert!(!ok(params(4 * 1024 * 1024, 64, 64)), "the old maximum");
        assert!(!ok(params(64, 65, 1)), "passes");
        assert!(!ok(params(1024, 1, 65)), "lanes");
        assert!(!ok(params(8, 1, 2)), "8 KiB per lane");
        assert!(!ok(params(1024, 0, 1)) && !ok(params(1024, 1, 0)), "zero");
        // Everything the open bounds take is a well-formed key file.
        assert!(params(256 * 1024, 2, 64).validate(&FORMAT_BOUNDS).is_ok());
        // The format still describes what earlier versions could write.
        assert!(
            params(4 * 1024 * 1024, 64, 64)
                .validate(&FORMAT_BOUNDS)
                .is_ok()
        );
        assert!(params(u32::MAX, 1, 1).validate(&FORMAT_BOUNDS).is_err());
    }

    #[test]
    fn a_costly_key_file_is_refused_before_any_work() {
        let master = MasterKey::generate();
        let mut kf = KeyFile::create(&master, "repo", b"pw", FAST).unwrap();
        // Within the format (an earlier version could have written it), but
        // 4 GiB × 64 passes: refused at once, not derived.
        kf.params = params(4 * 1024 * 1024, 64, 64);
        let decoded = KeyFile::decode(&kf.encode()).unwrap();
        let started = std::time::Instant::now();
        let err = decoded.open(b"pw").unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        // A known key file is derived within the format's bounds (cheap here).
        let decoded =
            KeyFile::decode(&KeyFile::create(&master, "r", b"pw", FAST).unwrap().encode()).unwrap();
        assert!(
            decoded
                .open_within(b"pw", &FORMAT_BOUNDS)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn create_refuses_what_open_would_refuse() {
        let master = MasterKey::generate();
        let err = KeyFile::create(&master, "repo", b"pw", params(1024 * 1024, 1, 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("out of range") && err.contains("262144 KiB"),
            "{err}"
        );
    }

    #[test]
    fn key_files_stay_small() {
        let master = MasterKey::generate();
        let kf = KeyFile::create(&master, &"ab".repeat(32), b"pw", FAST).unwrap();
        assert!(kf.encode().len() < 1024, "{} bytes", kf.encode().len());
        // The longest names recorded, escaped byte by byte, still fit.
        let mut big = kf.clone();
        big.hostname = truncated("\u{1}".repeat(10_000));
        big.username = truncated("é".repeat(10_000));
        assert!(big.username.len() <= MAX_NAME_BYTES);
        let bytes = big.encode();
        assert!(
            bytes.len() as u64 <= MAX_KEYFILE_BYTES,
            "{} bytes",
            bytes.len()
        );
        KeyFile::decode(&bytes).unwrap();
        let mut padded = kf.encode();
        padded.resize(MAX_KEYFILE_BYTES as usize + 1, b' ');
        assert!(KeyFile::decode(&padded).is_err());
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
