//! `fedwasm run`: the host, built by [`App`] from the command line, in its own
//! async runtime; and the one place the binary starts an async runtime.

use anyhow::{Context, Result};
use fedwasm_host::app::App;

use crate::cli::RunArgs;
use crate::simulator;

pub fn run(args: RunArgs) -> Result<()> {
    fedwasm_host::memory::limit_arenas();
    fedwasm_host::memory::start_trimming();
    let config = args.app_config()?;
    let simulate = args
        .simulate_workloads
        .then(|| (args.kubeconfig.clone(), args.context.clone()));
    let app = App::build(config)?;
    block_on(async move {
        if let Some((Some(kubeconfig), context)) = simulate {
            tokio::spawn(simulator::run(kubeconfig, context));
        }
        app.serve().await
    })?
}

/// Runs `f` to completion on a new multi-threaded runtime.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f))
}
