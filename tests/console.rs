//! The web console end to end: access (login, cookie flags, CSRF, refusal
//! of an open listener), path checks, restore targets, downloads compared
//! byte for byte, and a real browser (tests/console/browser.py in headless
//! Chromium) logging in, running a job, browsing, downloading, restoring.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::net::{Reply, free_port, request, wait_for};
use common::{Env, random_bytes};

const TOKEN: &str = "console-test-token-42";

/// A scratch directory with a source tree, a restore target and an agent
/// config serving the console on `port`.
struct Console {
    env: Env,
    port: u16,
}

impl Console {
    fn new() -> Console {
        let env = Env::empty();
        let p = |s: &str| env.path(s);
        std::fs::create_dir_all(p("src/docs/deep")).unwrap();
        std::fs::create_dir_all(p("restores")).unwrap();
        std::fs::write(p("src/docs/readme.txt"), "hello console\n").unwrap();
        std::fs::write(p("src/docs/deep/notes.md"), "# notes\n").unwrap();
        std::fs::write(p("src/data.bin"), random_bytes(7, 3_000_000)).unwrap();
        let port = free_port();
        let cfg = format!(
            "[repository]\nurl = {repo:?}\npassword_file = {pw:?}\n\n[agent]\nlisten = \"127.0.0.1:{port}\"\ninit = true\nprobe_interval = \"1s\"\nlog_format = \"json\"\n\n[agent.console]\nrestore_targets = [{rt:?}]\nhistory_file = {hist:?}\n\n[[jobs]]\nname = \"vol\"\npaths = [{src:?}]\nschedule = \"0 0 0 1 1 *\"\n\n[agent.check]\nschedule = \"0 0 0 1 1 *\"\n",
            repo = p("repo").to_str().unwrap(),
            pw = env.pw().to_str().unwrap(),
            rt = p("restores").to_str().unwrap(),
            hist = p("history.json").to_str().unwrap(),
            src = p("src").to_str().unwrap(),
        );
        std::fs::write(p("strata.toml"), cfg).unwrap();
        Console { env, port }
    }

    fn path(&self, s: &str) -> PathBuf {
        self.env.path(s)
    }

    fn cmd(&self) -> Command {
        let mut c = self.env.process();
        c.arg("--config").arg(self.path("strata.toml"));
        c
    }

