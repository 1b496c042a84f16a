//! Backup modes as recorded: the first backup of a set of paths is `full`
//! (it read everything), later ones are incremental with a parent, and a
//! differential backup finds that first full one.

mod common;

use common::Env;

#[test]
fn first_backup_of_a_path_set_is_full_and_differentials_find_it() {
    let env = Env::new();
    let (a, b) = (env.path("a"), env.path("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), d.to_str().unwrap()).unwrap();
    }
    let first = env.backup_summary(&[a.as_os_str()]);
    assert_eq!(first["mode"], "full", "{first}");
    assert!(first["parent"].is_null(), "{first}");

    let second = env.backup_summary(&[a.as_os_str()]);
    assert_eq!(second["mode"], "incremental", "{second}");
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");

    // Another set of paths (b, and a+b) starts with a full one too.
    let other = env.backup_summary(&[b.as_os_str()]);
    assert_eq!(other["mode"], "full", "{other}");
    let both = env.backup_summary(&[a.as_os_str(), b.as_os_str()]);
    assert_eq!(both["mode"], "full", "{both}");

    // A differential backup of a refers to the first (full) one, not to
    // the newer incremental one.
    std::fs::write(a.join("g"), b"new").unwrap();
    let diff = env.backup_summary(&["--mode".as_ref(), "differential".as_ref(), a.as_os_str()]);
    assert_eq!(diff["mode"], "differential", "{diff}");
    assert_eq!(diff["parent"], first["snapshot_id"], "{diff}");
    assert_eq!(diff["files_new"], 1, "{diff}");
    assert_eq!(diff["files_unmodified"], 1, "{diff}");

    // Recorded so in the snapshots too.
    let snaps = env.json(&["snapshots"]);
    let mode_of = |id: &serde_json::Value| {
        snaps
            .iter()
            .find(|s| s["id"] == *id)
            .map(|s| s["mode"].clone())
            .unwrap()
    };
    assert_eq!(mode_of(&first["snapshot_id"]), "full");
    assert_eq!(mode_of(&second["snapshot_id"]), "incremental");
}

#[test]
fn stdin_backups_read_everything_and_are_full() {
    let env = Env::new();
    for _ in 0..2 {
        let out = env
            .cmd()
            .args(["--json", "backup", "--stdin", "--stdin-name", "dump.sql"])
            .write_stdin("select 1;\n")
            .output()
            .unwrap();
        common::assert_success(&out, &["backup --stdin"]);
        let s = common::summary(&common::json_lines(&out.stdout));
        assert_eq!(s["mode"], "full", "{s}");
        assert!(s["parent"].is_null(), "{s}");
    }
}
