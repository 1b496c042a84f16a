//! `strata init`.

use anyhow::Result;
use clap::Args;

use crate::crypto::keyfile::KdfParams;
use crate::repo::Repository;
use crate::session::Ctx;

/// Argon2id cost of a new key file (shared by `init` and `key add|passwd`).
#[derive(Args, Debug)]
pub struct KdfArgs {
    /// Argon2id memory in KiB for the new key (at most 262144, and memory ×
    /// passes at most 524288: what strata opens from any key file).
    #[arg(long, default_value_t = KdfParams::default().memory_kib)]
    argon2_memory_kib: u32,
    /// Argon2id passes (1 to 64).
    #[arg(long, default_value_t = KdfParams::default().iterations)]
    argon2_iterations: u32,
    /// Argon2id lanes (1 to 64; computed one after another).
    #[arg(long, default_value_t = KdfParams::default().parallelism)]
    argon2_parallelism: u32,
}

impl KdfArgs {
    /// The KDF parameters chosen.
    pub fn kdf(&self) -> KdfParams {
        KdfParams {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }
}

/// Arguments of `init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    kdf: KdfArgs,
    /// Target pack size in MiB (larger packs mean fewer objects; smaller
    /// ones let prune reclaim space at a finer grain).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size_mib: u32,
}

impl InitArgs {
    /// The KDF parameters chosen.
    pub fn kdf(&self) -> KdfParams {
        self.kdf.kdf()
    }
}

/// Creates the repository.
pub fn run(ctx: &Ctx, args: InitArgs) -> Result<i32> {
    // Before anything is created: a key strata would not open elsewhere.
    args.kdf().validate(&crate::crypto::keyfile::OPEN_BOUNDS)?;
    let backend = ctx.backend()?;
    let location = backend.location();
    let pw = ctx.password(true)?;
    let mut config = crate::repo::RepoConfig::new();
    config.pack_size = args.pack_size_mib * 1024 * 1024;
    let result = Repository::init_with(backend.clone(), &pw, args.kdf(), config);
    ctx.report_notices(backend.as_ref());
    let repo = result?;
    ctx.out.line(format!(
        "created repository {} at {location}",
        &repo.config().id[..8]
    ));
    ctx.out.json(&serde_json::json!({
        "message_type": "initialized", "id": repo.config().id, "repository": location,
    }));
    Ok(0)
}
