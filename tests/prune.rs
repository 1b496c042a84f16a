//! Retention and prune while backups run: nothing a kept snapshot needs is
//! ever deleted, and a prune killed at any moment leaves a consistent
//! repository that the next prune finishes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "prune test\n").unwrap();
        let r = Repo { dir };
        r.ok(&[&common::CHEAP_INIT[..], &["--pack-size-mib", "1"]].concat());
        r
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::cargo_bin("strata").unwrap();
        c.arg("--repo")
            .arg(self.path("repo"))
            .arg("--password-file")
            .arg(self.path("pw"))
            .args(args)
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_REPO");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ok(&a)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// What host `h` backs up in iteration `i`: shared data, per-host data and
/// data new in every iteration (which becomes garbage once forgotten).
fn content(h: usize, i: usize) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("common.bin".into(), common::random_bytes(1, 700_000));
    m.insert(
        "host.bin".into(),
        common::random_bytes(100 + h as u64, 400_000),
    );
    m.insert(
        format!("iter-{i}.bin"),
        common::random_bytes(1000 + (h * 100 + i) as u64, 300_000),
    );
    m.insert(
        "note.txt".into(),
        format!("host {h} iteration {i}\n").into_bytes(),
    );
    m
}

fn write_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// Restores every snapshot and compares it with what its host and iteration
/// tags say it must hold.
fn verify_all_snapshots(repo: &Repo) -> usize {
    let snaps: Vec<serde_json::Value> = repo
        .json(&["snapshots"])
        .into_iter()
        .filter(|v| v["message_type"] == "snapshot")
        .collect();
    for s in &snaps {
        let id = s["id"].as_str().unwrap();
        let host: usize = s["hostname"]
            .as_str()
            .unwrap()
            .trim_start_matches('h')
            .parse()
            .unwrap();
        let iter: usize = s["tags"][0]
            .as_str()
            .unwrap()
            .trim_start_matches("iter-")
            .parse()
            .unwrap();
        let target = repo.path(&format!("restore-{id}"));
        repo.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        let src = repo.path(&format!("src-{host}"));
        let root = target.join(src.strip_prefix("/").unwrap());
        let expected = content(host, iter);
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            expected.keys().cloned().collect::<Vec<_>>(),
            "snapshot {id}"
        );
        for (name, data) in &expected {
            assert!(
                std::fs::read(root.join(name)).unwrap() == *data,
                "snapshot {id}: {name} differs"
            );
        }
        std::fs::remove_dir_all(&target).unwrap();
    }
    snaps.len()
}

