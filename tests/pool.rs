//! The virtual storage pool against real servers: SeaweedFS over S3, Azurite,
//! fake-gcs-server and a local folder. `scripts/test` starts the servers and exports
//! STRATA_TEST_*; without them these tests say so and pass only outside CI.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    Compare, Servers, compare_trees, files_under, pool_servers as servers, random_bytes, restored,
    unique,
};
use strata::store::{Backend, open_url};

/// A pool member as written to the config.
#[derive(Clone)]
struct MemberSpec {
    name: &'static str,
    url: String,
    options: BTreeMap<String, String>,
    priority: Option<u32>,
}

impl MemberSpec {
    fn s3(s: &Servers, prefix: &str) -> MemberSpec {
        let options = [
            ("aws_endpoint", s.s3.endpoint.as_str()),
            ("aws_access_key_id", s.s3.key.as_str()),
            ("aws_secret_access_key", s.s3.secret.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        MemberSpec {
            name: "seaweed",
            url: format!("s3://{}/{prefix}", s.s3.bucket),
            options,
            priority: None,
        }
    }

    /// An S3 member in a bucket of its own, which `init` must create.
    fn s3_own_bucket(s: &Servers, tag: &str) -> MemberSpec {
        let mut m = MemberSpec::s3(s, "repo");
        m.url = format!("s3://{}/repo", unique(tag));
        m
    }

    /// An Azure member in a container of its own, which `init` must create.
    fn azure_own_container(tag: &str) -> MemberSpec {
        let mut m = MemberSpec::azure("repo");
        m.url = format!("az://{}/repo", unique(tag));
        m
    }

    /// A GCS member in a bucket of its own, which `init` must create.
    fn gcs(s: &Servers, tag: &str) -> MemberSpec {
        let key = format!(
            r#"{{"gcs_base_url": "{}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": "", "project_id": "strata-test"}}"#,
            s.gcs
        );
        MemberSpec {
            name: "gcs",
            url: format!("gs://{}/repo", unique(tag)),
            options: [
                ("google_service_account_key".to_string(), key),
                ("allow_http".to_string(), "true".to_string()),
            ]
            .into(),
            priority: None,
        }
    }

    fn backend(&self) -> strata::store::ObjectBackend {
        open_url(&self.url, &self.options).unwrap()
    }

    fn azure(prefix: &str) -> MemberSpec {
        let options = [("azure_storage_use_emulator".to_string(), "true".to_string())].into();
        MemberSpec {
            name: "azure",
            url: format!("az://strata/{prefix}"),
            options,
            priority: None,
        }
    }

    fn local(dir: &Path) -> MemberSpec {
        MemberSpec {
            name: "local",
            url: dir.display().to_string(),
            options: BTreeMap::new(),
            priority: None,
        }
    }

    /// Deletes every object of the member (its whole repository).
    fn wipe(&self) {
        if self.options.is_empty() {
            std::fs::remove_dir_all(&self.url).unwrap();
            return;
        }
        let b = self.backend();
        let all = b.list("").unwrap();
        assert!(!all.is_empty(), "{} had nothing to wipe", self.name);
        for o in all {
            b.delete(&o.key).unwrap();
        }
        assert!(b.list("").unwrap().is_empty());
    }

    /// Deletes the member's repository and then its bucket, container or
    /// folder itself (the member must own it).
    fn destroy(&self) {
        let b = self.backend();
        assert!(b.exists().unwrap(), "{} has no location", self.name);
        if !self.options.is_empty() {
            self.wipe();
        }
        b.remove_location().unwrap();
        assert!(!b.exists().unwrap(), "{} still exists", self.name);
    }
}

/// A scratch directory with a pool config over `members` and the password
/// of the common harness.
struct Env {
    base: common::Env,
    config: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Env {
    fn new(members: &[MemberSpec], quorum: usize) -> Env {
        let base = common::Env::empty();
        let mut toml = format!(
            "[repository]\npassword_file = \"{}\"\n\n[pool]\nplacement = \"mirror\"\nwrite_quorum = {quorum}\n",
            base.pw().display()
        );
        for m in members {
            toml += &format!(
                "\n[[pool.members]]\nname = \"{}\"\nurl = \"{}\"\n",
                m.name, m.url
            );
            if let Some(p) = m.priority {
                toml += &format!("read_priority = {p}\n");
            }
            if !m.options.is_empty() {
                let opts: Vec<String> = m
                    .options
                    .iter()
                    .map(|(k, v)| format!("{k} = '{v}'"))
                    .collect();
                toml += &format!("options = {{ {} }}\n", opts.join(", "));
            }
        }
        let config = base.path("strata.toml");
        std::fs::write(&config, toml).unwrap();
        Env {
            base,
            config,
            extra_env: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.base.path(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = common::Env::bare();
        cmd.arg("--config").arg(&self.config).args(args);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        common::assert_no_panic(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn init(&self) {
        self.ok(&common::CHEAP_INIT);
    }

    /// Missing-object counts per member from `pool status --json`, which
    /// exits 0 when every member is whole and 1 when one lacks objects.
    fn missing(&self) -> BTreeMap<String, u64> {
        let out = self.run(&["--json", "pool", "status"]);
        let members: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message_type"] == "member")
            .collect();
        let mismatched = members
            .iter()
            .any(|v| v["size_mismatch"].as_array().is_some_and(|a| !a.is_empty()));
        let missing: BTreeMap<String, u64> = members
            .iter()
            .map(|v| {
                assert_eq!(v["reachable"], true, "member unreachable: {v}");
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["missing_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let whole = missing.values().all(|&n| n == 0) && !mismatched;
        assert_eq!(
            out.status.code(),
            Some(if whole { 0 } else { 1 }),
            "pool status exit code with {missing:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        missing
    }
}

/// A source tree: small and multi-MiB files, a symlink, an empty directory.
fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("sub/empty")).unwrap();
    std::fs::write(root.join("small.txt"), b"hello pool\n").unwrap();
    std::fs::write(
        root.join("sub/big.bin"),
        random_bytes(9, 3 * 1024 * 1024 + 77),
    )
    .unwrap();
    std::fs::write(root.join("sub/zeros"), vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink("../small.txt", root.join("sub/link")).unwrap();
    std::fs::set_permissions(
        root.join("small.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
}

/// Compares two trees: entry names, types, bytes, link targets and modes.
fn assert_same_tree(a: &Path, b: &Path) {
    let what = Compare {
        mode: true,
        mtime: false,
        owner: false,
        hardlinks: false,
    };
    compare_trees(a, b, &what);
}

/// Runs strata against one store given by URL (no pool), as a user would
/// after losing the other providers.
fn run_single(url: &str, env: &[(&str, &str)], pw: &Path, args: &[&str]) -> Output {
    let mut cmd = common::Env::bare();
    cmd.arg("--repo")
        .arg(url)
        .arg("--password-file")
        .arg(pw)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn s3_env(s: &Servers) -> Vec<(&str, &str)> {
    vec![
        ("AWS_ENDPOINT_URL", s.s3.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", s.s3.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s.s3.secret.as_str()),
    ]
}

#[test]
fn losing_any_one_member_loses_nothing() {
    let Some(s) = servers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Each member in a bucket/container/folder of its own, so losing one
    // can mean losing it whole.
    let members = vec![
        MemberSpec::s3_own_bucket(&s, "lose-one"),
        MemberSpec::azure_own_container("lose-one"),
        MemberSpec::local(&tmp.path().join("local")),
    ];
    for m in &members {
        assert!(!m.backend().exists().unwrap(), "{} exists already", m.name);
    }
    let env = Env::new(&members, 2);
    env.init();
    for m in &members {
        assert!(
            m.backend().exists().unwrap(),
            "init did not create {}",
            m.url
        );
    }
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    assert!(env.missing().values().all(|&n| n == 0));

    for (i, member) in members.iter().enumerate() {
        member.destroy();
        let missing = env.missing();
        assert!(
            missing[member.name] >= 6,
            "{} should lack everything: {missing:?}",
            member.name
        );

        let target = env.path(&format!("restore-{i}"));
        let out = env.ok(&[
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ]);
        assert_same_tree(&src, &restored(&target, &src));
        let summary: serde_json::Value = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message_type"] == "summary")
            .expect("restore summary");
        let served = summary["served_by"].as_object().unwrap();
        assert_eq!(
            served[member.name], 0,
            "the wiped member cannot have served data: {summary}"
        );
        assert!(
            served.values().map(|v| v.as_u64().unwrap()).sum::<u64>() > 3 << 20,
            "{summary}"
        );
        env.ok(&["check", "--read-data"]);

        env.ok(&["pool", "repair"]);
        assert!(env.missing().values().all(|&n| n == 0), "repair left gaps");
    }

    // After the repairs, every member alone holds a restorable repository.
    let pw = env.path("pw");
    let alone: Vec<(String, Vec<(&str, &str)>)> = vec![
        (members[0].url.clone(), s3_env(&s)),
        (
            members[1].url.clone(),
            vec![("AZURE_STORAGE_USE_EMULATOR", "true")],
        ),
        (members[2].url.clone(), vec![]),
    ];
    for (n, (url, vars)) in alone.iter().enumerate() {
        let target = env.path(&format!("alone-{n}"));
        let out = run_single(
            url,
            vars,
            &pw,
            &[
                "restore",
                "latest",
                "--verify",
                "--target",
                target.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same_tree(&src, &restored(&target, &src));
        let out = run_single(url, vars, &pw, &["check", "--read-data"]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn backup_to_s3_restores_from_azure_alone() {
    let Some(s) = servers() else { return };
    let prefix = unique("cross");
    let env = Env::new(
        &[MemberSpec::s3(&s, &prefix), MemberSpec::azure(&prefix)],
        2,
    );
    env.init();
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    // The user lost AWS: only the Azure URL is named, no pool config.
    let target = env.path("r");
    let out = run_single(
        &format!("az://strata/{prefix}"),
        &[("AZURE_STORAGE_USE_EMULATOR", "true")],
        &env.path("pw"),
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored(&target, &src));
}

/// A TCP forwarder that can be stopped and started again on the same port,
/// standing in for a pool member that goes down.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(port: u16, upstream: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        let mut c = conns2.lock().unwrap();
                        c.push(client.try_clone().unwrap());
                        c.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 65536];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u16 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.port
    }
}

/// An initialised pool of S3, Azure (reached through a [`Proxy`], so it can
/// go down and come back) and a local folder, write quorum 2. Returns the
/// environment, the proxy, the members' prefix, Azurite's own port and the
/// folder holding the local member.
fn azure_behind_proxy(s: &Servers, tag: &str) -> (Env, Proxy, String, u16, tempfile::TempDir) {
    let azurite_port: u16 = std::env::var("STRATA_TEST_AZURITE")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let prefix = unique(tag);
    let tmp = tempfile::tempdir().unwrap();
    let members = vec![
        MemberSpec::s3(s, &prefix),
        MemberSpec::azure(&prefix),
        MemberSpec::local(&tmp.path().join("local")),
    ];
    let mut env = Env::new(&members, 2);
    let proxy = Proxy::start(0, azurite_port);
    env.extra_env.push((
        "AZURITE_BLOB_STORAGE_URL".into(),
        format!("http://127.0.0.1:{}", proxy.port),
    ));
    env.init();
    (env, proxy, prefix, azurite_port, tmp)
}

#[test]
fn member_down_during_backup_is_healed_by_repair() {
    let Some(s) = servers() else { return };
    let (env, proxy, prefix, azurite_port, _tmp) = azure_behind_proxy(&s, "down");

    let src = env.path("src");
    make_source(&src);
    let port = proxy.stop(); // the Azure member goes down
    let out = env.ok(&["backup", src.to_str().unwrap()]);
    assert!(
        out.contains("member azure"),
        "the backup should say the azure member missed writes:\n{out}"
    );
    assert_eq!(
        out.matches("still missing").count(),
        1,
        "the still-missing warning is said once:\n{out}"
    );

    let _proxy = Proxy::start(port, azurite_port); // and comes back
    let missing = env.missing();
    assert!(
        missing["azure"] >= 3,
        "azure should lack packs, index and snapshot: {missing:?}"
    );
    assert_eq!(missing["seaweed"], 0);
    assert_eq!(missing["local"], 0);
    env.ok(&["pool", "repair"]);
    assert!(env.missing().values().all(|&n| n == 0));

    // The healed member alone restores the snapshot it missed.
    let target = env.path("r");
    let out = run_single(
        &format!("az://strata/{prefix}"),
        &[("AZURE_STORAGE_USE_EMULATOR", "true")],
        &env.path("pw"),
        &[
            "restore",
            "latest",
            "--verify",
            "--target",
            target.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn corrupt_pack_on_one_member_is_served_by_another() {
    let Some(s) = servers() else { return };
    let prefix = unique("corrupt");
    let tmp = tempfile::tempdir().unwrap();
    let local_dir = tmp.path().join("local");
    let mut local = MemberSpec::local(&local_dir);
    local.priority = Some(0); // read first, so its bad copy is met first
    let env = Env::new(&[local, MemberSpec::s3(&s, &prefix)], 2);
    env.init();
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);

    // Flip a byte in the middle of the largest pack (the data pack).
    let mut packs: Vec<(u64, PathBuf)> = files_under(&local_dir.join("data"))
        .into_iter()
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    packs.sort();
    let (size, pack) = packs.pop().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[(size / 2) as usize] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();

    // check --read-data reports the damaged copy as an error (and leaves it).
    let out = env.run(&["check", "--read-data"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "check must fail while a member holds a bad copy"
    );
    assert!(
        text.contains(&pack_name) && text.contains("local"),
        "{text}"
    );

    // Restore is served by the good member, names the bad copy and heals it.
    let target = env.path("r");
    let out = env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
    assert!(
        out.contains(&pack_name) && out.contains("bad copy on member local"),
        "restore should name the bad object and member:\n{out}"
    );
    assert!(
        out.contains("healed the damaged copy") && out.contains("from member seaweed"),
        "restore should heal the bad copy:\n{out}"
    );
    let key = format!("data/{}/{pack_name}", &pack_name[..2]);
    let s3_copy = MemberSpec::s3(&s, &prefix).backend().get(&key).unwrap();
    assert_eq!(
        std::fs::read(&pack).unwrap(),
        s3_copy,
        "local copy not healed"
    );
    env.ok(&["check", "--read-data"]);
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("strata:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{stderr}");
    lines[0].to_string()
}

#[test]
fn bad_members_give_one_line_errors_naming_them() {
    let Some(s) = servers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let local = MemberSpec::local(&tmp.path().join("local"));

    let mut wrong_creds = MemberSpec::s3(&s, &unique("creds"));
    wrong_creds
        .options
        .insert("aws_secret_access_key".into(), "not-the-secret".into());
    let env = Env::new(&[wrong_creds, local.clone()], 2);
    let line = one_line_error(&env.run(&["init"]));
    assert!(
        line.contains("seaweed") && line.contains("access denied"),
        "{line}"
    );

    let mut unreachable = MemberSpec::s3(&s, &unique("down"));
    unreachable
        .options
        .insert("aws_endpoint".into(), "http://127.0.0.1:1".into());
    let env = Env::new(&[unreachable, local.clone()], 2);
    let line = one_line_error(&env.run(&["init"]));
    assert!(
        line.contains("seaweed") && line.contains("cannot reach"),
        "{line}"
    );

    // A member whose container was deleted after init: writes to it fail
    // (write_quorum 2 of 2) with the member and the cause named.
    let lost = MemberSpec::azure_own_container("lost");
    let env = Env::new(&[lost.clone(), local], 2);
    env.init();
    lost.destroy();
    let src = env.path("src");
    make_source(&src);
    let line = one_line_error(&env.run(&["backup", src.to_str().unwrap()]));
    assert!(
        line.contains("azure") && line.contains("does not exist") && line.contains("pool repair"),
        "{line}"
    );
    // An invalid container name cannot be created: init says so.
    let mut bad_name = MemberSpec::azure("x");
    bad_name.url = "az://Not_A_Valid_Name/x".into();
    let env = Env::new(&[bad_name], 1);
    let line = one_line_error(&env.run(&["init"]));
    assert!(
        line.contains("azure") && line.contains("rejected container Not_A_Valid_Name"),
        "{line}"
    );
}

#[test]
fn gcs_member_backs_up_prunes_and_restores_alone() {
    let Some(s) = servers() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let gcs = MemberSpec::gcs(&s, "gcs");
    let local = MemberSpec::local(&tmp.path().join("local"));
    assert!(!gcs.backend().exists().unwrap());
    let env = Env::new(&[gcs.clone(), local.clone()], 2);
    env.init();
    assert!(
        gcs.backend().exists().unwrap(),
        "init did not create the bucket"
    );
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("small.txt"), b"changed\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    // Prune deletes on GCS too (the first snapshot's unique data and locks).
    env.ok(&["forget", "--keep-last", "1", "--prune", "--grace", "0s"]);
    assert!(env.missing().values().all(|&n| n == 0));

    // Only GCS is left: restore from a plain gs:// repository.
    local.destroy();
    let single = env.path("gcs-only.toml");
    let opts: Vec<String> = gcs
        .options
        .iter()
        .map(|(k, v)| format!("{k} = '{v}'"))
        .collect();
    std::fs::write(
        &single,
        format!(
            "[repository]\nurl = \"{}\"\npassword_file = \"{}\"\noptions = {{ {} }}\n",
            gcs.url,
            env.path("pw").display(),
            opts.join(", ")
        ),
    )
    .unwrap();
    let target = env.path("r");
    let run = |args: &[&str]| {
        let out = common::Env::bare()
            .arg("--config")
            .arg(&single)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(run(&["--json", "snapshots"]).matches("\"id\"").count(), 1);
    run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
    run(&["check", "--read-data"]);
}

#[test]
fn index_lost_on_every_member_is_rebuilt_by_repair_index() {
    let Some(s) = servers() else { return };
    let prefix = unique("reindex");
    let tmp = tempfile::tempdir().unwrap();
    let members = [
        MemberSpec::s3(&s, &prefix),
        MemberSpec::local(&tmp.path().join("local")),
    ];
    let env = Env::new(&members, 2);
    env.init();
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    for m in &members {
        let b = m.backend();
        let index = b.list("index/").unwrap();
        assert!(!index.is_empty(), "{} has no index files", m.name);
        for o in index {
            b.delete(&o.key).unwrap();
        }
    }

    // Prune must not take the packs for a killed backup's leftovers.
    let out = env.run(&["prune", "--grace", "0s"]);
    assert!(!out.status.success(), "prune ran without an index");
    assert!(String::from_utf8_lossy(&out.stderr).contains("repair index"));

    let out = env.ok(&["repair", "index"]);
    assert!(out.contains("indexed again"), "{out}");
    assert!(
        env.missing().values().all(|&n| n == 0),
        "{:?}",
        env.missing()
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("r");
    env.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

/// Issue 14: with a member down, forget and prune refuse before deleting
/// anything (they used to delete on the reachable members, and `pool repair`
/// then copied the forgotten snapshot back); once it is back, they work, and
/// that member alone agrees with the others.
#[test]
fn deletes_wait_for_every_member_on_real_servers() {
    let Some(s) = servers() else { return };
    let (env, proxy, prefix, azurite_port, _tmp) = azure_behind_proxy(&s, "deletes");
    let src = env.path("src");
    make_source(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("later"), b"second snapshot").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let ids: Vec<String> = env
        .ok(&["--json", "snapshots"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2);

    let port = proxy.stop(); // the Azure member goes down
    for args in [
        vec!["forget", ids[0].as_str()],
        vec!["prune", "--grace", "0s"],
    ] {
        let out = env.run(&args);
        assert!(!out.status.success(), "{args:?} ran with a member down");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("azure"),
            "{args:?}: the error names the member: {err}"
        );
    }
    // Backups go on with two of three members.
    env.ok(&["backup", src.to_str().unwrap()]);

    let _proxy = Proxy::start(port, azurite_port); // and comes back
    env.ok(&["pool", "repair"]);
    env.ok(&["forget", &ids[0]]);
    env.ok(&["prune", "--grace", "0s"]);
    assert!(env.missing().values().all(|&n| n == 0));
    let alone = run_single(
        &format!("az://strata/{prefix}"),
        &[("AZURE_STORAGE_USE_EMULATOR", "true")],
        &env.path("pw"),
        &["--json", "snapshots"],
    );
    assert!(alone.status.success());
    let listed: Vec<String> = String::from_utf8_lossy(&alone.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        !listed.contains(&ids[0]),
        "azure alone still lists the forgotten snapshot"
    );
    assert!(listed.contains(&ids[1]));
}
