//! The bad day, injected: backups killed with SIGKILL at random moments, and a
//! fault-injecting proxy between strata and a real S3 server (SeaweedFS) that
//! resets connections, answers 503, stalls and cuts responses short.
//! Whatever happens, a restore that reports success is bit-identical, and a
//! failure is one clear line — never a panic, never silently wrong data.

mod common;

use common::{S3, s3_server};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn strata() -> Command {
    let mut c = Command::cargo_bin("strata").unwrap();
    c.env_remove("STRATA_REPO")
        .env_remove("STRATA_PASSWORD")
        .env_remove("STRATA_PASSWORD_FILE")
        .env("STRATA_NO_CACHE", "1");
    c
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A failure must be short, clear and not a crash.
fn assert_clean_failure(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{}", text(out));
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {}",
        text(out)
    );
    assert!(
        err.lines().any(|l| l.starts_with("strata: ")),
        "no one-line error: {}",
        text(out)
    );
}

/// Writes `big` random files and `small` text files under `dir`; each
/// `generation` gives the big files new content.
fn make_tree(
    dir: &Path,
    generation: u64,
    big: usize,
    big_len: usize,
    small: usize,
) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..big {
        files.insert(
            PathBuf::from(format!("big/{i}.bin")),
            common::random_bytes(generation * 1000 + i as u64, big_len),
        );
    }
    for i in 0..small {
        let text = format!("small file {i}\n").repeat(1 + i % 50);
        files.insert(
            PathBuf::from(format!("small/{}/{i}.txt", i % 7)),
            text.into_bytes(),
        );
    }
    for (p, data) in &files {
        let full = dir.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    }
    files
}

fn assert_restored(root: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for (p, data) in files {
        let got = std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(got == *data, "{} differs after restore", p.display());
    }
}

// ---------------------------------------------------------------- crash

