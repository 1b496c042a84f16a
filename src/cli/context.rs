//! What every command needs: where the repository is, the password, and how
//! to print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::repo::Repository;
use crate::report::Output;
use crate::store::{Backend, open_url};

/// Global options, after flags, environment and config file are merged.
pub struct Ctx {
    /// Repository URL.
    pub repo_url: Option<String>,
    /// Password file, from --password-file, STRATA_PASSWORD_FILE or the config.
    pub password_file: Option<PathBuf>,
    /// Backend options from the config file.
    pub repo_options: std::collections::BTreeMap<String, String>,
    /// The pool, when the config describes one and no URL overrides it.
    pub pool: Option<crate::pool::config::PoolConfig>,
    /// Output mode.
    pub out: Output,
}

/// The TOML config file (see config/strata.example.toml).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The repository.
    #[serde(default)]
    pub repository: RepositorySection,
    /// A storage pool of several members.
    pub pool: Option<crate::pool::config::PoolConfig>,
    /// Agent settings (used by `strata agent`).
    pub agent: Option<toml::Value>,
    /// Scheduled jobs (used by `strata agent`).
    pub jobs: Option<toml::Value>,
}

/// `[repository]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepositorySection {
    /// Repository URL or path.
    pub url: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Backend options (object_store configuration keys).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// Reads and parses a config file, naming the file and field on error.
pub fn load_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.to_string().replace('\n', " ");
        anyhow::anyhow!(
            "config file {}: {}",
            path.display(),
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })
}

impl Ctx {
    /// Merges flags/env with the config file (flags and env win).
    pub fn new(
        repo: Option<String>,
        config: Option<PathBuf>,
        password_file: Option<PathBuf>,
        out: Output,
    ) -> Result<Ctx> {
        let file = match &config {
            Some(p) => load_config(p)?,
            None => ConfigFile::default(),
        };
        if file.repository.url.is_some() && file.pool.is_some() {
            bail!(
                "config file {}: give either [repository] url or a [pool], not both",
                config.as_deref().unwrap_or(Path::new("")).display()
            );
        }
        if let Some(p) = &file.pool {
            p.validate().with_context(|| {
                format!(
                    "config file {}",
                    config.as_deref().unwrap_or(Path::new("")).display()
                )
            })?;
        }
        // A URL from the flag or environment names one store and wins over
        // the pool: that is how a single surviving member is used directly.
        let pool = if repo.is_some() { None } else { file.pool };
        Ok(Ctx {
            repo_url: repo.or(file.repository.url),
            pool,
            password_file: password_file.or(file.repository.password_file),
            repo_options: file.repository.options,
            out,
        })
    }

    /// The storage backend of the repository.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        if let Some(p) = &self.pool {
            let pool = crate::pool::Pool::open(p)?;
            pool.rank_members(crate::repo::layout::CONFIG);
            return Ok(Arc::new(pool));
        }
        let url = self.repo_url.as_deref().unwrap_or_default();
        Ok(Arc::new(open_url(url, &self.repo_options)?))
    }

    /// The password: password file, then STRATA_PASSWORD, then a prompt on a
    /// terminal. Never taken from the command line.
    pub fn password(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(path) = &self.password_file {
            let mut raw = Zeroizing::new(
                std::fs::read(path)
                    .with_context(|| format!("cannot read password file {}", path.display()))?,
            );
            while raw.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                raw.pop();
            }
            if raw.is_empty() {
                bail!("password file {} is empty", path.display());
            }
            return Ok(raw);
        }
        if let Some(pw) = std::env::var_os("STRATA_PASSWORD") {
            use std::os::unix::ffi::OsStringExt;
            let pw = Zeroizing::new(pw.into_vec());
            if pw.is_empty() {
                bail!("STRATA_PASSWORD is set but empty");
            }
            return Ok(pw);
        }
        if std::io::stdin().is_terminal() {
            let pw =
                Zeroizing::new(rpassword::prompt_password("repository password: ")?.into_bytes());
            if confirm {
                let again =
                    Zeroizing::new(rpassword::prompt_password("enter it again: ")?.into_bytes());
                if pw != again {
                    bail!("the passwords do not match");
                }
            }
            if pw.is_empty() {
                bail!("an empty password is not allowed");
            }
            return Ok(pw);
        }
        bail!("no password given: use --password-file, STRATA_PASSWORD_FILE or STRATA_PASSWORD")
    }

    /// The pool itself, for `pool status` and `pool repair`.
    pub fn pool(&self) -> Result<crate::pool::Pool> {
        match &self.pool {
            Some(p) => crate::pool::Pool::open(p),
            None => bail!(
                "no [pool] in the config file (give --config FILE with a [pool] section, and no --repo)"
            ),
        }
    }

    /// Prints what the storage worked around (failovers, lagging members).
    pub fn report_notices(&self, backend: &dyn Backend) {
        for n in backend.take_notices() {
            self.out.warn(n);
        }
    }

    /// Opens the repository.
    pub fn open(&self) -> Result<Arc<Repository>> {
        let backend = self.backend()?;
        let missing = || crate::error::Fatal::NoRepository(backend.location());
        if !backend.exists()? {
            return Err(missing().into());
        }
        match backend.size(crate::repo::layout::CONFIG) {
            Err(e) if crate::store::is_not_found(&e) => return Err(missing().into()),
            other => {
                other?;
            }
        }
        let pw = self.password(false)?;
        Ok(Arc::new(Repository::open(backend, &pw)?))
    }
}

/// Worker threads to use by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
