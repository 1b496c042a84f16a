//! Helpers shared by the integration tests that drive the built `strata`
//! binary: a scratch directory holding a password file and a repository,
//! runners, random data, byte flipping and a recursive tree comparison.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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

/// Every regular file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Sum of the sizes of every regular file below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Copies a directory tree of regular files and directories.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Where `restore --target target` puts the snapshot path `src` (absolute).
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block"
    } else if t.is_char_device() {
        "char"
    } else {
        "other"
    }
}

/// What `compare_trees` checks besides type, bytes and link targets.
pub struct Compare {
    pub mode: bool,
    pub mtime: bool,
    pub owner: bool,
    pub hardlinks: bool,
}

impl Compare {
    pub fn all() -> Compare {
        Compare {
            mode: true,
            mtime: true,
            owner: is_root(),
            hardlinks: true,
        }
    }
}

/// Compares the tree at `src` with the restored tree at `dst`: same names,
/// types, file bytes, symlink targets, and (per `what`) permission bits,
/// mtimes to the nanosecond, owners and hardlink identity. The roots'
/// own metadata is compared too. Returns the number of entries compared.
pub fn compare_trees(src: &Path, dst: &Path, what: &Compare) -> usize {
    let mut links: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut n = 0;
    compare_entry(src, dst, what, &mut links, &mut n);
    n
}

fn compare_entry(
    src: &Path,
    dst: &Path,
    what: &Compare,
    links: &mut HashMap<(u64, u64), (u64, u64)>,
    n: &mut usize,
) {
    *n += 1;
    let sm = std::fs::symlink_metadata(src).unwrap();
    let dm = std::fs::symlink_metadata(dst)
        .unwrap_or_else(|e| panic!("{} not restored: {e}", dst.display()));
    let name = src.display();
    assert_eq!(kind(&sm), kind(&dm), "{name}: type");
    if what.mode {
        assert_eq!(
            format!("{:o}", sm.mode() & 0o7777),
            format!("{:o}", dm.mode() & 0o7777),
            "{name}: mode"
        );
    }
    if what.mtime {
        assert_eq!(
            (sm.mtime(), sm.mtime_nsec()),
            (dm.mtime(), dm.mtime_nsec()),
            "{name}: mtime (s, ns)"
        );
    }
    if what.owner {
        assert_eq!((sm.uid(), sm.gid()), (dm.uid(), dm.gid()), "{name}: owner");
    }
    let t = sm.file_type();
    if t.is_symlink() {
        assert_eq!(
            std::fs::read_link(src).unwrap(),
            std::fs::read_link(dst).unwrap(),
            "{name}: link target"
        );
    } else if t.is_file() {
        assert_eq!(sm.len(), dm.len(), "{name}: size");
        let (a, b) = (std::fs::read(src).unwrap(), std::fs::read(dst).unwrap());
        assert!(a == b, "{name}: contents differ");
        if what.hardlinks && sm.nlink() > 1 {
            let s_ino = (sm.dev(), sm.ino());
            let d_ino = (dm.dev(), dm.ino());
            match links.get(&s_ino) {
                Some(prev) => assert_eq!(*prev, d_ino, "{name}: hardlink identity lost"),
                None => {
                    links.insert(s_ino, d_ino);
                }
            }
            assert_eq!(sm.nlink(), dm.nlink(), "{name}: link count");
        }
    } else if t.is_dir() {
        let list = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (sl, dl) = (list(src), list(dst));
        assert_eq!(sl, dl, "{name}: directory entries");
        for e in sl {
            compare_entry(&src.join(&e), &dst.join(&e), what, links, n);
        }
    }
}

/// The S3 test server `scripts/test` starts (SeaweedFS on 127.0.0.1), from
/// the STRATA_TEST_S3_* variables.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
}

/// The S3 test server, or `None` (with a note) outside CI when it is not
/// running; under CI its absence fails the test.
pub fn s3_server() -> Option<S3> {
    let get = |k: &str| std::env::var(k).ok();
    let Some(endpoint) = get("STRATA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run these tests against real servers: run them through ./scripts/test"
        );
        eprintln!("skipped: no S3 test server (run ./scripts/test, which starts SeaweedFS)");
        return None;
    };
    Some(S3 {
        endpoint,
        bucket: get("STRATA_TEST_S3_BUCKET").unwrap_or_else(|| "strata".into()),
        key: get("STRATA_TEST_S3_KEY").unwrap_or_default(),
        secret: get("STRATA_TEST_S3_SECRET").unwrap_or_default(),
    })
}
