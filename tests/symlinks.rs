//! Paths named through symlinks, as a sidecar names a Kubernetes volume
//! (`/etc/config/app.conf` where `..data -> ..2024_01_01`): the named path
//! and the directories above it are followed and recorded under the names
//! the user gave; symlinks inside the tree stay symlinks. Also files whose
//! `st_size` is not their length (`/proc/self/status`).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{Env, random_bytes, restored};

/// `t/real/{f, sub/g, inner -> f}`, `t/link -> real`, `t/flink -> real/f`.
fn build(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let t = root.join("t");
    std::fs::create_dir_all(t.join("real/sub")).unwrap();
    let (f, g) = (random_bytes(21, 300_000), random_bytes(22, 5_000));
    std::fs::write(t.join("real/f"), &f).unwrap();
    std::fs::write(t.join("real/sub/g"), &g).unwrap();
    std::os::unix::fs::symlink("f", t.join("real/inner")).unwrap();
    std::os::unix::fs::symlink("real", t.join("link")).unwrap();
    std::os::unix::fs::symlink("real/f", t.join("flink")).unwrap();
    (f, g)
}

/// `backup --json ARG` run in `cwd`; the summary.
fn backup_in(env: &Env, cwd: &Path, arg: &OsStr) -> serde_json::Value {
    let out = env
        .cmd()
        .current_dir(cwd)
        .args([OsStr::new("--json"), OsStr::new("backup"), arg])
        .output()
        .unwrap();
    common::assert_success(&out, &[arg]);
    common::summary(&common::json_lines(&out.stdout))
}

