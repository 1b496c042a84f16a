//! Ransomware protection on S3, against SeaweedFS: Object Lock retention on
//! every object strata writes, recovery after an attacker deletes objects,
//! and append-only credentials that can back up and forget but not prune.
//! `scripts/test` starts the server and exports STRATA_TEST_S3_* (with a
//! second identity, strata-append, for the append-only tests); without them
//! these tests say so and pass only outside CI.

#![cfg(feature = "object-lock")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::types::ObjectLockRetentionMode;
use common::{
    CHEAP_INIT, Compare, Env, assert_success, compare_trees, random_bytes, restored, stderr,
};
use strata::store::block_on;

/// Multipart threshold of object_store: packs this large must be locked too.
const MULTIPART: u64 = 16 * 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

struct Server {
    endpoint: String,
    key: String,
    secret: String,
    /// Key, secret and policy principal of an identity that may read, write
    /// and list (deletes are denied per bucket by the tests).
    append: Option<(String, String, String)>,
}

fn server() -> Option<Server> {
    let get = |k: &str| std::env::var(k).ok();
    let Some(endpoint) = get("STRATA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run these tests against real servers: run them through ./scripts/test"
        );
        eprintln!("skipped: no test servers (run ./scripts/test, which starts SeaweedFS)");
        return None;
    };
    let append = match (
        get("STRATA_TEST_S3_APPEND_KEY"),
        get("STRATA_TEST_S3_APPEND_SECRET"),
        get("STRATA_TEST_S3_APPEND_PRINCIPAL"),
    ) {
        (Some(k), Some(s), Some(p)) => Some((k, s, p)),
        _ => None,
    };
    Some(Server {
        endpoint,
        key: get("STRATA_TEST_S3_KEY").unwrap_or_default(),
        secret: get("STRATA_TEST_S3_SECRET").unwrap_or_default(),
        append,
    })
}

