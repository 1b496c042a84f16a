//! Cloud repositories as a user meets them: options from the environment
//! without a config file, errors for an unreachable endpoint and for missing
//! credentials, `pool status` exit codes, requests per pack upload (counted
//! by bench/s3proxy.py in front of SeaweedFS), and incomplete multipart
//! uploads listed by `check` and aborted by `prune`. The tests that need
//! servers run against the real ones `scripts/test` starts (SeaweedFS,
//! Azurite); without them they say so and pass only outside CI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Output, Stdio};

use assert_cmd::Command;

mod common;

use common::{CHEAP_INIT, Env, S3, s3_server, stderr, stdout, unique};

const PASSWORD: &str = "cloud test password";

/// A `strata` command with no ambient repository, password, cloud
/// credentials or options.
fn strata() -> Command {
    let mut c = Env::bare();
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
    c
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

/// An endpoint that is not an absolute URL made object_store panic while
/// signing (seen with an empty variable); now one line says what to give.
#[test]
fn an_endpoint_that_is_not_a_url_is_refused_in_one_line() {
    let (_dir, pw) = scratch();
    for endpoint in ["", "127.0.0.1:8333", "http://"] {
        let out = strata()
            .env("STRATA_REPO_OPTION_AWS_ENDPOINT", endpoint)
            .env("STRATA_REPO_OPTION_AWS_ACCESS_KEY_ID", "k")
            .env("STRATA_REPO_OPTION_AWS_SECRET_ACCESS_KEY", "s")
            .args(["--repo", "s3://nowhere/p", "--password-file"])
            .arg(&pw)
            .arg("snapshots")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{endpoint:?}");
        let lines = err_lines(&out);
        assert_eq!(lines.len(), 1, "{endpoint:?}: {lines:?}");
        assert!(lines[0].contains("is not a URL"), "{endpoint:?}: {lines:?}");
        assert!(!lines[0].contains("panicked"), "{lines:?}");
    }
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

/// bench/s3proxy.py in front of the S3 test server: counts requests by class.
struct CountingProxy {
    child: Child,
    endpoint: String,
}

impl CountingProxy {
    fn start(s3: &S3) -> CountingProxy {
        let upstream = s3.endpoint.trim_start_matches("http://").to_string();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/s3proxy.py");
        let mut child = StdCommand::new("python3")
            .arg(script)
            .args(["--listen", "127.0.0.1:0", "--upstream", &upstream])
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs bench/s3proxy.py");
        let mut first = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("s3proxy said {first:?}"))
            .to_string();
        CountingProxy {
            child,
            endpoint: format!("http://{addr}"),
        }
    }

    fn admin(&self, what: &str) -> serde_json::Value {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        use std::io::{Read, Write};
        let method = if what == "counts" { "GET" } else { "POST" };
        write!(
            s,
            "{method} /__proxy/{what} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the S3 repository at `prefix` through `endpoint`.
/// Runs strata with a config file and the password file.
fn with_config(config: &Path, pw: &Path, args: &[&str]) -> std::process::Output {
    strata()
        .arg("--config")
        .arg(config)
        .arg("--password-file")
        .arg(pw)
        .args(args)
        .output()
        .unwrap()
}

fn s3_config(dir: &Path, s3: &S3, endpoint: &str, prefix: &str) -> PathBuf {
    let path = dir.join(format!("{prefix}.toml"));
    std::fs::write(
        &path,
        format!(
            "[repository]\nurl = \"s3://{}/{prefix}\"\n\n[repository.options]\naws_endpoint = \"{endpoint}\"\naws_access_key_id = \"{}\"\naws_secret_access_key = \"{}\"\n",
            s3.bucket, s3.key, s3.secret
        ),
    )
    .unwrap();
    path
}

fn random_file(path: &Path, seed: u64, len: usize) {
    use rand::{RngCore, SeedableRng};
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, data).unwrap();
}

/// An S3 repository config at a new prefix named after `name`, reached
/// through a counting proxy, and an empty source folder, in a scratch
/// directory with the password file.
struct Proxied {
    proxy: CountingProxy,
    dir: tempfile::TempDir,
    pw: PathBuf,
    config: PathBuf,
    src: PathBuf,
}

fn proxied(s3: &S3, name: &str) -> Proxied {
    let proxy = CountingProxy::start(s3);
    let (dir, pw) = scratch();
    let config = s3_config(dir.path(), s3, &proxy.endpoint, &unique(name));
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    Proxied {
        proxy,
        dir,
        pw,
        config,
        src,
    }
}

#[test]
fn each_pack_goes_up_in_one_request() {
    let Some(s3) = s3_server() else { return };
    let Proxied {
        proxy,
        dir: _dir,
        pw,
        config,
        src,
    } = proxied(&s3, "onereq");
    // About 48 MiB of incompressible data: three 16 MiB packs.
    for i in 0..3 {
        random_file(&src.join(format!("f{i}")), i, 16 << 20);
    }
    let run = |args: &[&str]| with_config(&config, &pw, args);
    assert_ok(&run(&CHEAP_INIT), "init");
    proxy.admin("reset");
    let out = run(&["--json", "backup", src.to_str().unwrap()]);
    assert_ok(&out, "backup");
    let c = proxy.admin("counts");
    assert_eq!(c["PART"], 0, "{c}");
    assert_eq!(c["MPU"], 0, "{c}");
    let stored: u64 = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["data_added"].as_u64())
        .expect("a summary with data_added");
    let puts = c["PUT"].as_u64().unwrap();
    let gib = stored as f64 / (1u64 << 30) as f64;
    // Packs, an index, the tree pack, the snapshot and the lock.
    assert!(puts <= 10, "{puts} PUTs for {stored} bytes: {c}");
    assert!(
        gib < 0.1 || puts as f64 / gib <= 70.0,
        "{puts} PUTs for {stored} bytes"
    );
}

/// The request budget of issue 13: `forget --prune` on a repository with
/// nothing to delete makes at most 30 requests (counted by the proxy).
#[test]
fn forget_prune_with_nothing_to_delete_stays_within_its_request_budget() {
    let Some(s3) = s3_server() else { return };
    let p = proxied(&s3, "forgetbudget");
    random_file(&p.src.join("f"), 1, 1 << 20);
    // With the local cache, as by default.
    let cache = p.dir.path().join("cache");
    let run = |args: &[&str]| {
        strata()
            .env_remove("STRATA_NO_CACHE")
            .env("XDG_CACHE_HOME", &cache)
            .arg("--config")
            .arg(&p.config)
            .arg("--password-file")
            .arg(&p.pw)
            .args(args)
            .output()
            .unwrap()
    };
    assert_ok(&run(&CHEAP_INIT), "init");
    for _ in 0..3 {
        assert_ok(&run(&["backup", p.src.to_str().unwrap()]), "backup");
    }
    // The first prune compacts the three index files; the next has
    // nothing at all to do.
    assert_ok(&run(&["prune"]), "prune");
    p.proxy.admin("reset");
    let out = run(&["forget", "--keep-last", "5", "--prune"]);
    assert_ok(&out, "forget --prune");
    assert!(
        stdout(&out).contains("removed 0 snapshots"),
        "{}",
        stdout(&out)
    );
    let c = p.proxy.admin("counts");
    let total: u64 = [
        "PUT", "PART", "MPU", "GET", "HEAD", "LIST", "DELETE", "OTHER",
    ]
    .iter()
    .map(|k| c[k].as_u64().unwrap_or(0))
    .sum();
    assert!(total <= 30, "forget --prune made {total} requests: {c}");
    eprintln!("forget --prune with nothing to delete: {total} requests ({c})");
}

#[test]
fn check_lists_incomplete_uploads_and_prune_aborts_the_old_ones() {
    let Some(s3) = s3_server() else { return };
    let (dir, pw) = scratch();
    let prefix = unique("uploads");
    let config = s3_config(dir.path(), &s3, &s3.endpoint, &prefix);
    let run = |args: &[&str]| with_config(&config, &pw, args);
    assert_ok(&run(&CHEAP_INIT), "init");
    // An upload a killed backup left behind: started, one part, never
    // completed. And one outside the repository, which is not ours.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_bucket_name(&s3.bucket)
        .with_region("us-east-1")
        .with_access_key_id(&s3.key)
        .with_secret_access_key(&s3.secret)
        .build()
        .unwrap();
    let started = |key: String| {
        use object_store::ObjectStoreExt;
        let store = &store;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut up = store
                    .put_multipart(&object_store::path::Path::from(key))
                    .await
                    .unwrap();
                up.put_part(vec![7u8; 5 << 20].into()).await.unwrap();
                // Dropped without complete or abort.
            })
    };
    let ours = format!("{prefix}/data/ab/{}", "ab".repeat(32));
    started(ours);
    let other = unique("uploads-other");
    started(format!("{other}/data/cd/x"));

    let out = run(&["check"]);
    assert_ok(&out, "check");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("1 incomplete multipart upload(s)"),
        "check does not list the upload: {text}"
    );
    assert!(
        text.contains(&format!("data/ab/{}", "ab".repeat(32))),
        "{text}"
    );
    assert!(
        !text.contains(&other),
        "another prefix's upload listed: {text}"
    );

    // Younger than the grace period: kept.
    let out = run(&["prune", "--grace", "1h"]);
    assert_ok(&out, "prune");
    assert!(
        stdout(&out).contains("kept 1 incomplete multipart upload(s)"),
        "{}",
        stdout(&out)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(&["prune", "--grace", "1s"]);
    assert_ok(&out, "prune");
    assert!(
        stdout(&out).contains("aborted 1 incomplete multipart upload(s)"),
        "{}",
        stdout(&out)
    );
    let out = run(&["--json", "check"]);
    assert_ok(&out, "check");
    let summary: serde_json::Value = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .unwrap();
    assert_eq!(summary["incomplete_uploads"], 0, "{summary}");
}

