//! Checks of the agent's sections beyond what their types ensure (job
//! names, sources, limits, each error naming its line), and reading the
//! bearer token.

use std::collections::HashSet;

use anyhow::{Result, bail};

use crate::config::ConfigFile;
use crate::config::text::{key_line, line_of};

use super::AgentConfig;

/// Checks the agent's parts of a parsed config: job names, sources, limits.
/// `text` is the file's content, for line numbers.
pub fn validate(file: &ConfigFile, text: &str) -> Result<()> {
    let jobs = file.jobs.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    for job in jobs {
        let line = line_of(text, job.name.span().start);
        let name = job.name();
        let at = |msg: String| anyhow::anyhow!("line {line}, [[jobs]] {name:?}: {msg}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(at(
                "field `name` must be 1 to 64 letters, digits, - or _".into()
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(at("field `name` is used by another job".into()));
        }
        match (&job.command, job.paths.is_empty()) {
            (Some(_), false) => {
                return Err(at("give either `paths` or `command`, not both".into()));
            }
            (None, true) => {
                return Err(at(
                    "field `paths` (or `command`) is missing: nothing to back up".into(),
                ));
            }
            (Some(cmd), true) if cmd.is_empty() || cmd[0].is_empty() => {
                return Err(at(
                    "field `command` must name a program, e.g. [\"pg_dump\", \"app\"]".into(),
                ));
            }
            _ => {}
        }
        if job.command.is_none() && job.stdin_name.is_some() {
            return Err(at("field `stdin_name` needs a `command`".into()));
        }
        let stdin = job.stdin_file_name();
        if job.command.is_some()
            && (stdin.is_empty()
                || stdin == "."
                || stdin == ".."
                || stdin.contains('/')
                || stdin.contains('\0'))
        {
            return Err(at(format!(
                "field `stdin_name` must be a plain file name, got {stdin:?}"
            )));
        }
        for p in &job.excludes {
            if let Err(e) = globset::Glob::new(p) {
                return Err(at(format!("field `excludes`: bad pattern {p:?}: {e}")));
            }
        }
        if job.command.is_some() {
            let set = [
                ("excludes", !job.excludes.is_empty()),
                ("exclude_file", !job.exclude_file.0.is_empty()),
                ("exclude_if_present", !job.exclude_if_present.0.is_empty()),
                ("exclude_caches", job.exclude_caches),
                ("one_file_system", job.one_file_system),
                ("exclude_larger_than", job.exclude_larger_than.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return Err(at(format!(
                    "field `{key}` applies to `paths`, not to a `command`; remove it"
                )));
            }
        }
        for f in &job.exclude_file.0 {
            if let Err(e) = crate::backup::read_exclude_file(f) {
                return Err(at(format!(
                    "field `exclude_file`: {}",
                    crate::error::one_line(&e)
                )));
            }
        }
        for n in &job.exclude_if_present.0 {
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(at(format!(
                    "field `exclude_if_present` takes plain file names such as \".nobackup\", got {n:?}"
                )));
            }
        }
        if let Some(h) = &job.hooks
            && let Err(e) = h.validate()
        {
            return Err(at(e));
        }
        if job.hook_timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(at("field `hook_timeout` must be more than 0s".into()));
        }
        if job.threads == Some(0) {
            return Err(at("field `threads` must be at least 1".into()));
        }
        if job.uploads.is_some_and(|u| u == 0 || u > 64) {
            return Err(at("field `uploads` must be from 1 to 64".into()));
        }
        if let Some(r) = &job.retention
            && r.policy().is_empty()
        {
            return Err(at(
                "field `retention` has no keep_* rule (it would remove every snapshot); add e.g. keep_last = 10"
                    .into(),
            ));
        }
    }
    if let Some(a) = &file.agent
        && let Some(h) = &a.host
        && h.trim().is_empty()
    {
        let line = key_line(text, "agent", "host").unwrap_or(0);
        bail!("line {line}, [agent]: field `host` must not be empty");
    }
    if let Some(a) = &file.agent {
        let mut names: Vec<String> = jobs.iter().map(|j| j.name().to_string()).collect();
        names.extend(a.prune.as_ref().map(|_| "prune".to_string()));
        names.extend(a.check.as_ref().map(|_| "check".to_string()));
        let headers: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim().replace(' ', "").starts_with("[[agent.notify]]"))
            .map(|(i, _)| i + 1)
            .collect();
        for (i, n) in a.notify.iter().enumerate() {
            if let Err(e) = n.validate(&names) {
                let line = headers.get(i).copied().unwrap_or(0);
                bail!("line {line}, [[agent.notify]] entry {}: {e}", i + 1);
            }
        }
    }
    Ok(())
}

