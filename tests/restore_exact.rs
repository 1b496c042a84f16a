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
    let first = env.backup_summary(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

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

    // diff and restore --dry-run carry names the same way.
    std::fs::write(src.join(OsStr::from_bytes(b"new\xfe\n")), b"new").unwrap();
    let second = env.backup_summary(&[&src])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let want = {
        let mut w = src.as_os_str().as_bytes().to_vec();
        w.extend_from_slice(b"/new\xfe\n");
        w
    };
    let decode = |l: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(l["path_b64"].as_str().unwrap())
            .unwrap()
    };
    let lines = env.json(&["diff", &first, &second]);
    let added: Vec<_> = lines.iter().filter(|l| l["modifier"] == "+").collect();
    assert_eq!(added.len(), 1, "{lines:?}");
    assert_eq!(decode(added[0]), want);
    let out = stdout(&env.ok(&["diff", &first, &second]));
    assert!(out.contains("/new\\xfe\\n\n"), "{out}");
    let target = env.path("t");
    std::fs::create_dir_all(&target).unwrap();
    let lines = env.json(&[
        "restore",
        &second,
        "--dry-run",
        "--target",
        target.to_str().unwrap(),
    ]);
    let new: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.get("path_b64")
                .is_some_and(|_| decode(l).ends_with(b"/new\xfe\n"))
        })
        .collect();
    assert_eq!(new.len(), 1, "{lines:?}");
}

#[allow(dead_code)]
fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A tree big enough that a restore can be stopped mid-way: many files of
/// several sizes.
fn many_files(env: &Env) -> PathBuf {
    let src = env.path("many");
    for d in 0..6u64 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..40u64 {
            let len = if i % 7 == 0 { 1_500_000 } else { 60_000 };
            std::fs::write(dir.join(format!("f{i}")), random_bytes(d * 100 + i, len)).unwrap();
        }
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o750)).unwrap();
    }
    src
}

/// Starts `strata restore latest --target target` as a child process.
fn spawn_restore(env: &Env, target: &Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("strata"))
        .arg("--repo")
        .arg(env.repo())
        .arg("--password-file")
        .arg(env.pw())
        .args(["restore", "latest", "--threads", "1", "--target"])
        .arg(target)
        .env("STRATA_NO_CACHE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `dir` holds at least `n` complete files (under their own names).
fn wait_for_files(dir: &Path, n: usize, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while all_files(dir).iter().filter(|p| !is_partial(p)).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "restore made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "restore ended too soon"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Every regular file below `dir`, temporary ones included.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
}

fn is_partial(p: &Path) -> bool {
    p.file_name()
        .unwrap()
        .as_bytes()
        .ends_with(strata::restore::PARTIAL_SUFFIX.as_bytes())
}

/// Every file under its own name in `dst` is the source's, byte for byte,
/// with its mode and mtime; returns how many there are.
fn complete_files_only(src: &Path, dst: &Path) -> usize {
    let mut n = 0;
    for f in all_files(dst) {
        if is_partial(&f) {
            continue;
        }
        let orig = src.join(f.strip_prefix(dst).unwrap());
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(&orig).unwrap(),
            "{} is under its own name but not complete",
            f.display()
        );
        let (a, b) = (
            std::fs::metadata(&orig).unwrap(),
            std::fs::metadata(&f).unwrap(),
        );
        assert_eq!(a.mode(), b.mode(), "{}", f.display());
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{}",
            f.display()
        );
        n += 1;
    }
    n
}

#[test]
fn an_interrupted_restore_leaves_complete_files_and_a_rerun_finishes_it() {
    let env = Env::new();
    let src = many_files(&env);
    env.ok(&[Path::new("backup"), &src]);
    let target = env.path("target");
    let dst = restored(&target, &src);

    // SIGTERM mid-way: exit 130, one line, only complete files remain.
    let mut child = spawn_restore(&env, &target);
    wait_for_files(&target, 20, &mut child);
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(130), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("strata: interrupted: ") && lines[0].contains("of 240 files restored"),
        "{err}"
    );
    let left = complete_files_only(&src, &dst);
    assert!((20..240).contains(&left), "{left} files left");
    assert!(
        !all_files(&dst).iter().any(|p| is_partial(p)),
        "partial files left"
    );
    // Directories have their final modes even so.
    assert_eq!(mode_of(&dst.join("d0")), 0o750);

    // Killed outright: whatever is left is complete or clearly partial.
    let mut child = spawn_restore(&env, &target);
    wait_for_files(&target, left + 10, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let left2 = complete_files_only(&src, &dst);
    assert!(left2 >= left, "{left2} < {left}");

    // The re-run keeps what is complete, restores the rest, and says so.
    let out = env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &target,
    ]);
    let text = stdout(&out);
    assert!(text.contains(&format!("kept {left2} files")), "{text}");
    assert!(
        text.contains(&format!("restored {} files", 240 - left2)),
        "{text}"
    );
    assert!(
        !all_files(&dst).iter().any(|p| is_partial(p)),
        "partial files left"
    );
    compare_trees(&src, &dst, &Compare::all());
}

