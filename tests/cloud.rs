//! Cloud repositories as a user meets them: options from the environment
//! without a config file, errors for an unreachable endpoint and for missing
//! credentials, `pool status` exit codes, requests per pack upload (counted
//! by bench/s3proxy.py in front of SeaweedFS), and incomplete multipart
//! uploads listed by `check` and aborted by `prune`. The tests that need
//! servers run against the real ones `scripts/test` starts (SeaweedFS,
//! Azurite); without them they say so and pass only outside CI.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

const PASSWORD: &str = "cloud test password";

/// `init` with cheap Argon2 parameters.
const CHEAP_INIT: [&str; 7] = [
    "init",
    "--argon2-memory-kib",
    "1024",
    "--argon2-iterations",
    "1",
    "--argon2-parallelism",
    "1",
];

/// A `strata` command with no ambient repository, password, cloud
/// credentials or options.
fn strata() -> Command {
    let mut c = Command::cargo_bin("strata").unwrap();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("AWS_")
            || k.starts_with("AZURE_")
            || k.starts_with("GOOGLE_")
            || k.starts_with("AZURITE_")
            || (k.starts_with("STRATA_") && !k.starts_with("STRATA_TEST_"))
        {
            c.env_remove(&k);
        }
    }
    c.env("STRATA_NO_CACHE", "1");
    c.timeout(std::time::Duration::from_secs(300));
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Non-empty stderr lines.
fn err_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

fn outside_ci_only(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run these tests against real servers: run them through ./scripts/test"
    );
    eprintln!("skipped: no {what} (run ./scripts/test, which starts the test servers)");
}

/// A scratch directory with a password file.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    (dir, pw)
}

#[test]
fn repository_options_come_from_the_environment_without_a_config_file() {
    let Ok(azurite) = std::env::var("STRATA_TEST_AZURITE") else {
        return outside_ci_only("Azurite");
    };
    let (_dir, pw) = scratch();
    let url = format!("az://{}/repo", unique("envopt"));
    let run = |args: &[&str]| {
        strata()
            .env("STRATA_REPO_OPTION_AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURITE_BLOB_STORAGE_URL", &azurite)
            .arg("--repo")
            .arg(&url)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .output()
            .unwrap()
    };
    assert_ok(&run(&CHEAP_INIT), "init");
    let out = run(&["snapshots"]);
    assert_ok(&out, "snapshots");
    // And without the variable, the same command lacks an account.
    let out = strata()
        .arg("--repo")
        .arg(&url)
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn an_unreachable_endpoint_is_named_in_one_line() {
    let (_dir, pw) = scratch();
    let out = strata()
        .env("STRATA_REPO_OPTION_AWS_ENDPOINT", "http://127.0.0.1:1")
        .env("STRATA_REPO_OPTION_AWS_ACCESS_KEY_ID", "k")
        .env("STRATA_REPO_OPTION_AWS_SECRET_ACCESS_KEY", "s")
        .args(["--repo", "s3://nowhere/p", "--password-file"])
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = err_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("cannot reach the endpoint http://127.0.0.1:1 "),
        "{lines:?}"
    );
}

#[test]
fn missing_credentials_are_said_in_one_line() {
    let (dir, pw) = scratch();
    let out = strata()
        // No ~/.aws either.
        .env("HOME", dir.path())
        .env("STRATA_REPO_OPTION_AWS_ENDPOINT", "http://127.0.0.1:1")
        .args(["--repo", "s3://nowhere/p", "--password-file"])
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = err_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("no S3 credentials found"), "{lines:?}");
    assert!(
        !lines[0].contains("169.254") && !lines[0].contains("resolve"),
        "{lines:?}"
    );
}

/// A config file describing a pool of `members` (name, URL, options).
fn pool_config(dir: &Path, pw: &Path, members: &[(&str, String, &str)]) -> PathBuf {
    let mut toml = format!(
        "[repository]\npassword_file = {:?}\n\n[pool]\nplacement = \"mirror\"\nwrite_quorum = 1\n",
        pw.display().to_string()
    );
    for (name, url, options) in members {
        toml.push_str(&format!(
            "\n[[pool.members]]\nname = \"{name}\"\nurl = {url:?}\n{options}\n"
        ));
    }
    let path = dir.join("pool.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn pool_status_exits_non_zero_when_a_member_is_incomplete_or_unreachable() {
    let (dir, pw) = scratch();
    let a = dir.path().join("a").display().to_string();
    let b = dir.path().join("b").display().to_string();
    let config = pool_config(
        dir.path(),
        &pw,
        &[("one", a.clone(), ""), ("two", b.clone(), "")],
    );
    let run = |config: &Path, args: &[&str]| {
        strata()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    };
    assert_ok(&run(&config, &CHEAP_INIT), "init");
    let out = run(&config, &["pool", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // A member loses its config object: incomplete.
    std::fs::remove_file(Path::new(&b).join("config")).unwrap();
    let out = run(&config, &["pool", "status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("INCOMPLETE"), "{}", stdout(&out));
    // A member that cannot be reached.
    let down = pool_config(
        dir.path(),
        &pw,
        &[
            ("one", a, ""),
            (
                "down",
                "s3://nowhere/p".into(),
                "options = { aws_endpoint = \"http://127.0.0.1:1\", aws_access_key_id = \"k\", aws_secret_access_key = \"s\" }",
            ),
        ],
    );
    let out = run(&down, &["pool", "status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("UNREACHABLE"), "{}", stdout(&out));
}
