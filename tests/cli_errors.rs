//! Failures as a user meets them: exit codes from the CLI contract (12 wrong
//! password, 10 no repository, 3 unreadable source files), damage to every
//! kind of repository object found and named by `check --read-data`, a
//! damaged pack during restore, bad config files and unknown snapshots.
//! Never a panic, and errors are short.

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Env, assert_no_panic, copy_tree, files_under, flip_byte, random_bytes, restored};

/// Non-empty lines of stderr.
fn err_lines(out: &Output) -> Vec<String> {
    common::stderr(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn all_output(out: &Output) -> String {
    format!("{}{}", common::stdout(out), common::stderr(out))
}

/// A repository holding two snapshots of a small tree.
fn populated() -> (Env, PathBuf) {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), random_bytes(1, 600_000)).unwrap();
    env.ok(&[OsStr::new("backup"), src.as_os_str()]);
    std::fs::write(src.join("c.bin"), random_bytes(2, 900_000)).unwrap();
    env.ok(&[OsStr::new("backup"), src.as_os_str()]);
    (env, src)
}

/// The object files of one folder of the repository (`data`, `index`, ...).
fn objects(repo: &Path, folder: &str) -> Vec<PathBuf> {
    files_under(&repo.join(folder))
}

/// Copies the repository to a fresh directory named `name` and returns it.
fn copy_repo(env: &Env, name: &str) -> PathBuf {
    let to = env.path(name);
    copy_tree(&env.repo(), &to);
    to
}

/// The path of `obj` in the copy `copy` of the repository.
fn in_copy(env: &Env, copy: &Path, obj: &Path) -> PathBuf {
    copy.join(obj.strip_prefix(env.repo()).unwrap())
}

/// `check --read-data` on the repository at `repo`; it must not panic.
fn check_read_data(env: &Env, repo: &Path) -> Output {
    let out = env
        .cmd_for(repo)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert_no_panic(&out);
    out
}

/// Whether `text` names the object file `obj`: its file name (the id), or
/// the id's 8-character short form, or the folder-relative path.
fn names_object(text: &str, obj: &Path) -> bool {
    let id = obj.file_name().unwrap().to_string_lossy();
    text.contains(&*id) || (id.len() > 8 && text.contains(&id[..8]))
}

