//! Exclude rules of `strata backup`: `--exclude-file`, `--exclude-if-present`,
//! `--exclude-caches`, `--one-file-system` and `--exclude-larger-than`. Each
//! test asserts exactly which entries the snapshot holds (`ls --json`) and
//! that the summary counts what was left out.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{Env, json_lines, stderr};

/// Every path in the latest snapshot below `root`, relative to it
/// (`""` is `root` itself).
fn listing(env: &Env, root: &Path) -> BTreeSet<String> {
    let lines = env.json(&["ls", "latest"]);
    let prefix = format!("{}/", root.display());
    lines
        .iter()
        .filter(|v| v["message_type"] == "node")
        .filter_map(|v| {
            let p = v["path"].as_str().unwrap();
            if p == root.to_str().unwrap() {
                Some(String::new())
            } else {
                p.strip_prefix(&prefix).map(str::to_string)
            }
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn exclude_file_patterns_comments_and_blank_lines() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "a.txt", b"a");
    write(&src, "b.tmp", b"b");
    write(&src, "keep/c.tmp", b"c");
    write(&src, "keep/d.txt", b"d");
    write(&src, "cache/x", b"x");
    write(&src, "#c", b"a name a comment line would match");
    let ex = env.path("excludes.txt");
    std::fs::write(
        &ex,
        format!(
            "# comment lines are ignored, so this one does not exclude #c:\n#c\n*.tmp\n\n   \n  {}/cache  \n",
            src.display()
        ),
    )
    .unwrap();
    let s = env.backup_summary(&["--exclude-file".as_ref(), ex.as_os_str(), src.as_os_str()]);
    assert_eq!(
        listing(&env, &src),
        set(&["", "#c", "a.txt", "keep", "keep/d.txt"])
    );
    // b.tmp, keep/c.tmp and the cache directory (counted once).
    assert_eq!(s["excluded"], 3, "{s}");

    // Also combined with --exclude, and repeatable.
    let ex2 = env.path("more.txt");
    std::fs::write(&ex2, "d.txt\n").unwrap();
    let s = env.backup_summary(&[
        "--exclude-file".as_ref(),
        ex.as_os_str(),
        "--exclude-file".as_ref(),
        ex2.as_os_str(),
        "--exclude".as_ref(),
        "a.txt".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(listing(&env, &src), set(&["", "#c", "keep"]));
    assert_eq!(s["excluded"], 5, "{s}");

    // A bad pattern names the file and the line; a missing file is named.
    std::fs::write(&ex2, "# fine\nok\n[unclosed\n").unwrap();
    let out = env.run(&[
        "backup".as_ref(),
        "--exclude-file".as_ref(),
        ex2.as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("more.txt") && err.contains("line 3") && err.contains("[unclosed"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = env.run(&[
        "backup".as_ref(),
        "--exclude-file".as_ref(),
        env.path("nope.txt").as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read exclude file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exclude_if_present_skips_tagged_directories_below_named_paths() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, ".nobackup", b""); // on a named path: ignored
    write(&src, "top.txt", b"t");
    write(&src, "p/.nobackup", b"");
    write(&src, "p/data", b"p");
    write(&src, "q/data", b"q");
    write(&src, "q/deep/r/SKIP", b"");
    write(&src, "q/deep/r/data", b"r");
    write(&src, "q/deep/s", b"s");
    write(&src, "file-named-SKIP/SKIPx", b"not the tag name");
    let out = env.ok(&[
        "-v".as_ref(),
        "backup".as_ref(),
        "--exclude-if-present".as_ref(),
        ".nobackup".as_ref(),
        "--exclude-if-present".as_ref(),
        "SKIP".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(
        listing(&env, &src),
        set(&[
            "",
            ".nobackup",
            "file-named-SKIP",
            "file-named-SKIP/SKIPx",
            "q",
            "q/data",
            "q/deep",
            "q/deep/s",
            "top.txt",
        ])
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("excluded {}/p", src.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("excluded {}/q/deep/r", src.display())),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 entries left out"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&[
        "backup".as_ref(),
        "--exclude-if-present".as_ref(),
        "a/b".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn exclude_caches_honours_only_valid_cachedir_tags() {
    let env = Env::new();
    let src = env.path("src");
    let sig =
        b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n";
    write(&src, "cache/CACHEDIR.TAG", sig);
    write(&src, "cache/blob", b"cached");
    write(&src, "fake/CACHEDIR.TAG", b"Signature: not the right one\n");
    write(&src, "fake/data", b"kept");
    write(&src, "plain/data", b"kept");
    write(&src, "plain/CACHEDIR.TAG/inner", b"a directory, not a tag");
    // Without the flag everything is there.
    let s = env.backup_summary(&[src.as_os_str()]);
    assert_eq!(s["excluded"], 0, "{s}");
    assert!(listing(&env, &src).contains("cache/blob"));
    let s = env.backup_summary(&["--exclude-caches".as_ref(), src.as_os_str()]);
    assert_eq!(
        listing(&env, &src),
        set(&[
            "",
            "fake",
            "fake/CACHEDIR.TAG",
            "fake/data",
            "plain",
            "plain/CACHEDIR.TAG",
            "plain/CACHEDIR.TAG/inner",
            "plain/data",
        ])
    );
    assert_eq!(s["excluded"], 1, "{s}");
}

#[test]
fn exclude_larger_than_leaves_out_big_files_but_not_named_ones() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "small", &[1; 100]);
    write(&src, "exact", &[2; 1024]);
    write(&src, "big", &[3; 1025]);
    write(&src, "sub/huge", &[4; 100_000]);
    let named = env.path("named-big");
    std::fs::write(&named, [5; 5000]).unwrap();
    let s = env.backup_summary(&[
        "--exclude-larger-than".as_ref(),
        "1KiB".as_ref(),
        src.as_os_str(),
        named.as_os_str(),
    ]);
    assert_eq!(listing(&env, &src), set(&["", "exact", "small", "sub"]));
    assert_eq!(s["excluded"], 2, "{s}");
    let all: Vec<String> = env
        .json(&["ls", "latest"])
        .iter()
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect();
    assert!(all.contains(&named.display().to_string()), "{all:?}");

    let out = env.run(&[
        "backup".as_ref(),
        "--exclude-larger-than".as_ref(),
        "ten megs".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid size"), "{}", stderr(&out));
}

/// Runs `strata ARGS` in a new mount namespace after mounting a tmpfs on
/// `mnt` (holding `inner.txt`) and bind-mounting that file on `bound`.
/// None when this machine cannot make mount namespaces.
fn in_mount_namespace(
    env: &Env,
    mnt: &Path,
    bound: &Path,
    args: &[&str],
) -> Option<std::process::Output> {
    let script = r#"mnt="$1"; bound="$2"; shift 2
mount -t tmpfs strata-test "$mnt" || exit 97
echo inner > "$mnt/inner.txt"
mount --bind "$mnt/inner.txt" "$bound" || exit 97
exec "$@""#;
    for unshare in [&["-m"][..], &["-r", "-m"][..]] {
        let mut c = Command::new("unshare");
        c.args(unshare)
            .args(["--propagation", "private", "sh", "-c", script, "sh"])
            .arg(mnt)
            .arg(bound)
            .arg(env!("CARGO_BIN_EXE_strata"))
            .arg("--repo")
            .arg(env.repo())
            .arg("--password-file")
            .arg(env.pw())
            .args(args)
            .env("STRATA_NO_CACHE", "1")
            .env_remove("STRATA_REPO")
            .env_remove("STRATA_CONFIG");
        match c.output() {
            // The mount failed, or unshare itself did: try the next way.
            Ok(out) if out.status.code() == Some(97) || stderr(&out).starts_with("unshare:") => {
                continue;
            }
            Ok(out) => return Some(out),
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn one_file_system_keeps_mount_points_empty_and_skips_bind_mounts() {
    let env = Env::new();
    let src = env.path("src");
    write(&src, "here.txt", b"same file system");
    write(&src, "bound.txt", b"");
    std::fs::create_dir_all(src.join("mnt")).unwrap();
    let (mnt, bound) = (src.join("mnt"), src.join("bound.txt"));
    let s = src.to_str().unwrap();
    // Control: without the flag the other file system is read.
    let Some(out) = in_mount_namespace(&env, &mnt, &bound, &["--json", "backup", s]) else {
        eprintln!("skipped: cannot create a mount namespace here (unshare -m)");
        return;
    };
    common::assert_success(&out, &["backup (control)"]);
    assert_eq!(
        listing(&env, &src),
        set(&["", "bound.txt", "here.txt", "mnt", "mnt/inner.txt"])
    );
    let out = in_mount_namespace(
        &env,
        &mnt,
        &bound,
        &["--json", "backup", "--one-file-system", s],
    )
    .unwrap();
    common::assert_success(&out, &["backup --one-file-system"]);
    let summary = common::summary(&json_lines(&out.stdout));
    // The mount point stays as an empty directory; the bind-mounted file
    // (on the tmpfs) is left out.
    assert_eq!(listing(&env, &src), set(&["", "here.txt", "mnt"]));
    assert_eq!(summary["excluded"], 2, "{summary}");

    // A named path on another file system is backed up whole.
    let out = in_mount_namespace(
        &env,
        &mnt,
        &bound,
        &[
            "--json",
            "backup",
            "--one-file-system",
            mnt.to_str().unwrap(),
        ],
    )
    .unwrap();
    common::assert_success(&out, &["backup --one-file-system src/mnt"]);
    assert_eq!(listing(&env, &mnt), set(&["", "inner.txt"]));
}

#[test]
fn exclude_options_refuse_stdin() {
    let env = Env::new();
    let out = env.run(&["backup", "--stdin", "--exclude-caches"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--stdin"), "{}", stderr(&out));
}
