//! The `fedwasm` command.

mod cli;
mod dev;
mod simulator;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fedwasm_host::admin::{self, AdminState};
use fedwasm_host::metrics::Metrics;
use fedwasm_host::plan::PlanRequest;
use fedwasm_host::runtime::{DirWatcher, Limits, PluginSource, Registry, Runtime, RuntimeConfig};
use fedwasm_host::{bench, federation, scaffold};

use cli::{Cli, Command, PluginCommand, RuntimeArgs};

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = dispatch(cli) {
        // The reader of our output went away (`fedwasm plan F | head -c1`): nothing
        // is wrong, and there is no one to tell.
        if e.is::<StdoutClosed>() {
            return;
        }
        // One line: the whole context chain. Not `eprintln!`, which panics when
        // stderr is a closed pipe; then there is no one to tell either.
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}

/// Stdout was closed before all output was written. `main` exits quietly and
/// successfully, as `cat` and `grep` do when their reader stops early.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `line` and a newline to stdout. Not `println!`, which panics when the
/// write fails: Rust ignores SIGPIPE, so a reader that went away makes the write
/// fail with EPIPE, which becomes [`StdoutClosed`]; any other failure is an error.
fn print_line(line: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::Error::new(e).context("writing to stdout"),
        })
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Plan(args) => plan(&args.file, args.plugin.as_deref(), &args.runtime),
        Command::Plugin(PluginCommand::New(args)) => {
            let sdk = args.sdk.unwrap_or_else(scaffold::default_sdk_path);
            let name = scaffold::new_plugin(&args.dir, args.hook, &sdk)
                .with_context(|| format!("creating a plugin crate in {}", args.dir.display()))?;
            eprintln!(
                "created {name} ({} hook) in {}; build it with `fedwasm plugin build {}`",
                args.hook,
                args.dir.display(),
                args.dir.display()
            );
            Ok(())
        }
        Command::Plugin(PluginCommand::Build(args)) => {
            let out = scaffold::build_plugin(&args.dir)
                .with_context(|| format!("building the plugin in {}", args.dir.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Plugin(PluginCommand::Bench(args)) => plugin_bench(args),
        Command::Run(args) => run(args),
        Command::Join(args) => join(args),
        Command::Unjoin(args) => unjoin(args),
        Command::Dev(command) => dev::dispatch(command),
    }
}

fn runtime(args: &RuntimeArgs) -> Result<Arc<Runtime>> {
    let config = RuntimeConfig {
        limits: Limits {
            deadline: Duration::from_millis(args.deadline_ms),
            memory_bytes: (args.memory_mib as usize) << 20,
        },
        cache_dir: if args.no_cache {
            None
        } else {
            Some(args.cache_dir.clone().unwrap_or_else(default_cache_dir))
        },
    };
    Runtime::new(config, Arc::new(Metrics::new())).context("starting the Wasm runtime")
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("fedwasm/artifacts")
}

/// Loads `path` into the registry under its file stem.
fn load_file(registry: &Registry, path: &Path) -> Result<String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_string();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    registry.load(&name, &bytes, PluginSource::File(path.to_path_buf()))?;
    Ok(name)
}

fn read_request(file: &Path) -> Result<PlanRequest> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the request {}", file.display()))?;
    let (request, plugin) =
        PlanRequest::parse(&text).with_context(|| format!("in {}", file.display()))?;
    if plugin.is_some() {
        bail!(
            "{}: \"plugin\" is for POST /plan; use --plugin PATH here",
            file.display()
        );
    }
    Ok(request)
}

fn plan(file: &Path, plugin: Option<&Path>, args: &RuntimeArgs) -> Result<()> {
    let request = read_request(file)?;
    let registry = Registry::new(runtime(args)?).context("loading the built-in plugins")?;
    let name = plugin.map(|p| load_file(&registry, p)).transpose()?;
    let decision = request.evaluate(&registry, name.as_deref())?;
    print_line(serde_json::to_string(&decision)?)
}

