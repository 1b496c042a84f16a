//! Restores into a target that cannot take them: a read-only file system,
//! and a disk that fills up mid-restore. Each must end with one `strata:`
//! line naming the cause and what to do, exit 1, and leave nothing
//! half-written looking restored; after space is freed, restoring again into
//! the same target must give the source tree exactly.
//!
//! The file systems are real: a small tmpfs mounted inside a user and mount
//! namespace (`unshare -cm --keep-caps`), which needs no privileges and keeps
//! our own uid, so ownership is restored as it would be outside.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use common::*;

/// Whether `unshare` can give us a private mount namespace. Without it the
/// tests fail under CI and are skipped with a message elsewhere.
fn namespaces() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["-cm", "--keep-caps", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run these tests: `unshare -cm --keep-caps true` failed \
             (needs util-linux >= 2.38 and unprivileged user namespaces)"
        );
        eprintln!(
            "skipped: `unshare -cm --keep-caps true` failed (util-linux >= 2.38 and user namespaces needed)"
        );
    }
    ok
}

/// Runs `sh -c script` in a new user and mount namespace, with `$T` set to
/// `mnt` (an empty directory to mount on), `$D` to the scratch directory,
/// `$STRATA` to the binary, and the repository and password in the
/// environment (so `"$STRATA" restore ...` needs no more arguments).
fn in_namespace(env: &Env, mnt: &Path, script: &str) -> Output {
    std::fs::create_dir_all(mnt).unwrap();
    let mut c = std::process::Command::new("unshare");
    c.args(["-cm", "--keep-caps", "sh", "-c", script])
        .env("T", mnt)
        .env("D", env.root())
        .env("STRATA", env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_REPO", env.repo())
        .env("STRATA_PASSWORD_FILE", env.pw())
        .env("STRATA_NO_CACHE", "1")
        .env_remove("STRATA_PASSWORD")
        .env_remove("STRATA_PASSWORD_COMMAND")
        .env_remove("STRATA_CONFIG");
    assert_cmd::Command::from_std(c)
        .timeout(std::time::Duration::from_secs(300))
        .output()
        .unwrap()
}

/// The lines of a failed run's stderr, after checking it exited 1 without
/// a panic and printed exactly one `strata:` line and nothing else.
fn one_error_line(out: &Output) -> String {
    assert_no_panic(out);
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{err}");
    assert!(lines[0].starts_with("strata: "), "{err}");
    lines[0].to_string()
}

/// A small tree with several 400 KiB files of random bytes, an empty file,
/// a symlink, a hard link, a subdirectory and a file with its own mode.
fn source_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..8u64 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(i, 400 << 10)).unwrap();
    }
    std::fs::write(src.join("sub/small"), b"small\n").unwrap();
    std::fs::write(src.join("sub/empty"), b"").unwrap();
    std::fs::set_permissions(src.join("sub/small"), PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("f0", src.join("link")).unwrap();
    std::fs::hard_link(src.join("f1"), src.join("sub/hard")).unwrap();
    env.ok(&[Path::new("backup"), &src]);
    src
}

#[test]
fn read_only_target_fails_at_once_with_one_line() {
    if !namespaces() {
        return;
    }
    let env = Env::new();
    source_tree(&env);
    let mnt = env.path("mnt");
    // The target exists but is on a read-only file system, or would have to
    // be created on one.
    for (target, script) in [
        (
            mnt.clone(),
            r#"mount -t tmpfs -o ro tmpfs "$T" && exec "$STRATA" restore latest --target "$T""#,
        ),
        (
            mnt.join("new"),
            r#"mount -t tmpfs -o ro tmpfs "$T" && exec "$STRATA" restore latest --target "$T/new""#,
        ),
    ] {
        let out = in_namespace(&env, &mnt, script);
        let line = one_error_line(&out);
        assert_eq!(
            line,
            format!(
                "strata: cannot write to the restore target {}: read-only file system; choose a writable --target",
                target.display()
            )
        );
        assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    }
}

