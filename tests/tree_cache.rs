//! Request budgets of tree walks on object storage (issue 13): with the tree
//! pack cache, a no-change backup and a restore read trees with one request
//! per tree pack when the cache is empty (a new pod) and with none when it
//! is warm, instead of one request per directory. Counts, not times, from
//! the `requests` of the `--json` summaries.
//!
//! Runs against SeaweedFS (S3): `scripts/test`, or `eval "$(scripts/servers
//! start)"`, exports STRATA_TEST_S3_*; without them this test says so and
//! passes only outside CI.

mod common;

use common::{S3, s3_server};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn options(s3: &S3) -> BTreeMap<String, String> {
    [
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_access_key_id", s3.key.as_str()),
        ("aws_secret_access_key", s3.secret.as_str()),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A source tree of 300 directories (20 × 15), one small file in each.
fn make_source(root: &Path) {
    for a in 0..20 {
        for b in 0..15 {
            let d = root.join(format!("dir{a:02}/sub{b:02}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("file.txt"),
                format!("file {a} {b}\n").repeat(a + b + 1),
            )
            .unwrap();
        }
    }
}

struct Run<'a> {
    config: &'a Path,
    pw: &'a Path,
}

impl Run<'_> {
    /// `strata --json ARGS` with the tree cache in `cache` (or no cache at
    /// all); asserts success and returns the summary line.
    fn summary(&self, cache: Option<&Path>, args: &[&str]) -> Value {
        let mut c = common::Env::bare();
        c.arg("--config")
            .arg(self.config)
            .arg("--password-file")
            .arg(self.pw)
            .arg("--json")
            .args(args);
        if let Some(cache) = cache {
            c.env_remove("STRATA_NO_CACHE").env("XDG_CACHE_HOME", cache);
        }
        let out = c.output().unwrap();
        common::assert_success(&out, args);
        let lines = common::json_lines(&out.stdout);
        common::summary(&lines)
    }
}

fn gets(summary: &Value) -> u64 {
    summary["requests"]["get"]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests.get in {summary}"))
}

fn total(summary: &Value) -> u64 {
    let r = &summary["requests"];
    ["get", "put", "head", "list", "delete"]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum()
}

#[test]
fn tree_walks_cost_one_request_per_tree_pack_cold_and_none_warm() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let pw = root.join("pw");
    std::fs::write(&pw, format!("{}\n", common::PASSWORD)).unwrap();
    let prefix = format!(
        "tree-cache-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let url = format!("s3://{}/{prefix}", s3.bucket);
    let config = root.join("repo.toml");
    let opts: Vec<String> = options(&s3)
        .iter()
        .map(|(k, v)| format!("{k} = \"{v}\""))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{url}\"\n\n[repository.options]\n{}\n",
            opts.join("\n")
        ),
    )
    .unwrap();
    let src = root.join("src");
    make_source(&src);
    let run = Run {
        config: &config,
        pw: &pw,
    };
    let src_arg = src.to_str().unwrap();
    let cache = |name: &str| -> PathBuf {
        let p = root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };

    let mut init = common::Env::bare();
    init.arg("--config")
        .arg(&config)
        .arg("--password-file")
        .arg(&pw)
        .args(common::CHEAP_INIT);
    let out = init.output().unwrap();
    common::assert_success(&out, &common::CHEAP_INIT);

    let first_cache = cache("first");
    let first = run.summary(Some(&first_cache), &["backup", src_arg]);
    // 321 and the directories above the source.
    assert!(first["dirs"].as_u64().unwrap() > 321, "{first}");

    // How many tree packs there are, from the index.
    let backend = std::sync::Arc::new(strata::store::open_url(&url, &options(&s3)).unwrap());
    let repo = strata::repo::Repository::open(backend, common::PASSWORD.as_bytes()).unwrap();
    let tree_packs = repo.load_index().unwrap().tree_packs().count() as u64;
    assert!(tree_packs >= 1);

    // The backup put the tree packs it wrote into its cache: its next
    // re-run reads no tree from the repository.
    let written: usize = std::fs::read_dir(first_cache.join("strata"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_dir(e.path().join("treepacks")).ok())
        .map(|d| d.count())
        .sum();
    assert_eq!(
        written as u64, tree_packs,
        "tree packs cached by the backup"
    );
    let next = run.summary(Some(&first_cache), &["backup", src_arg]);
    assert_eq!(next["files_unmodified"].as_u64(), Some(300));
    // Nor an index file or snapshot: what a backup writes is cached too,
    // so the config and the key file are all it fetches.
    assert!(
        gets(&next) <= 2,
        "re-run after the first: {}",
        next["requests"]
    );

    // Without the cache: a request per directory (the old way).
    let uncached = run.summary(None, &["backup", src_arg]);
    assert_eq!(uncached["files_unmodified"].as_u64(), Some(300));
    assert!(
        gets(&uncached) > 300,
        "uncached re-run: {}",
        uncached["requests"]
    );

    // A new pod: empty cache.
    let pod = cache("pod");
    let cold = run.summary(Some(&pod), &["backup", src_arg]);
    assert_eq!(cold["files_unmodified"].as_u64(), Some(300));
    assert!(
        gets(&cold) <= tree_packs + 20,
        "cold re-run: {} with {tree_packs} tree packs",
        cold["requests"]
    );
    // Warm: no request per tree at all.
    let warm = run.summary(Some(&pod), &["backup", src_arg]);
    assert_eq!(warm["files_unmodified"].as_u64(), Some(300));
    assert!(gets(&warm) <= 2, "warm re-run: {}", warm["requests"]);
    assert!(total(&warm) <= 20, "warm re-run: {}", warm["requests"]);
    assert!(
        pod.join("strata").read_dir().unwrap().next().is_some(),
        "the cache is under XDG_CACHE_HOME"
    );

    // Restores: trees from the cache; data packs read once each.
    let data_packs = repo
        .load_index()
        .unwrap()
        .pack_ids()
        .len()
        .saturating_sub(tree_packs as usize) as u64;
    let target = root.join("restore-warm");
    let warm_restore = run.summary(
        Some(&pod),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(warm_restore["files_restored"].as_u64(), Some(300));
    assert!(
        gets(&warm_restore) <= data_packs + 20,
        "warm restore: {} with {data_packs} data packs",
        warm_restore["requests"]
    );
    let target = root.join("restore-cold");
    let cold_restore = run.summary(
        Some(&cache("restore-pod")),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(cold_restore["files_restored"].as_u64(), Some(300));
    assert!(
        gets(&cold_restore) <= data_packs + tree_packs + 20,
        "cold restore: {} with {data_packs} data and {tree_packs} tree packs",
        cold_restore["requests"]
    );
    let restored = std::fs::read(
        target
            .join(src.strip_prefix("/").unwrap())
            .join("dir19/sub14/file.txt"),
    )
    .unwrap();
    assert_eq!(restored, "file 19 14\n".repeat(34).into_bytes());
    eprintln!(
        "tree packs {tree_packs}, data packs {data_packs}; GETs: uncached re-run {}, cold re-run {}, warm re-run {} ({} requests in all), warm restore {}, cold restore {}",
        gets(&uncached),
        gets(&cold),
        gets(&warm),
        total(&warm),
        gets(&warm_restore),
        gets(&cold_restore)
    );

    // A damaged cache file is dropped and fetched again, never trusted.
    let packs_dir = std::fs::read_dir(pod.join("strata"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("treepacks"))
        .find(|p| p.is_dir())
        .expect("a tree pack cache");
    for f in std::fs::read_dir(&packs_dir).unwrap().flatten() {
        let mut bytes = std::fs::read(f.path()).unwrap();
        for b in bytes.iter_mut().step_by(97) {
            *b ^= 0x55;
        }
        std::fs::write(f.path(), bytes).unwrap();
    }
    let repaired = run.summary(Some(&pod), &["backup", src_arg]);
    assert_eq!(repaired["files_unmodified"].as_u64(), Some(300));
    assert!(
        gets(&repaired) <= tree_packs + 20,
        "re-run over a damaged cache: {}",
        repaired["requests"]
    );
    let again = run.summary(Some(&pod), &["backup", src_arg]);
    assert!(gets(&again) <= 20, "after repair: {}", again["requests"]);

    // `ls` and `check` walk the same trees: ls from the warm cache, check
    // from the repository (one read per tree pack), both without a request
    // per directory.
    let mut ls = common::Env::bare();
    ls.arg("--config")
        .arg(&config)
        .arg("--password-file")
        .arg(&pw)
        .env_remove("STRATA_NO_CACHE")
        .env("XDG_CACHE_HOME", &pod)
        .env("STRATA_REQUEST_STATS", "1")
        .args(["ls", "latest"]);
    let out = ls.output().unwrap();
    common::assert_success(&out, &["ls"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains(" GET,"))
        .unwrap_or_else(|| panic!("no request line in {stderr}"));
    let ls_gets: u64 = line
        .split(", ")
        .next()
        .and_then(|p| p.rsplit(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(ls_gets <= 20, "ls: {line}");
}
