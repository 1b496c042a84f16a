//! Round trips through the built binary: every kind of entry comes back as it
//! was — bytes, type, mode, ownership (as root), nanosecond mtimes, link
//! targets, hardlink identity, names that are not UTF-8, and holes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::CommandCargoExt;
use filetime::FileTime;

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "fidelity\n").unwrap();
        let r = Repo { dir };
        r.ok(&[
            "init",
            "--argon2-memory-kib",
            "1024",
            "--argon2-iterations",
            "1",
        ]);
        r
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::cargo_bin("strata")
            .unwrap()
            .env_remove("STRATA_PASSWORD")
            .env("STRATA_NO_CACHE", "1")
            .arg("--repo")
            .arg(self.path("repo"))
            .arg("--password-file")
            .arg(self.path("pw"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?}: exit {:?}\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as u8
        })
        .collect()
}

const MIB: u64 = 1 << 20;

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    filetime::set_symlink_file_times(
        p,
        FileTime::from_unix_time(secs, nanos),
        FileTime::from_unix_time(secs, nanos),
    )
    .unwrap();
}

/// Builds the tree; returns the sparse file's allocated bytes.
fn build_tree(root: &Path) -> u64 {
    let d = |p: &str| root.join(p);
    std::fs::create_dir_all(d("dir/nested/deeper")).unwrap();
    std::fs::create_dir_all(d("empty-dir")).unwrap();
    std::fs::write(d("empty-file"), b"").unwrap();
    std::fs::write(d("small.txt"), b"hello, strata\n").unwrap();
    std::fs::write(d("dir/big.bin"), random(1, 5 * MIB as usize + 12345)).unwrap();
    std::fs::write(d("dir/nested/deeper/leaf"), random(2, 70_000)).unwrap();
    std::os::unix::fs::symlink("../small.txt", d("dir/link-relative")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", d("dangling-link")).unwrap();
    std::fs::write(d("hard-a"), random(3, 10_000)).unwrap();
    std::fs::hard_link(d("hard-a"), d("dir/hard-b")).unwrap();
    let odd = root.join(OsStr::from_bytes(b"caf\xe9-\x01name"));
    std::fs::write(&odd, b"latin-1 name").unwrap();
    let fifo = std::ffi::CString::new(d("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);

    // Sparse: 64 MiB long, 1 MiB of data at 0 and at 40 MiB.
    let sparse = std::fs::File::create(d("disk.img")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    sparse.write_all_at(&random(4, MIB as usize), 0).unwrap();
    sparse
        .write_all_at(&random(5, MIB as usize), 40 * MIB)
        .unwrap();
    sparse.sync_all().unwrap();
    let allocated = sparse.metadata().unwrap().blocks() * 512;

    for (p, mode) in [
        ("small.txt", 0o600),
        ("dir/big.bin", 0o755),
        ("hard-a", 0o640),
        ("dir/nested", 0o700),
        ("empty-dir", 0o2775),
        ("empty-file", 0o4755),
    ] {
        std::fs::set_permissions(d(p), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if is_root() {
        for p in ["small.txt", "dir/nested", "dangling-link"] {
            std::os::unix::fs::lchown(d(p), Some(1234), Some(5678)).unwrap();
        }
    }
    // Nanosecond mtimes, on files, links and directories (deepest first).
    let mut all: Vec<PathBuf> = walk(root).into_keys().collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(
            &root.join(p),
            1_600_000_000 + i as i64 * 7,
            123_456_789 + i as u32,
        );
    }
    allocated
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What the comparison looks at, per relative path.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<[u8; 32]>,
    link: Option<PathBuf>,
    nlink: u64,
}

fn walk(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "file"
            };
            let content =
                (kind == "file").then(|| *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes());
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    size: if kind == "dir" { 0 } else { m.size() },
                    content,
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                    nlink: if kind == "dir" { 0 } else { m.nlink() },
                },
            );
        }
    }
    out
}

fn snapshot_root(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

#[test]
fn every_kind_of_entry_round_trips() {
    let repo = Repo::new();
    let src = repo.path("src");
    std::fs::create_dir(&src).unwrap();
    let allocated = build_tree(&src);
    let before = walk(&src);
    repo.ok(&["backup", "-q", src.to_str().unwrap()]);
    let target = repo.path("restored");
    repo.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--verify",
    ]);
    let restored = snapshot_root(&target, &src);
    let after = walk(&restored);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (p, want) in &before {
        assert_eq!(&after[p], want, "{}", p.display());
    }

    // Hardlinks come back as one inode.
    let a = std::fs::metadata(restored.join("hard-a")).unwrap();
    let b = std::fs::metadata(restored.join("dir/hard-b")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hardlinks restored as copies");
    assert_eq!(a.nlink(), 2);

    // Holes come back as holes.
    let img = std::fs::metadata(restored.join("disk.img")).unwrap();
    assert_eq!(img.len(), 64 * MIB);
    let used = img.blocks() * 512;
    assert!(
        used <= allocated + 2 * MIB,
        "sparse file uses {used} bytes restored, {allocated} in the source"
    );

    // The root's ownership, as root.
    if is_root() {
        let m = std::fs::symlink_metadata(restored.join("dir/nested")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
}

#[test]
fn include_dump_stdin_ls_and_diff() {
    let repo = Repo::new();
    let src = repo.path("src");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    repo.ok(&["backup", "-q", src.to_str().unwrap()]);

    // --include: just what matches, and what is below it.
    let target = repo.path("partial");
    let pattern = format!("{}/dir/nested/**", src.display());
    repo.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        &pattern,
    ]);
    let got = walk(&snapshot_root(&target, &src));
    let files: Vec<_> = got
        .iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(files, vec![PathBuf::from("dir/nested/deeper/leaf")]);

    // dump: exact bytes of one file.
    let big = src.join("dir/big.bin");
    let dumped = repo.ok(&["dump", "latest", big.to_str().unwrap()]);
    assert!(dumped == std::fs::read(&big).unwrap());

    // ls lists the non-UTF-8 name (escaped or lossy, but present).
    let ls = String::from_utf8_lossy(&repo.ok(&["ls", "latest"])).into_owned();
    assert!(ls.contains("caf"), "{ls}");
    assert!(ls.contains("leaf"), "{ls}");

    // stdin backups dump back byte for byte.
    let data = random(9, 3 * MIB as usize + 7);
    let mut child = std::process::Command::cargo_bin("strata")
        .unwrap()
        .env("STRATA_NO_CACHE", "1")
        .arg("--repo")
        .arg(repo.path("repo"))
        .arg("--password-file")
        .arg(repo.path("pw"))
        .args(["backup", "-q", "--stdin", "--stdin-name", "db.sql"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(repo.ok(&["dump", "latest", "/db.sql"]) == data);

    // diff names a changed file between two snapshots of the tree.
    std::fs::write(src.join("small.txt"), b"changed\n").unwrap();
    repo.ok(&["backup", "-q", src.to_str().unwrap()]);
    let snaps: Vec<serde_json::Value> = String::from_utf8(repo.ok(&["--json", "snapshots"]))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["message_type"] == "snapshot")
        .filter(|v| v["paths"][0] == src.to_str().unwrap())
        .collect();
    assert_eq!(snaps.len(), 2);
    let diff = String::from_utf8(repo.ok(&[
        "diff",
        snaps[0]["id"].as_str().unwrap(),
        snaps[1]["id"].as_str().unwrap(),
    ]))
    .unwrap();
    assert!(diff.contains("small.txt"), "{diff}");
    assert!(!diff.contains("big.bin"), "{diff}");
}