/// Runs `restore latest --target target EXTRA...` and returns stdout.
fn restore_with(env: &Env, target: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    stdout(&env.ok(&args))
}

/// Every path below `dir` with its type, size, mode and mtime: a picture
/// of the target to tell whether anything changed.
fn picture(dir: &Path) -> Vec<(PathBuf, u32, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m.mode(), m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    out.sort();
    out
}

#[test]
fn overwrite_modes_delete_and_dry_run() {
    let env = Env::new();
    let src = small_tree(&env);
    env.ok(&[Path::new("backup"), &src]);
    let target = env.path("target");
    let dst = restored(&target, &src);
    restore_with(&env, &target, &[]);
    let small_mtime = filetime::FileTime::from_last_modification_time(
        &std::fs::metadata(src.join("small")).unwrap(),
    );

    // Local changes: `small` rewritten with the same size and mtime (only
    // `always` sees it), `sub/deep/x` rewritten and newer, `big` removed,
    // an extra file and an extra directory tree.
    let tamper = || {
        std::fs::write(dst.join("small"), b"SMALL\n").unwrap();
        filetime::set_file_mtime(dst.join("small"), small_mtime).unwrap();
        std::fs::write(dst.join("sub/deep/x"), b"local edit").unwrap();
        let _ = std::fs::remove_file(dst.join("big"));
        std::fs::write(dst.join("extra"), b"not in the snapshot").unwrap();
        std::fs::create_dir_all(dst.join("sub/junk/deeper")).unwrap();
        std::fs::write(dst.join("sub/junk/deeper/f"), b"junk").unwrap();
    };
    tamper();

    // --dry-run lists the changes and writes nothing.
    let before = picture(&target);
    let out = restore_with(&env, &target, &["--dry-run", "--delete"]);
    assert_eq!(picture(&target), before, "dry run changed the target");
    let rel = |p: &str| format!("{}/{p}", src.display());
    for want in [
        format!("+  {}", rel("big")),
        format!("M  {}", rel("sub/deep/x")),
        format!("-  {}", rel("extra")),
        format!("-  {}", rel("sub/junk")),
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} not in\n{out}");
    }
    assert!(!out.contains(&rel("small")), "{out}");
    assert!(out.contains("nothing written"), "{out}");
    let lines = env.json(&[
        "restore",
        "latest",
        "--dry-run",
        "--target",
        target.to_str().unwrap(),
    ]);
    let s = summary(&lines);
    assert_eq!(
        (s["files_new"].as_u64(), s["files_replaced"].as_u64()),
        (Some(1), Some(1))
    );

    // never: nothing there is touched, missing files come back.
    restore_with(&env, &target, &["--overwrite", "never"]);
    assert_eq!(
        std::fs::read(dst.join("sub/deep/x")).unwrap(),
        b"local edit"
    );
    assert_eq!(
        std::fs::read(dst.join("big")).unwrap(),
        std::fs::read(src.join("big")).unwrap()
    );

    // if-newer: the newer local edit stays.
    restore_with(&env, &target, &["--overwrite", "if-newer"]);
    assert_eq!(
        std::fs::read(dst.join("sub/deep/x")).unwrap(),
        b"local edit"
    );

    // if-changed (the default): the edit goes, the same-size-and-mtime
    // file stays; --delete removes the extras, but only at or below the
    // backed-up path: the directories on the way to it keep their other
    // entries.
    let neighbour = dst.parent().unwrap().join("neighbour");
    std::fs::write(&neighbour, b"next to the backed-up path").unwrap();
    std::fs::write(target.join("top"), b"at the target root").unwrap();
    let out = restore_with(&env, &target, &["--delete"]);
    assert!(out.contains("deleted 2 entries"), "{out}");
    assert!(neighbour.exists() && target.join("top").exists());
    assert_eq!(std::fs::read(dst.join("small")).unwrap(), b"SMALL\n");
    assert!(!dst.join("extra").exists() && !dst.join("sub/junk").exists());

    // --delete with --include: only below what matched.
    std::fs::write(dst.join("extra2"), b"outside the include").unwrap();
    std::fs::write(dst.join("sub/junk2"), b"inside the include").unwrap();
    let out = restore_with(&env, &target, &["--delete", "--include", "sub"]);
    assert!(out.contains("deleted 1 entries"), "{out}");
    assert!(dst.join("extra2").exists() && !dst.join("sub/junk2").exists());
    std::fs::remove_file(dst.join("extra2")).unwrap();

    // always: every file written again; the target is the snapshot.
    restore_with(&env, &target, &["--overwrite", "always"]);
    compare_trees(&src, &dst, &Compare::all());
    assert_eq!(mode_of(&dst.join("sub")), 0o750);
}

