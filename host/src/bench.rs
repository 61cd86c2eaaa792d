//! `fedwasm plugin bench`: the per-call cost of a plugin as the host calls it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plan::PlanRequest;
use crate::runtime::{Plugin, PluginError};

/// The most calls one run measures; `fedwasm plugin bench --calls` accepts no more.
/// Each call keeps one sample, so this bounds the run's memory (and its time).
pub const MAX_CALLS: u64 = 10_000_000;

/// Samples allocated up front; a longer run grows the vector as it goes, so a huge
/// `calls` cannot make the first allocation fail.
const PREALLOCATED: u64 = 1 << 16;

/// Figures of one bench run, in nanoseconds.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub calls: u64,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub instantiate_ns: u64,
}

/// Calls `plugin` with `request` `calls` times (after a warm-up) and measures each
/// call, validation included; also measures a fresh instantiation. `calls` is
/// clamped to `1..=MAX_CALLS`; the report says how many were measured.
pub fn run(plugin: &Plugin, request: &PlanRequest, calls: u64) -> Result<BenchReport, PluginError> {
    let calls = calls.clamp(1, MAX_CALLS);
    let once = || -> Result<(), PluginError> { request.call(plugin) };
    for _ in 0..calls.min(1000) / 10 + 1 {
        once()?;
    }
    let mut samples = Vec::with_capacity(calls.min(PREALLOCATED) as usize);
    for _ in 0..calls {
        let started = Instant::now();
        once()?;
        samples.push(started.elapsed());
    }
    let mut inst = Vec::with_capacity(101);
    for _ in 0..101 {
        inst.push(plugin.measure_instantiate()?);
    }
    Ok(BenchReport {
        calls: samples.len() as u64,
        median_ns: percentile(&mut samples, 50.0),
        p99_ns: percentile(&mut samples, 99.0),
        instantiate_ns: percentile(&mut inst, 50.0),
    })
}

fn percentile(samples: &mut [Duration], p: f64) -> u64 {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * p / 100.0).round() as usize;
    samples
        .get(idx)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}
