//! `--limit-upload` and `--limit-download`: bad rates are refused in one
//! line; set, they hold a backup and a restore to the rate. Only lower
//! bounds on time are asserted (a busy machine only makes runs longer).

mod common;

use std::time::{Duration, Instant};

use common::{Env, stderr};

#[test]
fn bad_rates_are_refused_in_one_line() {
    let env = Env::new();
    let out = env.run(&["--limit-upload", "fast", "snapshots"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("limit-upload") && err.contains("2MiB"),
        "{err}"
    );
    let cfg = env.path("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\nlimit_download = \"lots\"\n",
            env.repo().display()
        ),
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
    assert!(!out.status.success());
    assert!(stderr(&out).contains("limit_download"), "{}", stderr(&out));
}

#[test]
fn limits_hold_backup_and_restore_to_the_rate() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 3 MiB of incompressible data: at 1 MiB/s, after a one-second burst,
    // at least two seconds.
    std::fs::write(src.join("f"), common::random_bytes(7, 3 << 20)).unwrap();
    let started = Instant::now();
    env.ok(&["--limit-upload", "1MiB", "backup", src.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "3 MiB went up in {took:?} under a 1 MiB/s limit"
    );
    let target = env.path("t");
    let started = Instant::now();
    env.ok(&[
        "--limit-download",
        "1MiB",
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "3 MiB came down in {took:?} under a 1 MiB/s limit"
    );
    let restored = common::restored(&target, &src);
    assert_eq!(
        std::fs::read(restored.join("f")).unwrap(),
        common::random_bytes(7, 3 << 20)
    );
}