#[test]
fn wrong_password_exits_12_with_one_line_without_the_password() {
    let (env, _) = populated();
    let wrong = "Tr0ub4dor&3-not-it";
    let pw = env.path("wrong-pw");
    std::fs::write(&pw, format!("{wrong}\n")).unwrap();
    let out = Env::bare()
        .arg("--repo")
        .arg(env.repo())
        .arg("--password-file")
        .arg(&pw)
        .arg("snapshots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", all_output(&out));
    assert_eq!(err_lines(&out).len(), 1, "{:?}", err_lines(&out));
    assert!(!all_output(&out).contains(wrong), "password leaked");
    assert!(!all_output(&out).contains(common::PASSWORD));
    assert_no_panic(&out);

    // The same from the environment variable.
    let out = Env::bare()
        .arg("--repo")
        .arg(env.repo())
        .env("STRATA_PASSWORD", wrong)
        .args(["restore", "latest", "--target"])
        .arg(env.path("never"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", all_output(&out));
    assert_eq!(err_lines(&out).len(), 1, "{:?}", err_lines(&out));
    assert!(!all_output(&out).contains(wrong), "password leaked");
    assert!(!env.path("never").join("tmp").exists());
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::empty();
    let missing = env.path("no-such-repo");
    for args in [
        &["snapshots"][..],
        &["check"],
        &["ls", "latest"],
        &["backup", "/dev/null"],
    ] {
        let out = env.cmd_for(&missing).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(10),
            "{args:?}: {}",
            all_output(&out)
        );
        assert_eq!(err_lines(&out).len(), 1, "{:?}", err_lines(&out));
        assert_no_panic(&out);
    }
    assert!(!missing.exists(), "a failed command created the repository");
}

#[test]
fn check_read_data_names_each_damaged_object() {
    let (env, _) = populated();
    let check_ok = env.run(&["check", "--read-data"]);
    common::assert_success(&check_ok, &["check", "--read-data"]);

    let mut packs = objects(&env.repo(), "data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    assert!(packs.len() >= 2, "{packs:?}");
    let mut victims = vec![
        ("largest pack", packs.last().unwrap().clone()),
        ("smallest pack", packs[0].clone()),
    ];
    for folder in ["index", "snapshots"] {
        let objs = objects(&env.repo(), folder);
        assert!(!objs.is_empty(), "no {folder} objects");
        victims.push((folder, objs[0].clone()));
    }
    for (i, (what, obj)) in victims.iter().enumerate() {
        let copy = copy_repo(&env, &format!("copy{i}"));
        flip_byte(&in_copy(&env, &copy, obj), None);
        let out = check_read_data(&env, &copy);
        assert!(!out.status.success(), "{what}: check passed on damage");
        assert!(
            names_object(&all_output(&out), obj),
            "{what} {}: not named in\n{}",
            obj.display(),
            all_output(&out)
        );
    }

    // Config and key files: the repository cannot be opened; one clear line.
    let keys = objects(&env.repo(), "keys");
    assert_eq!(keys.len(), 1);
    for (i, (what, obj)) in [
        ("config", env.repo().join("config")),
        ("key", keys[0].clone()),
    ]
    .iter()
    .enumerate()
    {
        for offset in [Some(0), None] {
            let copy = copy_repo(&env, &format!("meta{i}-{offset:?}"));
            flip_byte(&in_copy(&env, &copy, obj), offset);
            let out = check_read_data(&env, &copy);
            assert!(!out.status.success(), "{what}: damage not noticed");
            assert_eq!(
                err_lines(&out).len(),
                1,
                "{what} at {offset:?}: not a one-line error:\n{}",
                common::stderr(&out)
            );
        }
    }
}

#[test]
fn truncated_or_deleted_pack_is_named_by_check() {
    let (env, _) = populated();
    let mut packs = objects(&env.repo(), "data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.last().unwrap().clone();
    let len = std::fs::metadata(&pack).unwrap().len();

    let copy = copy_repo(&env, "truncated");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(in_copy(&env, &copy, &pack))
        .unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let out = check_read_data(&env, &copy);
    assert!(!out.status.success(), "check passed a truncated pack");
    assert!(
        names_object(&all_output(&out), &pack),
        "truncated pack not named:\n{}",
        all_output(&out)
    );

    let copy = copy_repo(&env, "deleted");
    std::fs::remove_file(in_copy(&env, &copy, &pack)).unwrap();
    for args in [&["check"][..], &["check", "--read-data"]] {
        let out = env.cmd_for(&copy).args(args).output().unwrap();
        assert_no_panic(&out);
        assert!(!out.status.success(), "{args:?} passed a missing pack");
        assert!(
            names_object(&all_output(&out), &pack),
            "{args:?}: missing pack not named:\n{}",
            all_output(&out)
        );
    }
}

#[test]
fn restore_with_a_damaged_pack_names_the_file_and_restores_the_rest() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    let small = random_bytes(30, 50_000);
    std::fs::write(src.join("keep/a.txt"), b"alpha\n").unwrap();
    std::fs::write(src.join("keep/small.bin"), &small).unwrap();
    env.ok(&[OsStr::new("backup"), src.as_os_str()]);
    let before = objects(&env.repo(), "data");

    // The second backup's only new data is the victim's.
    let victim = random_bytes(31, 1_500_000);
    std::fs::write(src.join("victim.bin"), &victim).unwrap();
    env.ok(&[OsStr::new("backup"), src.as_os_str()]);
    let mut new: Vec<_> = objects(&env.repo(), "data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    new.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = new.last().expect("second backup wrote no pack").clone();
    assert!(std::fs::metadata(&pack).unwrap().len() >= victim.len() as u64);
    flip_byte(&pack, None);

    let target = env.path("out");
    let out = env
        .cmd()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(
        !out.status.success(),
        "restore from a damaged pack succeeded"
    );
    assert!(
        all_output(&out).contains("victim.bin"),
        "damaged file not named:\n{}",
        all_output(&out)
    );
    let r = restored(&target, &src);
    assert_eq!(std::fs::read(r.join("keep/a.txt")).unwrap(), b"alpha\n");
    assert!(std::fs::read(r.join("keep/small.bin")).unwrap() == small);
    // Nothing is under the damaged file's name; what was written of it (if
    // it has more than one chunk) is left under a name that says it is
    // partial.
    assert!(
        std::fs::symlink_metadata(r.join("victim.bin")).is_err(),
        "a damaged file is under its own name"
    );
    if let Ok(got) = std::fs::read(r.join(".victim.bin.strata-partial")) {
        assert!(got != victim, "damaged data restored as if intact");
    }
}

/// Runs `strata backup` as user nobody, or None when that is impossible here.
fn backup_as_nobody(env: &Env, src: &Path) -> Option<Output> {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let bin = assert_cmd::cargo::cargo_bin("strata");
    let probe = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--version")
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "skipping: nobody cannot run {}: {}",
            bin.display(),
            common::stderr(&probe)
        );
        return None;
    }
    // nobody needs to reach the source, the password and the repository.
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(env.dir.path(), 0o755);
    open(&env.pw(), 0o644);
    let mut stack = vec![env.repo()];
    while let Some(d) = stack.pop() {
        open(&d, 0o777);
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                open(&e.path(), 0o644);
            }
        }
    }
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .env_remove("STRATA_PASSWORD")
        .env_remove("STRATA_REPO")
        .env_remove("STRATA_CONFIG")
        .env("STRATA_NO_CACHE", "1")
        .arg("--repo")
        .arg(env.repo())
        .arg("--password-file")
        .arg(env.pw())
        .arg("backup")
        .arg(src)
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn unreadable_source_file_exits_3_and_keeps_the_rest() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let readable = random_bytes(40, 10_000);
    std::fs::write(src.join("sub/readable.bin"), &readable).unwrap();
    std::fs::write(src.join("plain.txt"), b"plain\n").unwrap();
    std::fs::write(src.join("locked.txt"), b"you cannot read me\n").unwrap();
    let locked = src.join("locked.txt");

    let out = if common::is_root() {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).unwrap();
        match backup_as_nobody(&env, &src) {
            Some(o) => o,
            None => {
                eprintln!("skipping: cannot drop privileges to nobody here");
                return;
            }
        }
    } else {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&locked).is_ok() {
            eprintln!("skipping: a mode-000 file is still readable here");
            return;
        }
        env.run(&[OsStr::new("backup"), src.as_os_str()])
    };
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(3), "{}", all_output(&out));
    assert!(
        common::stderr(&out).contains("locked.txt"),
        "unreadable file not named:\n{}",
        common::stderr(&out)
    );

    let snaps: Vec<_> = env
        .json(&["snapshots"])
        .into_iter()
        .filter(|v| v["message_type"] == "snapshot")
        .collect();
    assert_eq!(snaps.len(), 1, "the snapshot was not saved");
    // The summary counts what was saved, not what was attempted.
    assert_eq!(snaps[0]["summary"]["files_new"], 2, "{}", snaps[0]);

    let target = env.path("out");
    env.ok(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    let r = restored(&target, &src);
    assert!(std::fs::read(r.join("sub/readable.bin")).unwrap() == readable);
    assert_eq!(std::fs::read(r.join("plain.txt")).unwrap(), b"plain\n");
    // The unreadable file must not come back with made-up content.
    if let Ok(got) = std::fs::read(r.join("locked.txt")) {
        assert_ne!(got, b"you cannot read me\n");
    }
}

