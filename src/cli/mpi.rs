//! `pipegnn run --transport mpi|nccl`: this process is one rank of a run that `mpirun` started,
//! one rank per schedule device (with `nccl`, each on the GPU of its rank among its host's).
//! Every rank reads the scenario and its dataset and plans the run; the ranks check that they
//! read the same (a fingerprint of the executor's input), train their device's share, and rank
//! 0 reports the run as `run` does. A rank whose run fails says so on stderr, naming itself,
//! and ends every rank with `MPI_Abort`.

use std::path::Path;

use super::run::{CliError, ExitStatus, Result};
use super::{DeviceArg, ScenarioArgs};
use crate::launch::Executed;

/// What a rank runs: `run`'s options, and for `compare` the device profile to predict with.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(super) struct RankRun<'a> {
    /// Scenario and overrides.
    pub scenario: &'a ScenarioArgs,
    /// `--epochs`.
    pub epochs: Option<u32>,
    /// `--force`.
    pub force: bool,
    /// `--device`.
    pub device: Option<DeviceArg>,
    /// `compare --profile`: predict with it, the hand-off between processes measured first.
    pub profile: Option<&'a Path>,
    /// `--transport nccl`: every rank on a GPU of its own, tensors between them over NCCL.
    pub nccl: bool,
}

/// Runs this process's rank: rank 0's run, `None` on the other ranks.
#[cfg(not(feature = "mpi"))]
pub(super) fn execute(run: RankRun<'_>) -> Result<Option<Executed>> {
    Err(not_built(run.nccl))
}

/// The error of a transport this binary was built without.
#[cfg_attr(all(feature = "mpi", feature = "nccl"), allow(dead_code))]
fn not_built(nccl: bool) -> CliError {
    let (name, feature) = match nccl {
        true => ("NCCL", "nccl"),
        false => ("MPI", "mpi"),
    };
    CliError::new(
        ExitStatus::Transport,
        format!(
            "--transport {feature}: this binary was built without {name} (rebuild with \
             --features {feature}, the README's {name} build)"
        ),
    )
}