/// An SDK client with the given keys (the test's own view of the bucket).
fn client(s: &Server, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(&s.endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

fn admin(s: &Server) -> Client {
    client(s, &s.key, &s.secret)
}

fn unique_bucket(tag: &str) -> String {
    format!(
        "strata-{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A config file for `s3://bucket/repo` with these keys and an optional
/// `object_lock` table.
fn write_config(
    env: &Env,
    name: &str,
    s: &Server,
    bucket: &str,
    keys: (&str, &str),
    lock: &str,
) -> PathBuf {
    let path = env.path(name);
    let mut text = format!(
        "[repository]\nurl = \"s3://{bucket}/repo\"\npassword_file = \"{}\"\n\
         options = {{ aws_endpoint = \"{}\", aws_access_key_id = \"{}\", aws_secret_access_key = \"{}\" }}\n",
        env.pw().display(),
        s.endpoint,
        keys.0,
        keys.1
    );
    if !lock.is_empty() {
        text.push_str(&format!("object_lock = {lock}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn strata(config: &Path) -> Command {
    let mut c = Env::bare();
    c.arg("--config").arg(config);
    c
}

fn ok(config: &Path, args: &[&str]) -> std::process::Output {
    let out = strata(config).args(args).output().unwrap();
    assert_success(&out, args);
    out
}

/// A source tree with one file large enough for a pack above the multipart
/// threshold, and a few small ones.
fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("big.bin"), random_bytes(7, 20 * 1024 * 1024)).unwrap();
    std::fs::write(src.join("small.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("sub/more.bin"), random_bytes(8, 100_000)).unwrap();
    src
}

/// Every object version and delete marker in the bucket: (key, version id,
/// size, is_delete_marker).
fn versions(c: &Client, bucket: &str) -> Vec<(String, String, u64, bool)> {
    let out = block_on(c.list_object_versions().bucket(bucket).send()).unwrap();
    assert_ne!(
        out.is_truncated(),
        Some(true),
        "more versions than one page"
    );
    let mut all: Vec<_> = out
        .versions()
        .iter()
        .map(|v| {
            (
                v.key().unwrap().to_string(),
                v.version_id().unwrap_or_default().to_string(),
                v.size().unwrap_or_default() as u64,
                false,
            )
        })
        .collect();
    all.extend(out.delete_markers().iter().map(|d| {
        (
            d.key().unwrap().to_string(),
            d.version_id().unwrap_or_default().to_string(),
            0,
            true,
        )
    }));
    all
}

/// The current objects (key → size, ETag) under the repository prefix.
fn listing(c: &Client, bucket: &str) -> BTreeMap<String, (i64, String)> {
    let out = block_on(c.list_objects_v2().bucket(bucket).prefix("repo/").send()).unwrap();
    assert_ne!(out.is_truncated(), Some(true));
    out.contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap().to_string(),
                (
                    o.size().unwrap_or_default(),
                    o.e_tag().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn folder(key: &str) -> &str {
    let rest = key.strip_prefix("repo/").unwrap_or(key);
    rest.split('/').next().unwrap()
}

#[test]
fn every_object_is_locked_deleted_packs_come_back_and_restore_is_identical() {
    let Some(s) = server() else { return };
    let c = admin(&s);
    let env = Env::empty();
    let bucket = unique_bucket("lock");
    let config = write_config(
        &env,
        "lock.toml",
        &s,
        &bucket,
        (&s.key, &s.secret),
        "{ mode = \"governance\", days = 1 }",
    );
    let src = source(&env);
    let before = SystemTime::now();
    // init creates the bucket, with Object Lock enabled.
    ok(&config, &CHEAP_INIT);
    ok(&config, &["backup", src.to_str().unwrap()]);
    let after = SystemTime::now();

    let lock = block_on(c.get_object_lock_configuration().bucket(&bucket).send()).unwrap();
    assert_eq!(
        lock.object_lock_configuration()
            .and_then(|l| l.object_lock_enabled())
            .map(|e| e.as_str()),
        Some("Enabled")
    );
    let all = versions(&c, &bucket);
    let folders: std::collections::BTreeSet<&str> = all.iter().map(|(k, ..)| folder(k)).collect();
    for f in ["keys", "config", "data", "index", "snapshots"] {
        assert!(folders.contains(f), "no {f} object in {all:?}");
    }
    assert!(
        all.iter()
            .any(|(k, _, size, _)| folder(k) == "data" && *size >= MULTIPART),
        "no pack above the multipart threshold: {all:?}"
    );
    let earliest = before + DAY - Duration::from_secs(60);
    let latest = after + DAY + Duration::from_secs(60);
    let mut checked = 0;
    for (key, version, _, marker) in &all {
        if *marker {
            continue; // the released lock's delete marker holds no data
        }
        let r = governance_retention(&c, &bucket, key, version);
        let until = SystemTime::try_from(*r.retain_until_date().unwrap()).unwrap();
        assert!(
            until >= earliest && until <= latest,
            "{key}: retained until {until:?}, expected about a day from now"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} versions");

    // A locked version cannot be deleted...
    let (pack, pack_version) = all
        .iter()
        .find(|(k, _, _, m)| folder(k) == "data" && !m)
        .map(|(k, v, ..)| (k.clone(), v.clone()))
        .unwrap();
    let refused = block_on(
        c.delete_object()
            .bucket(&bucket)
            .key(&pack)
            .version_id(&pack_version)
            .send(),
    );
    assert!(refused.is_err(), "deleting a locked version succeeded");

    // ...so what an attacker "deletes" only gets a delete marker: check
    // notices the packs are gone, and deleting the markers brings them back.
    let packs: Vec<String> = listing(&c, &bucket)
        .into_keys()
        .filter(|k| folder(k) == "data")
        .collect();
    for k in &packs {
        block_on(c.delete_object().bucket(&bucket).key(k).send()).unwrap();
    }
    let out = strata(&config).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "check passed without packs");
    for (key, version, _, marker) in versions(&c, &bucket) {
        if marker && folder(&key) == "data" {
            block_on(
                c.delete_object()
                    .bucket(&bucket)
                    .key(&key)
                    .version_id(&version)
                    .send(),
            )
            .unwrap();
        }
    }
    ok(&config, &["check", "--read-data"]);

    let target = env.path("restore");
    ok(
        &config,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let n = compare_trees(&src, &restored(&target, &src), &Compare::all());
    assert!(n >= 4);
}

#[test]
fn init_refuses_a_bucket_without_object_lock() {
    let Some(s) = server() else { return };
    let c = admin(&s);
    let env = Env::empty();
    let bucket = unique_bucket("nolock");
    block_on(c.create_bucket().bucket(&bucket).send()).unwrap();
    let config = write_config(
        &env,
        "lock.toml",
        &s,
        &bucket,
        (&s.key, &s.secret),
        "{ mode = \"governance\", days = 1 }",
    );
    let out = strata(&config).args(CHEAP_INIT).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not have S3 Object Lock enabled"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(listing(&c, &bucket).is_empty(), "init wrote objects");
}

#[test]
fn append_only_credentials_back_up_and_forget_but_prune_refuses_first() {
    let Some(s) = server() else { return };
    let Some((akey, asecret, principal)) = s.append.clone() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test with the strata-append identity (scripts/servers)"
        );
        eprintln!("skipped: no append-only identity (STRATA_TEST_S3_APPEND_*)");
        return;
    };
    let c = admin(&s);
    let env = Env::empty();
    let bucket = unique_bucket("append");
    block_on(c.create_bucket().bucket(&bucket).send()).unwrap();
    // The documented policy's deny part (docs/IMMUTABILITY.md): the agent
    // may delete its locks and forgotten snapshots, nothing else.
    let res = |p: &str| format!("arn:aws:s3:::{bucket}/repo/{p}");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AppendOnlyAgent",
            "Effect": "Deny",
            "Principal": {"AWS": principal},
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": [res("config"), res("keys/*"), res("data/*"), res("index/*"), res("deletions/*")],
        }],
    });
    block_on(
        c.put_bucket_policy()
            .bucket(&bucket)
            .policy(policy.to_string())
            .send(),
    )
    .unwrap();
    let admin_config = write_config(&env, "admin.toml", &s, &bucket, (&s.key, &s.secret), "");
    let agent = write_config(&env, "agent.toml", &s, &bucket, (&akey, &asecret), "");
    ok(&admin_config, &CHEAP_INIT);

    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), random_bytes(1, 300_000)).unwrap();
    ok(&agent, &["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a.bin"), random_bytes(2, 300_000)).unwrap();
    ok(&agent, &["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("a.bin"), random_bytes(3, 300_000)).unwrap();
    ok(&agent, &["backup", src.to_str().unwrap()]);
    ok(&agent, &["forget", "--keep-last", "2"]);

    let snapshots = |config: &Path| {
        let out = ok(config, &["--json", "snapshots"]);
        common::json_lines(&out.stdout)
            .iter()
            .filter(|v| v["message_type"] == "snapshot")
            .count()
    };
    let kept = snapshots(&agent);
    assert_eq!(kept, 2);
    let before = listing(&c, &bucket);
    let locks_before = before.keys().filter(|k| folder(k) == "locks").count();
    assert_eq!(
        locks_before, 0,
        "the agent's backups left locks: {before:?}"
    );

    for args in [
        vec!["prune", "--grace", "0s"],
        vec!["forget", "--keep-last", "1", "--prune", "--grace", "0s"],
    ] {
        let out = strata(&agent).args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("prune needs delete permission on s3://") && err.contains("append-only"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert_eq!(
            listing(&c, &bucket),
            before,
            "{args:?} changed the repository"
        );
    }
    assert_eq!(snapshots(&agent), 2);
    ok(&agent, &["check", "--read-data"]);

    // With credentials that may delete, the same prune goes through.
    ok(
        &admin_config,
        &["forget", "--keep-last", "1", "--prune", "--grace", "0s"],
    );
    assert_eq!(snapshots(&agent), 1);
    ok(&agent, &["check", "--read-data"]);
}

#[test]
fn a_pool_member_with_object_lock_locks_its_copies() {
    let Some(s) = server() else { return };
    let c = admin(&s);
    let env = Env::empty();
    let bucket = unique_bucket("pool");
    let config = env.path("pool.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\npassword_file = \"{pw}\"\n\n[pool]\n\n\
             [[pool.members]]\nname = \"local\"\nurl = \"{local}\"\n\n\
             [[pool.members]]\nname = \"s3\"\nurl = \"s3://{bucket}/repo\"\n\
             options = {{ aws_endpoint = \"{ep}\", aws_access_key_id = \"{k}\", aws_secret_access_key = \"{sec}\" }}\n\
             object_lock = {{ mode = \"governance\", days = 2 }}\n",
            pw = env.pw().display(),
            local = env.path("local").display(),
            ep = s.endpoint,
            k = s.key,
            sec = s.secret,
        ),
    )
    .unwrap();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), random_bytes(4, 50_000)).unwrap();
    ok(&config, &CHEAP_INIT);
    ok(&config, &["backup", src.to_str().unwrap()]);
    let all = versions(&c, &bucket);
    let data: Vec<_> = all
        .iter()
        .filter(|(k, _, _, m)| !m && folder(k) != "locks")
        .collect();
    assert!(data.len() >= 5, "{all:?}");
    for (key, version, ..) in data {
        governance_retention(&c, &bucket, key, version);
    }
}

/// The retention of one object version, asserted to be in governance mode.
fn governance_retention(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: &str,
) -> aws_sdk_s3::types::ObjectLockRetention {
    let r = block_on(
        c.get_object_retention()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .send(),
    )
    .unwrap_or_else(|e| panic!("{key} has no retention: {e:?}"));
    let r = r.retention().unwrap().clone();
    assert_eq!(
        r.mode(),
        Some(&ObjectLockRetentionMode::Governance),
        "{key}"
    );
    r
}

#[test]
fn object_lock_off_s3_is_a_one_line_config_error() {
    let env = Env::empty();
    let repo_cfg = env.path("local.toml");
    std::fs::write(
        &repo_cfg,
        format!(
            "[repository]\nurl = \"{}\"\nobject_lock = {{ mode = \"governance\", days = 1 }}\n",
            env.repo().display()
        ),
    )
    .unwrap();
    let pool_cfg = env.path("pool.toml");
    std::fs::write(
        &pool_cfg,
        "[pool]\n[[pool.members]]\nname = \"az\"\nurl = \"az://c/p\"\n\
         object_lock = { mode = \"compliance\", days = 1 }\n",
    )
    .unwrap();
    let bad_mode = env.path("mode.toml");
    std::fs::write(
        &bad_mode,
        "[repository]\nurl = \"s3://b/p\"\nobject_lock = { mode = \"forever\", days = 1 }\n",
    )
    .unwrap();
    let pool_with_repo_lock = env.path("pool-repo.toml");
    std::fs::write(
        &pool_with_repo_lock,
        format!(
            "[repository]\nobject_lock = {{ mode = \"governance\", days = 1 }}\n\
             [pool]\n[[pool.members]]\nname = \"s3\"\nurl = \"s3://b/p\"\n\
             [[pool.members]]\nname = \"local\"\nurl = \"{}\"\n",
            env.repo().display()
        ),
    )
    .unwrap();
    for (cfg, want) in [
        (
            &pool_with_repo_lock,
            "set object_lock on each [[pool.members]]",
        ),
        (&repo_cfg, "object_lock works only on S3"),
        (
            &pool_cfg,
            "[[pool.members]] \"az\": object_lock works only on S3",
        ),
        (&bad_mode, "unknown variant `forever`"),
    ] {
        let out = strata(cfg).arg("snapshots").output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