#[test]
fn unknown_config_key_is_a_one_line_error() {
    let (env, _) = populated();
    for (name, text) in [
        (
            "section.toml",
            format!(
                "[repository]\nurl = {:?}\nbogus_setting = 1\n",
                env.repo().to_str().unwrap()
            ),
        ),
        (
            "top.toml",
            format!(
                "no_such_table_key = true\n[repository]\nurl = {:?}\n",
                env.repo().to_str().unwrap()
            ),
        ),
    ] {
        let cfg = env.path(name);
        std::fs::write(&cfg, text).unwrap();
        let out = Env::bare()
            .arg("--config")
            .arg(&cfg)
            .arg("--password-file")
            .arg(env.pw())
            .arg("snapshots")
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert!(!out.status.success(), "{name}: unknown key accepted");
        let lines = err_lines(&out);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        let key = if name == "top.toml" {
            "no_such_table_key"
        } else {
            "bogus_setting"
        };
        assert!(lines[0].contains(key), "{name}: key not named: {lines:?}");
    }

    // The same config without the bad key works (so the failure was the key).
    let cfg = env.path("good.toml");
    std::fs::write(
        &cfg,
        format!("[repository]\nurl = {:?}\n", env.repo().to_str().unwrap()),
    )
    .unwrap();
    let out = Env::bare()
        .arg("--config")
        .arg(&cfg)
        .arg("--password-file")
        .arg(env.pw())
        .arg("snapshots")
        .output()
        .unwrap();
    common::assert_success(&out, &["--config", "good.toml", "snapshots"]);
}

