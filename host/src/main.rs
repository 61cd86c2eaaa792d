//! The `fedwasm` command.

/// Like `eprintln!`, without the panic when stderr is closed: a message nobody can
/// read is dropped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod demo;
mod dev;
mod serve;
mod simulator;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fedwasm_host::app;
use fedwasm_host::fleet::kubeconfig::KubeconfigPolicy;
use fedwasm_host::metrics::Metrics;
use fedwasm_host::placer::Placer;
use fedwasm_host::plan::PlanRequest;
use fedwasm_host::runtime::{Plugin, PluginSource, Registry, Runtime};
use fedwasm_host::{bench, check, federation, fleet, scaffold};

use cli::{Cli, Command, PluginCommand, RuntimeArgs};

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        // hickory-server logs every DNS query at info.
        Command::Run(_) | Command::Dev(_) => "info,hickory_server=warn",
        // The demo narrates on stderr itself; the host's log goes to a file.
        Command::Demo(_) => "warn",
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
        // `plugin check` printed its findings already; only the status is left.
        if e.is::<CheckFailed>() {
            std::process::exit(1);
        }
        // One line: the whole context chain. Not `eprintln!`, which panics when
        // stderr is a closed pipe; then there is no one to tell either.
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(if e.is::<NotLoadable>() { 2 } else { 1 });
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

/// `plugin check` found problems and reported them; exit status 1.
#[derive(Debug)]
struct CheckFailed;

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin failed some checks")
    }
}

impl std::error::Error for CheckFailed {}

/// The plugin file of `plugin check` did not pass the checks of loading (compile,
/// imports, exports, smoke test); exit status 2, to tell it from findings.
#[derive(Debug)]
struct NotLoadable(std::path::PathBuf);

impl std::fmt::Display for NotLoadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} does not load", self.0.display())
    }
}

/// Writes `line` and a newline to stdout. Not `println!`, which panics when the
/// write fails: Rust ignores SIGPIPE, so a reader that went away makes the write
/// fail with EPIPE, which becomes [`StdoutClosed`]; any other failure is an error.
pub(crate) fn print_line(line: impl std::fmt::Display) -> Result<()> {
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
            let sdk = match args.sdk {
                Some(sdk) => sdk,
                None => {
                    let cache = scaffold::sdk::default_cache_dir().context(
                        "no cache directory for the embedded SDK: set HOME or XDG_CACHE_HOME, or pass --sdk PATH",
                    )?;
                    scaffold::sdk::install(&cache).with_context(|| {
                        format!("writing the embedded SDK under {}", cache.display())
                    })?
                }
            };
            let name = scaffold::new_plugin(&args.dir, args.hook, &sdk)
                .with_context(|| format!("creating a plugin crate in {}", args.dir.display()))?;
            note!(
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
            print_line(out.display())
        }
        Command::Plugin(PluginCommand::Bench(args)) => plugin_bench(args),
        Command::Preview(args) => preview(args),
        Command::Plugin(PluginCommand::Check(args)) => plugin_check(args),
        Command::Run(args) => serve::run(args),
        Command::Join(args) => join(args),
        Command::Unjoin(args) => unjoin(args),
        Command::Dev(command) => dev::dispatch(command),
        Command::Demo(args) => demo::run(args),
    }
}

