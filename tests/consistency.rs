//! The silent-loss defects of issue 14, each reproduced end to end with the
//! built binary on local repositories and local pools (the real-server pool
//! cases are in tests/pool.rs; the seeded simulation in tests/simulation.rs).

mod common;

use std::path::{Path, PathBuf};

use common::{Env, stderr, stdout};

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn latest_id(env: &Env) -> String {
    let snaps = env.json(&["snapshots"]);
    snaps
        .iter()
        .filter(|v| v["message_type"] == "snapshot" || v.get("id").is_some())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .next_back()
        .expect("a snapshot")
}

/// Issue 14.2: an index file that prune compacted away and that comes back
/// (a failed delete, a crash, a restored bucket version) must not make gone
/// packs live again: backup would deduplicate against them and lose data.
#[test]
fn old_index_files_stay_dead_after_compaction() {
    let env = Env::new();
    let src = env.path("src");
    let a = common::random_bytes(1, 2 << 20);
    let b = common::random_bytes(2, 300 << 10);
    write(&src.join("a"), &a);
    write(&src.join("b"), &b);
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = latest_id(&env);
    let old_index = env.path("old-index");
    copy_dir(&env.repo().join("index"), &old_index);

    std::fs::remove_file(src.join("a")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    env.ok(&["forget", &first]);
    env.ok(&["prune", "--grace", "0s", "--max-unused", "0"]);
    // The old index files come back.
    copy_dir(&old_index, &env.repo().join("index"));
    write(&src.join("a"), &a);
    let summary = env.backup_summary(&[src.to_str().unwrap()]);
    let added = summary["data_added"].as_u64().unwrap();
    assert!(
        added > 1 << 20,
        "the backup deduplicated `a` against a deleted pack: only {added} bytes added"
    );

    let target = env.path("target");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = common::restored(&target, &src);
    assert_eq!(std::fs::read(restored.join("a")).unwrap(), a);
    assert_eq!(std::fs::read(restored.join("b")).unwrap(), b);
    env.ok(&["check", "--read-data"]);
}

/// A pool of local folders, with a config file and the shared password.
struct LocalPool {
    env: Env,
    members: Vec<PathBuf>,
}

impl LocalPool {
    fn new(n: usize, quorum: usize) -> LocalPool {
        let env = Env::empty();
        let members: Vec<PathBuf> = (0..n).map(|i| env.path(&format!("m{i}"))).collect();
        let mut cfg = format!("[pool]\nwrite_quorum = {quorum}\n");
        for (i, m) in members.iter().enumerate() {
            cfg.push_str(&format!(
                "[[pool.members]]\nname = \"m{i}\"\nurl = \"{}\"\n",
                m.display()
            ));
        }
        std::fs::write(env.path("pool.toml"), cfg).unwrap();
        let pool = LocalPool { env, members };
        pool.ok(&common::CHEAP_INIT);
        pool
    }

    fn cmd(&self) -> assert_cmd::Command {
        let mut c = Env::bare();
        c.arg("--config")
            .arg(self.env.path("pool.toml"))
            .arg("--password-file")
            .arg(self.env.pw());
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd().args(args).output().unwrap();
        common::assert_no_panic(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        common::assert_success(&out, args);
        out
    }

    fn snapshot_ids(&self) -> Vec<String> {
        let out = self.ok(&["--json", "snapshots"]);
        common::json_lines(&out.stdout)
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Makes a member unreachable: its folder becomes a file.
    fn take_down(&self, i: usize) -> PathBuf {
        let aside = self.env.path(&format!("m{i}.aside"));
        std::fs::rename(&self.members[i], &aside).unwrap();
        std::fs::write(&self.members[i], b"not a directory").unwrap();
        aside
    }

    fn bring_back(&self, i: usize, aside: &Path) {
        std::fs::remove_file(&self.members[i]).unwrap();
        std::fs::rename(aside, &self.members[i]).unwrap();
    }
}

/// Issue 14.3: forget with a member down refuses before deleting anything,
/// and a member that missed a forget does not bring the snapshot back
/// through `pool repair`: the deletion is recorded and repair finishes it.
#[test]
fn forgotten_snapshots_stay_forgotten_across_members() {
    let pool = LocalPool::new(2, 1);
    let src = pool.env.path("src");
    write(&src.join("f"), &common::random_bytes(3, 100 << 10));
    pool.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("g"), b"second");
    pool.ok(&["backup", src.to_str().unwrap()]);
    let ids = pool.snapshot_ids();
    assert_eq!(ids.len(), 2);

    // A member down: forget refuses, and deletes nothing anywhere.
    let aside = pool.take_down(1);
    let out = pool.run(&["forget", &ids[0]]);
    assert!(!out.status.success(), "forget went ahead on a partial view");
    assert!(
        stderr(&out).contains("m1"),
        "the error names the member: {}",
        stderr(&out)
    );
    pool.bring_back(1, &aside);
    assert_eq!(pool.snapshot_ids().len(), 2);

    // The member misses the delete (it was restored from a copy taken before).
    let before = pool.env.path("m1.before");
    common::copy_tree(&pool.members[1], &before);
    pool.ok(&["forget", &ids[0]]);
    std::fs::remove_dir_all(&pool.members[1]).unwrap();
    common::copy_tree(&before, &pool.members[1]);
    // Readers ignore the snapshot that came back, with a warning.
    assert_eq!(pool.snapshot_ids(), vec![ids[1].clone()]);
    let out = pool.ok(&["snapshots"]);
    assert!(stderr(&out).contains("forgotten"), "{}", stderr(&out));
    let status = pool.run(&["pool", "status"]);
    assert!(
        stdout(&status).contains("deleted on purpose"),
        "{}",
        stdout(&status)
    );
    // Repair finishes the deletion instead of copying the snapshot back.
    pool.ok(&["pool", "repair"]);
    let snap = format!("snapshots/{}", ids[0]);
    for m in &pool.members {
        assert!(
            !m.join(&snap).exists(),
            "{} still holds {snap}",
            m.display()
        );
    }
    assert_eq!(pool.snapshot_ids(), vec![ids[1].clone()]);
}

/// Issue 14.3: prune refuses when a member is down, or when a member's
/// folder is gone (it used to list as empty), before it writes anything. A
/// member that fails to list but answers other requests (which a local
/// folder cannot be made to do) is covered by tests/simulation.rs.
#[test]
fn prune_refuses_on_partial_views() {
    let pool = LocalPool::new(2, 1);
    let src = pool.env.path("src");
    write(&src.join("f"), &common::random_bytes(4, 50 << 10));
    pool.ok(&["backup", src.to_str().unwrap()]);
    write(&src.join("g"), &common::random_bytes(5, 200 << 10));
    pool.ok(&["backup", src.to_str().unwrap()]);
    let ids = pool.snapshot_ids();
    // m0 lost the second snapshot; m1 is down.
    std::fs::remove_file(pool.members[0].join("snapshots").join(&ids[1])).unwrap();
    let aside = pool.take_down(1);
    let out = pool.run(&["prune", "--grace", "0s", "--max-unused", "0"]);
    assert!(!out.status.success(), "prune ran on a partial view");
    assert!(stderr(&out).contains("m1"), "{}", stderr(&out));
    assert!(
        !pool.members[0].join("deletions").exists()
            || std::fs::read_dir(pool.members[0].join("deletions"))
                .unwrap()
                .next()
                .is_none(),
        "prune marked packs on a partial view"
    );
    pool.bring_back(1, &aside);
    pool.ok(&["pool", "repair"]);
    let target = pool.env.path("t");
    pool.ok(&["restore", &ids[1], "--target", target.to_str().unwrap()]);
    let restored = common::restored(&target, &src);
    assert_eq!(
        std::fs::read(restored.join("g")).unwrap(),
        common::random_bytes(5, 200 << 10)
    );

    // A member whose folder is gone: refused too; backups go on.
    std::fs::remove_dir_all(&pool.members[1]).unwrap();
    let out = pool.run(&["prune", "--grace", "0s"]);
    assert!(
        !out.status.success(),
        "prune ran with a member's folder gone"
    );
    assert!(stderr(&out).contains("m1"), "{}", stderr(&out));
    pool.ok(&["backup", src.to_str().unwrap()]);
    pool.ok(&["pool", "repair"]);
    pool.ok(&["prune", "--grace", "0s"]);
}

/// Issue 14.4: `pool repair` never spreads a damaged copy.
#[test]
fn pool_repair_does_not_spread_damage() {
    let pool = LocalPool::new(2, 1);
    let src = pool.env.path("src");
    write(&src.join("f"), &common::random_bytes(5, 80 << 10));
    pool.ok(&["backup", src.to_str().unwrap()]);
    // m0 holds a damaged copy of every pack; m1 loses its packs.
    let packs: Vec<PathBuf> = common::files_under(&pool.members[0].join("data"));
    assert!(!packs.is_empty());
    for p in &packs {
        common::flip_byte(p, None);
        let rel = p.strip_prefix(&pool.members[0]).unwrap();
        std::fs::remove_file(pool.members[1].join(rel)).unwrap();
    }
    let out = pool.run(&["pool", "repair"]);
    assert!(!out.status.success(), "repair reported success");
    for p in &packs {
        let rel = p.strip_prefix(&pool.members[0]).unwrap();
        assert!(
            !pool.members[1].join(rel).exists(),
            "a damaged copy of {} was spread",
            rel.display()
        );
    }
}

/// Issue 14.4: a copy that fails verification on one member while another
/// member cannot be read is not "damaged": `repair snapshots` keeps it.
#[test]
fn unreadable_member_does_not_make_a_snapshot_damaged() {
    let pool = LocalPool::new(2, 1);
    let src = pool.env.path("src");
    write(&src.join("f"), b"data");
    pool.ok(&["backup", src.to_str().unwrap()]);
    let id = pool.snapshot_ids().pop().unwrap();
    let snap = format!("snapshots/{id}");
    common::flip_byte(&pool.members[0].join(&snap), None);
    // m1's copy is there but cannot be read.
    let good = pool.members[1].join(&snap);
    std::fs::remove_file(&good).unwrap();
    std::fs::create_dir(&good).unwrap();
    let _ = pool.run(&["repair", "snapshots"]);
    std::fs::remove_dir(&good).unwrap();
    assert!(
        pool.members[0].join(&snap).exists(),
        "repair snapshots deleted a snapshot another member may hold intact"
    );
}

/// Issue 14.3: a key removed while a member was down does not come back
/// with that member: unlock ignores it, and `pool repair` removes it there.
#[test]
fn removed_key_stays_removed() {
    let pool = LocalPool::new(2, 1);
    let pw2 = pool.env.path("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    let add = ["key", "add", "--new-password-file", pw2.to_str().unwrap()];
    pool.ok(&[&add[..], &common::CHEAP_KDF[..]].concat());
    let with_pw2 = |args: &[&str]| {
        let mut c = Env::bare();
        c.arg("--config")
            .arg(pool.env.path("pool.toml"))
            .arg("--password-file")
            .arg(&pw2)
            .args(args);
        c.output().unwrap()
    };
    assert!(with_pw2(&["snapshots"]).status.success());
    let keys_dir = pool.members[1].join("keys");
    let before = pool.env.path("keys.before");
    common::copy_tree(&keys_dir, &before);
    let list = pool.ok(&["--json", "key", "list"]);
    let second = common::json_lines(&list.stdout)
        .iter()
        .filter(|v| v["current"] == false)
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .next()
        .expect("the second key is listed");
    pool.ok(&["key", "remove", &second]);
    assert_eq!(with_pw2(&["snapshots"]).status.code(), Some(12));
    // m1 gets its old keys/ back, as if it had missed the delete.
    common::copy_tree(&before, &keys_dir);
    let out = with_pw2(&["snapshots"]);
    assert_eq!(
        out.status.code(),
        Some(12),
        "a removed password opened the repository again: {}",
        stderr(&out)
    );
    pool.ok(&["pool", "repair"]);
    assert_eq!(std::fs::read_dir(&keys_dir).unwrap().count(), 1);
}

/// Issue 14.5: snapshots that disappear without a deletion record (storage
/// access, a bucket rolled back) are reported; a forget is not.
#[test]
fn rollback_is_noticed() {
    let env = Env::new();
    let state = env.path("state");
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .env("STRATA_STATE_DIR", &state)
            .args(args)
            .output()
            .unwrap();
        common::assert_success(&out, args);
        out
    };
    let src = env.path("src");
    write(&src.join("f"), b"one");
    run(&["backup", src.to_str().unwrap()]);
    write(&src.join("f"), b"two");
    run(&["backup", src.to_str().unwrap()]);
    write(&src.join("f"), b"three");
    run(&["backup", src.to_str().unwrap()]);
    let ids: Vec<String> = common::json_lines(&run(&["--json", "snapshots"]).stdout)
        .iter()
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3);
    run(&["forget", &ids[0]]);
    let out = run(&["snapshots"]);
    assert!(!stderr(&out).contains("gone"), "{}", stderr(&out));
    // The newest snapshot vanishes behind strata's back.
    std::fs::remove_file(env.repo().join("snapshots").join(&ids[2])).unwrap();
    let out = run(&["snapshots"]);
    assert!(
        stderr(&out).contains("gone without a deletion record"),
        "{}",
        stderr(&out)
    );
}

/// `pool repair --read-data` finds copies that went bad in place (same size,
/// so a listing cannot tell) and replaces them from another member; then
/// that member alone passes `check --read-data`.
#[test]
fn pool_repair_read_data_replaces_damaged_copies() {
    let pool = LocalPool::new(2, 2);
    let src = pool.env.path("src");
    write(&src.join("f"), &common::random_bytes(6, 300 << 10));
    pool.ok(&["backup", src.to_str().unwrap()]);
    let packs = common::files_under(&pool.members[0].join("data"));
    for p in &packs {
        common::flip_byte(p, None);
    }
    let alone = |args: &[&str]| {
        let mut c = Env::bare();
        c.arg("--repo")
            .arg(&pool.members[0])
            .arg("--password-file")
            .arg(pool.env.pw())
            .args(args);
        c.output().unwrap()
    };
    assert!(!alone(&["check", "--read-data"]).status.success());
    let out = pool.ok(&["pool", "repair", "--read-data"]);
    assert!(
        stdout(&out).contains(&format!("replaced {} damaged", packs.len())),
        "{}",
        stdout(&out)
    );
    let out = alone(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Found by tests/simulation.rs (seed 600011): a pack that a crashed backup
/// left on one member only, in no index. `repair index` used to index it;
/// later backups then deduplicated against a pack whose only copy went with
/// that member. Now it waits until `pool repair` has copied the pack.
#[test]
fn repair_index_leaves_packs_on_too_few_members() {
    let pool = LocalPool::new(2, 2);
    let src = pool.env.path("src");
    let data = common::random_bytes(7, 300 << 10);
    write(&src.join("f"), &data);
    pool.ok(&["backup", src.to_str().unwrap()]);
    // Every index file lost, and the data pack on m0 only.
    let mut dropped = 0;
    for m in &pool.members {
        for e in std::fs::read_dir(m.join("index")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    for f in common::files_under(&pool.members[1].join("data")) {
        std::fs::remove_file(f).unwrap();
        dropped += 1;
    }
    assert!(dropped > 0, "the backup stored no pack");

    let out = pool.ok(&["repair", "index"]);
    assert!(
        stderr(&out).contains("fewer pool members than write_quorum"),
        "{}",
        stderr(&out)
    );
    let index_files = |m: &Path| std::fs::read_dir(m.join("index")).unwrap().count();
    assert_eq!(
        index_files(&pool.members[0]),
        0,
        "an unsafe pack was indexed"
    );

    // Once repair has copied the packs, they are indexed and restore.
    pool.ok(&["pool", "repair"]);
    let out = pool.ok(&["repair", "index"]);
    assert!(
        !stderr(&out).contains("fewer pool members"),
        "{}",
        stderr(&out)
    );
    assert!(index_files(&pool.members[0]) > 0);
    let target = pool.env.path("r");
    pool.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let restored = common::restored(&target, &src);
    assert_eq!(std::fs::read(restored.join("f")).unwrap(), data);
}
