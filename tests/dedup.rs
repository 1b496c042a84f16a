//! Deduplication seen from outside: backing up the same data again adds
//! (almost) nothing, one changed byte in a large file costs about one chunk,
//! and `--mode full` re-reads everything yet still stores almost nothing.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;

use common::{Env, dir_size, random_bytes};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The chunker's maximum chunk size.
const MAX_CHUNK: u64 = 4 * MIB;

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {key:?} in {v}"))
}

/// ~20 MiB of random data in a few files plus 300 small files.
fn build_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for (i, size) in [(0u64, 7 * MIB), (1, 5 * MIB + 4321), (2, 8 * MIB - 99)] {
        std::fs::write(
            src.join(format!("big/f{i}.bin")),
            random_bytes(100 + i, size as usize),
        )
        .unwrap();
    }
    for d in 0..10 {
        let dir = src.join(format!("small/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let n = d * 30 + f;
            std::fs::write(
                dir.join(format!("s{f}.txt")),
                random_bytes(1000 + n, 100 + (n as usize * 37) % 5000),
            )
            .unwrap();
        }
    }
    src
}

#[test]
fn second_backup_of_same_tree_adds_almost_nothing() {
    let env = Env::new();
    let src = build_tree(&env);
    let src_bytes = dir_size(&src);
    assert!(src_bytes > 20 * MIB);

    let first = env.backup_summary(&[&src]);
    assert_eq!(u(&first, "files_new"), 303, "{first}");
    assert_eq!(u(&first, "bytes_read"), src_bytes, "{first}");
    // Random data does not compress: the first backup stores it all.
    assert!(u(&first, "data_added") >= src_bytes, "{first}");
    let size1 = dir_size(&env.repo());
    assert!(
        size1 >= src_bytes,
        "repository {size1} < source {src_bytes}"
    );

    // Incremental (default): nothing changed, nothing read, nothing added.
    let second = env.backup_summary(&[&src]);
    assert_eq!(
        second["parent"].as_str(),
        first["snapshot_id"].as_str(),
        "{second}"
    );
    assert_eq!(u(&second, "files_unmodified"), 303, "{second}");
    assert_eq!(u(&second, "files_new") + u(&second, "files_changed"), 0);
    assert!(
        u(&second, "data_added") < 64 * KIB,
        "second backup added {} bytes",
        u(&second, "data_added")
    );
    let size2 = dir_size(&env.repo());
    eprintln!(
        "unchanged re-backup: data_added {}, repository {size1} -> {size2}",
        u(&second, "data_added")
    );
    assert!(
        size2 - size1 < 64 * KIB,
        "repository grew by {} bytes on an unchanged re-backup",
        size2 - size1
    );

    // Full mode: every file read again, but the data is already stored.
    let full = env.backup_summary(&[OsStr::new("--mode"), OsStr::new("full"), src.as_os_str()]);
    assert_eq!(full["mode"], "full", "{full}");
    assert!(full["parent"].is_null(), "full backup has a parent: {full}");
    assert_eq!(u(&full, "bytes_read"), src_bytes, "{full}");
    assert!(
        u(&full, "data_added") < 64 * KIB,
        "full re-read added {} bytes",
        u(&full, "data_added")
    );
    let size3 = dir_size(&env.repo());
    assert!(
        size3 - size2 < 64 * KIB,
        "repository grew by {} bytes on a full re-backup",
        size3 - size2
    );

    // `snapshots --json` shows modes and parents.
    let snaps: Vec<_> = env
        .json(&["snapshots"])
        .into_iter()
        .filter(|v| v["message_type"] == "snapshot")
        .collect();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let by_id = |v: &serde_json::Value| {
        snaps
            .iter()
            .find(|s| s["id"] == v["snapshot_id"])
            .unwrap_or_else(|| panic!("snapshot {} not listed", v["snapshot_id"]))
            .clone()
    };
    let (s1, s2, s3) = (by_id(&first), by_id(&second), by_id(&full));
    // The first backup read everything: it is recorded as full.
    assert_eq!(s1["mode"], "full");
    assert!(s1["parent"].is_null(), "{s1}");
    assert_eq!(s2["mode"], "incremental");
    assert_eq!(s2["parent"], s1["id"], "{s2}");
    assert_eq!(s3["mode"], "full");
    assert!(s3["parent"].is_null(), "{s3}");
}

#[test]
fn one_changed_byte_costs_about_one_chunk() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("disk.img");
    let size = 100 * MIB;
    let data = random_bytes(7, size as usize);
    std::fs::write(&file, &data).unwrap();

    let first = env.backup_summary(&[&src]);
    assert!(u(&first, "data_added") >= size, "{first}");
    let size1 = dir_size(&env.repo());

    // Flip one byte in the middle; keep the length and bump the mtime.
    let mid = size / 2 + 12_345;
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&[data[mid as usize] ^ 0xff], mid).unwrap();
    drop(f);
    let t = filetime::FileTime::from_unix_time(1_700_000_000, 5);
    filetime::set_file_mtime(&file, t).unwrap();

    let second = env.backup_summary(&[&src]);
    assert_eq!(u(&second, "files_changed"), 1, "{second}");
    assert_eq!(u(&second, "bytes_read"), size, "{second}");
    let added = u(&second, "data_added");
    eprintln!("one changed byte: data_added {added}");
    assert!(added > 0, "a changed byte added nothing: {second}");
    // At most the two chunks around the change (each ≤ max size), plus
    // metadata (trees, index, pack headers, snapshot).
    assert!(
        added <= 2 * MAX_CHUNK + 256 * KIB,
        "one changed byte added {added} bytes"
    );
    let grown = dir_size(&env.repo()) - size1;
    assert!(
        grown > 0 && grown <= 2 * MAX_CHUNK + 256 * KIB,
        "repository grew by {grown} bytes"
    );

    // The new version restores byte for byte.
    let p = file.clone();
    let out = env.ok(&[OsStr::new("dump"), OsStr::new("latest"), p.as_os_str()]);
    assert!(out.stdout == std::fs::read(&file).unwrap(), "dump differs");
}
