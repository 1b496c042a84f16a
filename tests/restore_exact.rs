//! Restores that are exact and safe (issue 15): sockets are skipped with a
//! notice, listings of unusual names are unambiguous, an interrupted restore
//! leaves only complete or clearly partial files and a re-run finishes it,
//! the restore options (--overwrite, --delete, --dry-run), and no symlink
//! race lets a restore write outside its target.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

/// A small tree: files of one and of several chunks, a subdirectory with a
/// restrictive mode, a symlink, and an empty file.
fn small_tree(env: &Env) -> PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    std::fs::write(src.join("big"), random_bytes(1, 3 << 20)).unwrap();
    std::fs::write(src.join("small"), b"small\n").unwrap();
    std::fs::write(src.join("sub/deep/x"), random_bytes(2, 10_000)).unwrap();
    std::fs::write(src.join("sub/empty"), b"").unwrap();
    std::os::unix::fs::symlink("small", src.join("link")).unwrap();
    std::fs::set_permissions(src.join("sub"), PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::set_permissions(src.join("small"), PermissionsExt::from_mode(0o640)).unwrap();
    src
}

#[test]
fn a_socket_is_skipped_with_a_notice_and_the_restore_succeeds() {
    let env = Env::new();
    let src = small_tree(&env);
    let sock = src.join("sub/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    env.ok(&[Path::new("backup"), &src]);
    let target = env.path("target");
    let out = env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &target,
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("app.sock") && err.contains("socket"),
        "no notice for the socket: {err}"
    );
    assert!(!err.contains("incomplete"), "{err}");
    let dst = restored(&target, &src);
    assert!(std::fs::symlink_metadata(dst.join("sub/app.sock")).is_err());
    // Everything else is exact (the socket is removed from the source
    // first, keeping its directory's mtime).
    drop(_listener);
    let m = std::fs::metadata(src.join("sub")).unwrap();
    std::fs::remove_file(&sock).unwrap();
    filetime::set_file_mtime(
        src.join("sub"),
        filetime::FileTime::from_last_modification_time(&m),
    )
    .unwrap();
    compare_trees(&src, &dst, &Compare::all());

    let lines = env.json(&[
        "restore",
        "latest",
        "--target",
        env.path("t2").to_str().unwrap(),
    ]);
    assert!(
        lines.iter().any(|l| l["message_type"] == "skipped"
            && l["path"].as_str().unwrap().ends_with("/sub/app.sock")),
        "{lines:?}"
    );
    assert_eq!(summary(&lines)["skipped_sockets"], 1);
}

#[test]
fn ls_names_are_unambiguous_in_plain_and_json_output() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let odd: [&[u8]; 5] = [
        b"bad\xff",     // not UTF-8
        b"bad\\xff",    // a real backslash, then "xff"
        b"two\nlines",  // a newline
        b"tab\there",   // a tab
        b"caf\xc3\xa9", // UTF-8, not ASCII
    ];
    for (i, name) in odd.iter().enumerate() {
        std::fs::write(src.join(OsStr::from_bytes(name)), [i as u8]).unwrap();
    }
    env.ok(&[Path::new("backup"), &src]);

    // Plain: one line per entry, each distinct, no raw control characters.
    let out = stdout(&env.ok(&[Path::new("ls"), Path::new("latest"), &src]));
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("/src/")).collect();
    assert_eq!(lines.len(), odd.len(), "{out}");
    let names: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names.len(), odd.len(), "{lines:?}");
    for want in [
        "bad\\xff",
        "bad\\\\xff",
        "two\\nlines",
        "tab\\there",
        "café",
    ] {
        assert!(names.contains(want), "{want:?} not in {names:?}");
    }
    assert!(!out.contains('\t'));

    // JSON: the exact text when UTF-8, else base64 bytes that round-trip.
    let lines = env.json(&[Path::new("ls"), Path::new("latest"), &src]);
    let mut seen = Vec::new();
    for l in lines.iter().filter(|l| l["message_type"] == "node") {
        let bytes = match l.get("path_b64") {
            Some(b) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_str().unwrap())
                    .unwrap()
            }
            None => l["path"].as_str().unwrap().as_bytes().to_vec(),
        };
        seen.push(bytes);
    }
    for name in odd {
        let mut want = src.as_os_str().as_bytes().to_vec();
        want.push(b'/');
        want.extend_from_slice(name);
        assert!(
            seen.contains(&want),
            "{:?} not listed",
            String::from_utf8_lossy(&want)
        );
    }
    // A valid name has no byte form; an invalid one has.
    let has_b64 = lines.iter().filter(|l| l.get("path_b64").is_some()).count();
    assert_eq!(has_b64, 1, "{lines:?}");
}

#[allow(dead_code)]
fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}