/// Runs this process's rank: rank 0's run, `None` on the other ranks.
#[cfg(feature = "mpi")]
pub(super) fn execute(run: RankRun<'_>) -> Result<Option<Executed>> {
    use super::run::{launch_error, load_scenario, own_candidate, Loaded};
    use crate::cost::{fit, HandoffCost};
    use crate::exec::transport::mpi::{Mpi, MpiError};
    use crate::launch;
    use crate::plan;
    use crate::scenario::Backend;

    if run.nccl && cfg!(not(feature = "nccl")) {
        return Err(not_built(true));
    }
    let mpi = Mpi::init().map_err(|err| CliError::new(ExitStatus::Transport, err))?;
    let rank = mpi.rank();
    // Each line in one write, so that mpirun, which forwards every rank's stderr, does not
    // interleave the ranks' lines.
    let say = |message: &str| {
        for line in message.lines() {
            let line = format!("error: rank {rank} of {}: {line}\n", mpi.size());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
    };
    // A failure every rank meets alike (the rank count, the fingerprints): every rank says so
    // and waits for the others to have said it too, since mpirun ends the job as soon as one
    // rank exits with an error. The message is printed here, so the error returned is empty.
    let refuse = |err: MpiError| -> CliError {
        say(&format!("{err}"));
        mpi.barrier();
        CliError::new(ExitStatus::Transport, "")
    };
    // Past this point a rank that fails alone may leave the others waiting for it: it says why
    // and ends them all.
    let abort = |err: CliError| -> ! {
        say(&err.message);
        mpi.abort(err.status as i32)
    };
    let file = &run.scenario.scenario;
    let Loaded { scenario, graph } = load_scenario(run.scenario).unwrap_or_else(|e| abort(e));
    let backend = run.device.map(|device| match device {
        DeviceArg::Cpu => Backend::Cpu,
        DeviceArg::Cuda => Backend::Cuda,
    });
    let candidate = own_candidate(&scenario).unwrap_or_else(|e| abort(e));
    // NCCL computes on GPUs, one per rank: a rank's is its rank among its host's ranks, opened
    // first, since the hand-off is measured on it.
    let mut opened = None;
    if run.nccl {
        if backend.unwrap_or(scenario.executor.backend) == Backend::Cpu {
            return Err(refuse(MpiError::NcclOnCpu));
        }
        if scenario.executor.device_map == crate::scenario::DeviceMap::Shared {
            return Err(refuse(MpiError::NcclShared));
        }
        let compute = crate::exec::device::open_rank(mpi.size(), rank, mpi.local_rank())
            .map_err(|e| launch_error(file)(launch::LaunchError::Devices(e)))
            .unwrap_or_else(|e| abort(e));
        opened = Some(compute);
    }
    let nccl_device = opened.as_ref().map(|compute| compute.device(rank));
    let mut profiles = match run.profile {
        None => Vec::new(),
        Some(profile) => {
            super::fidelity::device_profiles(file, &scenario, Some(profile), run.device)
                .unwrap_or_else(|e| abort(e))
                .unwrap_or_default()
        }
    };
    // What a message between these processes costs, through the transport's own path: rank 0
    // prices every hand-off of its prediction with it.
    let mut measured_handoff = None;
    if !profiles.is_empty() {
        let samples = mpi
            .measure_handoff(&scenario.network, nccl_device)
            .map_err(|e| CliError::new(ExitStatus::RunFailed, format!("{}: {e}", file.display())))
            .unwrap_or_else(|e| abort(e));
        if let Some(samples) = samples {
            let rows: Vec<Vec<f64>> = samples.iter().map(|&(b, _)| vec![1.0, b as f64]).collect();
            let y: Vec<f64> = samples.iter().map(|&(_, ns)| ns.max(1) as f64).collect();
            if let Some(f) = fit::fit(&rows, &y) {
                let cost = HandoffCost {
                    fixed_ns: f.coefficients[0].round() as u64,
                    ns_per_byte: f.coefficients[1],
                    alongside_links: scenario.executor.emulate_links,
                };
                for profile in &mut profiles {
                    profile.between_processes = Some(cost);
                }
                measured_handoff = Some((cost, f.median_error));
            }
        }
    }
    let refs: Vec<&crate::cost::DeviceProfile> = profiles.iter().collect();
    let options = launch::Options {
        epochs: run.epochs,
        force: run.force,
        tier: plan::Tier::of_profiles(&refs),
        backend,
        // A rank is a process of its own, possibly on a machine of its own: the scenario's
        // `executor.cores` says whether ranks share cores.
        host_cores: None,
        compute: opened.as_ref(),
    };
    let prepared = launch::prepare(scenario, graph.as_ref(), &candidate, &options)
        .map_err(launch_error(file))
        .unwrap_or_else(|e| abort(e));
    if prepared.compute.is_cuda() && !run.nccl {
        return Err(refuse(MpiError::Cuda));
    }
    mpi.check_ranks(prepared.prediction.schedule.n_devices())
        .map_err(refuse)?;
    mpi.agree(prepared.fingerprint()).map_err(refuse)?;
    let transport = match nccl_device {
        None => mpi.transport(prepared.links()),
        #[cfg(feature = "nccl")]
        Some(device) => mpi
            .nccl_transport(prepared.links(), device)
            .map_err(|e| CliError::new(ExitStatus::RunFailed, format!("{}: {e}", file.display())))
            .unwrap_or_else(|e| abort(e)),
        #[cfg(not(feature = "nccl"))]
        Some(_) => unreachable!("a build without NCCL stops before opening a GPU for it"),
    };
    let result = launch::run_rank(&prepared, None, transport)
        .map_err(launch_error(file))
        .unwrap_or_else(|e| abort(e));
    let Some(result) = result else {
        return Ok(None);
    };
    let mut executed = launch::finish(prepared, result)
        .map_err(launch_error(file))
        .unwrap_or_else(|e| abort(e));
    let skews = &executed.result.clock_skew_ns;
    let worst = skews.iter().copied().max().unwrap_or(0);
    executed.executor = format!(
        "{} in {} MPI processes{} (the median epoch's clocks aligned within {}, every epoch's \
         within {})",
        executed.executor,
        mpi.size(),
        match run.nccl {
            true => ", tensors between GPUs over NCCL",
            false => "",
        },
        crate::units::format_duration_ns(skews.get(executed.median).copied().unwrap_or(0)),
        crate::units::format_duration_ns(worst)
    );
    if let Some((cost, error)) = measured_handoff {
        executed.prediction.cost_tier.push_str(&format!(
            "; a hand-off between processes measured before the run at {} + {:.3} ns/byte \
             (median error {:.1}% over 1 KiB to 8 MiB){}",
            crate::units::format_duration_ns(cost.fixed_ns),
            cost.ns_per_byte,
            error * 100.0,
            match cost.alongside_links {
                true => ", alongside the emulated links",
                false => "",
            }
        ));
    }
    Ok(Some(executed))
}
