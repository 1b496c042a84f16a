//! `backup --compression`: off stores more than max on compressible data,
//! the setting is recorded in the snapshot, `[repository] compression` sets
//! the default, and bad values are refused.

mod common;

use common::{Env, dir_size, json_lines, stderr, summary};

/// About 4 MiB of text: compressible, and no two chunks alike.
fn compressible(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut text = String::new();
    for i in 0..60_000u64 {
        text.push_str(&format!(
            "{i:08} the quick brown fox jumps over the lazy dog {}\n",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40
        ));
    }
    std::fs::write(src.join("log.txt"), text).unwrap();
    src
}

fn snapshot_compression(env: &Env) -> serde_json::Value {
    let snaps: Vec<_> = env
        .json(&["snapshots"])
        .into_iter()
        .filter(|v| v["message_type"] == "snapshot")
        .collect();
    snaps.last().unwrap()["summary"]["compression"].clone()
}

#[test]
fn off_stores_more_than_max_and_the_setting_is_recorded() {
    let (off, max) = (Env::new(), Env::new());
    let (src_off, src_max) = (compressible(&off), compressible(&max));
    let data = dir_size(&src_off);
    let s = off.backup_summary(&[
        "--compression".as_ref(),
        "off".as_ref(),
        src_off.as_os_str(),
    ]);
    assert_eq!(
        s["compression"],
        serde_json::json!({"setting": "off", "level": 0}),
        "{s}"
    );
    let s = max.backup_summary(&[
        "--compression".as_ref(),
        "max".as_ref(),
        src_max.as_os_str(),
    ]);
    assert_eq!(
        s["compression"],
        serde_json::json!({"setting": "max", "level": 19}),
        "{s}"
    );
    let (size_off, size_max) = (dir_size(&off.repo()), dir_size(&max.repo()));
    assert!(size_off > data, "off: repository {size_off} < data {data}");
    assert!(
        size_off > 3 * size_max,
        "off {size_off} bytes, max {size_max} bytes"
    );
    // Recorded in the snapshot itself.
    assert_eq!(
        snapshot_compression(&off),
        serde_json::json!({"setting": "off", "level": 0})
    );
    assert_eq!(
        snapshot_compression(&max),
        serde_json::json!({"setting": "max", "level": 19})
    );
}

#[test]
fn default_levels_config_and_bad_values() {
    let env = Env::new();
    let src = compressible(&env);
    // Default: the repository's level (3 unless set at init).
    let s = env.backup_summary(&[src.as_os_str()]);
    assert_eq!(
        s["compression"],
        serde_json::json!({"setting": "default", "level": 3})
    );
    let s = env.backup_summary(&["--compression".as_ref(), "-5".as_ref(), src.as_os_str()]);
    assert_eq!(
        s["compression"],
        serde_json::json!({"setting": "-5", "level": -5})
    );
    let s = env.backup_summary(&[
        "--compression".as_ref(),
        "fastest".as_ref(),
        src.as_os_str(),
    ]);
    assert_eq!(s["compression"]["level"], 1);

    // [repository] compression is the default; the flag wins over it.
    let cfg = env.path("strata.toml");
    std::fs::write(&cfg, "[repository]\ncompression = 12\n").unwrap();
    let run = |extra: &[&str]| {
        let out = env
            .cmd()
            .arg("--config")
            .arg(&cfg)
            .args(["--json", "backup"])
            .args(extra)
            .arg(&src)
            .output()
            .unwrap();
        common::assert_success(&out, &["backup with --config"]);
        summary(&json_lines(&out.stdout))
    };
    assert_eq!(
        run(&[])["compression"],
        serde_json::json!({"setting": "12", "level": 12})
    );
    assert_eq!(run(&["--compression", "off"])["compression"]["level"], 0);

    for bad in ["23", "-8", "best"] {
        let out = env.run(&[
            "backup".as_ref(),
            "--compression".as_ref(),
            bad.as_ref(),
            src.as_os_str(),
        ]);
        assert_ne!(out.status.code(), Some(0), "{bad}");
        assert!(
            stderr(&out).contains("invalid compression"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    std::fs::write(&cfg, "[repository]\ncompression = \"lots\"\n").unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&cfg)
        .args(["backup"])
        .arg(&src)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("line 2") && err.contains("invalid compression"),
        "{err}"
    );
}
