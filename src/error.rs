//! Error kinds that map to the process exit codes of the CLI contract.

use std::fmt;

/// Exit codes, as restic's so existing scripts keep working.
pub mod exit {
    /// Everything went fine.
    pub const OK: i32 = 0;
    /// The command failed.
    pub const FAILED: i32 = 1;
    /// The backup finished but some source files could not be read.
    pub const INCOMPLETE: i32 = 3;
    /// The repository does not exist.
    pub const NO_REPOSITORY: i32 = 10;
    /// The password is wrong.
    pub const WRONG_PASSWORD: i32 = 12;
    /// Interrupted by a signal.
    pub const INTERRUPTED: i32 = 130;
}

/// A failure with a well-defined meaning for the user and its own exit code.
///
/// Other errors travel as `anyhow::Error` and exit with [`exit::FAILED`].
#[derive(Debug)]
pub enum Fatal {
    /// No repository at the given location.
    NoRepository(String),
    /// No key file opens with the given password.
    WrongPassword,
    /// The operation was interrupted.
    Interrupted,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::NoRepository(loc) => write!(
                f,
                "no repository at {loc}: check --repo / STRATA_REPO, or create one with `strata init`"
            ),
            Fatal::WrongPassword => write!(
                f,
                "wrong password: no key in the repository opens with it (check --password-file / STRATA_PASSWORD)"
            ),
            Fatal::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for Fatal {}

/// The exit code for an error chain: the first [`Fatal`] in it decides, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Fatal>() {
            return match f {
                Fatal::NoRepository(_) => exit::NO_REPOSITORY,
                Fatal::WrongPassword => exit::WRONG_PASSWORD,
                Fatal::Interrupted => exit::INTERRUPTED,
            };
        }
    }
    exit::FAILED
}

/// Renders an error chain as one line: "outer: inner: root cause".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ").replace('\n', " ")
}