/// One entry of a [`fingerprint`]: path, mode, uid, gid, size, mtime (s,
/// ns) and content.
type Print = (PathBuf, u32, u32, u32, u64, i64, i64, Vec<u8>);

/// Everything below `dir` (symlinks not followed) with type, mode, owner,
/// size, mtime and content: nothing there may change.
fn fingerprint(dir: &Path) -> Vec<Print> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        out.push((
            d.clone(),
            m.mode(),
            m.uid(),
            m.gid(),
            0,
            m.mtime(),
            m.mtime_nsec(),
            vec![],
        ));
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
                continue;
            }
            let content = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                vec![]
            };
            out.push((
                p,
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                content,
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn an_attacker_swapping_entries_for_symlinks_cannot_make_a_restore_write_outside() {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    let env = Env::new();
    // The source: directories of small and multi-chunk files with modes
    // (setuid among them), a fifo and a symlink.
    let src = env.path("src");
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for d in 0..8 {
        let dir = format!("d{d}");
        std::fs::create_dir_all(src.join(&dir).join("inner")).unwrap();
        dirs.push(dir.clone());
        dirs.push(format!("{dir}/inner"));
        for i in 0..12 {
            let f = if i % 2 == 0 {
                format!("{dir}/f{i}")
            } else {
                format!("{dir}/inner/f{i}")
            };
            let len = if i == 5 { 1_300_000 } else { 3000 + i * 100 };
            std::fs::write(src.join(&f), random_bytes((d * 100 + i) as u64, len)).unwrap();
            let mode = if i == 3 { 0o4755 } else { 0o640 };
            std::fs::set_permissions(src.join(&f), PermissionsExt::from_mode(mode)).unwrap();
            files.push(f);
        }
    }
    std::os::unix::fs::symlink("d0/f0", src.join("link")).unwrap();
    env.ok(&[Path::new("backup"), &src]);

    // Outside the target: a victim tree holding the same names, and a
    // victim file every symlink may point at.
    let outside = env.path("outside");
    for d in &dirs {
        std::fs::create_dir_all(outside.join(d)).unwrap();
    }
    for f in &files {
        std::fs::write(outside.join(f), b"victim").unwrap();
        std::fs::set_permissions(outside.join(f), PermissionsExt::from_mode(0o600)).unwrap();
    }
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::set_permissions(outside.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    let before = fingerprint(&outside);

    // The attacker: keeps replacing directories, files and temporary
    // files in the target with symlinks to the same names outside.
    let current: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (current, stop, swaps) = (current.clone(), stop.clone(), swaps.clone());
        let (dirs, files, outside) = (dirs.clone(), files.clone(), outside.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(15);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(dst) = current.lock().unwrap().clone() else {
                    std::thread::yield_now();
                    continue;
                };
                n += 1;
                // Never through one of our own symlinks (that would be the
                // attacker writing outside, not the restore).
                let through_link = |rel: &Path| {
                    rel.ancestors().skip(1).any(|a| {
                        !a.as_os_str().is_empty()
                            && std::fs::symlink_metadata(dst.join(a))
                                .is_ok_and(|m| m.file_type().is_symlink())
                    })
                };
                match rng.random_range(0..3) {
                    0 => {
                        let d = &dirs[rng.random_range(0..dirs.len())];
                        if through_link(Path::new(d)) {
                            continue;
                        }
                        let p = dst.join(d);
                        if std::fs::rename(&p, dst.join(format!("moved{n}"))).is_ok() {
                            let _ = std::os::unix::fs::symlink(outside.join(d), &p);
                        }
                    }
                    1 => {
                        let f = &files[rng.random_range(0..files.len())];
                        if through_link(Path::new(f)) {
                            continue;
                        }
                        let p = dst.join(f);
                        let _ = std::fs::remove_file(&p);
                        let _ = std::os::unix::fs::symlink(outside.join(f), &p);
                    }
                    _ => {
                        let f = Path::new(&files[rng.random_range(0..files.len())]).to_path_buf();
                        if through_link(&f) {
                            continue;
                        }
                        let name = f.file_name().unwrap().to_str().unwrap();
                        let p = dst
                            .join(f.parent().unwrap())
                            .join(format!(".{name}{}", strata::restore::PARTIAL_SUFFIX));
                        let _ = std::fs::remove_file(&p);
                        let _ = std::os::unix::fs::symlink(outside.join("secret"), &p);
                    }
                }
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Restores, fresh and over the tampered target, until thousands of
    // swaps were tried.
    let mut runs = 0;
    let mut disturbed = 0;
    let mut hits = 0;
    while runs < 4 || (swaps.load(Ordering::Relaxed) < 5000 && runs < 60) {
        let target = env.path(&format!("t{}", runs / 2));
        *current.lock().unwrap() = Some(restored(&target, &src));
        let out = env.run(&[
            Path::new("restore"),
            Path::new("latest"),
            Path::new("--overwrite"),
            Path::new("always"),
            Path::new("--target"),
            &target,
        ]);
        assert_no_panic(&out);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
        *current.lock().unwrap() = None; // the attacker pauses
        disturbed += usize::from(out.status.code() == Some(1));
        // Directories moved away during the restore.
        let dst = restored(&target, &src);
        hits += std::fs::read_dir(&dst)
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("moved")
                })
                .count()
            })
            .unwrap_or(0);
        runs += 1;
        let now = fingerprint(&outside);
        assert!(
            now == before,
            "run {runs} changed files outside the target: {:?}",
            now.iter()
                .filter(|e| !before.contains(e))
                .map(|e| &e.0)
                .collect::<Vec<_>>()
        );
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let tried = swaps.load(Ordering::Relaxed);
    assert!(tried >= 2000, "only {tried} swaps in {runs} restores");
    assert!(fingerprint(&outside) == before);

    // Without the attacker, a restore over the damage is exact again.
    *current.lock().unwrap() = None;
    let target = env.path("t0");
    env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--delete"),
        Path::new("--target"),
        &target,
    ]);
    compare_trees(&src, &restored(&target, &src), &Compare::all());
    eprintln!(
        "{tried} swaps over {runs} restores ({disturbed} with errors), {hits} directories moved away during them"
    );
    assert!(
        hits > 0,
        "the attacker never swapped a directory during a restore"
    );
}

#[test]
fn more_files_being_filled_than_descriptors_restore_exactly() {
    // With 28 descriptors a restore holds at most 7 files open while it
    // fills them; the other files of several chunks are opened again by
    // name for each write, and checked to be the files it created.
    let env = Env::new();
    let src = env.path("src");
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..6u64 {
            // Over the 4 MiB largest chunk: at least two chunks each.
            std::fs::write(
                src.join(d).join(format!("f{i}")),
                random_bytes(i + 40, 4_400_000),
            )
            .unwrap();
        }
    }
    env.ok(&[Path::new("backup"), &src]);
    let target = env.path("target");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 28 && exec "$0" "$@""#)
        .arg(assert_cmd::cargo::cargo_bin("strata"))
        .arg("--repo")
        .arg(env.repo())
        .arg("--password-file")
        .arg(env.pw())
        .args(["restore", "latest", "--verify", "--target"])
        .arg(&target)
        .env("STRATA_NO_CACHE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("verified 12 files"),
        "{}",
        stdout(&out)
    );
    compare_trees(&src, &restored(&target, &src), &Compare::all());
}
