//! `strata copy` between repositories with different passwords: restored
//! bytes match, the original id is recorded, a second run copies nothing,
//! and a later snapshot adds only what is new.

mod common;

use common::{Env, json_lines, stdout};

fn ids(out: &std::process::Output) -> Vec<serde_json::Value> {
    json_lines(&out.stdout)
        .into_iter()
        .filter(|v| v["id"].is_string())
        .collect()
}

#[test]
fn copy_between_repositories_is_exact_deduplicated_and_resumable() {
    let from = Env::new();
    let src = from.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), common::random_bytes(1, 700 << 10)).unwrap();
    std::fs::write(src.join("sub/b"), b"small file").unwrap();
    std::os::unix::fs::symlink("a", src.join("link")).unwrap();
    from.ok(&["backup", src.to_str().unwrap()]);
    let first_state = from.path("first");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first_state)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(src.join("c"), common::random_bytes(2, 300 << 10)).unwrap();
    from.ok(&["backup", src.to_str().unwrap()]);
    let source_ids: Vec<String> = ids(&from.ok(&["--json", "snapshots"]))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();

    // The target has a password of its own.
    let to = Env::empty();
    let pw2 = to.path("pw2");
    std::fs::write(&pw2, "another password\n").unwrap();
    let target = |args: &[&str]| {
        let mut c = Env::bare();
        c.arg("--repo")
            .arg(to.repo())
            .arg("--password-file")
            .arg(&pw2)
            .args(args);
        let out = c.output().unwrap();
        common::assert_success(&out, args);
        out
    };
    target(&common::CHEAP_INIT);
    let (from_repo, from_pw) = (from.repo(), from.pw());
    let copy = [
        "copy",
        "--from-repo",
        from_repo.to_str().unwrap(),
        "--from-password-file",
        from_pw.to_str().unwrap(),
    ];
    let out = target(&[&["--json"], &copy[..]].concat());
    let summary = common::summary(&json_lines(&out.stdout));
    assert_eq!(summary["copied"], 2, "{}", stdout(&out));

    let copies = ids(&target(&["--json", "snapshots"]));
    assert_eq!(copies.len(), 2);
    let originals: Vec<&str> = copies
        .iter()
        .map(|v| v["original"]["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(originals, source_ids);

    // Both copies restore bit-identical, metadata included.
    for (copy, state) in copies.iter().zip([&first_state, &src]) {
        let dir = to.path(&format!("r-{}", copy["short_id"].as_str().unwrap()));
        target(&[
            "restore",
            copy["id"].as_str().unwrap(),
            "--target",
            dir.to_str().unwrap(),
        ]);
        let restored = common::restored(&dir, &src);
        assert!(common::compare_trees(state, &restored, &common::Compare::all()) >= 4);
    }
    target(&["check", "--read-data"]);

    // Again: nothing to copy.
    let out = target(&[&["--json"], &copy[..]].concat());
    let summary = common::summary(&json_lines(&out.stdout));
    assert_eq!(summary["copied"], 0);
    assert_eq!(summary["skipped"], 2);

    // A new source snapshot: only what is new is stored.
    std::fs::write(src.join("d"), b"one more small file").unwrap();
    from.ok(&["backup", src.to_str().unwrap()]);
    let out = target(&[&["--json"], &copy[..]].concat());
    let summary = common::summary(&json_lines(&out.stdout));
    assert_eq!(summary["copied"], 1);
    let added = summary["data_added"].as_u64().unwrap();
    assert!(added < 100 << 10, "{added} bytes added for one small file");
}

#[test]
fn copy_with_a_wrong_source_password_fails_cleanly() {
    let from = Env::new();
    let to = Env::new();
    let bad = to.path("bad");
    std::fs::write(&bad, "wrong\n").unwrap();
    let out = to.run(&[
        "copy",
        "--from-repo",
        from.repo().to_str().unwrap(),
        "--from-password-file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("source repository"));
}
