//! Key management as a user does it: several passwords, removal rules,
//! password change, and every way a password may be given.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{CHEAP_KDF, Env, describe};

/// A repository made with the password in `pw1`, in a scratch directory
/// where further password files are written; every run names its password.
struct Repo {
    env: Env,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo { env: Env::empty() };
        repo.write("pw1", "first password\n");
        // Argon2 parallelism stays at its default: a test reads it back.
        let out = repo.run(&[
            "init",
            "--password-file",
            repo.path("pw1").to_str().unwrap(),
            "--argon2-memory-kib",
            "1024",
            "--argon2-iterations",
            "1",
        ]);
        assert!(out.status.success(), "{}", describe(&out));
        repo
    }

    fn path(&self, p: &str) -> PathBuf {
        self.env.path(p)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Env::bare();
        cmd.arg("--repo").arg(self.env.repo()).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Runs with the password file named `pw`; returns stdout, panicking on failure.
    fn ok(&self, pw: &str, args: &[&str]) -> String {
        let pw_path = self.path(pw);
        let mut all = vec!["--password-file", pw_path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn keys(&self, pw: &str) -> Vec<serde_json::Value> {
        self.ok(pw, &["--json", "key", "list"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn several_passwords_open_the_same_repository() {
    let repo = Repo::new();
    repo.write("pw2", "second password\n");
    let pw2 = repo.path("pw2");
    repo.ok(
        "pw1",
        &[
            "key",
            "add",
            "--new-password-file",
            pw2.to_str().unwrap(),
            "--argon2-memory-kib",
            "2048",
            "--argon2-iterations",
            "2",
            "--argon2-parallelism",
            "2",
        ],
    );

    let keys = repo.keys("pw2");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    // Each key file keeps the Argon2id cost it was made with.
    let mut params: Vec<_> = keys
        .iter()
        .map(|k| {
            let p = &k["params"];
            (
                p["memory_kib"].as_u64(),
                p["iterations"].as_u64(),
                p["parallelism"].as_u64(),
            )
        })
        .collect();
    params.sort();
    assert_eq!(
        params,
        [
            (Some(1024), Some(1), Some(4)),
            (Some(2048), Some(2), Some(2))
        ],
        "{keys:?}"
    );
    // Both passwords open it, and see the same snapshots.
    let src = repo.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    repo.ok("pw1", &["backup", "-q", src.to_str().unwrap()]);
    let s1 = repo.ok("pw1", &["--json", "snapshots"]);
    let s2 = repo.ok("pw2", &["--json", "snapshots"]);
    assert_eq!(s1, s2);
    assert!(s1.contains("\"snapshot\""));

    // The key of pw1, removed while unlocked with pw2: pw1 no longer opens it.
    let first = repo
        .keys("pw1")
        .into_iter()
        .find(|k| k["current"] == true)
        .unwrap();
    let prefix = &first["id"].as_str().unwrap()[..8];
    repo.ok("pw2", &["key", "remove", prefix]);
    let out = repo.run(&[
        "--password-file",
        repo.path("pw1").to_str().unwrap(),
        "snapshots",
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", describe(&out));
    assert_eq!(repo.keys("pw2").len(), 1);
}

#[test]
fn refuses_to_remove_the_last_key_or_the_one_in_use() {
    let repo = Repo::new();
    let only = repo.keys("pw1")[0]["id"].as_str().unwrap().to_string();
    let out = repo.run(&[
        "--password-file",
        repo.path("pw1").to_str().unwrap(),
        "key",
        "remove",
        &only,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only key"),
        "{}",
        describe(&out)
    );

    repo.write("pw2", "second\n");
    let pw2 = repo.path("pw2");
    let mut args = vec!["key", "add", "--new-password-file", pw2.to_str().unwrap()];
    args.extend(CHEAP_KDF);
    repo.ok("pw1", &args);
    let out = repo.run(&[
        "--password-file",
        repo.path("pw1").to_str().unwrap(),
        "key",
        "remove",
        &only,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        describe(&out)
    );
    assert_eq!(repo.keys("pw1").len(), 2, "nothing was removed");

    let out = repo.run(&[
        "--password-file",
        repo.path("pw1").to_str().unwrap(),
        "key",
        "remove",
        "zz",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn passwd_replaces_the_password_in_use() {
    let repo = Repo::new();
    let pw1_path = repo.path("pw1");
    let mut args = vec![
        "--password-file",
        pw1_path.to_str().unwrap(),
        "key",
        "passwd",
    ];
    args.extend(CHEAP_KDF);
    let out = repo.run_env(&args, &[("STRATA_NEW_PASSWORD", "brand new")]);
    assert!(out.status.success(), "{}", describe(&out));

    let old = repo.run(&["--password-file", pw1_path.to_str().unwrap(), "snapshots"]);
    assert_eq!(old.status.code(), Some(12), "{}", describe(&old));
    let new = repo.run_env(&["snapshots"], &[("STRATA_PASSWORD", "brand new")]);
    assert!(new.status.success(), "{}", describe(&new));
    let keys = repo.run_env(
        &["--json", "key", "list"],
        &[("STRATA_PASSWORD", "brand new")],
    );
    assert_eq!(String::from_utf8_lossy(&keys.stdout).lines().count(), 1);
}

#[test]
fn password_sources_and_their_errors() {
    let repo = Repo::new();
    let pw1 = repo.path("pw1");
    // A command printing the password.
    let cmd = format!("cat {}", pw1.display());
    let out = repo.run(&["--password-command", &cmd, "snapshots"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = repo.run_env(&["snapshots"], &[("STRATA_PASSWORD_COMMAND", &cmd)]);
    assert!(out.status.success(), "{}", describe(&out));
    // STRATA_PASSWORD_FILE from the environment.
    let out = repo.run_env(
        &["snapshots"],
        &[("STRATA_PASSWORD_FILE", pw1.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // A failing command: exit 1, the command named, one line.
    let out = repo.run(&["--password-command", "exit 7", "snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password command"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A wrong password is never echoed back.
    let secret = "hunter2-wrong-secret";
    let out = repo.run_env(&["snapshots"], &[("STRATA_PASSWORD", secret)]);
    assert_eq!(out.status.code(), Some(12));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));

    // No source at all (stdin is not a terminal here).
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password given"));

    // An empty password file.
    let empty = repo.write("empty", "\n");
    let out = repo.run(&["--password-file", empty.to_str().unwrap(), "snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

impl Repo {
    /// The key file `init` wrote (the only one there yet).
    fn init_key(&self) -> PathBuf {
        let mut keys: Vec<_> = std::fs::read_dir(self.path("repo/keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys.pop().unwrap()
    }

    /// Writes `bytes` into keys/ as someone who may write there would: named
    /// by their hash (or `name`), and dated 2001, before the key `init`
    /// wrote, so that it is not tried last for being the newest.
    fn plant(&self, bytes: &[u8], name: Option<&str>) -> String {
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| blake3::hash(bytes).to_hex().to_string());
        let p = self.path("repo/keys").join(&name);
        std::fs::write(&p, bytes).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(1_000_000_000, 0)).unwrap();
        name
    }

    /// Runs with password file `pw` and the key hint cache in `cache`.
    fn run_cached(&self, pw: &str, cache: &str, args: &[&str]) -> (Output, std::time::Duration) {
        let pw = self.path(pw);
        let mut all = vec!["--password-file", pw.to_str().unwrap()];
        all.extend_from_slice(args);
        let cache = self.path(cache);
        let started = std::time::Instant::now();
        let out = self.run_env(
            &all,
            &[
                ("STRATA_NO_CACHE", "0"),
                ("XDG_CACHE_HOME", cache.to_str().unwrap()),
            ],
        );
        (out, started.elapsed())
    }
}

/// A key file as the one given, but asking for another Argon2id cost.
fn with_params(key: &std::path::Path, memory_kib: u64, iterations: u64) -> Vec<u8> {
    let mut kf: serde_json::Value = serde_json::from_slice(&std::fs::read(key).unwrap()).unwrap();
    kf["params"]["memory_kib"] = memory_kib.into();
    kf["params"]["iterations"] = iterations.into();
    kf["hostname"] = "attacker".into();
    serde_json::to_vec_pretty(&kf).unwrap()
}

#[test]
fn hostile_key_files_do_not_stall_unlock_and_are_named() {
    let repo = Repo::new();
    let real = repo.init_key();
    assert!(std::fs::metadata(&real).unwrap().len() < 1024);
    // 256 MiB × 64 passes: within what the format took, ~20 s to derive.
    let costly = repo.plant(&with_params(&real, 256 * 1024, 64), None);
    // 8 MiB: far more than any key file.
    let huge = repo.plant(&vec![b' '; 8 << 20], None);
    repo.write("wrong", "not the password\n");

    for (pw, code) in [("pw1", 0), ("wrong", 12)] {
        let (out, took) = repo.run_cached(pw, "cache", &["snapshots"]);
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        assert!(took.as_secs() < 5, "{pw}: unlock took {took:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let warning = err
            .lines()
            .find(|l| l.starts_with("warning: unusable key files"))
            .unwrap_or_else(|| panic!("{pw}: no warning\n{err}"));
        assert!(
            warning.contains(&huge) && warning.contains("not read"),
            "{warning}"
        );
        if code == 12 {
            // Every key file was tried: the costly one was refused unread.
            assert!(
                warning.contains(&costly) && warning.contains("out of range"),
                "{warning}"
            );
        }
    }
}

#[test]
fn the_key_that_unlocked_last_is_tried_first() {
    let repo = Repo::new();
    let real = repo.init_key();
    let real_id = real.file_name().unwrap().to_str().unwrap().to_string();
    // Older than the real key, so tried first when there is no hint.
    let damaged = repo.plant(b"{}", Some(&"0".repeat(64)));

    let (out, _) = repo.run_cached("pw1", "cache", &["snapshots"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&damaged) && err.contains("damaged"), "{err}");

    // The hint sits in the repository's cache directory.
    let dirs: Vec<_> = std::fs::read_dir(repo.path("cache/strata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let hint = std::fs::read_to_string(dirs[0].join("key-hint")).unwrap();
    assert_eq!(hint.trim(), real_id);

    // With the hint, the planted file is not even read.
    let (out, _) = repo.run_cached("pw1", "cache", &["snapshots"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(&damaged), "{err}");

    // Without the cache, it is tried (and named) again.
    let (out, _) = repo.run_cached("pw1", "other-cache", &["snapshots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&damaged));
}
