//! `fedwasm dev`: a local federation of real etcd + kube-apiserver processes.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fedwasm_host::fleet::join;
use fedwasm_testenv::{FederationSpec, LocalFederation, FEDERATION};

use clap::Args;

use crate::cli::{DevCommand, Layout, RunArgs, RuntimeArgs, UpArgs};

/// One member to create: name, region, zone, labels.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
}

/// The members of a layout or of `--members N` (regions round-robin, so the
/// defaults exercise zone/region placement from the start).
pub fn members(args: &UpArgs) -> Vec<MemberSpec> {
    layout(args.layout, args.members)
}

/// The members of `layout`, or `n` members `m1`, `m2`, ...
pub fn layout(layout: Option<Layout>, n: u16) -> Vec<MemberSpec> {
    let member = |name: String, region: &str, zone: &str| MemberSpec {
        labels: BTreeMap::from([("region".to_string(), region.to_string())]),
        name,
        region: region.into(),
        zone: zone.into(),
    };
    match layout {
        Some(Layout::Seed) => fedwasm_sdk::WALKTHROUGH_CLUSTERS
            .iter()
            .map(|(name, region, zone)| member(name.to_string(), region, zone))
            .collect(),
        None => {
            const REGIONS: [(&str, &str); 3] = [
                ("europe-west1", "europe-west1-b"),
                ("us-central1", "us-central1-a"),
                ("asia-east1", "asia-east1-a"),
            ];
            (1..=n)
                .map(|i| {
                    let (region, zone) = REGIONS[usize::from(i - 1) % REGIONS.len()];
                    member(format!("m{i}"), region, zone)
                })
                .collect()
        }
    }
}

pub fn dispatch(command: DevCommand) -> Result<()> {
    match command {
        DevCommand::Up(args) => up(args),
        DevCommand::Stop(args) => {
            let fed = attach(&args.dir.dir)?;
            fed.stop_member(&args.name)
                .with_context(|| format!("stopping {}", args.name))?;
            note!(
                "stopped {} (its data is kept; `fedwasm dev start {} --dir {}` brings it back)",
                args.name,
                args.name,
                args.dir.dir.display()
            );
            Ok(())
        }
        DevCommand::Start(args) => {
            let fed = attach(&args.dir.dir)?;
            fed.start_member(&args.name)
                .with_context(|| format!("starting {}", args.name))?;
            note!("started {}", args.name);
            Ok(())
        }
        DevCommand::Down(args) => down(&args.dir),
    }
}

fn attach(dir: &Path) -> Result<LocalFederation> {
    LocalFederation::attach(dir).with_context(|| {
        format!(
            "no local federation in {} (start one with `fedwasm dev up --dir {}`)",
            dir.display(),
            dir.display()
        )
    })
}

fn host_pid_file(dir: &Path) -> PathBuf {
    dir.join("host.pid")
}

fn down(dir: &Path) -> Result<()> {
    let fed = attach(dir)?;
    if let Ok(text) = std::fs::read_to_string(host_pid_file(dir)) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            stop_host(pid);
        }
        let _ = std::fs::remove_file(host_pid_file(dir));
    }
    fed.down().context("stopping the local federation")?;
    note!("stopped the local federation in {}", dir.display());
    Ok(())
}

/// Whether `pid` is a live (not zombie) `fedwasm` process: guards against pid reuse.
fn is_fedwasm(pid: i32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    !zombie
        && exe.is_some_and(|e| {
            e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fedwasm"))
        })
}

/// Stops the host `dev up --detach` started: SIGTERM, SIGKILL after 10 s, and waits
/// until it is gone (so its admin port is free).
fn stop_host(pid: i32) {
    if !is_fedwasm(pid) {
        return;
    }
    // SAFETY: kill(2) on the host process `dev up --detach` started (checked above).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    let mut killed = false;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if !is_fedwasm(pid) {
            return;
        }
        if !killed && start.elapsed() >= Duration::from_secs(10) {
            killed = true;
            // SAFETY: as above, checked again just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if start.elapsed() >= Duration::from_secs(15) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn up(args: UpArgs) -> Result<()> {
    let dir = args.dir.dir.clone();
    let specs = members(&args);
    let fed = start_local(&dir, &specs)?;
    let kubeconfig = fed.kubeconfig_path();
    // A closed stdout loses only this line: the log and the state say the same.
    let _ = crate::print_line(format!("kubeconfig: {}", kubeconfig.display()));
    note!(
        "[dev] try: kubectl --kubeconfig {} --context federation get clusters",
        kubeconfig.display()
    );

    let run_args = RunArgs {
        plugins: args.plugins.clone(),
        admin: args.admin.clone(),
        kubeconfig: Some(kubeconfig.clone()),
        context: FEDERATION.into(),
        simulate_workloads: args.simulate_workloads,
        runtime: args.runtime.clone(),
        // The rest as `fedwasm run` defaults them.
        ..default_run_args()?
    };
    if args.detach {
        if !args.no_host {
            spawn_detached_host(&dir, &run_args)?;
        }
        fed.detach();
        note!(
            "[dev] running in the background; `fedwasm dev down --dir {}` stops it",
            dir.display()
        );
        return Ok(());
    }
    let result = if args.no_host {
        note!("[dev] clusters up; Ctrl-C stops them");
        crate::serve::block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    } else {
        crate::serve::run(run_args)
    };
    note!("[dev] stopping the local federation");
    fed.down().context("stopping the local federation")?;
    result
}

