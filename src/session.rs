//! A session with the repository: what every command (and every agent job)
//! needs: where the repository is (single store or pool, with bandwidth
//! limits), the password, and how to print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

use crate::config::{ConfigFile, load_config};
use crate::repo::Repository;
use crate::report::Output;
use crate::store::{Backend, ObjectLockConfig, open_store};

/// Global options, after flags, environment and config file are merged.
pub struct Ctx {
    /// Repository URL.
    pub repo_url: Option<String>,
    /// Password file, from --password-file, STRATA_PASSWORD_FILE or the config.
    pub password_file: Option<PathBuf>,
    /// Command printing the password, from --password-command or
    /// STRATA_PASSWORD_COMMAND.
    pub password_command: Option<String>,
    /// Backend options from the config file.
    pub repo_options: std::collections::BTreeMap<String, String>,
    /// S3 Object Lock retention for every object written, from the config.
    pub repo_object_lock: Option<ObjectLockConfig>,
    /// `[repository] compression`: the default of `backup --compression`.
    pub compression: Option<crate::backup::CompressionSetting>,
    /// The pool, when the config describes one and no URL overrides it.
    pub pool: Option<crate::pool::config::PoolConfig>,
    /// Upload limit, bytes per second (`--limit-upload`, `[repository] limit_upload`).
    pub limit_upload: Option<u64>,
    /// Download limit, bytes per second.
    pub limit_download: Option<u64>,
    /// S3 storage classes of the single store (`[repository] storage_class`).
    pub repo_storage_class: crate::store::storage_class::StorageClasses,
    /// Output mode.
    pub out: Output,
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
            None => {
                // Without a config file, the repository's options still
                // come from STRATA_REPO_OPTION_<KEY>.
                let mut file = ConfigFile::default();
                let env = std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                    .collect();
                crate::config::env::apply_repo_env(&mut file, &env);
                file
            }
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
        let repo_url = repo.or(file.repository.url);
        if let Some(lock) = &file.repository.object_lock {
            let shown = config.as_deref().unwrap_or(Path::new("")).display();
            match &repo_url {
                Some(url) => lock
                    .check(url)
                    .with_context(|| format!("config file {shown}: [repository]"))?,
                None => bail!(
                    "config file {shown}: [repository] object_lock applies to [repository] url; for a pool, set object_lock on each [[pool.members]]"
                ),
            }
        }
        let shown = config.as_deref().unwrap_or(Path::new("")).display();
        if !file.repository.storage_class.is_empty() {
            crate::store::storage_class::check(
                repo_url.as_deref().unwrap_or_default(),
                &file.repository.storage_class,
            )
            .with_context(|| format!("config file {shown}: [repository]"))?;
        }
        let rate = |v: &Option<String>, key: &str| -> Result<Option<u64>> {
            v.as_deref()
                .map(crate::store::throttle::parse_rate)
                .transpose()
                .map(Option::flatten)
                .with_context(|| format!("config file {shown}: [repository] {key}"))
        };
        let limit_upload = rate(&file.repository.limit_upload, "limit_upload")?;
        let limit_download = rate(&file.repository.limit_download, "limit_download")?;
        Ok(Ctx {
            repo_url,
            pool,
            limit_upload,
            limit_download,
            repo_storage_class: file.repository.storage_class,
            password_file: password_file.or(file.repository.password_file),
            password_command: None,
            repo_options: file.repository.options,
            repo_object_lock: file.repository.object_lock,
            compression: file.repository.compression,
            out,
        })
    }

    /// The storage backend of the repository (with the bandwidth limits).
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        if let Some(p) = &self.pool {
            let pool = crate::pool::Pool::open(p)?;
            pool.rank_members(crate::repo::layout::CONFIG);
            return Ok(self.throttled(Arc::new(pool)));
        }
        let url = self.repo_url.as_deref().unwrap_or_default();
        Ok(self.throttled(Arc::new(open_store(
            url,
            &self.repo_options,
            self.repo_object_lock.as_ref(),
            &self.repo_storage_class,
        )?)))
    }

    /// `backend` held to the upload and download limits, if any are set
    /// (for a pool: the total across its members).
    pub fn throttled(&self, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
        if self.limit_upload.is_none() && self.limit_download.is_none() {
            return backend;
        }
        Arc::new(crate::store::throttle::Throttled::new(
            backend,
            self.limit_upload,
            self.limit_download,
        ))
    }

    /// The password: password file, then password command, then
    /// STRATA_PASSWORD, then a prompt on a terminal. Never taken from the
    /// command line.
    pub fn password(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        PasswordSource {
            file: self.password_file.clone(),
            command: self.password_command.clone(),
            env_var: "STRATA_PASSWORD",
            prompt: "repository password: ",
            hint: "use --password-file, STRATA_PASSWORD_FILE, --password-command or STRATA_PASSWORD",
        }
        .read(confirm)
    }

    /// True when a password can be had without asking on a terminal.
    pub fn has_password_source(&self) -> bool {
        self.password_file.is_some()
            || self.password_command.is_some()
            || std::env::var_os("STRATA_PASSWORD").is_some()
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
        for n in backend
            .replicated()
            .map(|r| r.take_notices())
            .unwrap_or_default()
        {
            self.out.warn(n);
        }
    }

    /// Opens the repository.
    pub fn open(&self) -> Result<Arc<Repository>> {
        self.open_on(self.backend()?)
    }

    /// Opens the repository on a backend made by [`Ctx::backend`] (so the
    /// caller keeps it, e.g. for its request counts).
    pub fn open_on(&self, backend: Arc<dyn Backend>) -> Result<Arc<Repository>> {
        self.open_on_with(backend, false)
    }

    /// [`Ctx::open`] for a command that only reads: its listings are made
    /// while the key is derived ([`Repository::open_for_reading`]).
    pub fn open_for_reading(&self) -> Result<Arc<Repository>> {
        self.open_on_with(self.backend()?, true)
    }

    fn open_on_with(&self, backend: Arc<dyn Backend>, reading: bool) -> Result<Arc<Repository>> {
        // Only so that nobody types a password for a location that holds
        // no repository; with a password source, opening finds out itself
        // (a missing config is "no repository" there too), two round trips
        // sooner.
        if !self.has_password_source() {
            let missing = || crate::error::Fatal::NoRepository(backend.location());
            if !backend.exists()? {
                return Err(missing().into());
            }
            match crate::repo::probe_config(backend.as_ref()) {
                Err(e) if crate::store::is_not_found(&e) => return Err(missing().into()),
                other => {
                    other?;
                }
            }
        }
        let pw = self.password(false)?;
        Ok(Arc::new(match reading {
            true => Repository::open_for_reading(backend, &pw)?,
            false => Repository::open(backend, &pw)?,
        }))
    }
}

