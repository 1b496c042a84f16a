//! `strata agent` end to end: scheduled backups, /metrics, a run triggered
//! over HTTP, SIGTERM within the grace period (also in the middle of a
//! backup), start-up refusal of bad configs, and `--check-config` on every
//! shipped config. Runs against a local repository, and also against S3
//! when STRATA_TEST_S3_ENDPOINT (and _BUCKET, _KEY, _SECRET) are set, as
//! `scripts/test` does; without them the S3 case says so and passes.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::net::{free_port, request, wait_for};
use common::{Env, assert_success, files_under, s3_server, unique};

const TOKEN: &str = "test-token-0123";

/// The agent's side of the scratch directory: its config, the agent
/// process and CLI runs through that config.
trait AgentEnv {
    fn strata(&self, config: &Path, args: &[&str]) -> Output;
    fn write_config(&self, name: &str, repo_section: &str, port: u16, extra: &str) -> PathBuf;
    fn spawn_agent(&self, config: &Path) -> Child;
}

impl AgentEnv for Env {
    /// Runs a CLI command with the repository and password of `config`.
    fn strata(&self, config: &Path, args: &[&str]) -> Output {
        self.process()
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .unwrap()
    }

    fn write_config(&self, name: &str, repo_section: &str, port: u16, extra: &str) -> PathBuf {
        let text = format!(
            "{repo_section}\npassword_file = {pw:?}\n\n[agent]\nlisten = \"127.0.0.1:{port}\"\ngrace_period = \"20s\"\nprobe_interval = \"1s\"\nlog_format = \"json\"\n\n{extra}",
            pw = self.pw().to_str().unwrap(),
        );
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn spawn_agent(&self, config: &Path) -> Child {
        self.process()
            .arg("agent")
            .arg("--config")
            .arg(config)
            .env("STRATA_AGENT_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// A request without a body; returns (status, body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let r = request(port, method, path, &headers, b"", Duration::from_secs(15))?;
    Some((r.status, r.text()))
}

/// A metric's value for a label selector such as `job="vol"`.
fn metric(text: &str, name: &str, selector: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(selector))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn sigterm(child: &Child) {
    signal(child, libc::SIGTERM);
}

/// Waits for exit; returns (status code, seconds taken, stderr).
fn wait_exit(mut child: Child, limit: Duration) -> (Option<i32>, f64, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), start.elapsed().as_secs_f64(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the agent did not exit within {limit:?}; its log:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_ok(out: &Output, what: &str) {
    assert_success(out, &[what]);
}

/// The scenario of the acceptance criteria against one repository.
fn scheduled_backups(env: &Env, repo_section: &str) {
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let payload: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(data.join("big.bin"), &payload).unwrap();
    std::fs::write(data.join("sub/small.txt"), b"hello agent\n").unwrap();
    let port = free_port();
    let config = env.write_config(
        "agent.toml",
        repo_section,
        port,
        &format!(
            "[[jobs]]\nname = \"vol\"\npaths = [{:?}]\nschedule = \"*/2 * * * * *\"\ntags = [\"agent\"]\nretention = {{ keep_last = 50 }}\n",
            data.to_str().unwrap()
        ),
    );
    assert_ok(&env.strata(&config, &["init"]), "init");
    let started = chrono::Utc::now().timestamp() as f64;
    let agent = env.spawn_agent(&config);

    // Process alive: /healthz answers without a token.
    wait_for("/healthz", Duration::from_secs(20), || {
        http(port, "GET", "/healthz", None).filter(|(s, _)| *s == 200)
    });
    // Everything else needs the token.
    assert_eq!(http(port, "GET", "/metrics", None).unwrap().0, 401);
    assert_eq!(http(port, "GET", "/metrics", Some("wrong")).unwrap().0, 401);
    wait_for("/readyz", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", Some(TOKEN)).filter(|(s, _)| *s == 200)
    });

    // Two successful scheduled runs.
    let text = wait_for("two successful runs", Duration::from_secs(60), || {
        let (status, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
        assert_eq!(status, 200);
        let runs = metric(&body, "strata_job_runs_total", "job=\"vol\"")?;
        let errors = metric(&body, "strata_job_errors_total", "job=\"vol\"")?;
        let running = metric(&body, "strata_job_running", "job=\"vol\"")?;
        assert_eq!(errors, 0.0, "a run failed:\n{body}");
        (runs - running >= 2.0).then_some(body)
    });
    let last = metric(
        &text,
        "strata_job_last_success_timestamp_seconds",
        "job=\"vol\"",
    )
    .unwrap();
    assert!(
        last >= started && last <= chrono::Utc::now().timestamp() as f64 + 1.0,
        "last success {last}, started {started}"
    );
    let read = metric(&text, "strata_backup_bytes_read_total", "job=\"vol\"").unwrap();
    let added = metric(&text, "strata_backup_bytes_added_total", "job=\"vol\"").unwrap();
    assert!(
        read >= payload.len() as f64,
        "bytes read {read} < {}",
        payload.len()
    );
    assert!(added > 0.0, "nothing added");
    assert!(
        metric(&text, "strata_backup_last_files", "job=\"vol\"").unwrap() >= 2.0,
        "{text}"
    );
    assert!(
        metric(&text, "strata_pool_member_requests_total", "member=").unwrap() > 0.0,
        "{text}"
    );
    assert!(text.contains("strata_build_info{version=\""), "{text}");
    assert!(text.contains("strata_repository_ready 1"), "{text}");

    // A run triggered over HTTP (409 while a scheduled one is running).
    let before = metric(&text, "strata_job_runs_total", "job=\"vol\"").unwrap();
    wait_for("a triggered run", Duration::from_secs(30), || {
        let (status, body) = http(port, "POST", "/jobs/vol/run", Some(TOKEN))?;
        assert!(status == 202 || status == 409, "{status} {body}");
        (status == 202).then_some(())
    });
    let (status, _) = http(port, "POST", "/jobs/nope/run", Some(TOKEN)).unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        http(port, "POST", "/jobs/vol/run", None).unwrap().0,
        401,
        "trigger without token"
    );
    wait_for(
        "the triggered run to count",
        Duration::from_secs(30),
        || {
            let (_, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
            (metric(&body, "strata_job_runs_total", "job=\"vol\"")? > before).then_some(())
        },
    );

    // SIGHUP: a broken config is refused (the running one stays), a good
    // one is applied.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[[jobs]]", "[[jobs]]\nbogus = 1")).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for("a refused reload", Duration::from_secs(20), || {
        let (_, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
        (body.contains("strata_agent_reload_errors_total 1")).then_some(())
    });
    let extra = format!(
        "{good}\n[[jobs]]\nname = \"later\"\npaths = [{:?}]\nschedule = \"0 0 1 1 *\"\n",
        data.join("sub").to_str().unwrap()
    );
    std::fs::write(&config, extra).unwrap();
    signal(&agent, libc::SIGHUP);
    wait_for("the reloaded job", Duration::from_secs(20), || {
        let (_, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
        metric(&body, "strata_job_runs_total", "job=\"later\"")
    });
    assert_eq!(
        http(port, "POST", "/jobs/later/run", Some(TOKEN))
            .unwrap()
            .0,
        202
    );

    // SIGTERM: a clean exit within the grace period.
    sigterm(&agent);
    let (code, took, log) = wait_exit(agent, Duration::from_secs(25));
    assert_eq!(code, Some(0), "exit code; log:\n{log}");
    assert!(took < 20.0, "took {took}s");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("agent test password"), "password logged");
    assert!(!log.contains(TOKEN), "token logged");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(log.contains("snapshot"), "{log}");

    // A consistent repository with the snapshots.
    assert_ok(&env.strata(&config, &["check"]), "check");
    let out = env.strata(&config, &["--json", "snapshots"]);
    assert_ok(&out, "snapshots");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.matches("agent").count() >= 3, "{listing}");
}

#[test]
fn scheduled_backups_metrics_trigger_and_sigterm_on_a_local_repository() {
    let env = Env::empty();
    let repo = env.path("repo");
    scheduled_backups(
        &env,
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
    );
}

#[test]
fn scheduled_backups_metrics_trigger_and_sigterm_on_s3() {
    let Some(s3) = s3_server() else { return };
    let prefix = unique("agent");
    let env = Env::empty();
    let section = format!(
        "[repository]\nurl = \"s3://{bucket}/{prefix}\"\noptions = {{ aws_endpoint = {endpoint:?}, aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = {:?}, aws_secret_access_key = {:?} }}",
        s3.key,
        s3.secret,
        bucket = s3.bucket,
        endpoint = s3.endpoint,
    );
    scheduled_backups(&env, &section);
}

#[test]
fn sigterm_during_a_backup_checkpoints_and_exits_zero() {
    let env = Env::empty();
    let repo = env.path("repo");
    let port = free_port();
    // A dump that never ends: the backup can only stop by checkpointing.
    let config = env.write_config(
        "agent.toml",
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
        port,
        "[[jobs]]\nname = \"endless\"\ncommand = [\"sh\", \"-c\", \"while :; do head -c 1048576 /dev/urandom; done\"]\nschedule = \"0 0 1 1 *\"\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("grace_period = \"20s\"", "grace_period = \"6s\"");
    std::fs::write(&config, text).unwrap();
    assert_ok(
        &env.strata(&config, &["init", "--pack-size-mib", "1"]),
        "init",
    );
    let agent = env.spawn_agent(&config);
    wait_for("/readyz", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", Some(TOKEN)).filter(|(s, _)| *s == 200)
    });
    let (status, body) = http(port, "POST", "/jobs/endless/run", Some(TOKEN)).unwrap();
    assert_eq!(status, 202, "{body}");
    // Let it upload a few packs.
    wait_for("packs to be uploaded", Duration::from_secs(30), || {
        let n = files_under(&repo.join("data")).len();
        (n >= 3).then_some(())
    });
    sigterm(&agent);
    let (code, took, log) = wait_exit(agent, Duration::from_secs(12));
    assert_eq!(code, Some(0), "exit code; log:\n{log}");
    assert!(took <= 7.0, "took {took}s, grace 6s; log:\n{log}");
    assert!(log.contains("re-used by the next run"), "{log}");
    // No snapshot, but the uploaded packs are indexed and the repository
    // is consistent (and unlocked).
    assert!(
        !files_under(&repo.join("index")).is_empty(),
        "no index written"
    );
    assert_eq!(files_under(&repo.join("locks")).len(), 0, "a lock was left");
    assert_ok(&env.strata(&config, &["check"]), "check");
    let out = env.strata(&config, &["snapshots"]);
    assert_ok(&out, "snapshots");
}

#[test]
fn bad_configs_are_refused_at_start_naming_line_and_field() {
    let env = Env::empty();
    let repo = env.path("repo");
    let pw = env.path("pw");
    let base = format!(
        "[repository]\nurl = {:?}\npassword_file = {:?}\n\n[[jobs]]\nname = \"vol\"\npaths = [\"/tmp\"]\nschedule = \"*/5 * * * *\"\n",
        repo.to_str().unwrap(),
        pw.to_str().unwrap()
    );
    let cases = [
        (
            "unknown key",
            base.replace("paths = [", "pathz = [\"/x\"]\npaths = ["),
            vec!["line 7", "pathz"],
        ),
        (
            "bad cron",
            base.replace("*/5 * * * *", "*/5 * * * * * *"),
            vec!["line 8", "cron"],
        ),
        (
            "bad cron value",
            base.replace("*/5 * * * *", "99 * * * *"),
            vec!["line 8", "cron"],
        ),
        (
            "missing password",
            base.replace(&format!("password_file = {:?}\n", pw.to_str().unwrap()), ""),
            vec!["password_file", "STRATA_PASSWORD"],
        ),
        (
            "unreadable password file",
            base.replace("/pw\"", "/no-such-pw\""),
            vec!["line 3", "password_file"],
        ),
        (
            "bad duration",
            base.replace("schedule", "jitter = \"soon\"\nschedule"),
            vec!["line 8", "duration"],
        ),
        (
            "duplicate job",
            format!(
                "{base}\n[[jobs]]\nname = \"vol\"\npaths = [\"/x\"]\nschedule = \"* * * * *\"\n"
            ),
            vec!["line 11", "name"],
        ),
    ];
    for (what, text, needles) in cases {
        let cfg = env.path("bad.toml");
        std::fs::write(&cfg, &text).unwrap();
        for args in [
            vec!["agent", "--config"],
            vec!["agent", "--check-config"],
            vec!["agent", "--check-config", "--config"],
        ] {
            if what.contains("password") && args[1] == "--check-config" {
                continue; // secrets are only needed to start
            }
            let out = env.process().args(&args).arg(&cfg).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{what} {args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
            for n in &needles {
                assert!(err.contains(n), "{what} {args:?}: {n:?} not in {err}");
            }
            assert!(!err.contains("panicked"), "{what}: {err}");
        }
    }
}

/// Every shipped config passes `strata agent --check-config`, and the
/// Dockerfile's commands exist.
#[test]
fn shipped_configs_and_dockerfile_match_the_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = vec![root.join("config/strata.example.toml")];
    let mut stack = vec![root.join("examples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                configs.push(p);
            }
        }
    }
    assert!(configs.len() >= 3, "{configs:?}");
    for c in &configs {
        let out = Env::bare()
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_REPO")
            .args(["agent", "--check-config"])
            .arg(c)
            .output()
            .unwrap();
        assert_ok(&out, &format!("--check-config {}", c.display()));
    }
    let docker = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(docker.contains("ENTRYPOINT [\"strata\"]"), "{docker}");
    assert!(docker.contains("CMD [\"agent\"]"), "{docker}");
    assert!(docker.contains("HEALTHCHECK"), "{docker}");
    assert!(docker.contains("\"healthcheck\""), "{docker}");
    assert!(docker.contains("USER "), "{docker}");
    for args in [["agent", "--help"], ["healthcheck", "--help"]] {
        let out = Env::bare().args(args).output().unwrap();
        assert_ok(&out, &args.join(" "));
    }
    let help = Env::bare().args(["agent", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--check-config", "--log-format", "--listen", "--config"] {
        assert!(help.contains(flag), "{flag} missing from agent --help");
    }
    // Nothing listens there: the health check fails with exit 1.
    let out = Env::bare()
        .args(["healthcheck", "--url"])
        .arg(format!("http://127.0.0.1:{}/healthz", free_port()))
        .args(["--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Paths in the latest snapshot below `root`, relative to it.
fn snapshot_listing(env: &Env, config: &Path, root: &Path) -> Vec<String> {
    let out = env.strata(config, &["--json", "ls", "latest"]);
    assert_ok(&out, "ls");
    let prefix = format!("{}/", root.display());
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .filter_map(|p| p.strip_prefix(&prefix).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Runs the job once through `POST /jobs/NAME/run` and waits for it to end;
/// returns the agent's log.
fn run_once(env: &Env, config: &Path, port: u16, job: &str) -> String {
    let agent = env.spawn_agent(config);
    wait_for("/readyz", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", Some(TOKEN)).filter(|(s, _)| *s == 200)
    });
    let (status, body) = http(port, "POST", &format!("/jobs/{job}/run"), Some(TOKEN)).unwrap();
    assert_eq!(status, 202, "{body}");
    let sel = format!("job=\"{job}\"");
    wait_for("the run to end", Duration::from_secs(60), || {
        let (_, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
        let runs = metric(&body, "strata_job_runs_total", &sel)?;
        let running = metric(&body, "strata_job_running", &sel)?;
        (runs >= 1.0 && running == 0.0).then_some(())
    });
    sigterm(&agent);
    let (code, _, log) = wait_exit(agent, Duration::from_secs(25));
    assert_eq!(code, Some(0), "exit code; log:\n{log}");
    log
}

#[test]
fn job_exclude_keys_parse_and_apply() {
    let env = Env::empty();
    let repo = env.path("repo");
    let data = env.path("data");
    for (rel, bytes) in [
        ("keep.txt", &b"kept"[..]),
        ("skip.tmp", b"pattern from the exclude file"),
        ("tagged/.nobackup", b""),
        ("tagged/file", b"in a tagged directory"),
        (
            "cache/CACHEDIR.TAG",
            b"Signature: 8a477f597d28d172789f06886806bc55\n",
        ),
        ("cache/blob", b"cached"),
        ("big.bin", &[7u8; 2048]),
        ("sub/small.bin", &[8u8; 1000]),
    ] {
        let p = data.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let ex = env.path("excludes.txt");
    std::fs::write(&ex, "# temporary files\n*.tmp\n\n").unwrap();
    let port = free_port();
    let job = format!(
        "[[jobs]]\nname = \"vol\"\npaths = [{data:?}]\nschedule = \"0 0 1 1 *\"\nexclude_file = {ex:?}\nexclude_if_present = \".nobackup\"\nexclude_caches = true\none_file_system = true\nexclude_larger_than = \"1KiB\"\n",
        data = data.to_str().unwrap(),
        ex = ex.to_str().unwrap(),
    );
    let config = env.write_config(
        "agent.toml",
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
        port,
        &job,
    );
    let out = env
        .cmd()
        .args(["agent", "--check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_ok(&out, "--check-config");

    // Bad values are refused at --check-config, naming line and field.
    let good = std::fs::read_to_string(&config).unwrap();
    let line_of = |key: &str| {
        good.lines()
            .position(|l| l.starts_with(key))
            .map(|i| format!("line {}", i + 1))
            .unwrap()
    };
    for (what, text, needles) in [
        (
            "bad size",
            good.replace("\"1KiB\"", "\"huge\""),
            vec![line_of("exclude_larger_than"), "invalid size".into()],
        ),
        (
            "missing exclude file",
            good.replace("excludes.txt", "no-such-file"),
            vec!["exclude_file".into(), "cannot read exclude file".into()],
        ),
        (
            "bad tag name",
            good.replace("\".nobackup\"", "[\"a/b\"]"),
            vec!["exclude_if_present".into()],
        ),
        (
            "wrong type",
            good.replace("exclude_caches = true", "exclude_caches = \"yes\""),
            vec![line_of("exclude_caches"), "bool".into()],
        ),
    ] {
        let bad = env.path("bad.toml");
        std::fs::write(&bad, &text).unwrap();
        let out = env
            .cmd()
            .args(["agent", "--check-config"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        for n in &needles {
            assert!(err.contains(n.as_str()), "{what}: {n:?} not in {err}");
        }
    }

    assert_ok(&env.strata(&config, &["init"]), "init");
    let log = run_once(&env, &config, port, "vol");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    assert_eq!(
        snapshot_listing(&env, &config, &data),
        vec!["keep.txt", "sub", "sub/small.bin"]
    );
    let out = env.strata(&config, &["--json", "snapshots"]);
    assert_ok(&out, "snapshots");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"excluded\":4"), "{text}");
}

/// `--check-config` alone checks the file of `--config` or STRATA_CONFIG.
#[test]
fn check_config_takes_the_file_of_config() {
    let env = Env::empty();
    let config = env.write_config(
        "agent.toml",
        &format!(
            "[repository]\nurl = {:?}",
            env.path("repo").to_str().unwrap()
        ),
        free_port(),
        "[[jobs]]\nname = \"vol\"\npaths = [\"/tmp\"]\nschedule = \"0 0 1 1 *\"\n",
    );
    let runs: [(&str, Vec<&str>, bool); 3] = [
        (
            "--config F --check-config",
            vec!["agent", "--config", "F", "--check-config"],
            false,
        ),
        (
            "--check-config --config F",
            vec!["agent", "--check-config", "--config", "F"],
            false,
        ),
        (
            "STRATA_CONFIG=F --check-config",
            vec!["agent", "--check-config"],
            true,
        ),
    ];
    for (what, args, by_env) in runs {
        let mut c = env.process();
        for a in &args {
            match *a {
                "F" => c.arg(&config),
                a => c.arg(a),
            };
        }
        if by_env {
            c.env("STRATA_CONFIG", &config);
        }
        let out = c.output().unwrap();
        assert_ok(&out, what);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("is valid") && text.contains("job vol"),
            "{what}: {text}"
        );
    }
    // Neither: one line saying what to give.
    let out = env
        .cmd()
        .args(["agent", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--check-config FILE") && err.contains("--config"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A broken file given by --config is refused by --check-config alone.
    std::fs::write(&config, "[[jobs]]\nname = \"x\"\npathz = []\n").unwrap();
    let out = env
        .cmd()
        .args(["agent", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pathz"));
}

/// Starts the agent, runs each job once through `POST /jobs/NAME/run`,
/// waits for all to end, stops the agent; returns its log.
fn run_jobs(env: &Env, config: &Path, port: u16, jobs: &[&str]) -> String {
    let agent = env.spawn_agent(config);
    wait_for("/readyz", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", Some(TOKEN)).filter(|(s, _)| *s == 200)
    });
    for job in jobs {
        let (status, body) = http(port, "POST", &format!("/jobs/{job}/run"), Some(TOKEN)).unwrap();
        assert_eq!(status, 202, "{job}: {body}");
    }
    wait_for("the runs to end", Duration::from_secs(60), || {
        let (_, body) = http(port, "GET", "/metrics", Some(TOKEN))?;
        jobs.iter()
            .all(|job| {
                let sel = format!("job=\"{job}\"");
                metric(&body, "strata_job_runs_total", &sel) >= Some(1.0)
                    && metric(&body, "strata_job_running", &sel) == Some(0.0)
            })
            .then_some(())
    });
    sigterm(&agent);
    let (code, _, log) = wait_exit(agent, Duration::from_secs(25));
    assert_eq!(code, Some(0), "exit code; log:\n{log}");
    log
}

#[test]
fn hooks_run_in_order_with_their_environment_and_failures() {
    let env = Env::empty();
    let repo = env.path("repo");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), b"hooked").unwrap();
    let (m, m2) = (env.path("m"), env.path("m2"));
    std::fs::create_dir_all(&m).unwrap();
    std::fs::create_dir_all(&m2).unwrap();
    let (ms, m2s, ds) = (
        m.to_str().unwrap(),
        m2.to_str().unwrap(),
        data.to_str().unwrap(),
    );
    let port = free_port();
    let jobs = format!(
        r#"[[jobs]]
name = "vol"
paths = ["{ds}"]
schedule = "0 0 1 1 *"
hook_timeout = "20s"
hooks = {{ before = [["sh", "-c", "echo before $STRATA_JOB $STRATA_STATUS >> {ms}/order"]], after = [["sh", "-c", "echo after $STRATA_STATUS $STRATA_SNAPSHOT_ID >> {ms}/order; cp \"$STRATA_SUMMARY_FILE\" {ms}/summary.json; echo \"$STRATA_SUMMARY_FILE\" > {ms}/path; echo hook-says-hello; echo hook-complains >&2"]], on_failure = [["sh", "-c", "echo on_failure >> {ms}/order"]] }}

[[jobs]]
name = "bad"
paths = ["{ds}"]
schedule = "0 0 1 1 *"
hooks = {{ before = [["sh", "-c", "echo before >> {m2s}/order; exit 3"], ["sh", "-c", "echo second-before >> {m2s}/order"]], after = [["sh", "-c", "echo after >> {m2s}/order"]], on_failure = [["sh", "-c", "echo on_failure $STRATA_STATUS .$STRATA_SNAPSHOT_ID. >> {m2s}/order; cp \"$STRATA_SUMMARY_FILE\" {m2s}/fail.json"], ["sh", "-c", "echo second-on_failure >> {m2s}/order"]] }}

[[jobs]]
name = "slow"
paths = ["{ds}"]
schedule = "0 0 1 1 *"
hook_timeout = "1s"
hooks = {{ before = [["sh", "-c", "sleep 30"]], on_failure = [["sh", "-c", "echo on_failure >> {m2s}/slow"]] }}
"#
    );
    let config = env.write_config(
        "agent.toml",
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
        port,
        &jobs,
    );
    let out = env
        .cmd()
        .args(["agent", "--check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_ok(&out, "--check-config");
    assert_ok(&env.strata(&config, &["init"]), "init");
    let started = Instant::now();
    let log = run_jobs(&env, &config, port, &["vol", "bad", "slow"]);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the timeout did not stop the hook"
    );

    // One snapshot: from "vol"; "bad" and "slow" never ran their backups.
    let out = env.strata(&config, &["--json", "snapshots"]);
    assert_ok(&out, "snapshots");
    let snaps: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message_type"] == "snapshot")
        .collect();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let id = snaps[0]["id"].as_str().unwrap().to_string();

    // Success: before, then after with the status and snapshot id.
    let order = std::fs::read_to_string(m.join("order")).unwrap();
    assert_eq!(order, format!("before vol running\nafter success {id}\n"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["job"], "vol", "{summary}");
    assert_eq!(summary["status"], "success", "{summary}");
    assert_eq!(summary["snapshot_id"], id.as_str(), "{summary}");
    assert_eq!(summary["figures"]["files_new"], 1, "{summary}");
    assert!(summary["error"].is_null(), "{summary}");
    let path = std::fs::read_to_string(m.join("path")).unwrap();
    assert!(
        !path.trim().is_empty() && !Path::new(path.trim()).exists(),
        "summary file left: {path}"
    );
    // Hook output is in the agent's log.
    assert!(
        log.contains("hook-says-hello") && log.contains("hook-complains"),
        "{log}"
    );

    // A failing before hook: no more before hooks, no backup, no after
    // hooks; every on_failure hook runs, told about the failure.
    let order = std::fs::read_to_string(m2.join("order")).unwrap();
    assert_eq!(order, "before\non_failure failure ..\nsecond-on_failure\n");
    let fail: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m2.join("fail.json")).unwrap()).unwrap();
    assert_eq!(fail["status"], "failure", "{fail}");
    assert!(fail["snapshot_id"].is_null(), "{fail}");
    let err = fail["error"].as_str().unwrap();
    assert!(
        err.contains("before hook 1") && err.contains("exit status: 3"),
        "{err}"
    );

    // A hook past its timeout is killed and fails the run.
    assert_eq!(
        std::fs::read_to_string(m2.join("slow")).unwrap(),
        "on_failure\n"
    );
    assert!(log.contains("hook_timeout"), "{log}");

    // Bad hooks are refused at --check-config.
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = env.path("bad.toml");
    for (what, broken, needle) in [
        (
            "empty hook",
            text.replacen("[[\"sh\", \"-c\", \"sleep 30\"]]", "[[]]", 1),
            "hooks.before",
        ),
        (
            "shell string",
            text.replacen("[[\"sh\", \"-c\", \"sleep 30\"]]", "[\"sleep 30\"]", 1),
            "line",
        ),
        (
            "unknown stage",
            text.replacen(
                "on_failure = [[\"sh\", \"-c\", \"echo on_failure >> ",
                "on_error = [[\"sh\", \"-c\", \"echo on_failure >> ",
                1,
            ),
            "on_error",
        ),
        (
            "zero timeout",
            text.replacen("hook_timeout = \"1s\"", "hook_timeout = \"0s\"", 1),
            "hook_timeout",
        ),
    ] {
        assert_ne!(broken, text, "{what}: no change");
        std::fs::write(&bad, &broken).unwrap();
        let out = env
            .cmd()
            .args(["agent", "--check-config"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
    }
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    head: String,
    body: String,
}

/// A tiny HTTP server on 127.0.0.1 that records every request and answers
/// 200, except the first request to `fail_once`, answered 500.
struct Recorder {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

impl Recorder {
    fn start(fail_once: &'static str) -> Recorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Request>::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            let mut failed = false;
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while raw.len() < head_end + len {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                let body = String::from_utf8_lossy(&raw[head_end..]).to_string();
                let status = if path == fail_once && !failed {
                    failed = true;
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                record.lock().unwrap().push(Request {
                    method,
                    path,
                    head,
                    body,
                });
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Recorder { port, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn notifications_post_summaries_ping_and_retry() {
    let env = Env::empty();
    let repo = env.path("repo");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), b"notify me").unwrap();
    let server = Recorder::start("/hook");
    let base = format!("http://127.0.0.1:{}", server.port);
    let port = free_port();
    let ds = data.to_str().unwrap();
    let extra = format!(
        r#"[[agent.notify]]
url = "{base}/hook"
events = ["success", "failure"]
jobs = ["vol", "bad"]
retries = 2

[[agent.notify]]
ping_url = "{base}/ping/abc"
jobs = ["vol", "bad"]

[[agent.notify]]
url = "{base}/missed"
events = ["missed"]

[[jobs]]
name = "vol"
paths = ["{ds}"]
schedule = "0 0 1 1 *"

[[jobs]]
name = "bad"
paths = ["/nonexistent/strata-notify-test"]
schedule = "0 0 1 1 *"

[[jobs]]
name = "slow"
paths = ["{ds}"]
schedule = "* * * * * *"
hooks = {{ before = [["sleep", "2"]] }}
"#
    );
    let config = env.write_config(
        "agent.toml",
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
        port,
        &extra,
    );
    let out = env
        .cmd()
        .args(["agent", "--check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_ok(&out, "--check-config");
    assert_ok(&env.strata(&config, &["init"]), "init");
    let agent = env.spawn_agent(&config);
    wait_for("/readyz", Duration::from_secs(30), || {
        http(port, "GET", "/readyz", Some(TOKEN)).filter(|(s, _)| *s == 200)
    });
    for job in ["vol", "bad"] {
        let (status, body) = http(port, "POST", &format!("/jobs/{job}/run"), Some(TOKEN)).unwrap();
        assert_eq!(status, 202, "{job}: {body}");
    }
    let posts = |reqs: &[Request], path: &str| -> Vec<serde_json::Value> {
        reqs.iter()
            .filter(|r| r.method == "POST" && r.path == path)
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    let reqs = wait_for("the notifications", Duration::from_secs(60), || {
        let reqs = server.requests();
        let hook = posts(&reqs, "/hook");
        let done = hook.len() >= 3
            && reqs
                .iter()
                .any(|r| r.method == "GET" && r.path == "/ping/abc")
            && reqs
                .iter()
                .any(|r| r.method == "GET" && r.path == "/ping/abc/fail")
            && !posts(&reqs, "/missed").is_empty();
        done.then_some(reqs)
    });
    sigterm(&agent);
    let (code, _, log) = wait_exit(agent, Duration::from_secs(25));
    assert_eq!(code, Some(0), "{log}");

    // The webhook: the first POST got a 500 and was retried; one summary
    // per run, with the figures or the error.
    let hook = posts(&reqs, "/hook");
    assert_eq!(hook.len(), 3, "{hook:?}");
    assert!(
        reqs.iter().filter(|r| r.path == "/hook").all(|r| r
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/json")),
        "{reqs:?}"
    );
    let vol: Vec<_> = hook.iter().filter(|v| v["job"] == "vol").collect();
    let bad: Vec<_> = hook.iter().filter(|v| v["job"] == "bad").collect();
    assert!(!vol.is_empty() && !bad.is_empty(), "{hook:?}");
    let (v, b) = (vol[vol.len() - 1], bad[bad.len() - 1]);
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["kind"], "backup", "{v}");
    assert_eq!(v["snapshot_id"].as_str().unwrap().len(), 64, "{v}");
    assert_eq!(v["figures"]["files_new"], 1, "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(b["status"], "failure", "{b}");
    assert!(b["snapshot_id"].is_null(), "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("strata-notify-test"),
        "{b}"
    );
    assert!(log.contains("retrying in 1s"), "{log}");
    // Ping: GET on success, /fail on failure, and nothing else there.
    let pings: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/ping"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(pings.len(), 2, "{pings:?}");
    // Missed: the every-second job whose runs take two seconds.
    let missed = posts(&reqs, "/missed");
    assert!(
        missed
            .iter()
            .all(|m| m["status"] == "missed" && m["job"] == "slow"),
        "{missed:?}"
    );
    // Secrets in URLs stay out of the log.
    assert!(!log.contains("/ping/abc"), "{log}");

    // Bad entries are refused at --check-config, naming line and entry.
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("[[agent.notify]]"))
        .unwrap()
        + 1;
    let bad = env.path("bad.toml");
    for (what, broken, needle) in [
        ("scheme", text.replacen("http://", "ftp://", 1), "http"),
        (
            "event",
            text.replacen("\"failure\"", "\"failed\"", 1),
            "failed",
        ),
        (
            "job",
            text.replacen("jobs = [\"vol\", \"bad\"]", "jobs = [\"nope\"]", 1),
            "nope",
        ),
        (
            "both",
            text.replacen("retries = 2", "ping_url = \"http://x/\"", 1),
            "either",
        ),
    ] {
        assert_ne!(broken, text, "{what}");
        std::fs::write(&bad, &broken).unwrap();
        let out = env
            .cmd()
            .args(["agent", "--check-config"])
            .arg(&bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
        if what != "event" {
            assert!(
                err.contains(&format!("line {line}, [[agent.notify]] entry 1")),
                "{what}: {err}"
            );
        }
    }
}

/// Issue 14: the agent's retention deletes as `strata forget` does: the
/// deletion is recorded, so a forgotten snapshot that turns up again (an old
/// copy put back, a pool member that missed the delete) stays forgotten.
#[test]
fn retention_records_what_it_forgets() {
    let env = Env::empty();
    let repo = env.path("repo");
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"first").unwrap();
    let port = free_port();
    let job = format!(
        "[[jobs]]\nname = \"vol\"\npaths = [{:?}]\nschedule = \"0 0 1 1 *\"\nretention = {{ keep_last = 1 }}\n",
        data.to_str().unwrap()
    );
    let config = env.write_config(
        "agent.toml",
        &format!("[repository]\nurl = {:?}", repo.to_str().unwrap()),
        port,
        &job,
    );
    assert_ok(&env.strata(&config, &["init"]), "init");
    run_once(&env, &config, port, "vol");
    let snapshots = || -> Vec<PathBuf> {
        std::fs::read_dir(repo.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let first = snapshots();
    assert_eq!(first.len(), 1);
    let kept_copy = std::fs::read(&first[0]).unwrap();

    std::fs::write(data.join("f"), b"second").unwrap();
    run_once(&env, &config, port, "vol");
    assert_eq!(snapshots().len(), 1, "retention kept more than one");
    assert!(!first[0].exists(), "the first snapshot was not forgotten");
    let records = std::fs::read_dir(repo.join("deleted")).map_or(0, |d| d.count());
    assert!(records > 0, "retention deleted without a deletion record");

    // An old copy put back stays forgotten.
    std::fs::write(&first[0], kept_copy).unwrap();
    let out = env.strata(&config, &["--json", "snapshots"]);
    assert_ok(&out, "snapshots");
    let listed = String::from_utf8_lossy(&out.stdout)
        .matches("\"id\"")
        .count();
    assert_eq!(listed, 1, "{}", String::from_utf8_lossy(&out.stdout));
}
