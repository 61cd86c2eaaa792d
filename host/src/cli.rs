//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use fedwasm_host::admin::{AdminConfig, AdminToken};
use fedwasm_host::app::{AppConfig, FederationTarget};
use fedwasm_host::dns::DnsConfig;
use fedwasm_host::federation::kinds::Kind;
use fedwasm_host::fleet::kubeconfig::KubeconfigPolicy;
use fedwasm_host::fleet::FleetConfig;
use fedwasm_host::ingress::IngressConfig;
use fedwasm_host::leader::ElectionConfig;
use fedwasm_host::routing::RouterConfig;
use fedwasm_host::runtime::{Limits, RuntimeConfig};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fedwasm_sdk::Hook;

/// fedwasm: federate Kubernetes clusters with placement policies as Wasm plugins.
#[derive(Parser, Debug)]
#[command(name = "fedwasm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate one placement request and print the decision as JSON.
    Plan(PlanArgs),
    /// Create, build and measure plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// What a candidate plugin would change if it replaced a serving one, for every
    /// federated object; writes nothing.
    Preview(PreviewArgs),
    /// Run the plugin runtime (with hot reload) and the admin API; with a
    /// kubeconfig, or in a pod, also the federation controller.
    Run(RunArgs),
    /// Join a member cluster to the federation.
    Join(JoinArgs),
    /// Remove a member cluster from the federation.
    Unjoin(UnjoinArgs),
    /// A local federation of real kube-apiservers, to try fedwasm on one machine.
    #[command(subcommand)]
    Dev(DevCommand),
    /// The 2016 Federation walk-through, replayed and narrated on a local
    /// nine-cluster federation: a global site, clients sent to the closest cluster,
    /// an outage, and placement policies changed without a restart.
    Demo(DemoArgs),
}

/// Where the federation control plane is.
#[derive(Args, Debug, Clone)]
pub struct FederationArgs {
    /// Kubeconfig holding the federation context (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The federation plane's context in that kubeconfig.
    #[arg(
        long = "federation-context",
        visible_alias = "context",
        default_value = "federation"
    )]
    pub context: String,
}

#[derive(Args, Debug)]
pub struct PreviewArgs {
    /// The candidate plugin component.
    pub plugin: PathBuf,
    /// The plugin it would replace (default: its file stem, the name it would get
    /// in the plugin directory).
    #[arg(long = "as", value_name = "NAME")]
    pub as_name: Option<String>,
    #[command(flatten)]
    pub federation: FederationArgs,
    /// The host's plugin directory, when it serves plugins besides the built-ins:
    /// objects that name them are then decided as the host decides them.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Print the answer as JSON: {"changes": [...], "errors": [...], "evaluated": N}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The member's name in the federation.
    pub name: String,
    /// Kubeconfig holding the member's context (and, by default, the federation's).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The member's context in that kubeconfig.
    #[arg(long)]
    pub context: String,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub zone: Option<String>,
    /// A label of the cluster, `key=value`; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Replicas the member can run, if you know better than the host's measurement.
    #[arg(long)]
    pub capacity: Option<u32>,
    /// Where the global ingress reaches the member's ingress (`http://host:port`),
    /// when its Ingresses publish no load-balancer address.
    #[arg(long)]
    pub ingress_endpoint: Option<String>,
    /// The federation plane's context (in --federation-kubeconfig, or --kubeconfig).
    #[arg(long = "federation-context", default_value = "federation")]
    pub federation_context: String,
    /// Kubeconfig of the federation plane, when it is not in --kubeconfig.
    #[arg(long)]
    pub federation_kubeconfig: Option<PathBuf>,
    /// Accept member kubeconfigs that run a command (`exec`, `auth-provider`), make
    /// the host read its own files (`tokenFile`, `client-certificate`, `client-key`,
    /// `certificate-authority`) or skip TLS verification. Off by default: whoever can
    /// write a member's Secret could otherwise run commands as the host or have it
    /// send its files to a server of their choosing.
    #[arg(long)]
    pub allow_unsafe_kubeconfig: bool,
}

