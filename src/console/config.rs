//! `[agent.console]`: what the console served by the agent may do.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[agent.console]` table. The console sits behind the agent's token
/// (`[agent] token_file` or STRATA_AGENT_TOKEN).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directories a restore from the console may write into (at or below
    /// one of them). Empty: no restores from the console.
    #[serde(default)]
    pub restore_targets: Vec<PathBuf>,
    /// Where the run history for the charts is kept (default:
    /// `$XDG_STATE_HOME/strata/console-history.json`, else under
    /// `~/.local/state`).
    pub history_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            restore_targets: Vec::new(),
            history_file: None,
        }
    }
}

impl ConsoleConfig {
    /// Checks the restore targets: absolute, without `..`.
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.restore_targets {
            if !t.is_absolute()
                || t.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "[agent.console] restore_targets: {} must be an absolute path without `..`",
                    t.display()
                ));
            }
        }
        Ok(())
    }

    /// The history file to use, if any place is known.
    pub fn history_path(&self) -> Option<PathBuf> {
        self.history_file.clone().or_else(|| {
            let base = std::env::var_os("XDG_STATE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state"))
                })?;
            Some(base.join("strata").join("console-history.json"))
        })
    }
}