#[test]
fn prune_runs_safely_while_backups_run() {
    let repo = Arc::new(Repo::new());
    // Short in the suite; STRATA_STRESS_ITERATIONS=200 for a long run by hand.
    let hosts = 3;
    let iterations: usize = std::env::var("STRATA_STRESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let running = Arc::new(AtomicUsize::new(hosts));
    let mut threads = Vec::new();
    for h in 0..hosts {
        let (repo, running) = (repo.clone(), running.clone());
        threads.push(std::thread::spawn(move || {
            // Counts this host as done even if a backup fails (the panic
            // then surfaces at join instead of the prune loop spinning).
            struct Done(Arc<AtomicUsize>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _done = Done(running.clone());
            let src = repo.path(&format!("src-{h}"));
            for i in 0..iterations {
                write_tree(&src, &content(h, i));
                let host = format!("h{h}");
                let tag = format!("iter-{i}");
                repo.ok(&[
                    "backup",
                    "-q",
                    "--host",
                    &host,
                    "--tag",
                    &tag,
                    src.to_str().unwrap(),
                ]);
            }
        }));
    }
    let mut prunes = 0;
    while running.load(Ordering::SeqCst) > 0 || prunes < 3 {
        repo.ok(&[
            "forget",
            "--keep-last",
            "2",
            "--group-by",
            "host",
            "--prune",
            "--grace",
            "0s",
            "--max-unused",
            "0",
        ]);
        prunes += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    repo.ok(&["check", "--read-data"]);
    // The last forget may have run before the last backups committed, so a
    // few more than 2 per host can be left; every one must restore exactly.
    let left = verify_all_snapshots(&repo);
    assert!(
        (hosts * 2..=hosts * iterations).contains(&left),
        "{left} snapshots left"
    );

    // With the backups done, one more prune deletes everything left over.
    let report = repo.json(&[
        "forget",
        "--keep-last",
        "2",
        "--group-by",
        "host",
        "--prune",
        "--grace",
        "0s",
    ]);
    let prune = report
        .iter()
        .find(|v| v["message_type"] == "prune")
        .unwrap();
    assert_eq!(prune["markers_waiting"], 0, "{prune}");
    repo.ok(&["check", "--read-data"]);
    assert_eq!(verify_all_snapshots(&repo), hosts * 2);
    let deletions = std::fs::read_dir(repo.path("repo/deletions"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(deletions, 0, "no marker may be left behind");
    eprintln!(
        "{prunes} prune runs alongside {} backups",
        hosts * iterations
    );
}

fn spawn_quiet(repo: &Repo, args: &[&str]) -> Child {
    repo.cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn prune_killed_at_random_moments_leaves_a_consistent_repository() {
    let repo = Repo::new();
    let src = repo.path("src-0");
    for i in 0..6 {
        write_tree(&src, &content(0, i));
        repo.ok(&[
            "backup",
            "-q",
            "--host",
            "h0",
            "--tag",
            &format!("iter-{i}"),
            src.to_str().unwrap(),
        ]);
    }
    repo.ok(&["forget", "--keep-last", "2"]);
    let packs_before = count_files(&repo.path("repo/data"));

    let kills = 12;
    let mut rng_state = 0x1234_5678u64;
    for k in 0..kills {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(5 + (rng_state >> 33) % 400);
        let mut child = spawn_quiet(&repo, &["prune", "--grace", "0s", "--max-unused", "0"]);
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = repo.run(&["check", "--read-data"]);
        assert!(
            out.status.success(),
            "check failed after prune was killed (kill {k}, after {delay:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A complete run finishes the job.
    repo.ok(&["prune", "--grace", "0s", "--max-unused", "0"]);
    repo.ok(&["check", "--read-data"]);
    assert_eq!(verify_all_snapshots(&repo), 2);
    let packs_after = count_files(&repo.path("repo/data"));
    assert!(
        packs_after < packs_before,
        "prune freed nothing ({packs_before} -> {packs_after} packs)"
    );
    assert_eq!(
        std::fs::read_dir(repo.path("repo/deletions"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| {
                let p = e.unwrap().path();
                if p.is_dir() { count_files(&p) } else { 1 }
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn forget_dry_run_explains_every_decision_for_200_snapshots() {
    let repo = Repo::new();
    let src = repo.path("src-0");
    write_tree(&src, &content(0, 0));
    // One snapshot every 22 hours for 200 snapshots (about 6 months).
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T06:00:00Z").unwrap();
    for i in 0..200 {
        let t = (start + chrono::Duration::hours(22 * i)).to_rfc3339();
        repo.ok(&[
            "backup",
            "-q",
            "--host",
            "h0",
            "--tag",
            "iter-0",
            "--time",
            &t,
            src.to_str().unwrap(),
        ]);
    }
    let out = repo.json(&[
        "forget",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--prune",
        "--dry-run",
    ]);
    let decisions: Vec<_> = out
        .iter()
        .filter(|v| v["message_type"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 200, "every snapshot gets a decision");
    for d in &decisions {
        let reasons = d["reasons"].as_array().unwrap();
        assert_eq!(
            d["keep"].as_bool().unwrap(),
            !reasons.is_empty(),
            "a kept snapshot says why: {d}"
        );
        for r in reasons {
            let r = r.as_str().unwrap();
            assert!(
                r.starts_with("daily ") || r.starts_with("weekly "),
                "unexpected reason {r}"
            );
        }
    }
    let kept = decisions.iter().filter(|d| d["keep"] == true).count();
    // 7 daily (snapshots fall on 7 distinct days) plus weekly ones in 4 weeks,
    // some of which coincide with the daily ones.
    assert!((7..=11).contains(&kept), "kept {kept}");
    let prune = out.iter().find(|v| v["message_type"] == "prune").unwrap();
    assert_eq!(prune["dry_run"], true);
    // A dry run changes nothing.
    assert_eq!(
        repo.json(&["snapshots"])
            .iter()
            .filter(|v| v["message_type"] == "snapshot")
            .count(),
        200
    );
}

/// Blobs stored twice (two backups that raced each other) must not make
/// prune repack the same data back and forth: a second prune finds nothing.
#[test]
fn duplicated_blobs_settle_after_one_prune() {
    let repo = Repo::new();
    let src = repo.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // Even-numbered files now, odd ones later: read in name order, so the
    // second backup's packs mix shared blobs with new ones.
    for i in (0..24).step_by(2) {
        std::fs::write(
            src.join(format!("f{i:02}")),
            common::random_bytes(100 + i, 300_000),
        )
        .unwrap();
    }
    repo.ok(&["backup", "-q", "--host", "a", src.to_str().unwrap()]);
    // Hide the first index so the second backup stores the same blobs again,
    // next to new ones, then bring it back: every shared blob is in two packs.
    let index_dir = repo.path("repo/index");
    let hidden = repo.path("hidden-index");
    std::fs::rename(&index_dir, &hidden).unwrap();
    std::fs::create_dir(&index_dir).unwrap();
    for i in (1..24).step_by(2) {
        std::fs::write(
            src.join(format!("f{i:02}")),
            common::random_bytes(100 + i, 300_000),
        )
        .unwrap();
    }
    let out = repo
        .cmd(&["backup", "-q", "--host", "b", src.to_str().unwrap()])
        .env("STRATA_NO_CACHE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in std::fs::read_dir(&hidden).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), index_dir.join(e.file_name())).unwrap();
    }

    let prune = |label: &str| {
        let report = repo.json(&["prune", "--grace", "0s", "--max-unused", "0"]);
        let p = report
            .iter()
            .find(|v| v["message_type"] == "prune")
            .unwrap_or_else(|| panic!("{label}: no prune report"))
            .clone();
        repo.ok(&["check", "--read-data"]);
        p
    };
    let first = prune("first");
    let second = prune("second");
    assert_eq!(second["packs_marked"], 0, "first {first}\nsecond {second}");
    assert_eq!(
        second["packs_repacked"], 0,
        "first {first}\nsecond {second}"
    );
    for s in repo
        .json(&["snapshots"])
        .iter()
        .filter(|v| v["message_type"] == "snapshot")
    {
        let id = s["id"].as_str().unwrap();
        let target = repo.path(&format!("restored-{id}"));
        repo.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        let restored = target.join(src.strip_prefix("/").unwrap());
        for i in (0..24).step_by(2) {
            let name = format!("f{i:02}");
            assert!(
                std::fs::read(restored.join(&name)).unwrap()
                    == common::random_bytes(100 + i, 300_000)
            );
        }
    }
}