#[derive(Args, Debug)]
pub struct UnjoinArgs {
    /// The member's name.
    pub name: String,
    #[command(flatten)]
    pub federation: FederationArgs,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected key=value"))?;
    if k.is_empty() {
        return Err(format!("`{s}`: empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Limits and caching of the Wasm runtime.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Deadline of one plugin call, in milliseconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub deadline_ms: u64,
    /// Memory cap of one plugin instance, in MiB.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub memory_mib: u64,
    /// Where precompiled plugins are cached (default: $XDG_CACHE_HOME/fedwasm/artifacts
    /// or ~/.cache/fedwasm/artifacts). It must be a directory of this user that
    /// nobody else can write (it is created 0700); otherwise it is ignored.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin afresh; write no cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The request: {"hook": "select"|"distribute"|"rank"|"customize", ...}.
    pub file: PathBuf,
    /// A plugin component to use instead of the built-in default for the hook.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Scaffold a plugin crate that builds as it is.
    New(NewArgs),
    /// Build a plugin crate into a component; prints the .wasm path last.
    Build(BuildArgs),
    /// Measure a plugin's per-call cost as the host calls it.
    Bench(BenchArgs),
    /// Load a plugin as hot reload does, then call every hook it declares with
    /// edge-case inputs; exits 1 on any invalid answer, trap or overrun, 2 when it
    /// does not load.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Directory to create; its name is the crate's name.
    pub dir: PathBuf,
    /// The hook the plugin implements.
    #[arg(long)]
    pub hook: Hook,
    /// Path of the fedwasm SDK crate to depend on (default: the SDK this binary
    /// embeds, written once to ~/.cache/fedwasm/sdk/VERSION-HASH).
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The plugin crate's directory.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The plugin component.
    pub plugin: PathBuf,
    /// A request file, as for `fedwasm plan`.
    #[arg(long)]
    pub input: PathBuf,
    /// Print {"calls", "median_ns", "p99_ns", "instantiate_ns"} as JSON.
    #[arg(long)]
    pub json: bool,
    /// Number of measured calls (1 to 10000000).
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=fedwasm_host::bench::MAX_CALLS))]
    pub calls: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The plugin component.
    pub plugin: PathBuf,
    /// Print the report as JSON: {"plugin", "sha256", "hooks", "cases", "findings",
    /// "refusals"}, each finding {"hook", "case", "kind", "message"}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Plugin directory to load and watch (NAME.wasm; NAME overrides a built-in).
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Address of the admin API. Loopback by default; elsewhere, set
    /// --admin-token-file (a warning is logged when it is reachable from other hosts).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin: String,
    /// A file holding the admin API's bearer token: every endpoint but /healthz then
    /// wants `Authorization: Bearer <token>`.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Connections the admin API keeps open at once; more are closed at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub admin_max_connections: u32,
    /// `POST /plan` evaluations at once; more are answered 429 at once, so a flood
    /// of plans cannot starve the controller's plugin calls.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub admin_max_plans: u32,
    /// Quiet time after a plugin file changes before it is reloaded, in ms.
    #[arg(long, default_value_t = 100)]
    pub debounce_ms: u64,
    /// Kubeconfig of the federation plane. Without it, in a pod (KUBERNETES_SERVICE_HOST
    /// and KUBERNETES_SERVICE_PORT set) the cluster it runs in, with its service
    /// account; elsewhere only the runtime and admin API run.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The federation plane's context in --kubeconfig.
    #[arg(long, default_value = "federation")]
    pub context: String,
    /// Another kind to propagate, `group/version/Kind/plural[/cluster]` (core group:
    /// empty, as in `/v1/PersistentVolumeClaim/persistentvolumeclaims`); repeatable.
    #[arg(long = "propagate")]
    pub extra_kinds: Vec<String>,
    /// Seconds between member health probes.
    #[arg(long, default_value_t = 2)]
    pub probe_interval_secs: u64,
    /// Seconds a member may fail probes before it is Offline.
    #[arg(long, default_value_t = 5)]
    pub offline_grace_secs: u64,
    /// Deadline of one whole request to a member, in seconds: a member that accepts
    /// connections and never answers fails that request, and holds up no other member.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub member_timeout_secs: u64,
    /// Serve the global ingress (HTTP) on this address: each client is sent to the
    /// closest healthy cluster with capacity, by the `rank` hook.
    #[arg(long)]
    pub ingress: Option<String>,
    /// Threads serving the global ingress's connections, each with its own event
    /// loop, as nginx's worker processes (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub ingress_workers: usize,
    /// The locality table (JSON or YAML): client networks → region and zone, and
    /// the proxies whose X-Forwarded-For is believed. Re-read when it changes.
    #[arg(long)]
    pub locality: Option<PathBuf>,
    /// Concurrent requests one ready replica takes: a cluster's capacity is its
    /// ready replicas times this; a full cluster spills to the next.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_replica_concurrency: u32,
    /// Answer DNS on this address (UDP and TCP): `<svc>.<ns>.svc.clusterset.local`
    /// is the closest healthy shard's load-balancer addresses, by the `rank` hook.
    #[arg(long)]
    pub dns: Option<String>,
    /// Also answer the original Federation names under this domain:
    /// `<svc>.<ns>.<federation-name>.svc[.<zone>.<region>|.<region>].DOMAIN`.
    #[arg(long)]
    pub dns_zone: Option<String>,
    /// The federation's name in the --dns-zone names.
    #[arg(long, default_value = "federation")]
    pub federation_name: String,
    /// TTL of every DNS answer, in seconds (also how long a "no such name" is cached).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub dns_ttl: u32,
    /// Development only: play the members' missing kubelets and controllers (mark
    /// fedwasm's ReplicaSets/Deployments ready, give LoadBalancer Services an
    /// address), for clusters made by `fedwasm dev up` that run no workloads.
    #[arg(long)]
    pub simulate_workloads: bool,
    /// Take part in leader election on the Lease `fedwasm-system/fedwasm`: of the
    /// hosts against one federation plane, only the leader reconciles and writes
    /// Cluster status; the others serve the admin API, ingress and DNS and take
    /// over when the lease runs out. `--leader-elect=false`: lead alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long the lease holds without renewal, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration_secs: u64,
    /// How long the leader tries to renew before it stops every write and exits.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub renew_deadline_secs: u64,
    /// Time between tries to take or renew the lease, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub retry_period_secs: u64,
    /// Accept member kubeconfigs that run a command (`exec`, `auth-provider`), make
    /// the host read its own files (`tokenFile`, `client-certificate`, `client-key`,
    /// `certificate-authority`) or skip TLS verification. Off by default: whoever can
    /// write a member's Secret could otherwise run commands as the host or have it
    /// send its files to a server of their choosing.
    #[arg(long)]
    pub allow_unsafe_kubeconfig: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl RuntimeArgs {
    /// The runtime's configuration from these arguments.
    pub fn config(&self) -> RuntimeConfig {
        RuntimeConfig {
            limits: Limits {
                deadline: Duration::from_millis(self.deadline_ms),
                memory_bytes: (self.memory_mib as usize) << 20,
            },
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(default_cache_dir)
            },
        }
    }
}