fn plugin_bench(args: cli::BenchArgs) -> Result<()> {
    let request = read_request(&args.input)?;
    let registry =
        Registry::new(runtime(&args.runtime)?).context("loading the built-in plugins")?;
    let name = load_file(&registry, &args.plugin)?;
    let plugin = registry.get(&name)?;
    let report = bench::run(&plugin, &request, args.calls)?;
    if args.json {
        print_line(serde_json::to_string(&report)?)
    } else {
        print_line(format_args!(
            "{name} {}: {} calls, median {} ns, p99 {} ns; fresh instance {} ns",
            request.hook(),
            report.calls,
            report.median_ns,
            report.p99_ns,
            report.instantiate_ns
        ))
    }
}

/// A client for `context` in `kubeconfig` (default: the usual kubeconfig search).
pub(crate) async fn kube_client(kubeconfig: Option<&Path>, context: &str) -> Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .with_context(|| format!("loading context `{context}`"))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f))
}

fn join(args: cli::JoinArgs) -> Result<()> {
    let kubeconfig = federation::join::standalone_kubeconfig(&args.kubeconfig, &args.context)?;
    let request = federation::join::JoinRequest {
        name: args.name.clone(),
        region: args.region,
        zone: args.zone,
        labels: args.labels.into_iter().collect(),
        capacity: args.capacity,
    };
    let fed_config = args.federation_kubeconfig.unwrap_or(args.kubeconfig);
    block_on(async {
        let client = kube_client(Some(&fed_config), &args.federation_context).await?;
        federation::join::join(&client, &request, &kubeconfig)
            .await
            .with_context(|| format!("joining {}", args.name))
    })??;
    eprintln!(
        "joined {}; `kubectl --context {} get clusters` shows its status",
        args.name, args.federation_context
    );
    Ok(())
}

fn unjoin(args: cli::UnjoinArgs) -> Result<()> {
    block_on(async {
        let client = kube_client(
            args.federation.kubeconfig.as_deref(),
            &args.federation.context,
        )
        .await?;
        federation::join::unjoin(&client, &args.name)
            .await
            .with_context(|| format!("unjoining {}", args.name))
    })??;
    eprintln!(
        "unjoined {}: objects fedwasm placed there stay (labelled {}={}) but are no longer managed",
        args.name,
        federation::MANAGED_BY_LABEL,
        federation::MANAGED_BY_VALUE
    );
    Ok(())
}

pub(crate) fn run(args: cli::RunArgs) -> Result<()> {
    let registry =
        Registry::new(runtime(&args.runtime)?).context("loading the built-in plugins")?;
    let _watcher = match &args.plugins {
        Some(dir) => Some(
            DirWatcher::start(
                registry.clone(),
                dir,
                Duration::from_millis(args.debounce_ms),
            )
            .with_context(|| format!("watching the plugin directory {}", dir.display()))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let federation_config = federation::FederationConfig {
        health: federation::members::HealthConfig {
            interval: Duration::from_secs(args.probe_interval_secs.max(1)),
            grace: Duration::from_secs(args.offline_grace_secs),
            ..Default::default()
        },
        extra_kinds: args
            .extra_kinds
            .iter()
            .map(|k| federation::kinds::Kind::parse(k).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
    };
    rt.block_on(async move {
        if let Some(kubeconfig) = &args.kubeconfig {
            let client = kube_client(Some(kubeconfig), &args.context).await?;
            if args.simulate_workloads {
                tokio::spawn(simulator::run(kubeconfig.clone(), args.context.clone()));
            }
            let registry = registry.clone();
            tokio::spawn(async move {
                // The federation plane may not be up yet: keep trying, never exit.
                loop {
                    match federation::run(client.clone(), registry.clone(), federation_config.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "the federation controller stopped; restarting in 5 s");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                    }
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(&args.admin)
            .await
            .with_context(|| format!("binding the admin API to {}", args.admin))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "admin API listening");
        println!("admin API: http://{addr}");
        let app = admin::router(AdminState { registry });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            })
            .await
            .context("serving the admin API")
    })
}
