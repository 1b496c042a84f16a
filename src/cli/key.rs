//! `strata key list|add|remove|passwd`: the passwords that open a repository.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::crypto::keyfile::KdfParams;
use crate::id::Id;
use crate::session::{Ctx, PasswordSource};

/// Arguments of `key`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List the key files (the one in use is marked with *).
    List,
    /// Add a password that opens the repository.
    Add(NewKeyArgs),
    /// Remove a key file by id or unique prefix.
    Remove {
        /// Key id (or a unique prefix of it), from `strata key list`.
        id: String,
    },
    /// Change the password in use: add a key for the new one, remove the old.
    Passwd(NewKeyArgs),
}

/// Where the new password comes from, and its Argon2id cost.
#[derive(Args, Debug)]
struct NewKeyArgs {
    /// File holding the new password.
    #[arg(long, env = "STRATA_NEW_PASSWORD_FILE", value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: super::init::KdfArgs,
}

impl NewKeyArgs {
    fn password(&self) -> Result<Zeroizing<Vec<u8>>> {
        PasswordSource {
            file: self.new_password_file.clone(),
            command: None,
            env_var: "STRATA_NEW_PASSWORD",
            prompt: "new password: ",
            hint: "use --new-password-file, STRATA_NEW_PASSWORD_FILE or STRATA_NEW_PASSWORD",
        }
        .read(true)
    }

    fn kdf(&self) -> KdfParams {
        self.kdf.kdf()
    }
}

/// Runs a `key` subcommand.
pub fn run(ctx: &Ctx, args: KeyArgs) -> Result<i32> {
    let repo = ctx.open()?;
    match args.command {
        KeyCommand::List => {
            let mut keys = repo.key_files()?;
            keys.sort_by(|a, b| {
                let created = |k: &Result<crate::crypto::keyfile::KeyFile>| {
                    k.as_ref().map(|k| k.created.clone()).unwrap_or_default()
                };
                created(&a.1).cmp(&created(&b.1))
            });
            ctx.out.line(format!(
                " {:<8}  {:<19}  {:<12}  {:<10}  argon2id (KiB, passes, lanes)",
                "id", "created", "host", "user"
            ));
            for (id, kf) in &keys {
                let current = *id == repo.key_file();
                let mark = if current { "*" } else { " " };
                match kf {
                    Ok(k) => {
                        let created = chrono::DateTime::parse_from_rfc3339(&k.created)
                            .map(|t| {
                                t.with_timezone(&chrono::Local)
                                    .format("%Y-%m-%d %H:%M:%S")
                                    .to_string()
                            })
                            .unwrap_or_else(|_| k.created.clone());
                        ctx.out.line(format!(
                            "{mark}{:<8}  {:<19}  {:<12}  {:<10}  {}, {}, {}",
                            id.short(),
                            created,
                            k.hostname,
                            k.username,
                            k.params.memory_kib,
                            k.params.iterations,
                            k.params.parallelism
                        ));
                        ctx.out.json(&serde_json::json!({
                            "message_type": "key", "id": id.to_hex(), "current": current,
                            "created": k.created, "hostname": k.hostname, "username": k.username,
                            "params": k.params,
                        }));
                    }
                    Err(e) => {
                        let why = crate::error::one_line(e);
                        ctx.out
                            .line(format!("{mark}{:<8}  unreadable: {why}", id.short()));
                        ctx.out.json(&serde_json::json!({
                            "message_type": "key", "id": id.to_hex(), "current": current,
                            "error": why,
                        }));
                    }
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = a.password()?;
            let id = repo.add_key(&pw, a.kdf())?;
            ctx.out.line(format!("added key {}", id.short()));
            ctx.out
                .json(&serde_json::json!({"message_type": "key_added", "id": id.to_hex()}));
        }
        KeyCommand::Remove { id } => {
            let id = resolve(&repo, &id)?;
            repo.remove_key(&id)?;
            ctx.out.line(format!("removed key {}", id.short()));
            ctx.out
                .json(&serde_json::json!({"message_type": "key_removed", "id": id.to_hex()}));
        }
        KeyCommand::Passwd(a) => {
            let pw = a.password()?;
            let old = repo.key_file();
            let new = repo.change_password(&pw, a.kdf())?;
            ctx.out.line(format!(
                "password changed: key {} replaces {}",
                new.short(),
                old.short()
            ));
            ctx.out.json(&serde_json::json!({
                "message_type": "key_changed", "id": new.to_hex(), "replaced": old.to_hex(),
            }));
        }
    }
    Ok(0)
}

/// A key id from a full id or a unique prefix.
fn resolve(repo: &crate::repo::Repository, spec: &str) -> Result<Id> {
    let spec = spec.to_ascii_lowercase();
    if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{spec:?} is not a key id; see `strata key list`");
    }
    let matches: Vec<Id> = repo
        .key_files()?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| id.to_hex().starts_with(&spec))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no key file {spec}; see `strata key list`"),
        _ => bail!("key id prefix {spec} is ambiguous; give more digits"),
    }
}