#[test]
fn restore_of_unknown_snapshot_is_a_clear_error() {
    let (env, _) = populated();
    let target = env.path("out");
    let out = env
        .cmd()
        .args(["restore", "0123abcd", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(10), "the repository does exist");
    let lines = err_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("0123abcd"), "id not named: {lines:?}");
    assert!(
        files_under(&target).is_empty(),
        "restore of an unknown snapshot wrote files"
    );
}

/// One kind of damage to an object file.
#[derive(Clone, Copy, Debug)]
enum Damage {
    Flip,
    Truncate,
    Delete,
}

/// Applies `damage` to `path`, at a place chosen by `rng`.
fn damage(path: &Path, damage: Damage, rng: &mut impl rand::Rng) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    match damage {
        Damage::Flip => flip_byte(path, Some(rng.random_range(0..len))),
        Damage::Truncate => {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(rng.random_range(0..len) as u64).unwrap();
        }
        Damage::Delete => std::fs::remove_file(path).unwrap(),
    }
}

#[test]
fn check_read_data_names_every_object_of_random_damage() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    // Six backups of new data: several packs, index files and snapshots.
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6u64 {
        std::fs::write(src.join(format!("f{i}.bin")), random_bytes(10 + i, 400_000)).unwrap();
        std::fs::write(
            src.join(format!("t{i}.txt")),
            format!("text {i}\n").repeat(500),
        )
        .unwrap();
        env.ok(&[OsStr::new("backup"), src.as_os_str()]);
    }
    let mut all: Vec<PathBuf> = ["data", "index", "snapshots"]
        .iter()
        .flat_map(|f| objects(&env.repo(), f))
        .collect();
    all.sort();
    assert!(all.len() >= 18, "{all:?}");

    let seed = rand::random::<u64>();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rounds: usize = std::env::var("STRATA_CORRUPT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut corrupted = 0;
    let mut found = 0;
    for round in 0..rounds {
        let copy = copy_repo(&env, &format!("random{round}"));
        all.shuffle(&mut rng);
        let victims: Vec<(PathBuf, Damage)> = all[..rng.random_range(1..=5)]
            .iter()
            .map(|obj| {
                // A deleted snapshot is a forgotten one: nothing can tell.
                let kinds = if obj
                    .strip_prefix(env.repo())
                    .unwrap()
                    .starts_with("snapshots")
                {
                    &[Damage::Flip, Damage::Truncate][..]
                } else {
                    &[Damage::Flip, Damage::Truncate, Damage::Delete][..]
                };
                (obj.clone(), kinds[rng.random_range(0..kinds.len())])
            })
            .collect();
        for (obj, kind) in &victims {
            damage(&in_copy(&env, &copy, obj), *kind, &mut rng);
        }
        corrupted += victims.len();
        let out = check_read_data(&env, &copy);
        assert!(
            !out.status.success(),
            "seed {seed}: check passed with {victims:?}"
        );
        let text = all_output(&out);
        let index_damaged = victims
            .iter()
            .any(|(obj, _)| obj.strip_prefix(env.repo()).unwrap().starts_with("index"));
        for (obj, kind) in &victims {
            let folder = obj.strip_prefix(env.repo()).unwrap().components().next();
            let folder = folder.unwrap().as_os_str().to_str().unwrap();
            match (folder, kind) {
                // A deleted pack is named by the index that lists it; with
                // index files damaged too, that one may be among them.
                ("data", Damage::Delete) if index_damaged && !names_object(&text, obj) => continue,
                // Nothing names index files either: what shows is the packs
                // they listed, now in no index.
                ("index", Damage::Delete) => assert!(
                    text.contains("not in any index"),
                    "seed {seed}: deleted {} left no unindexed pack among {victims:?}:\n{text}",
                    obj.display()
                ),
                _ => assert!(
                    names_object(&text, obj),
                    "seed {seed}: {kind:?} of {} not named among {victims:?}:\n{text}",
                    obj.display()
                ),
            }
            found += 1;
        }
    }
    eprintln!(
        "{corrupted} objects damaged over {rounds} rounds; check failed every time, and named \
         each of the {found} whose damage can be told (deleted packs whose index file went too cannot)"
    );
}