/// Reads the bearer token (STRATA_AGENT_TOKEN, else the token file).
pub fn read_token(agent: &AgentConfig, text: &str) -> Result<Option<String>> {
    if let Some(t) = &agent.token {
        return Ok(Some(t.clone()));
    }
    let Some(path) = &agent.token_file else {
        return Ok(None);
    };
    let line = key_line(text, "agent", "token_file")
        .map(|l| format!("line {l}, "))
        .unwrap_or_default();
    let raw = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{line}[agent] field `token_file`: cannot read {}: {e}",
            path.display()
        )
    })?;
    let token = raw.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        bail!(
            "{line}[agent] field `token_file`: {} is empty",
            path.display()
        );
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!(crate::config::text::toml_error(text, &e)))?;
        validate(&file, text)?;
        Ok(file)
    }

    const GOOD: &str = r#"
[repository]
url = "/tmp/repo"

[agent]
listen = "0.0.0.0:9898"
grace_period = "45s"
run_missed = true

[agent.prune]
schedule = "0 30 3 * * *"
max_unused = "10%"

[agent.check]
schedule = "0 0 4 * * SUN"
read_data_subset = "5%"

[[jobs]]
name = "volume"
paths = ["/data"]
schedule = "*/15 * * * *"
jitter = "1m"
retention = { keep_last = 10, keep_daily = 7, keep_within = "2d" }

[[jobs]]
name = "db"
command = ["pg_dump", "-Fc", "app"]
stdin_name = "app.dump"
schedule = "0 * * * *"
"#;

    #[test]
    fn a_full_config_parses() {
        let f = parse(GOOD).unwrap();
        let a = f.agent.unwrap();
        assert_eq!(a.listen.unwrap().0.port(), 9898);
        assert_eq!(a.grace_period.unwrap().0.as_secs(), 45);
        assert_eq!(a.prune.unwrap().max_unused.unwrap().0, 10.0);
        let jobs = f.jobs.unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].snapshot_paths(), vec!["/app.dump".to_string()]);
        assert_eq!(jobs[0].retention.as_ref().unwrap().policy().last, 10);
        let f = parse(&GOOD.replace("jitter = \"1m\"", "compression = \"max\"")).unwrap();
        assert_eq!(
            f.jobs.unwrap()[0].compression,
            Some(crate::backup::CompressionSetting::Max)
        );
    }

    fn error_of(text: &str) -> String {
        crate::error::one_line(&parse(text).expect_err("refused"))
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad_key = GOOD.replace("jitter = \"1m\"", "jiter = \"1m\"");
        let e = error_of(&bad_key);
        assert!(e.contains("line 22") && e.contains("jiter"), "{e}");
        let bad_cron = GOOD.replace("*/15 * * * *", "*/15 * * *");
        let e = error_of(&bad_cron);
        assert!(e.contains("line 21") && e.contains("cron"), "{e}");
        let bad_listen = GOOD.replace("0.0.0.0:9898", "localhost");
        let e = error_of(&bad_listen);
        assert!(e.contains("line 6") && e.contains("listen"), "{e}");
        let dup = GOOD.replace("name = \"db\"", "name = \"volume\"");
        let e = error_of(&dup);
        assert!(e.contains("line 26") && e.contains("name"), "{e}");
        let both = GOOD.replace("stdin_name = \"app.dump\"", "paths = [\"/x\"]");
        assert!(error_of(&both).contains("not both"));
        let empty_retention = GOOD.replace(
            "retention = { keep_last = 10, keep_daily = 7, keep_within = \"2d\" }",
            "retention = {}",
        );
        assert!(error_of(&empty_retention).contains("retention"));
        let bad_pct = GOOD.replace("\"5%\"", "\"150%\"");
        assert!(error_of(&bad_pct).contains("percentage"));
        let bad_compression = GOOD.replace("jitter = \"1m\"", "compression = \"best\"");
        let e = error_of(&bad_compression);
        assert!(
            e.contains("line 22") && e.contains("invalid compression"),
            "{e}"
        );
    }

    #[test]
    fn key_lines() {
        assert_eq!(key_line(GOOD, "agent", "grace_period"), Some(7));
        assert_eq!(key_line(GOOD, "repository", "url"), Some(3));
        assert_eq!(key_line(GOOD, "repository", "password_file"), None);
    }
}