/// Worker threads to use by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Where a password comes from, in order: a file, a command, an environment
/// variable, a prompt on a terminal.
pub struct PasswordSource {
    /// File whose content (minus trailing newlines) is the password.
    pub file: Option<PathBuf>,
    /// Shell command whose first output line is the password.
    pub command: Option<String>,
    /// Environment variable holding the password.
    pub env_var: &'static str,
    /// Prompt shown on a terminal.
    pub prompt: &'static str,
    /// What to tell the user when there is no source.
    pub hint: &'static str,
}

impl PasswordSource {
    /// Reads the password; `confirm` asks twice at a prompt.
    pub fn read(&self, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
        if let Some(path) = &self.file {
            let raw = Zeroizing::new(
                std::fs::read(path)
                    .with_context(|| format!("cannot read password file {}", path.display()))?,
            );
            return non_empty(first_line(raw), || {
                format!("password file {} is empty", path.display())
            });
        }
        if let Some(cmd) = &self.command {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run password command {cmd:?}"))?;
            let raw = Zeroizing::new(output.stdout);
            if !output.status.success() {
                bail!("password command {cmd:?} failed ({})", output.status);
            }
            return non_empty(first_line(raw), || {
                format!("password command {cmd:?} printed nothing")
            });
        }
        if let Some(pw) = std::env::var_os(self.env_var) {
            use std::os::unix::ffi::OsStringExt;
            return non_empty(Zeroizing::new(pw.into_vec()), || {
                format!("{} is set but empty", self.env_var)
            });
        }
        if std::io::stdin().is_terminal() {
            let pw = Zeroizing::new(rpassword::prompt_password(self.prompt)?.into_bytes());
            if confirm {
                let again =
                    Zeroizing::new(rpassword::prompt_password("enter it again: ")?.into_bytes());
                if pw != again {
                    bail!("the passwords do not match");
                }
            }
            return non_empty(pw, || "an empty password is not allowed".into());
        }
        bail!("no password given: {}", self.hint)
    }
}

/// The bytes up to the first line break (a file or command may end in one).
fn first_line(mut raw: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    if let Some(end) = raw.iter().position(|&b| b == b'\n') {
        raw.truncate(end);
    }
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    raw
}

fn non_empty(pw: Zeroizing<Vec<u8>>, why: impl FnOnce() -> String) -> Result<Zeroizing<Vec<u8>>> {
    if pw.is_empty() {
        bail!("{}", why());
    }
    Ok(pw)
}