/// Starts a backup of `src`, SIGKILLs it after `delay` unless it has ended;
/// true when it was killed.
fn backup_killed_after(repo: &Path, pw: &Path, src: &Path, delay: Duration) -> bool {
    let mut child = strata()
        .arg("--repo")
        .arg(repo)
        .arg("--password-file")
        .arg(pw)
        .args(["backup", "-q", "--threads", "2"])
        .arg(src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    if running {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    running
}

#[test]
fn backup_killed_at_random_moments_leaves_a_usable_repository() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "crash test\n").unwrap();
    let repo = dir.path().join("repo");
    let src = dir.path().join("src");
    let run = |args: &[&str]| {
        strata()
            .arg("--repo")
            .arg(&repo)
            .arg("--password-file")
            .arg(&pw)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "init",
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--pack-size-mib",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // How long one backup of new data takes here, so that the kills land
    // inside backups whatever the build and machine.
    let mut files = make_tree(&src, 0, 12, 3 << 20, 300);
    let started = Instant::now();
    let out = run(&["backup", "-q", "--threads", "2", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let one_backup = started.elapsed();

    // Every round backs up new data and is killed at a random moment of it.
    let kills: usize = std::env::var("STRATA_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    // A backup that finishes before its kill shows the estimate was too long
    // (the first backup also pays for a cold page cache), so the estimate
    // shrinks and the round is tried again, up to three times as many rounds.
    let mut killed = 0;
    let mut estimate = one_backup;
    for round in 0..kills * 3 {
        if killed == kills {
            break;
        }
        files = make_tree(&src, round as u64 + 1, 12, 3 << 20, 300);
        let delay = estimate.mul_f64(rand::random::<f64>());
        if backup_killed_after(&repo, &pw, &src, delay) {
            killed += 1;
        } else {
            estimate = estimate.mul_f64(0.7);
        }
        let out = run(&["check"]);
        assert!(
            out.status.success(),
            "check after kill {round}: {}",
            text(&out)
        );
    }
    assert!(
        killed * 2 >= kills,
        "only {killed} of {kills} backups were still running when killed"
    );

    // New data, a kill late in its backup: the next backup finishes and
    // re-uses what the killed one uploaded.
    let mut reused = None;
    for attempt in 0..6u32 {
        files = make_tree(&src, 1000 + u64::from(attempt), 12, 3 << 20, 300);
        let total: usize = files.values().map(Vec::len).sum();
        let delay = estimate.mul_f64(0.8f64.powi(attempt as i32 + 1));
        if !backup_killed_after(&repo, &pw, &src, delay) {
            continue;
        }
        let out = run(&["--json", "backup", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let summary: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .expect("summary line");
        let added = summary["data_added"].as_u64().unwrap() as usize;
        if added < total {
            reused = Some((added, total));
            break;
        }
    }
    let (added, total) =
        reused.expect("no backup killed late re-used any of its uploads in the next run");
    let out = run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));

    // Prune reclaims what the killed runs left unindexed, and nothing else.
    let out = run(&["prune", "--grace", "0s"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("not in any index"),
        "orphans left after prune: {all}"
    );
    let target = dir.path().join("restored");
    let out = run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_restored(&target.join(src.strip_prefix("/").unwrap()), &files);
    eprintln!(
        "{killed} of {kills} backups killed mid-way (one backup takes {one_backup:?}); \
         after a late kill the next backup added {added} of {total} bytes"
    );
}

// ---------------------------------------------------------------- network faults

#[derive(Default, Debug)]
struct FaultCounts {
    connections: AtomicU64,
    resets: AtomicU64,
    errors_503: AtomicU64,
    stalls: AtomicU64,
    truncations: AtomicU64,
}

impl FaultCounts {
    fn injected(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
            + self.errors_503.load(Ordering::Relaxed)
            + self.stalls.load(Ordering::Relaxed)
            + self.truncations.load(Ordering::Relaxed)
    }
}

/// A TCP proxy on 127.0.0.1 that breaks a share of the connections it carries.
struct FaultProxy {
    addr: SocketAddr,
    counts: Arc<FaultCounts>,
    /// Probability, in thousandths, that a connection gets a fault.
    rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr, rate_permille: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(FaultCounts::default());
        let rate = Arc::new(AtomicU64::new(rate_permille));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, rate, stop) = (counts.clone(), rate.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let (counts, rate) = (counts.clone(), rate.load(Ordering::Relaxed));
                            std::thread::spawn(move || serve(client, upstream, &counts, rate));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FaultProxy {
            addr,
            counts,
            rate,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, counts: &FaultCounts, rate: u64) {
    counts.connections.fetch_add(1, Ordering::Relaxed);
    let roll = rand::random::<u64>() % 1000;
    let fault = if roll < rate { Some(roll % 4) } else { None };
    match fault {
        Some(0) => {
            counts.resets.fetch_add(1, Ordering::Relaxed);
            // Linger 0 turns the close into a TCP reset.
            let _ = socket_reset(&client);
        }
        Some(1) => {
            counts.errors_503.fetch_add(1, Ordering::Relaxed);
            let mut client = client;
            let _ = read_request_head(&mut client);
            let _ = client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = client.shutdown(Shutdown::Both);
        }
        Some(2) => {
            counts.stalls.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(1500));
            pipe(client, upstream, None);
        }
        Some(_) => {
            counts.truncations.fetch_add(1, Ordering::Relaxed);
            let cut = 1 + rand::random::<u64>() % (256 * 1024);
            pipe(client, upstream, Some(cut));
        }
        None => pipe(client, upstream, None),
    }
}

fn socket_reset(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    s.shutdown(Shutdown::Both)
}

fn read_request_head(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Copies both ways; with `cut`, the reply is cut off after that many bytes.
fn pipe(client: TcpStream, upstream: SocketAddr, cut: Option<u64>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    match cut {
        None => {
            let _ = std::io::copy(&mut s_read, &mut c_write);
        }
        Some(n) => {
            let _ = std::io::copy(&mut (&mut s_read).take(n), &mut c_write);
            let _ = s_read.shutdown(Shutdown::Both);
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// A config for the S3 repository at `prefix` through `endpoint`. Through the
/// proxy, idle connections are not reused, so faults strike single requests.
fn s3_config(dir: &Path, name: &str, s3: &S3, endpoint: &str, prefix: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[repository]\nurl = \"s3://{}/{prefix}\"\n\n[repository.options]\naws_endpoint = \"{endpoint}\"\naws_access_key_id = \"{}\"\naws_secret_access_key = \"{}\"\npool_max_idle_per_host = \"0\"\n",
            s3.bucket, s3.key, s3.secret
        ),
    )
    .unwrap();
    path
}

#[test]
fn backups_and_restores_through_a_faulty_network_are_correct_or_fail_cleanly() {
    let Some(s3) = s3_server() else { return };
    let upstream: SocketAddr = s3
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("STRATA_TEST_S3_ENDPOINT is http://127.0.0.1:PORT");
    let rate: u64 = std::env::var("STRATA_FAULT_RATE_PERMILLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let proxy = FaultProxy::start(upstream, rate);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "faults\n").unwrap();
    let prefix = format!(
        "faults-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let faulty = s3_config(dir.path(), "faulty.toml", &s3, &proxy.endpoint(), &prefix);
    let direct = s3_config(dir.path(), "direct.toml", &s3, &s3.endpoint, &prefix);
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
    // Like a user would: run again when a command fails.
    let attempt = |config: &Path, args: &[&str], tries: usize| -> Option<Output> {
        for _ in 0..tries {
            let out = run(config, args);
            if out.status.success() {
                return Some(out);
            }
            assert_clean_failure(&out);
            eprintln!(
                "attempt failed cleanly: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        None
    };

    let src = dir.path().join("src");
    let files = make_tree(&src, 0, 10, 1 << 20, 150);
    attempt(
        &faulty,
        &[
            "init",
            "--argon2-memory-kib",
            "1024",
            "--argon2-iterations",
            "1",
            "--pack-size-mib",
            "1",
        ],
        4,
    )
    .expect("init never got through at this fault rate");
    attempt(&faulty, &["backup", "-q", src.to_str().unwrap()], 4)
        .expect("backup never got through at this fault rate");

    let mut restores_ok = 0;
    for i in 0..3 {
        let target = dir.path().join(format!("restored-{i}"));
        let out = run(
            &faulty,
            &["restore", "latest", "--target", target.to_str().unwrap()],
        );
        if out.status.success() {
            // Success must mean every byte is right.
            assert_restored(&target.join(src.strip_prefix("/").unwrap()), &files);
            restores_ok += 1;
        } else {
            assert_clean_failure(&out);
        }
    }
    assert!(restores_ok > 0, "no restore succeeded through the proxy");
    let through_proxy = run(&faulty, &["check", "--read-data"]);
    if !through_proxy.status.success() {
        assert_clean_failure(&through_proxy);
    }
    // Without faults, the repository the faults wrote is whole.
    proxy.rate.store(0, Ordering::Relaxed);
    let out = run(&direct, &["check", "--read-data"]);
    assert!(out.status.success(), "{}", text(&out));

    let c = &proxy.counts;
    eprintln!("fault proxy: {c:?}");
    assert!(
        c.injected() > 0,
        "no fault was injected over {} connections",
        c.connections.load(Ordering::Relaxed)
    );
}