#[test]
fn lost_or_damaged_index_files_are_rebuilt_by_repair_index() {
    let (env, src) = populated();
    let index_files = objects(&env.repo(), "index");
    assert!(index_files.len() >= 2, "{index_files:?}");
    for (i, victim) in index_files.iter().enumerate() {
        for delete in [false, true] {
            let copy = copy_repo(&env, &format!("ix{i}-{delete}"));
            let at = in_copy(&env, &copy, victim);
            if delete {
                std::fs::remove_file(&at).unwrap();
            } else {
                flip_byte(&at, None);
            }
            let run = |args: &[&str]| env.cmd_for(&copy).args(args).output().unwrap();

            // Prune must not take the unindexed packs for garbage.
            let packs_before = objects(&copy, "data");
            let out = run(&["prune", "--grace", "0s"]);
            assert_no_panic(&out);
            assert!(!out.status.success(), "prune ran with an index lost");
            assert!(
                common::stderr(&out).contains("repair index"),
                "{}",
                common::stderr(&out)
            );
            assert_eq!(objects(&copy, "data"), packs_before, "prune deleted packs");

            // Backups go on meanwhile (storing again what they cannot see).
            let out = run(&["backup", "-q", src.to_str().unwrap()]);
            assert!(out.status.success(), "{}", all_output(&out));

            let out = run(&["repair", "index"]);
            assert!(out.status.success(), "{}", all_output(&out));
            // (check fails on any damaged index file left behind)
            let repair = all_output(&out);
            let out = run(&["check", "--read-data"]);
            assert!(
                out.status.success(),
                "{i} {delete}: after repair ({repair}): {}",
                all_output(&out)
            );
            assert!(
                !all_output(&out).contains("not in any index"),
                "{}",
                all_output(&out)
            );
            // Every snapshot restores completely.
            let snaps: Vec<String> = common::json_lines(&run(&["--json", "snapshots"]).stdout)
                .iter()
                .filter(|v| v["message_type"] == "snapshot")
                .map(|v| v["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(snaps.len(), 3, "{snaps:?}");
            for id in &snaps {
                let target = env.path(&format!("out-{i}-{delete}-{id}"));
                let out = run(&["restore", id, "--target", target.to_str().unwrap()]);
                assert!(out.status.success(), "{id}: {}", all_output(&out));
                let r = restored(&target, &src);
                assert_eq!(std::fs::read(r.join("a.txt")).unwrap(), b"alpha\n");
                assert!(std::fs::read(r.join("sub/b.bin")).unwrap() == random_bytes(1, 600_000));
            }
            // And prune works again, losing nothing.
            let out = run(&["prune", "--grace", "0s"]);
            assert!(out.status.success(), "{}", all_output(&out));
            let out = run(&["check", "--read-data"]);
            assert!(out.status.success(), "after prune: {}", all_output(&out));
        }
    }
}

#[test]
fn damaged_snapshot_is_left_out_and_removed_by_repair_snapshots() {
    let (env, src) = populated();
    let mut snaps = objects(&env.repo(), "snapshots");
    assert_eq!(snaps.len(), 2);
    snaps.sort();
    let (victim, other) = (&snaps[0], &snaps[1]);
    flip_byte(victim, None);

    // Listing, restoring the other one and backing up go on, with a warning
    // (a `warning` line in the JSON stream).
    let out = env.run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        common::json_lines(&out.stdout)
            .iter()
            .any(|v| v["message_type"] == "warning"
                && names_object(v["message"].as_str().unwrap_or_default(), victim)),
        "{}",
        all_output(&out)
    );
    let listed: Vec<String> = common::json_lines(&out.stdout)
        .iter()
        .filter(|v| v["message_type"] == "snapshot")
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let other_id = other.file_name().unwrap().to_str().unwrap();
    assert_eq!(listed, [other_id]);
    let target = env.path("out");
    let out = env.run(&["restore", other_id, "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        std::fs::read(restored(&target, &src).join("a.txt")).unwrap(),
        b"alpha\n"
    );
    env.ok(&[OsStr::new("backup"), OsStr::new("-q"), src.as_os_str()]);

    // Forget must weigh every snapshot: it refuses, pointing at the repair.
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert_no_panic(&out);
    assert!(!out.status.success());
    assert_eq!(err_lines(&out).len(), 1, "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("repair snapshots"));

    env.ok(&["repair", "snapshots"]);
    assert!(!victim.exists());
    env.ok(&["forget", "--keep-last", "1", "--prune", "--grace", "0s"]);
    env.ok(&["check", "--read-data"]);
}