/// The admin token in `path`; an empty or unreadable file is an error, not "no token".
fn read_admin_token(path: &std::path::Path) -> Result<AdminToken> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    AdminToken::new(&text)
        .with_context(|| format!("the admin token file {} is empty", path.display()))
}

/// `$XDG_CACHE_HOME/fedwasm/artifacts`, else `~/.cache/fedwasm/artifacts`; never a
/// shared directory such as `/tmp` (loading an artifact runs its native code): with
/// neither variable set, plugins are compiled without a cache.
fn default_cache_dir() -> Option<PathBuf> {
    fedwasm_host::cache_home().map(|c| c.join("artifacts"))
}

impl RunArgs {
    /// Everything the app is built from; fails on a malformed `--propagate`.
    pub fn app_config(&self) -> Result<AppConfig> {
        let defaults = FleetConfig::default();
        Ok(AppConfig {
            runtime: self.runtime.config(),
            plugins: self.plugins.clone(),
            debounce: Duration::from_millis(self.debounce_ms),
            admin: self.admin.clone(),
            admin_config: AdminConfig {
                token: self
                    .admin_token_file
                    .as_deref()
                    .map(read_admin_token)
                    .transpose()?,
                max_connections: self.admin_max_connections as usize,
                max_plans: self.admin_max_plans as usize,
                ..AdminConfig::default()
            },
            federation: match &self.kubeconfig {
                Some(kubeconfig) => Some(FederationTarget::Kubeconfig {
                    kubeconfig: kubeconfig.clone(),
                    context: self.context.clone(),
                }),
                None => FederationTarget::in_cluster(),
            },
            fleet: FleetConfig {
                probe_interval: Duration::from_secs(self.probe_interval_secs.max(1)),
                offline_grace: Duration::from_secs(self.offline_grace_secs),
                request_timeout: Duration::from_secs(self.member_timeout_secs),
                kubeconfig_policy: KubeconfigPolicy::from_allow_unsafe(
                    self.allow_unsafe_kubeconfig,
                ),
                ..defaults
            },
            extra_kinds: self
                .extra_kinds
                .iter()
                .map(|k| Kind::parse(k).map_err(anyhow::Error::msg))
                .collect::<Result<_>>()?,
            ingress: self.ingress.clone(),
            ingress_config: IngressConfig {
                workers: self.ingress_workers,
                ..IngressConfig::default()
            },
            locality: self.locality.clone(),
            routing: RouterConfig {
                per_replica_concurrency: self.per_replica_concurrency,
                ..RouterConfig::default()
            },
            dns: DnsConfig {
                addr: self.dns.clone(),
                zone: self.dns_zone.clone(),
                federation: self.federation_name.clone(),
                ttl: Duration::from_secs(self.dns_ttl.into()),
            },
            election: if self.leader_elect {
                let election = ElectionConfig {
                    lease_duration: Duration::from_secs(self.lease_duration_secs),
                    renew_deadline: Duration::from_secs(self.renew_deadline_secs),
                    retry_period: Duration::from_secs(self.retry_period_secs),
                    ..ElectionConfig::new()
                };
                election.validate()?;
                Some(election)
            } else {
                None
            },
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Start a local federation (etcd, a federation plane and members), join the
    /// members and, unless --no-host, run the host against it.
    Up(UpArgs),
    /// Stop one member's apiserver (its data is kept), to try an outage.
    Stop(MemberArgs),
    /// Start a stopped member again.
    Start(MemberArgs),
    /// Stop everything `dev up` started and remove its state (logs stay).
    Down(DirArgs),
}

#[derive(Args, Debug)]
pub struct DirArgs {
    /// The local federation's directory (state, logs, kubeconfig).
    #[arg(long, default_value = ".fedwasm-dev")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    /// The member's name.
    pub name: String,
    #[command(flatten)]
    pub dir: DirArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Layout {
    /// The nine clusters of the original Kubernetes Federation walk-through:
    /// gce-{asia-east1,europe-west1,us-central1}-{zones}.
    Seed,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Number of members (m1, m2, ...), spread over three regions.
    #[arg(long, default_value_t = 3, conflicts_with = "layout",
          value_parser = clap::value_parser!(u16).range(1..=40))]
    pub members: u16,
    /// A predefined set of members instead of --members.
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Leave the federation (and the host, unless --no-host) running in the
    /// background and return; `fedwasm dev down` stops it.
    #[arg(long)]
    pub detach: bool,
    /// Do not run the host; only the clusters.
    #[arg(long)]
    pub no_host: bool,
    /// Address of the host's admin API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin: String,
    /// Plugin directory the host watches.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Also run the workload simulator: it plays the members' missing kubelets and
    /// controllers, marking member ReplicaSets/Deployments ready and giving
    /// LoadBalancer Services an address, so status aggregation has something to show.
    #[arg(long)]
    pub simulate_workloads: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the local federation keeps its state, logs and kubeconfig.
    #[arg(long, default_value = ".fedwasm-demo")]
    pub dir: PathBuf,
    /// Run the steps, stop everything and exit: 0 only if every check held.
    #[arg(long)]
    pub exit: bool,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub admin: String,
    /// Address of the global ingress.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub ingress: String,
    /// Address of the DNS front door (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub dns: String,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