#[test]
fn target_that_is_a_file_is_refused() {
    let env = Env::new();
    let file = env.path("file");
    std::fs::write(&file, b"x").unwrap();
    let out = env.run(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &file,
    ]);
    // No snapshot yet: that error comes first and is also one line.
    one_error_line(&out);
    source_tree(&env);
    let out = env.run(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &file,
    ]);
    assert_eq!(
        one_error_line(&out),
        format!(
            "strata: the restore target {} exists and is not a directory; choose a directory for --target",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn full_disk_leaves_only_complete_files_and_a_rerun_completes_the_tree() {
    if !namespaces() {
        return;
    }
    let env = Env::new();
    let src = source_tree(&env);
    let mnt = env.path("mnt");
    // 4 MiB of tmpfs, 2.5 MiB of it taken: the 3.2 MiB tree does not fit.
    // Restore, keep a copy of what it left, free the space, restore again
    // into the same target, keep a copy of that.
    let script = r#"
        mount -t tmpfs -o size=4m tmpfs "$T" || exit 90
        head -c 2621440 /dev/zero >"$T/filler" || exit 91
        "$STRATA" restore latest --target "$T/out" >"$D/first.out" 2>"$D/first.err"
        echo $? >"$D/first.rc"
        cp -a "$T/out" "$D/after_full" || exit 92
        rm "$T/filler"
        "$STRATA" restore latest --target "$T/out" >"$D/second.out" 2>"$D/second.err"
        echo $? >"$D/second.rc"
        cp -a "$T/out" "$D/after_rerun" || exit 93
    "#;
    let out = in_namespace(&env, &mnt, script);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |name: &str| std::fs::read_to_string(env.path(name)).unwrap();

    // One line: the cause, the file, how much was restored, what to do.
    let first_err = read("first.err");
    assert!(!first_err.contains("panicked"), "{first_err}");
    assert_eq!(read("first.rc").trim(), "1", "{first_err}");
    let lines: Vec<&str> = first_err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{first_err}");
    let line = lines[0];
    let prefix = format!(
        "strata: no space left on device writing {}/",
        mnt.join("out").display()
    );
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.ends_with("incomplete files removed; free space and run restore again"),
        "{line}"
    );
    let counts = line.split(": ").nth(2).unwrap();
    let words: Vec<&str> = counts.split(' ').collect();
    assert_eq!(&words[1..4], ["of", "11", "files"], "{line}");
    let restored_n: usize = words[0].parse().unwrap();
    assert!(restored_n < 11, "{line}");

    // Every file left is complete: the source's bytes, mode and mtime; and
    // there are as many as the line says.
    let left_dir = restored(&env.path("after_full"), &src);
    let left = files_under(&left_dir);
    assert_eq!(left.len(), restored_n, "{line}: {left:?}");
    for f in &left {
        let orig = src.join(f.strip_prefix(&left_dir).unwrap());
        assert!(
            std::fs::read(f).unwrap() == std::fs::read(&orig).unwrap(),
            "{} is not complete",
            f.display()
        );
        let (a, b) = (
            std::fs::metadata(&orig).unwrap(),
            std::fs::metadata(f).unwrap(),
        );
        assert_eq!(a.mode(), b.mode(), "{}: mode", f.display());
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{}: mtime",
            f.display()
        );
    }

    // With the space freed, the same target is completed exactly.
    assert_eq!(read("second.rc").trim(), "0", "{}", read("second.err"));
    // It keeps the complete files and restores only the rest.
    let second = read("second.out");
    assert!(
        second.contains(&format!("restored {} files", 11 - restored_n)),
        "{second}"
    );
    assert!(
        second.contains(&format!("kept {restored_n} files")),
        "{second}"
    );
    compare_trees(
        &src,
        &restored(&env.path("after_rerun"), &src),
        &Compare::all(),
    );
}