/// Starts a local federation of `specs` in `dir` (getting the binaries first) and
/// joins every member, with progress on stderr.
pub fn start_local(dir: &Path, specs: &[MemberSpec]) -> Result<LocalFederation> {
    let dir = dir.to_path_buf();
    let started = Instant::now();
    note!("[dev] locating etcd and kube-apiserver (installed and built on first use)");
    let assets = fedwasm_testenv::locate_or_install().context("getting etcd and kube-apiserver")?;
    note!(
        "[dev] starting etcd and {} kube-apiservers in {}",
        specs.len() + 1,
        dir.display()
    );
    let fed = LocalFederation::start(FederationSpec {
        members: specs.iter().map(|m| m.name.clone()).collect(),
        dir: Some(dir.clone()),
        assets: Some(assets),
        rbac: false,
    })
    .context("starting the local federation")?;
    note!(
        "[dev] {} clusters ready after {:.1}s",
        specs.len() + 1,
        started.elapsed().as_secs_f64()
    );
    let kubeconfig = fed.kubeconfig_path();
    crate::serve::block_on(async {
        let client = fedwasm_host::app::kube_client(Some(&kubeconfig), FEDERATION).await?;
        for m in specs {
            let request = join::JoinRequest {
                name: m.name.clone(),
                region: Some(m.region.clone()),
                zone: Some(m.zone.clone()),
                labels: m.labels.clone(),
                ..Default::default()
            };
            join::join_context(&client, &kubeconfig, &request)
                .await
                .with_context(|| format!("joining {}", m.name))?;
            note!("[dev] joined {} ({})", m.name, m.zone);
        }
        anyhow::Ok(())
    })??;
    Ok(fed)
}

/// `RunArgs` as `fedwasm run` has them without flags.
fn default_run_args() -> Result<RunArgs> {
    use clap::FromArgMatches;
    let matches = RunArgs::augment_args(clap::Command::new("run"))
        .try_get_matches_from(["run"])
        .context("the defaults of `fedwasm run`")?;
    RunArgs::from_arg_matches(&matches).context("the defaults of `fedwasm run`")
}

/// The `fedwasm run ...` arguments (without the program) that give back `run`.
/// Every field is destructured, so a field added to `RunArgs` does not compile until
/// it is passed on here. Values go as `--flag=value`, so one starting with `-`
/// stays a value.
fn run_argv(run: &RunArgs) -> Vec<OsString> {
    let RunArgs {
        plugins,
        admin,
        admin_token_file,
        admin_max_connections,
        admin_max_plans,
        debounce_ms,
        kubeconfig,
        context,
        extra_kinds,
        probe_interval_secs,
        offline_grace_secs,
        member_timeout_secs,
        ingress,
        ingress_workers,
        locality,
        per_replica_concurrency,
        dns,
        dns_zone,
        federation_name,
        dns_ttl,
        simulate_workloads,
        leader_elect,
        lease_duration_secs,
        renew_deadline_secs,
        retry_period_secs,
        allow_unsafe_kubeconfig,
        runtime:
            RuntimeArgs {
                deadline_ms,
                memory_mib,
                cache_dir,
                no_cache,
            },
    } = run;
    let mut argv = vec![OsString::from("run")];
    let mut flag = |name: &str, value: &OsStr| {
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(value);
        argv.push(arg);
    };
    if let Some(plugins) = plugins {
        flag("plugins", plugins.as_os_str());
    }
    flag("admin", admin.as_ref());
    if let Some(file) = admin_token_file {
        flag("admin-token-file", file.as_os_str());
    }
    flag(
        "admin-max-connections",
        admin_max_connections.to_string().as_ref(),
    );
    flag("admin-max-plans", admin_max_plans.to_string().as_ref());
    flag("debounce-ms", debounce_ms.to_string().as_ref());
    if let Some(kubeconfig) = kubeconfig {
        flag("kubeconfig", kubeconfig.as_os_str());
    }
    flag("context", context.as_ref());
    for kind in extra_kinds {
        flag("propagate", kind.as_ref());
    }
    flag(
        "probe-interval-secs",
        probe_interval_secs.to_string().as_ref(),
    );
    flag(
        "offline-grace-secs",
        offline_grace_secs.to_string().as_ref(),
    );
    flag(
        "member-timeout-secs",
        member_timeout_secs.to_string().as_ref(),
    );
    if let Some(ingress) = ingress {
        flag("ingress", ingress.as_ref());
    }
    if let Some(locality) = locality {
        flag("locality", locality.as_os_str());
    }
    flag("leader-elect", leader_elect.to_string().as_ref());
    for (name, secs) in [
        ("lease-duration-secs", lease_duration_secs),
        ("renew-deadline-secs", renew_deadline_secs),
        ("retry-period-secs", retry_period_secs),
    ] {
        flag(name, secs.to_string().as_ref());
    }
    flag(
        "per-replica-concurrency",
        per_replica_concurrency.to_string().as_ref(),
    );
    flag("ingress-workers", ingress_workers.to_string().as_ref());
    if let Some(dns) = dns {
        flag("dns", dns.as_ref());
    }
    if let Some(dns_zone) = dns_zone {
        flag("dns-zone", dns_zone.as_ref());
    }
    flag("federation-name", federation_name.as_ref());
    flag("dns-ttl", dns_ttl.to_string().as_ref());
    flag("deadline-ms", deadline_ms.to_string().as_ref());
    flag("memory-mib", memory_mib.to_string().as_ref());
    if let Some(cache_dir) = cache_dir {
        flag("cache-dir", cache_dir.as_os_str());
    }
    if *simulate_workloads {
        argv.push("--simulate-workloads".into());
    }
    if *allow_unsafe_kubeconfig {
        argv.push("--allow-unsafe-kubeconfig".into());
    }
    if *no_cache {
        argv.push("--no-cache".into());
    }
    argv
}