fn runtime(args: &RuntimeArgs) -> Result<Arc<Runtime>> {
    Runtime::new(args.config(), Arc::new(Metrics::new())).context("starting the Wasm runtime")
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

/// `fedwasm preview`: the candidate serves under the name it would replace, in a
/// registry of its own; the federation plane is only read.
fn preview(args: cli::PreviewArgs) -> Result<()> {
    let registry =
        Registry::new(runtime(&args.runtime)?).context("loading the built-in plugins")?;
    if let Some(dir) = &args.plugins {
        if let Some(e) = registry.sync_dir(dir).into_iter().next() {
            note!("warning: {e} (as in the host: the name keeps its previous plugin)");
        }
    }
    let stem = args
        .plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", args.plugin.display()))?;
    let replaced = args.as_name.clone().unwrap_or_else(|| stem.to_string());
    let bytes = std::fs::read(&args.plugin)
        .with_context(|| format!("reading {}", args.plugin.display()))?;
    registry
        .load(&replaced, &bytes, PluginSource::File(args.plugin.clone()))
        .with_context(|| format!("loading {}", args.plugin.display()))?;
    let kinds = fedwasm_host::federation::kinds::built_in();
    let preview = serve::block_on(async {
        let client = app::kube_client(
            args.federation.kubeconfig.as_deref(),
            &args.federation.context,
        )
        .await?;
        let clusters: kube::Api<fleet::cluster::Cluster> = kube::Api::all(client.clone());
        let members: Vec<fleet::Member> = clusters
            .list(&Default::default())
            .await
            .context("listing the member clusters (is this a federation plane?)")?
            .items
            .into_iter()
            .map(|cluster| fleet::Member {
                cluster,
                client: None,
            })
            .collect();
        let placer = Placer::new(registry);
        fedwasm_host::preview::preview(&client, &placer, &members, &kinds)
            .await
            .context("previewing")
    })??;
    if args.json {
        return print_line(serde_json::to_string_pretty(&preview)?);
    }
    let replica_kinds: Vec<String> = kinds
        .iter()
        .filter(|k| k.replicas)
        .map(|k| k.resource.kind.clone())
        .collect();
    let report = preview.render(
        &args.plugin.display().to_string(),
        &replaced,
        &replica_kinds,
    );
    for line in report.lines() {
        print_line(line)?;
    }
    Ok(())
}

fn plugin_check(args: cli::CheckArgs) -> Result<()> {
    let path = &args.plugin;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_string();
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .context(NotLoadable(path.clone()))?;
    let runtime = runtime(&args.runtime)?;
    // What hot reload runs on a new file: compile, imports, exports, smoke test.
    let plugin = Plugin::load(&runtime, &name, &bytes, PluginSource::File(path.clone()), 1)
        .map_err(anyhow::Error::new)
        .context(NotLoadable(path.clone()))?;
    let report = check::run(&plugin);
    if args.json {
        print_line(serde_json::to_string(&report)?)?;
    } else {
        for f in &report.findings {
            print_line(format_args!(
                "FAIL {} [{}]: {}: {}",
                f.hook, f.case, f.kind, f.message
            ))?;
        }
        for f in &report.refusals {
            print_line(format_args!(
                "refused {} [{}]: {}",
                f.hook, f.case, f.message
            ))?;
        }
        let hooks: Vec<&str> = report.hooks.iter().map(|h| h.as_str()).collect();
        print_line(format_args!(
            "{name}: {} cases over {}: {} {}, {} refused",
            report.cases,
            hooks.join(", "),
            report.findings.len(),
            if report.findings.len() == 1 {
                "finding"
            } else {
                "findings"
            },
            report.refusals.len()
        ))?;
    }
    if report.passed() {
        Ok(())
    } else {
        Err(CheckFailed.into())
    }
}

fn join(args: cli::JoinArgs) -> Result<()> {
    let kubeconfig = fleet::join::standalone_kubeconfig(&args.kubeconfig, &args.context)?;
    let request = fleet::join::JoinRequest {
        name: args.name.clone(),
        region: args.region,
        zone: args.zone,
        labels: args.labels.into_iter().collect(),
        capacity: args.capacity,
        ingress_endpoint: args.ingress_endpoint,
        kubeconfig_policy: KubeconfigPolicy::from_allow_unsafe(args.allow_unsafe_kubeconfig),
    };
    let fed_config = args.federation_kubeconfig.unwrap_or(args.kubeconfig);
    serve::block_on(async {
        let client = app::kube_client(Some(&fed_config), &args.federation_context).await?;
        fleet::join::join(&client, &request, &kubeconfig)
            .await
            .with_context(|| format!("joining {}", args.name))
    })??;
    note!(
        "joined {}; `kubectl --context {} get clusters` shows its status",
        args.name,
        args.federation_context
    );
    Ok(())
}

fn unjoin(args: cli::UnjoinArgs) -> Result<()> {
    serve::block_on(async {
        let client = app::kube_client(
            args.federation.kubeconfig.as_deref(),
            &args.federation.context,
        )
        .await?;
        fleet::join::unjoin(&client, &args.name)
            .await
            .with_context(|| format!("unjoining {}", args.name))
    })??;
    note!(
        "unjoined {}: objects fedwasm placed there stay (labelled {}={}) but are no longer managed",
        args.name,
        federation::MANAGED_BY_LABEL,
        federation::MANAGED_BY_VALUE
    );
    Ok(())
}