/// `[repository] storage_class = { data = "STANDARD_IA" }`: packs are written
/// with that class, index files and snapshots without; a cold tier is
/// refused in one line before anything is written.
#[test]
fn storage_classes_apply_per_kind_of_object() {
    let Some(s3) = s3_server() else { return };
    let Proxied {
        proxy,
        dir,
        pw,
        config,
        src,
    } = proxied(&s3, "class");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "\n\n[repository.options]",
        "\nstorage_class = { data = \"STANDARD_IA\" }\n\n[repository.options]",
        1,
    );
    std::fs::write(&config, &text).unwrap();
    random_file(&src.join("f"), 9, 1 << 20);
    let run = |config: &Path, args: &[&str]| {
        strata()
            .arg("--config")
            .arg(config)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .output()
            .unwrap()
    };
    assert_ok(&run(&config, &CHEAP_INIT), "init");
    proxy.admin("reset");
    assert_ok(&run(&config, &["backup", src.to_str().unwrap()]), "backup");
    let c = proxy.admin("counts");
    let classes = &c["storage_classes"];
    assert!(
        classes["data:STANDARD_IA"].as_u64().unwrap_or(0) >= 1,
        "{c}"
    );
    assert!(classes.get("index:STANDARD_IA").is_none(), "{c}");
    assert!(classes.get("snapshots:STANDARD_IA").is_none(), "{c}");
    let target = dir.path().join("t");
    assert_ok(
        &run(
            &config,
            &["restore", "latest", "--target", target.to_str().unwrap()],
        ),
        "restore",
    );

    let cold = dir.path().join("cold.toml");
    std::fs::write(&cold, text.replace("STANDARD_IA", "DEEP_ARCHIVE")).unwrap();
    let out = run(&cold, &["snapshots"]);
    assert!(!out.status.success());
    let err = err_lines(&out);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("GLACIER_IR"), "{err:?}");
}
