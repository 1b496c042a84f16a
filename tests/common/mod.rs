//! The one harness of the integration tests: a scratch directory holding a
//! password file and a repository, runners of the built `strata` binary,
//! output helpers, random data and byte flipping; file trees and their
//! comparison ([`tree`]), local HTTP and waiting ([`net`]), and the test
//! object-store servers ([`servers`]).

#![allow(dead_code, unused_imports)]

pub mod net;
pub mod servers;
pub mod tree;

pub use servers::{S3, Servers, pool_servers, s3_server, unique};
pub use tree::{Compare, compare_trees, copy_tree, dir_size, files_under, is_root, restored};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use rand::{RngCore, SeedableRng};

/// The password every test repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";

/// `init` with Argon2 parameters cheap enough for tests.
pub const CHEAP_INIT: [&str; 7] = [
    "init",
    "--argon2-memory-kib",
    "1024",
    "--argon2-iterations",
    "1",
    "--argon2-parallelism",
    "1",
];

/// The Argon2 flags of [`CHEAP_INIT`], for `key add` and `key passwd`.
pub const CHEAP_KDF: [&str; 6] = [
    "--argon2-memory-kib",
    "1024",
    "--argon2-iterations",
    "1",
    "--argon2-parallelism",
    "1",
];

/// A scratch directory with `pw` (the password file) and `repo` (a fresh
/// repository created with cheap Argon2 parameters).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A new scratch directory with an initialised repository.
    pub fn new() -> Env {
        let env = Env::empty();
        env.ok(&CHEAP_INIT);
        assert!(env.repo().join("config").is_file(), "init wrote no config");
        env
    }

    /// A new scratch directory with the password file but no repository.
    pub fn empty() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), format!("{PASSWORD}\n")).unwrap();
        Env { dir }
    }

    /// The scratch directory, canonicalised (snapshots record absolute paths).
    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root().join(p)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn pw(&self) -> PathBuf {
        self.path("pw")
    }

    /// A `strata` command with a clean environment (no cache, no ambient
    /// password or repository), without repository or password arguments.
    pub fn bare() -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("strata").unwrap();
        for v in [
            "STRATA_PASSWORD",
            "STRATA_PASSWORD_FILE",
            "STRATA_PASSWORD_COMMAND",
            "STRATA_REPO",
            "STRATA_CONFIG",
        ] {
            c.env_remove(v);
        }
        c.env("STRATA_NO_CACHE", "1");
        c.timeout(std::time::Duration::from_secs(300));
        c
    }

    /// A `strata` process command (one that can be spawned) with nothing of
    /// the caller's environment but PATH, HOME set to the scratch directory,
    /// no cache and stdin closed; for the agent and its console.
    pub fn process(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_strata"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root())
            .env("STRATA_NO_CACHE", "1")
            .stdin(std::process::Stdio::null());
        c
    }

    /// A `strata` command against this repository with the right password.
    pub fn cmd(&self) -> assert_cmd::Command {
        self.cmd_for(&self.repo())
    }

    /// A `strata` command against another repository with this password.
    pub fn cmd_for(&self, repo: &Path) -> assert_cmd::Command {
        let mut c = Env::bare();
        c.arg("--repo")
            .arg(repo)
            .arg("--password-file")
            .arg(self.pw());
        c
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts exit 0; returns the output.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.run(args);
        assert_success(&out, args);
        out
    }

    /// Runs with `--json`, asserts success and returns the parsed lines.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<serde_json::Value> {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
        all.extend(args.iter().map(|a| a.as_ref()));
        let out = self.ok(&all);
        json_lines(&out.stdout)
    }

    /// `backup --json PATHS...` and the summary object.
    pub fn backup_summary<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("backup")];
        all.extend(args.iter().map(|a| a.as_ref()));
        summary(&self.json(&all))
    }
}

pub fn assert_success<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    assert!(
        out.status.success(),
        "strata {:?}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_panic(out);
}

pub fn assert_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "strata panicked:\n{err}"
    );
    assert_ne!(out.status.code(), Some(101), "exit 101 (panic)\n{err}");
}

pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The one `"message_type":"summary"` object among JSON lines.
pub fn summary(lines: &[serde_json::Value]) -> serde_json::Value {
    let s: Vec<_> = lines
        .iter()
        .filter(|v| v["message_type"] == "summary")
        .collect();
    assert_eq!(s.len(), 1, "expected one summary in {lines:?}");
    s[0].clone()
}

/// Exit code, stdout and stderr of a run, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Random bytes from a seeded generator (reproducible per seed).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// XORs one byte of a file with 0x01 (offset None: the middle).
pub fn flip_byte(path: &Path, offset: Option<usize>) {
    let mut b = std::fs::read(path).unwrap();
    assert!(!b.is_empty(), "{} is empty", path.display());
    let off = offset.unwrap_or(b.len() / 2);
    b[off] ^= 0x01;
    std::fs::write(path, b).unwrap();
}
