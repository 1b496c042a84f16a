//! Round trips through the built binary, as a user runs it: a tree holding
//! every kind of entry is backed up and restored, and must come back with
//! the same types, bytes, modes, nanosecond mtimes, link targets, hardlink
//! identity, owners (as root) and holes. Also `restore --include`,
//! `restore --verify`, `dump`, `backup --stdin`, `ls` and `diff`.

mod common;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Compare, Env, compare_trees, random_bytes, restored};
use filetime::FileTime;

const MIB: usize = 1 << 20;

fn non_utf8_name() -> &'static OsStr {
    OsStr::from_bytes(b"caf\xe9")
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o640) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Builds the source tree under `root/src` and returns its path. The
/// sparse file is `src/sparse.img`.
fn build_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    let w = |rel: &str, data: &[u8]| std::fs::write(src.join(rel), data).unwrap();
    std::fs::create_dir_all(src.join("sub/deeper/deepest")).unwrap();
    std::fs::create_dir_all(src.join("empty_dir")).unwrap();
    std::fs::create_dir_all(src.join("private")).unwrap();
    std::fs::create_dir_all(src.join("links")).unwrap();

    w("empty.txt", b"");
    w("small.txt", b"hello, strata\n");
    w("sub/big.bin", &random_bytes(1, 3 * MIB + 12345));
    w("sub/deeper/deepest/leaf.txt", b"deep leaf\n");
    w("private/secret.txt", b"top secret\n");
    w("setuid.bin", &random_bytes(2, 4096));
    w("exec.sh", b"#!/bin/sh\necho hi\n");
    std::fs::write(src.join(non_utf8_name()), b"non-utf8 name\n").unwrap();

    // Hardlinked pair.
    w("links/first", &random_bytes(3, 70_000));
    std::fs::hard_link(src.join("links/first"), src.join("links/second")).unwrap();

    // Symlinks: relative, dangling, absolute.
    std::os::unix::fs::symlink("../small.txt", src.join("links/rel")).unwrap();
    std::os::unix::fs::symlink("no/such/target", src.join("links/dangling")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs/target", src.join("links/abs")).unwrap();

    mkfifo(&src.join("fifo"));

    // Sparse: 64 MiB long, 1 MiB of data at 0 and at 40 MiB.
    let f = std::fs::File::create(src.join("sparse.img")).unwrap();
    f.set_len(64 * MIB as u64).unwrap();
    f.write_all_at(&random_bytes(4, MIB), 0).unwrap();
    f.write_all_at(&random_bytes(5, MIB), 40 * MIB as u64)
        .unwrap();
    f.sync_all().unwrap();
    drop(f);

    // Ownership first (chown clears set-id bits), then modes.
    if common::is_root() {
        std::os::unix::fs::chown(src.join("small.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(src.join("private"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(src.join("setuid.bin"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("links/rel"), Some(1234), Some(5678)).unwrap();
    }
    set_mode(&src.join("private/secret.txt"), 0o600);
    set_mode(&src.join("exec.sh"), 0o755);
    set_mode(&src.join("setuid.bin"), 0o4755);
    set_mode(&src.join("private"), 0o700);

    // Nanosecond mtimes: files and symlinks, then directories deepest first.
    let mut k = 0i64;
    let mut stamp = |p: &Path, link: bool| {
        k += 1;
        let t = FileTime::from_unix_time(
            1_600_000_000 + k * 86_399,
            ((k as u64 * 123_456_789) % 999_999_999 + 1) as u32,
        );
        if link {
            filetime::set_symlink_file_times(p, t, t).unwrap();
        } else {
            filetime::set_file_mtime(p, t).unwrap();
        }
    };
    for f in [
        "empty.txt",
        "small.txt",
        "sub/big.bin",
        "sub/deeper/deepest/leaf.txt",
        "private/secret.txt",
        "setuid.bin",
        "exec.sh",
        "links/first",
        "sparse.img",
    ] {
        stamp(&src.join(f), false);
    }
    stamp(&src.join(non_utf8_name()), false);
    // A FIFO must not be opened (that blocks): set its times by path.
    for l in ["links/rel", "links/dangling", "links/abs", "fifo"] {
        stamp(&src.join(l), true);
    }
    for d in [
        "sub/deeper/deepest",
        "sub/deeper",
        "sub",
        "empty_dir",
        "private",
        "links",
        "",
    ] {
        stamp(&src.join(d), false);
    }
    src
}

#[test]
fn every_kind_of_entry_round_trips() {
    let env = Env::new();
    let src = build_tree(&env.root());
    let sm = std::fs::metadata(src.join("setuid.bin")).unwrap();
    let setuid_kept = sm.mode() & 0o4000 != 0;

    let sum = env.backup_summary(&[&src]);
    assert!(
        sum["snapshot_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{sum}"
    );
    assert!(sum["files_new"].as_u64().unwrap() >= 11, "{sum}");

    let target = env.path("restore");
    let lines = env.json(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--verify"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    let rs = common::summary(&lines);
    assert!(rs["files_restored"].as_u64().unwrap() >= 11, "{rs}");
    assert!(
        rs["bytes_restored"].as_u64().unwrap() >= (5 * MIB) as u64,
        "{rs}"
    );

    let out = restored(&target, &src);
    let n = compare_trees(&src, &out, &Compare::all());
    assert!(n >= 20, "only {n} entries compared");

    // The setuid bit really was set in the source (else the mode check is moot).
    if setuid_kept {
        let m = std::fs::metadata(out.join("setuid.bin")).unwrap().mode();
        assert_eq!(m & 0o7777, 0o4755);
    }

    // Hardlinks come back as one inode with two names.
    let a = std::fs::metadata(out.join("links/first")).unwrap();
    let b = std::fs::metadata(out.join("links/second")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "hardlink split");
    assert_eq!(a.nlink(), 2);

    // The FIFO is a FIFO, the symlinks are symlinks with the same targets.
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(out.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::read_link(out.join("links/dangling")).unwrap(),
        Path::new("no/such/target")
    );
    assert_eq!(
        std::fs::read(out.join("links/rel")).unwrap(),
        b"hello, strata\n"
    );

    // Ownership as root.
    if common::is_root() {
        for p in ["small.txt", "private", "setuid.bin"] {
            let m = std::fs::metadata(out.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1234, 5678), "{p}: owner");
        }
        let m = std::fs::symlink_metadata(out.join("links/rel")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "links/rel: owner");
    } else {
        eprintln!("not root: ownership restore not tested");
    }

    // Holes stay holes.
    let src_alloc = std::fs::metadata(src.join("sparse.img")).unwrap().blocks() * 512;
    let dst = std::fs::metadata(out.join("sparse.img")).unwrap();
    assert_eq!(dst.len(), 64 * MIB as u64);
    if src_alloc < 16 * MIB as u64 {
        let dst_alloc = dst.blocks() * 512;
        assert!(
            dst_alloc <= src_alloc + 2 * MIB as u64,
            "restored sparse file allocates {dst_alloc} bytes, the source {src_alloc}"
        );
    } else {
        eprintln!(
            "filesystem does not keep holes ({src_alloc} bytes allocated): hole check skipped"
        );
    }

    // dump prints the exact bytes of a file, small and multi-MiB, whatever
    // bytes its name is made of.
    let odd = PathBuf::from(non_utf8_name());
    for rel in [
        Path::new("sub/big.bin"),
        Path::new("small.txt"),
        Path::new("empty.txt"),
        Path::new("links/second"),
        odd.as_path(),
    ] {
        let p = src.join(rel);
        let rel = rel.display();
        let o = env.ok(&[OsStr::new("dump"), OsStr::new("latest"), p.as_os_str()]);
        assert!(
            o.stdout == std::fs::read(&p).unwrap(),
            "dump {rel}: {} bytes differ from source",
            o.stdout.len()
        );
    }

    // ls lists the name that is not UTF-8, in some recognisable form.
    let o = env.ok(&["ls", "latest"]);
    let listed = o.stdout.split(|&b| b == b'\n').any(|line| {
        let Some(pos) = line.windows(4).rposition(|w| w == b"/caf") else {
            return false;
        };
        let rest = &line[pos + 4..];
        [
            &b"\xe9"[..],
            "\u{fffd}".as_bytes(),
            b"\\xe9",
            b"\\xE9",
            b"%E9",
            b"%e9",
            b"\\351",
        ]
        .iter()
        .any(|form| rest.starts_with(form))
    });
    assert!(
        listed,
        "ls does not list caf\\xe9:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // And every other name appears too.
    let text = String::from_utf8_lossy(&o.stdout);
    for rel in [
        "sub/deeper/deepest/leaf.txt",
        "links/dangling",
        "fifo",
        "empty_dir",
    ] {
        let want = src.join(rel);
        assert!(
            text.lines().any(|l| l.ends_with(&*want.to_string_lossy())),
            "ls misses {rel}:\n{text}"
        );
    }
}

#[test]
fn restore_include_restores_only_matching_paths() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    std::fs::create_dir_all(src.join("other")).unwrap();
    let files = [
        ("sub/x.txt", random_bytes(10, 1000)),
        ("sub/deep/y.txt", random_bytes(11, 2000)),
        ("other/z.dat", random_bytes(12, 3000)),
        ("top.txt", random_bytes(13, 4000)),
        ("top.dat", random_bytes(14, 5000)),
    ];
    for (p, d) in &files {
        std::fs::write(src.join(p), d).unwrap();
    }
    env.ok(&[OsStr::new("backup"), src.as_os_str()]);

    let check = |name: &str, include: &OsStr, want: &[&str]| {
        let target = env.path(name);
        env.ok(&[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("--target"),
            target.as_os_str(),
            OsStr::new("--include"),
            include,
        ]);
        let out = restored(&target, &src);
        let mut got: Vec<String> = common::files_under(&target)
            .iter()
            .map(|p| p.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "--include {include:?}");
        for (p, d) in &files {
            if want.iter().any(|w| w == p) {
                assert!(&std::fs::read(out.join(p)).unwrap() == d, "{p} differs");
            }
        }
    };
    check(
        "r1",
        OsStr::new("*.txt"),
        &["sub/x.txt", "sub/deep/y.txt", "top.txt"],
    );
    let other = src.join("other");
    check("r2", other.as_os_str(), &["other/z.dat"]);
    check("r3", OsStr::new("*.dat"), &["other/z.dat", "top.dat"]);
}

#[test]
fn stdin_backup_dumps_the_same_bytes() {
    let env = Env::new();
    let data = random_bytes(20, 3 * MIB + 777);
    let out = env
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-name", "db.sql"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    common::assert_success(&out, &["backup", "--stdin"]);
    let sum = common::summary(&common::json_lines(&out.stdout));
    assert_eq!(sum["bytes_read"].as_u64(), Some(data.len() as u64), "{sum}");

    let ls = common::stdout(&env.ok(&["ls", "latest"]));
    let path = ls
        .lines()
        .find(|l| l.ends_with("db.sql"))
        .unwrap_or_else(|| panic!("db.sql not listed:\n{ls}"))
        .trim()
        .to_string();
    let dumped = env.ok(&["dump", "latest", &path]).stdout;
    assert_eq!(dumped.len(), data.len());
    assert!(dumped == data, "dump of stdin backup differs");
}

#[test]
fn diff_names_the_changed_file() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/changed.txt"), b"version one\n").unwrap();
    std::fs::write(src.join("same.txt"), b"unchanged\n").unwrap();
    std::fs::write(src.join("gone.txt"), b"to be removed\n").unwrap();
    let first = env.backup_summary(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    std::fs::write(src.join("d/changed.txt"), b"version two, longer\n").unwrap();
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::write(src.join("new.txt"), b"brand new\n").unwrap();
    let second = env.backup_summary(&[&src]);
    assert_eq!(second["parent"].as_str(), Some(first.as_str()), "{second}");
    let second = second["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    let out = common::stdout(&env.ok(&["diff", &first, &second]));
    let line_for = |name: &str| out.lines().find(|l| l.contains(name)).map(str::to_string);
    assert!(
        line_for("d/changed.txt").is_some(),
        "diff misses the change:\n{out}"
    );
    assert!(
        line_for("gone.txt").is_some(),
        "diff misses the removal:\n{out}"
    );
    assert!(
        line_for("new.txt").is_some(),
        "diff misses the addition:\n{out}"
    );
    assert!(
        line_for("same.txt").is_none(),
        "diff names an unchanged file:\n{out}"
    );
}
