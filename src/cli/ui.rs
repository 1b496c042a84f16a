//! `strata ui`: the web console, read-only, for a repository without an
//! agent (someone on a laptop).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::console;
use crate::session::Ctx;

/// Arguments of `ui`.
#[derive(Args, Debug)]
pub struct UiArgs {
    /// Address to serve on; a non-loopback address needs a token.
    #[arg(long, default_value = "127.0.0.1:9899", value_name = "ADDR")]
    listen: String,
    /// File holding the login token (or STRATA_UI_TOKEN in the environment).
    #[arg(long, env = "STRATA_UI_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// Serves the console until interrupted.
pub fn run(ctx: Ctx, args: UiArgs) -> Result<i32> {
    let listen = crate::agent::config::parse_listen(&args.listen)
        .map_err(|e| anyhow::anyhow!("--listen: {e}"))?
        .0;
    let token = match (std::env::var("STRATA_UI_TOKEN"), &args.token_file) {
        (Ok(t), _) if !t.trim().is_empty() => Some(t.trim().to_string()),
        (_, Some(f)) => {
            let raw = std::fs::read_to_string(f)
                .with_context(|| format!("--token-file: cannot read {}", f.display()))?;
            let t = raw.lines().next().unwrap_or_default().trim().to_string();
            if t.is_empty() {
                anyhow::bail!("--token-file: {} is empty", f.display());
            }
            Some(t)
        }
        _ => None,
    };
    console::check_exposure(
        listen,
        token.is_some(),
        "give --token-file (or STRATA_UI_TOKEN)",
    )?;
    let ctx = Arc::new(ctx);
    let source = console::source::Source::new(ctx.clone());
    // Open now: a wrong password or a missing repository fails at start.
    source.repo()?;
    let c = console::Console {
        access: console::auth::Access::new(Box::new(move || token.clone())),
        source,
        scheduler: None,
        restore_targets: Vec::new(),
        history: Arc::new(console::history::History::default()),
        restores: Default::default(),
    };
    let app = console::router(Arc::new(c));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("strata ui: serving the console on http://{listen}/ (Ctrl-C stops)");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the HTTP listener stopped")
    })?;
    Ok(crate::error::exit::OK)
}
