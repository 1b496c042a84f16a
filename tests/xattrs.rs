//! Extended attributes, POSIX ACLs and file capabilities survive a backup
//! and restore, compared with the system's own tools (getfattr, getfacl,
//! getcap from the apt packages attr, acl and libcap2-bin, which
//! scripts/test installs); `--no-xattrs` turns them off on either side.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn tool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; install the apt packages attr, acl and libcap2-bin (scripts/test does)",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// getfattr of every attribute (every namespace), getfacl and getcap of
/// the tree at `dir`, with paths relative to it.
fn attributes(dir: &Path) -> (String, String, String) {
    let mut caps: Vec<String> = tool(dir, &["getcap", "-r", "."])
        .lines()
        .map(str::to_string)
        .collect();
    caps.sort();
    (
        tool(
            dir,
            &["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "."],
        ),
        tool(dir, &["getfacl", "-R", "-p", "."]),
        caps.join("\n"),
    )
}

fn set(dir: &Path, args: &[&str]) {
    tool(dir, args);
}

#[test]
fn xattrs_acls_and_capabilities_round_trip() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("shared/sub")).unwrap();
    std::fs::write(src.join("note"), b"a note").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("big"), random_bytes(9, 3 << 20)).unwrap();
    std::fs::write(src.join("shared/sub/doc"), b"shared doc").unwrap();
    std::fs::copy("/bin/true", src.join("tool")).unwrap();
    set(
        &src,
        &["setfattr", "-n", "user.comment", "-v", "hello", "note"],
    );
    set(
        &src,
        &["setfattr", "-n", "user.bin", "-v", "0x00ff10", "note"],
    );
    set(&src, &["setfattr", "-n", "user.e", "-v", "x", "empty"]);
    set(&src, &["setfattr", "-n", "user.big", "-v", "y", "big"]);
    set(&src, &["setfattr", "-n", "user.dir", "-v", "d", "shared"]);
    set(&src, &["setfacl", "-m", "u:nobody:rw,g:daemon:r", "note"]);
    set(&src, &["setfacl", "-m", "u:nobody:rwx", "shared"]);
    set(&src, &["setfacl", "-d", "-m", "u:nobody:rx", "shared"]);
    set(&src, &["setfacl", "-m", "u:nobody:r", "shared/sub/doc"]);
    if is_root() {
        set(
            &src,
            &["setcap", "cap_net_bind_service,cap_net_raw+ep", "tool"],
        );
        set(
            &src,
            &["setfattr", "-n", "trusted.t", "-v", "secret", "note"],
        );
        // A symlink and a fifo keep theirs too (user.* is not allowed there).
        std::os::unix::fs::symlink("note", src.join("link")).unwrap();
        set(
            &src,
            &[
                "setfattr",
                "-h",
                "-n",
                "trusted.l",
                "-v",
                "on a link",
                "link",
            ],
        );
        set(&src, &["mkfifo", "pipe"]);
        set(
            &src,
            &["setfattr", "-n", "trusted.p", "-v", "on a fifo", "pipe"],
        );
    }
    let want = attributes(&src);
    assert!(want.0.contains("user.comment") && want.1.contains("user:nobody:rw-"));
    if is_root() {
        assert!(want.2.contains("cap_net_bind_service"), "{}", want.2);
        assert!(
            want.0.contains("trusted.l") && want.0.contains("trusted.p"),
            "{}",
            want.0
        );
    }
    env.ok(&[Path::new("backup"), &src]);

    // Restored: the same attributes, ACLs and capabilities, and the tree.
    let target = env.path("target");
    let out = env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &target,
    ]);
    let dst = restored(&target, &src);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let got = attributes(&dst);
    assert_eq!(got.0, want.0, "getfattr");
    assert_eq!(got.1, want.1, "getfacl");
    assert_eq!(got.2, want.2, "getcap");
    compare_trees(&src, &dst, &Compare::all());

    // Not as root: user.* and ACLs (the owner may set them) are restored,
    // capabilities and trusted.* are not, with one warning.
    if is_root() {
        let base = env.path("asnobody");
        std::fs::create_dir_all(&base).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(env.repo())
            .arg(env.pw())
            .arg(&base)
            .status()
            .unwrap();
        assert!(status.success());
        let status = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(&base)
            .status()
            .unwrap();
        assert!(status.success());
        // Every directory above must be searchable by nobody.
        let mut up = base.parent();
        while let Some(d) = up {
            let m = std::fs::metadata(d).unwrap().permissions();
            use std::os::unix::fs::PermissionsExt;
            if m.mode() & 0o001 == 0 {
                std::fs::set_permissions(d, PermissionsExt::from_mode(m.mode() | 0o001)).unwrap();
            }
            up = d.parent();
        }
        let t = base.join("target");
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(assert_cmd::cargo::cargo_bin("strata"))
            .arg("--repo")
            .arg(base.join("repo"))
            .arg("--password-file")
            .arg(base.join("pw"))
            .env("STRATA_NO_CACHE", "1")
            .args(["restore", "latest", "--target"])
            .arg(&t)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
        assert_eq!(warnings.len(), 1, "{err}");
        assert!(
            warnings[0].contains("extended attribute") && warnings[0].contains("security.*"),
            "{err}"
        );
        let got = attributes(&restored(&t, &src));
        assert!(
            got.0.contains("user.comment") && got.0.contains("user.dir"),
            "{}",
            got.0
        );
        assert!(got.1.contains("user:nobody:rw-") && got.1.contains("default:user:nobody:r-x"));
        assert!(got.2.is_empty(), "{}", got.2);
    }

    // restore --no-xattrs: none of them.
    let bare = env.path("bare");
    env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--no-xattrs"),
        Path::new("--target"),
        &bare,
    ]);
    let none = attributes(&restored(&bare, &src));
    assert!(!none.0.contains("user.") && !none.1.contains("nobody") && none.2.is_empty());

    // backup --no-xattrs: the snapshot holds none.
    env.ok(&[Path::new("backup"), Path::new("--no-xattrs"), &src]);
    let plain = env.path("plain");
    env.ok(&[
        Path::new("restore"),
        Path::new("latest"),
        Path::new("--target"),
        &plain,
    ]);
    let none = attributes(&restored(&plain, &src));
    assert!(!none.0.contains("user.") && !none.1.contains("nobody") && none.2.is_empty());
}