fn spawn_detached_host(dir: &Path, run: &RunArgs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the fedwasm binary")?;
    let log = std::fs::File::create(dir.join("logs").join("host.log"))
        .context("creating logs/host.log")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(run_argv(run));
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the host in the background")?;
    std::fs::write(host_pid_file(dir), child.id().to_string()).context("writing host.pid")?;
    note!(
        "[dev] host running in the background (pid {}, admin API http://{}, log {})",
        child.id(),
        run.admin,
        dir.join("logs/host.log").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse_back(run: &RunArgs) -> RunArgs {
        let argv = std::iter::once(OsString::from("fedwasm")).chain(run_argv(run));
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Run(parsed),
            }) => parsed,
            other => panic!("{:?} parsed as {other:?}", run_argv(run)),
        }
    }

    /// What the detached host is started with is what `dev up` meant: every field,
    /// none left at a default.
    #[test]
    fn run_argv_passes_every_field() {
        let run = RunArgs {
            plugins: Some("/tmp/plug ins".into()),
            admin: "127.0.0.1:9999".into(),
            admin_token_file: Some("/tmp/admin token".into()),
            admin_max_connections: 37,
            admin_max_plans: 41,
            debounce_ms: 7,
            kubeconfig: Some("/tmp/fed/kubeconfig".into()),
            context: "-odd-context".into(),
            extra_kinds: vec![
                "/v1/PersistentVolumeClaim/persistentvolumeclaims".into(),
                "example.com/v1/Widget/widgets/cluster".into(),
            ],
            probe_interval_secs: 11,
            offline_grace_secs: 13,
            member_timeout_secs: 23,
            ingress: Some("127.0.0.1:8088".into()),
            ingress_workers: 43,
            locality: Some("/tmp/locality.yaml".into()),
            per_replica_concurrency: 29,
            dns: Some("127.0.0.1:8053".into()),
            dns_zone: Some("example.com".into()),
            federation_name: "-odd-federation".into(),
            dns_ttl: 31,
            simulate_workloads: true,
            leader_elect: false,
            lease_duration_secs: 37,
            renew_deadline_secs: 5,
            retry_period_secs: 3,
            allow_unsafe_kubeconfig: true,
            runtime: RuntimeArgs {
                deadline_ms: 17,
                memory_mib: 19,
                cache_dir: Some("/tmp/cache".into()),
                no_cache: true,
            },
        };
        assert_eq!(format!("{:?}", parse_back(&run)), format!("{run:?}"));
    }

    #[test]
    fn run_argv_round_trips_the_defaults() {
        let run = default_run_args().unwrap();
        assert!(run.plugins.is_none() && run.kubeconfig.is_none());
        assert!(run.runtime.cache_dir.is_none() && !run.runtime.no_cache);
        assert_eq!(format!("{:?}", parse_back(&run)), format!("{run:?}"));
    }
}