    fn spawn_agent(&self) -> Child {
        let child = self
            .cmd()
            .arg("agent")
            .env("STRATA_AGENT_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.path("agent.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        wait_for("the agent to start", Duration::from_secs(60), || {
            self.http("GET", "/healthz", &[], b"")
        });
        child
    }

    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Reply> {
        request(
            self.port,
            method,
            path,
            headers,
            body,
            Duration::from_secs(120),
        )
    }

    /// Logs in; returns (cookie header value, CSRF token of the dashboard).
    fn login(&self) -> (String, String) {
        let r = self
            .http(
                "POST",
                "/login",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                format!("token={TOKEN}").as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 303, "{}", r.text());
        let set = r.header("set-cookie").unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let page = self.http("GET", "/", &[("Cookie", &cookie)], b"").unwrap();
        assert_eq!(page.status, 200);
        let text = page.text();
        let at = text.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        let csrf = text[at..at + 64].to_string();
        (cookie, csrf)
    }
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backup(env: &Console) -> String {
    let out = env
        .cmd()
        .args(["backup", "--json"])
        .arg(env.path("src"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("\"snapshot_id\":\"").unwrap() + 15;
    text[at..at + 64].to_string()
}

#[test]
fn access_paths_restores_and_downloads() {
    let env = Console::new();
    let _agent = Agent(env.spawn_agent());
    let bearer = format!("Bearer {TOKEN}");
    wait_for("/readyz", Duration::from_secs(60), || {
        env.http("GET", "/readyz", &[("Authorization", &bearer)], b"")
            .filter(|r| r.status == 200)
    });
    let snap = backup(&env);

    // Without the token: the login form, and nothing else.
    let r = env.http("GET", "/", &[], b"").unwrap();
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/login"))
    );
    let r = env
        .http(
            "GET",
            &format!("/snapshots/{snap}/download?path=%2F"),
            &[],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 303);
    let r = env.http("POST", "/actions/run/vol", &[], b"").unwrap();
    assert_eq!(r.status, 401);
    let r = env.http("POST", "/login", &[], b"token=wrong").unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let forged = env
        .http("GET", "/", &[("Cookie", "strata_session=0000")], b"")
        .unwrap();
    assert_eq!(forged.status, 303);

    let (cookie, csrf) = env.login();
    let auth = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    // A POST without the CSRF token, or with a wrong one, is refused.
    for body in ["", "csrf=0123"] {
        let r = env
            .http("POST", "/actions/run/vol", &auth, body.as_bytes())
            .unwrap();
        assert_eq!(r.status, 403, "{body}: {}", r.text());
    }
    let r = env
        .http(
            "POST",
            &format!("/snapshots/{snap}/restore"),
            &auth,
            format!("path=%2F&target={}", env.path("restores/x").display()).as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(!env.path("restores/x").exists());

    // Path parameters are checked; nothing outside the snapshot is read.
    for bad in [
        format!("/snapshots/{snap}/download?path=%2F..%2Fetc%2Fpasswd"),
        format!("/snapshots/{snap}/download?path=etc%2Fpasswd"),
        format!("/snapshots/{snap}/browse?path=%2Fa%2F.%2Fb"),
        "/snapshots/..%2F..%2Fetc/browse?path=%2F".to_string(),
    ] {
        let r = env.http("GET", &bad, &auth, b"").unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = env
        .http(
            "GET",
            &format!("/snapshots/{snap}/download?path=%2Fetc%2Fpasswd"),
            &auth,
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());

    // Downloads: a file, and a directory as tar, byte for byte.
    let file = env.path("src/data.bin");
    let q = |p: &Path| url_encode(p.to_str().unwrap());
    let r = env
        .http(
            "GET",
            &format!("/snapshots/{snap}/download?path={}", q(&file)),
            &auth,
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        std::fs::read(&file).unwrap(),
        "downloaded bytes differ"
    );
    let r = env
        .http(
            "GET",
            &format!(
                "/snapshots/{snap}/download?path={}",
                q(&env.path("src/docs"))
            ),
            &auth,
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let mut ar = tar_entries(&r.body);
    ar.sort();
    assert_eq!(
        ar,
        vec![
            ("docs/deep".to_string(), Vec::new()),
            ("docs/deep/notes.md".to_string(), b"# notes\n".to_vec()),
            ("docs/readme.txt".to_string(), b"hello console\n".to_vec()),
        ]
    );

    // Restores go only into the allowed targets, and only confirmed (POST
    // with the CSRF token).
    for bad in [
        "/etc/strata-x".to_string(),
        format!("{}/../x", env.path("restores").display()),
        env.path("elsewhere").display().to_string(),
    ] {
        let r = env
            .http(
                "GET",
                &format!(
                    "/snapshots/{snap}/restore?path=%2F&target={}",
                    url_encode(&bad)
                ),
                &auth,
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 403, "{bad}: {}", r.text());
        let r = env
            .http(
                "POST",
                &format!("/snapshots/{snap}/restore"),
                &auth,
                format!("csrf={csrf}&path=%2F&target={}", url_encode(&bad)).as_bytes(),
            )
            .unwrap();
        assert_eq!(r.status, 403, "{bad}");
    }
    let target = env.path("restores/r1");
    let docs = env.path("src/docs");
    let r = env
        .http(
            "POST",
            &format!("/snapshots/{snap}/restore"),
            &auth,
            format!("csrf={csrf}&path={}&target={}", q(&docs), q(&target)).as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    let page = r.header("location").unwrap();
    wait_for("the restore to finish", Duration::from_secs(60), || {
        let r = env.http("GET", &page, &auth, b"").unwrap();
        assert!(!r.text().contains(">failed<"), "{}", r.text());
        r.text().contains(">done<").then_some(())
    });
    let restored = target.join(docs.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("readme.txt")).unwrap(),
        b"hello console\n"
    );
    assert_eq!(
        std::fs::read(restored.join("deep/notes.md")).unwrap(),
        b"# notes\n"
    );
    assert!(
        !target.join(file.strip_prefix("/").unwrap()).exists(),
        "restored more than the subtree"
    );

    // The token never shows in the log.
    let log = std::fs::read_to_string(env.path("agent.log")).unwrap();
    assert!(!log.contains(TOKEN));
}

#[test]
fn open_listener_without_token_is_refused() {
    let env = Console::new();
    let out = env
        .cmd()
        .args(["agent", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.lines().count() == 1,
        "{err}"
    );
    let out = env
        .cmd()
        .args(["ui", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// (name, content) of each entry of a ustar/GNU archive.
fn tar_entries(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 512 && b[..512].iter().any(|&x| x != 0) {
        let h = &b[..512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' '),
            8,
        )
        .unwrap();
        let data = b[512..512 + size].to_vec();
        out.push((name, data));
        b = &b[512 + size.div_ceil(512) * 512..];
    }
    out
}

#[test]
fn browser() {
    let ci =
        std::env::var_os("CI").is_some() || std::env::var_os("STRATA_REQUIRE_BROWSER").is_some();
    let ready = Path::new("/usr/bin/chromium").exists()
        && Path::new("/usr/bin/chromedriver").exists()
        && Command::new("/usr/bin/python3")
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            !ci,
            "the browser test needs chromium, chromium-driver and python3-selenium (scripts/test installs them)"
        );
        eprintln!(
            "SKIPPED: chromium, chromium-driver or python3-selenium missing (scripts/test installs them)"
        );
        return;
    }
    let env = Console::new();
    let _agent = Agent(env.spawn_agent());
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(env.path("downloads")).unwrap();
    let target = env.path("restores/from-browser");
    let out = Command::new("/usr/bin/python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py"))
        .env("CONSOLE_URL", format!("http://127.0.0.1:{}", env.port))
        .env("CONSOLE_TOKEN", TOKEN)
        .env("SOURCE_DIR", env.path("src"))
        .env("FILE_REL", "data.bin")
        .env("DIR_REL", "docs")
        .env("RESTORE_TARGET", &target)
        .env("DOWNLOAD_DIR", env.path("downloads"))
        .env("SHOTS", &shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The id the dashboard showed is the latest snapshot's.
    let shown = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SNAPSHOT "))
        .unwrap()
        .trim()
        .to_string();
    let list = env.cmd().args(["snapshots", "--json"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains(&format!("\"short_id\":\"{shown}\"")),
        "{shown} not in {list}"
    );
    // The browser's restore wrote the directory, bytes equal.
    let restored = target.join(env.path("src/docs").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("readme.txt")).unwrap(),
        b"hello console\n"
    );
    assert_eq!(
        std::fs::read(restored.join("deep/notes.md")).unwrap(),
        b"# notes\n"
    );
    for name in [
        "login",
        "dashboard",
        "browse-file",
        "restore-done",
        "snapshots",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
}