/// Restores snapshot `id` into a fresh directory and returns it.
fn restore(env: &Env, id: &str, name: &str) -> PathBuf {
    let target = env.path(name);
    env.ok(&[
        OsStr::new("restore"),
        OsStr::new(id),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    target
}

/// The paths the snapshot `id` records.
fn snapshot_paths(env: &Env, id: &str) -> Vec<String> {
    let lines = env.json(&["snapshots"]);
    let snap = lines
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not listed: {lines:?}"));
    snap["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn id_of(sum: &serde_json::Value) -> String {
    sum["snapshot_id"].as_str().unwrap().to_string()
}

fn is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

#[test]
fn a_file_named_through_a_symlinked_directory_is_saved() {
    let env = Env::new();
    let root = env.root();
    let (f, _) = build(&root);
    let sum = backup_in(&env, &root, OsStr::new("t/link/f"));
    assert_eq!(sum["files_new"], 1, "{sum}");
    let id = id_of(&sum);
    let named = root.join("t/link/f");
    assert_eq!(snapshot_paths(&env, &id), vec![named.display().to_string()]);
    let target = restore(&env, &id, "r");
    let out = restored(&target, &named);
    assert!(is_dir(out.parent().unwrap()), "t/link is not a directory");
    assert!(std::fs::read(&out).unwrap() == f, "t/link/f differs");
}

#[test]
fn a_symlinked_directory_named_with_a_slash_is_saved_and_inner_links_stay_links() {
    let env = Env::new();
    let root = env.root();
    let (f, g) = build(&root);
    let sum = backup_in(&env, &root, OsStr::new("t/link/"));
    assert_eq!(sum["files_new"], 2, "{sum}");
    let id = id_of(&sum);
    let named = root.join("t/link");
    assert_eq!(snapshot_paths(&env, &id), vec![named.display().to_string()]);
    let target = restore(&env, &id, "r");
    let out = restored(&target, &named);
    assert!(is_dir(&out), "t/link is not a directory");
    assert!(std::fs::read(out.join("f")).unwrap() == f, "f differs");
    assert!(
        std::fs::read(out.join("sub/g")).unwrap() == g,
        "sub/g differs"
    );
    // A symlink inside the tree is stored as a symlink.
    let inner = out.join("inner");
    assert!(
        std::fs::symlink_metadata(&inner)
            .unwrap()
            .file_type()
            .is_symlink(),
        "inner is not a symlink"
    );
    assert_eq!(std::fs::read_link(&inner).unwrap(), Path::new("f"));
}

#[test]
fn an_absolute_path_below_a_symlinked_directory_is_saved() {
    let env = Env::new();
    let root = env.root();
    let (_, g) = build(&root);
    let named = root.join("t/link/sub");
    let sum = backup_in(&env, Path::new("/"), named.as_os_str());
    assert_eq!(sum["files_new"], 1, "{sum}");
    let id = id_of(&sum);
    assert_eq!(snapshot_paths(&env, &id), vec![named.display().to_string()]);
    let target = restore(&env, &id, "r");
    let out = restored(&target, &named);
    assert!(is_dir(&out), "t/link/sub is not a directory");
    assert!(is_dir(out.parent().unwrap()), "t/link is not a directory");
    assert!(std::fs::read(out.join("g")).unwrap() == g, "g differs");
}

#[test]
fn a_named_symlink_to_a_file_is_saved_as_the_file() {
    let env = Env::new();
    let root = env.root();
    let (f, _) = build(&root);
    let sum = backup_in(&env, &root, OsStr::new("t/flink"));
    assert_eq!(sum["files_new"], 1, "{sum}");
    let id = id_of(&sum);
    let target = restore(&env, &id, "r");
    let out = restored(&target, &root.join("t/flink"));
    let m = std::fs::symlink_metadata(&out).unwrap();
    assert!(m.is_file(), "t/flink restored as {:?}", m.file_type());
    assert!(std::fs::read(&out).unwrap() == f, "t/flink differs");
}

#[test]
fn a_symlink_inside_a_named_directory_stays_a_symlink() {
    let env = Env::new();
    let root = env.root();
    build(&root);
    let sum = backup_in(&env, &root, OsStr::new("t"));
    let target = restore(&env, &id_of(&sum), "r");
    let out = restored(&target, &root.join("t"));
    for (link, to) in [("link", "real"), ("flink", "real/f"), ("real/inner", "f")] {
        let p = out.join(link);
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{link} is not a symlink"
        );
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(to), "{link}");
    }
}

#[test]
fn a_proc_file_whose_size_is_zero_is_read_to_its_end() {
    let env = Env::new();
    let named = Path::new("/proc/self/status");
    let sum = backup_in(&env, Path::new("/"), named.as_os_str());
    assert_eq!(sum["files_new"], 1, "{sum}");
    let target = restore(&env, &id_of(&sum), "r");
    let out = restored(&target, named);
    let got = std::fs::read(&out).unwrap();
    assert!(
        got.starts_with(b"Name:"),
        "restored {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.len() > 100, "only {} bytes", got.len());
}

#[test]
fn a_path_named_inside_another_through_a_symlink_is_saved_too() {
    let env = Env::new();
    let root = env.root();
    let (f, g) = build(&root);
    std::os::unix::fs::symlink("sub", root.join("t/real/sublink")).unwrap();
    // `t` alone would store `t/link` and `t/real/sublink` as links; paths
    // through them are named too.
    let args = [
        "--json",
        "backup",
        "t",
        "t/link/f",
        "t/real/sub",
        "t/real/sublink/g",
    ];
    let out = env.cmd().current_dir(&root).args(args).output().unwrap();
    common::assert_success(&out, &args);
    let sum = common::summary(&common::json_lines(&out.stdout));
    let id = id_of(&sum);
    let shown = |p: &str| root.join(p).display().to_string();
    // `t/real/sub` is inside `t` with no symlink between: dropped as before.
    let want = vec![shown("t"), shown("t/link/f"), shown("t/real/sublink/g")];
    assert_eq!(snapshot_paths(&env, &id), want);
    let target = restore(&env, &id, "r");
    let out = restored(&target, &root.join("t"));
    let same = |p: &str, want: &[u8]| {
        let got = std::fs::read(out.join(p)).unwrap_or_else(|e| panic!("t/{p}: {e}"));
        assert!(got == want, "t/{p} differs");
    };
    // The link followed for `t/link/f` is a directory holding only that.
    assert!(is_dir(&out.join("link")), "t/link is not a directory");
    let names: Vec<_> = std::fs::read_dir(out.join("link"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    same("link/f", &f);
    // `t/real` lies on the way to `t/real/sublink/g`: all of it is there.
    same("real/f", &f);
    same("real/sub/g", &g);
    assert_eq!(
        std::fs::read_link(out.join("real/inner")).unwrap(),
        Path::new("f")
    );
    assert!(
        is_dir(&out.join("real/sublink")),
        "t/real/sublink is not a directory"
    );
    same("real/sublink/g", &g);
    // Links on no named path stay links.
    assert_eq!(
        std::fs::read_link(out.join("flink")).unwrap(),
        Path::new("real/f")
    );
}

#[test]
fn a_sysfs_file_whose_size_is_4096_is_read_as_it_is() {
    // sysfs says 4096 bytes, none allocated, and holds a few.
    let named = Path::new("/sys/devices/system/cpu/online");
    let Ok(want) = std::fs::read(named) else {
        eprintln!("skipped: no {}", named.display());
        return;
    };
    assert!(!want.is_empty());
    let env = Env::new();
    let sum = backup_in(&env, Path::new("/"), named.as_os_str());
    assert_eq!(sum["files_new"], 1, "{sum}");
    let target = restore(&env, &id_of(&sum), "r");
    let got = std::fs::read(restored(&target, named)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
}
