//! Which candle device each worker computes on.
//!
//! [`open`] turns the scenario's backend and device map (`scenario::Backend`, `DeviceMap`) into
//! one candle `Device` per worker, and is the only place that knows whether the binary was built
//! with CUDA: without the `cuda` feature asking for CUDA is [`ExecError::CudaNotCompiled`], not a
//! scattering of `#[cfg]`s over the executor. With it, a machine without a driver, without GPUs or with too few for the
//! map is a typed error too, never a panic (candle loads the CUDA libraries at run time, and
//! cudarc panics when one is missing, so opening the first device is guarded).
//!
//! Every CUDA worker gets a stream of its own (`new_cuda_with_stream`): on their own GPUs
//! (`per_stage`) the stages run side by side; on one GPU (`shared`) their kernels interleave on
//! it, which is what the scenario's `device_map: shared` tells the simulator to model.

use candle_core::Device;

use super::ExecError;
pub use crate::scenario::{Backend, DeviceMap};

/// Makes candle run its element-wise operations on the thread that calls them, before anything
/// touches candle: the binary's first step.
///
/// Candle splits an element-wise operation of 65,536 elements or more over a pool of its own,
/// one per process, sized by the machine's cores rather than by the rayon pool a worker runs
/// on. Its threads spin for a while after each job, and callers take turns on it, so two stage
/// workers on a 2-core machine took turns on it and lost a core to its spinning (a 100,000-vertex
/// two-stage GCN: median epoch 84-89 ms with the pool, 45-57 ms without, the same losses), and
/// `executor.threads_per_device` was not the number of threads a worker used. Matrix products
/// and the executor's own sparse kernels run on the worker's rayon pool either way.
pub fn keep_candle_on_worker_threads() {
    // Read once, when candle first needs the pool; set before any thread of ours exists.
    std::env::set_var("CANDLE_NUM_THREADS", "1");
}

/// Makes candle count the machine's cores once, before anything touches candle: one of the
/// binary's first steps.
///
/// Candle's CPU matrix product asks how many threads to split over (`RAYON_NUM_THREADS`) on
/// every call, and when the variable is unset counts the cores anew, reading `/proc/cpuinfo`:
/// about 30 us a product on a 2-core VM, where a 64 x 32 by 32 x 16 product takes 1.2 us. A
/// two-stage three-layer GCN on Facebook with 32 chunks (about 190 products an epoch) ran
/// its median epoch in 19.0 ms with the count made per call and 13.0 ms with it set once.
/// Sets the variable to the cores the process may run on (rayon's own default), unless the
/// user has set it to a count. Candle's default counted physical cores, so on a machine
/// without SMT the product's split is what it was; it runs on the worker's rayon pool either
/// way.
pub fn count_cores_once() {
    let set =
        std::env::var("RAYON_NUM_THREADS").is_ok_and(|v| v.parse::<usize>().is_ok_and(|n| n > 0));
    if set {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Set before any thread of ours exists.
    std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
}

/// Makes the calling thread's first matrix product now, on the CPU (nothing elsewhere). The
/// CPU's matrix library (`gemm`, under candle) gives each thread that multiplies a packing
/// buffer the size of a core's L2 cache on its first product past its small-matrix paths, and
/// keeps it for the thread's life; whether a layer's products take that path turns on its
/// widths' divisibility by the vector length (on one machine 8, 16 and 32 columns did, 7, 9
/// and 12 did not). Made before a worker's first epoch, every worker holds it from the start,
/// as the device profile predicts (`matrix_buffer_bytes`, which `calibrate` measures with
/// this).
pub fn take_matrix_buffer(device: &Device) -> candle_core::Result<()> {
    if !device.is_cpu() {
        return Ok(());
    }
    let a = candle_core::Tensor::ones((64, 64), candle_core::DType::F32, device)?;
    let product = a.matmul(&a)?;
    drop(product.t()?.matmul(&a)?);
    Ok(())
}

/// The devices of one run, one per worker.
#[derive(Debug, Clone)]
pub struct Compute {
    devices: Vec<Device>,
    /// The GPU ordinal of each worker (none on the CPU).
    gpus: Vec<Option<usize>>,
}

impl Compute {
    /// Every worker on the CPU.
    pub fn cpu(workers: usize) -> Self {
        Compute {
            devices: vec![Device::Cpu; workers],
            gpus: vec![None; workers],
        }
    }

    /// Worker `w`'s device.
    pub fn device(&self, worker: usize) -> &Device {
        &self.devices[worker]
    }

    /// Whether the workers compute on GPUs.
    pub fn is_cuda(&self) -> bool {
        self.gpus.iter().any(Option::is_some)
    }

    /// Whether several workers share a GPU (each on its own stream).
    pub fn is_shared(&self) -> bool {
        let gpus: Vec<usize> = self.gpus.iter().flatten().copied().collect();
        gpus.iter().enumerate().any(|(i, g)| gpus[..i].contains(g))
    }

    /// [`Compute::describe`], with each GPU's total and free memory now.
    pub fn describe_with_memory(&self) -> String {
        let mut text = self.describe();
        let mut seen: Vec<usize> = Vec::new();
        for (device, gpu) in self.devices.iter().zip(&self.gpus) {
            let Some(gpu) = *gpu else { continue };
            if seen.contains(&gpu) {
                continue;
            }
            seen.push(gpu);
            if let Ok(Some((free, total))) = memory_info(device) {
                let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
                text.push_str(&format!(
                    "; GPU {gpu}: {:.1} GiB total, {:.1} GiB free",
                    gib(total),
                    gib(free)
                ));
            }
        }
        text
    }

    /// One line for the run's header: what runs where.
    pub fn describe(&self) -> String {
        let gpus: Vec<usize> = self.gpus.iter().flatten().copied().collect();
        match gpus.as_slice() {
            [] => "the CPU".to_string(),
            [first, rest @ ..] if rest.iter().all(|g| g == first) && !rest.is_empty() => {
                format!(
                    "cuda: {} workers share GPU {first}, one stream each",
                    gpus.len()
                )
            }
            _ => format!(
                "cuda: {}",
                self.gpus
                    .iter()
                    .enumerate()
                    .filter_map(|(w, g)| g.map(|g| format!("worker {w} on GPU {g}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The devices for `workers` workers on `backend` (`executor.backend`, `--device`), mapped by
/// `map` (`executor.device_map`; `Auto` is `PerStage` when there are GPUs enough, else `Shared`).
pub fn open(backend: Backend, map: DeviceMap, workers: usize) -> Result<Compute, ExecError> {
    match backend {
        Backend::Cpu if map == DeviceMap::Shared && workers > 1 => Err(ExecError::Unsupported(
            "executor.device_map shared with backend cpu: on the CPU every stage has a pool \
                 of threads of its own (shared is for stages on one GPU)"
                .into(),
        )),
        Backend::Cpu => Ok(Compute::cpu(workers)),
        Backend::Cuda => open_cuda(map, workers),
    }
}

/// The devices of one rank of a run between processes: worker `rank` of `workers` on GPU
/// `gpu` of this host (its rank among the host's ranks; GPU 0 where the process sees one GPU),
/// the only one opened (the other workers are other processes', and are not this process's to
/// open).
pub fn open_rank(workers: usize, rank: usize, gpu: usize) -> Result<Compute, ExecError> {
    open_rank_cuda(workers, rank, gpu)
}

#[cfg(not(feature = "cuda"))]
fn open_rank_cuda(_workers: usize, _rank: usize, _gpu: usize) -> Result<Compute, ExecError> {
    Err(ExecError::CudaNotCompiled)
}

#[cfg(feature = "cuda")]
fn open_rank_cuda(workers: usize, rank: usize, gpu: usize) -> Result<Compute, ExecError> {
    let count = cuda::device_count()?;
    // A launcher that shows each rank one GPU (CUDA_VISIBLE_DEVICES per rank) leaves it GPU 0.
    let gpu = if count == 1 { 0 } else { gpu };
    if gpu >= count {
        return Err(ExecError::NoGpu(format!(
            "rank {rank} is number {gpu} on its host, which has {count} GPU{}: every rank needs \
             a GPU of its own",
            if count == 1 { "" } else { "s" }
        )));
    }
    let mut compute = Compute::cpu(workers);
    compute.devices[rank] = cuda::open(gpu)?;
    compute.gpus[rank] = Some(gpu);
    Ok(compute)
}

/// Waits for the device's queued work, so a clock read afterwards covers it.
pub fn synchronize(device: &Device) -> candle_core::Result<()> {
    match device {
        Device::Cpu => Ok(()),
        other => other.synchronize(),
    }
}

/// The device's free and total memory in bytes (`cuMemGetInfo`), or none on the CPU.
pub fn memory_info(device: &Device) -> candle_core::Result<Option<(u64, u64)>> {
    cuda::memory_info(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_map: DeviceMap, _workers: usize) -> Result<Compute, ExecError> {
    Err(ExecError::CudaNotCompiled)
}

#[cfg(feature = "cuda")]
fn open_cuda(map: DeviceMap, workers: usize) -> Result<Compute, ExecError> {
    let count = cuda::device_count()?;
    if count == 0 {
        return Err(ExecError::NoGpu(
            "the CUDA driver reports no devices".into(),
        ));
    }
    let gpus: Vec<usize> = match map {
        DeviceMap::Shared => vec![0; workers],
        DeviceMap::PerStage | DeviceMap::Auto if workers <= count => (0..workers).collect(),
        DeviceMap::Auto => vec![0; workers],
        DeviceMap::PerStage => {
            return Err(ExecError::TooFewGpus {
                workers,
                gpus: count,
            })
        }
    };
    let devices = gpus
        .iter()
        .map(|&g| cuda::open(g))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Compute {
        devices,
        gpus: gpus.into_iter().map(Some).collect(),
    })
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use candle_core::Device;

    pub(super) fn memory_info(_device: &Device) -> candle_core::Result<Option<(u64, u64)>> {
        Ok(None)
    }
}

/// Runs `f` with the panic hook silenced, so that the user sees one error line instead of a
/// backtrace: a panic becomes its message's first clause, and whether that clause is cudarc's
/// failure to load a library (which goes on to list every file name it tried).
#[cfg(feature = "cuda")]
pub(in crate::exec) fn catch_load_panic<T>(f: impl FnOnce() -> T) -> Result<T, (String, bool)> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    outcome.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown reason".into());
        let first = message.lines().next().unwrap_or_default();
        let cause = first.split(" - searched").next().unwrap_or(first);
        (cause.to_string(), first.contains("searched"))
    })
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    use candle_core::Device;

    use super::ExecError;

    /// Runs `f`, turning a panic into [`ExecError::NoGpu`]. cudarc panics when it cannot load
    /// one of the CUDA libraries (`libcuda.so.1`, cuBLAS, cuRAND, NVRTC).
    pub(super) fn guarded<T>(
        what: &str,
        f: impl FnOnce() -> Result<T, ExecError>,
    ) -> Result<T, ExecError> {
        super::catch_load_panic(f).unwrap_or_else(|(cause, searched)| {
            let hint = if searched {
                " (is the NVIDIA driver or CUDA library installed? LD_LIBRARY_PATH must name its \
                 folder)"
            } else {
                ""
            };
            Err(ExecError::NoGpu(format!("{what}: {cause}{hint}")))
        })
    }

    /// The number of GPUs, or why CUDA cannot be used at all.
    pub(super) fn device_count() -> Result<usize, ExecError> {
        guarded("the CUDA driver library could not be loaded", || {
            CudaContext::device_count()
                .map(|n| n.max(0) as usize)
                .map_err(|e| ExecError::NoGpu(format!("the CUDA driver failed: {e:?}")))
        })
    }

    /// GPU `ordinal` with a stream of its own.
    pub(super) fn open(ordinal: usize) -> Result<Device, ExecError> {
        guarded("a CUDA library could not be loaded", move || {
            Device::new_cuda_with_stream(ordinal)
                .map_err(|e| ExecError::NoGpu(format!("cannot open GPU {ordinal}: {e}")))
        })
    }

    pub(super) fn memory_info(device: &Device) -> candle_core::Result<Option<(u64, u64)>> {
        let Device::Cuda(cuda) = device else {
            return Ok(None);
        };
        let (free, total) = cuda
            .cuda_stream()
            .context()
            .mem_get_info()
            .map_err(|e| candle_core::Error::Msg(format!("cuMemGetInfo failed: {e:?}")))?;
        Ok(Some((free as u64, total as u64)))
    }
}

/// A GPU for a device test, or none (with the reason on stderr) where there is none; with
/// `PIPEGNN_REQUIRE_GPU` set a missing GPU fails the test instead.
#[cfg(all(test, feature = "cuda"))]
pub(crate) fn test_gpu() -> Option<Device> {
    match open(Backend::Cuda, DeviceMap::Shared, 1) {
        Ok(compute) => Some(compute.device(0).clone()),
        Err(err) => {
            assert!(
                std::env::var_os("PIPEGNN_REQUIRE_GPU").is_none(),
                "PIPEGNN_REQUIRE_GPU is set, but {err}"
            );
            eprintln!("CUDA test skipped: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_gives_every_worker_the_cpu() {
        let compute = open(Backend::Cpu, DeviceMap::PerStage, 3).unwrap();
        assert!(!compute.is_cuda());
        assert!(matches!(compute.device(2), Device::Cpu));
        assert_eq!(compute.describe(), "the CPU");
        assert_eq!(memory_info(compute.device(0)).unwrap(), None);
    }

    /// One rank's devices name only its own worker's GPU.
    #[test]
    fn a_rank_s_devices_describe_its_own_worker() {
        let compute = Compute {
            devices: vec![Device::Cpu; 3],
            gpus: vec![None, Some(1), None],
        };
        assert!(compute.is_cuda() && !compute.is_shared());
        assert_eq!(compute.describe(), "cuda: worker 1 on GPU 1");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_typed_error() {
        assert_eq!(open_rank(2, 1, 0).unwrap_err(), ExecError::CudaNotCompiled);
        let err = open(Backend::Cuda, DeviceMap::Shared, 2).unwrap_err();
        assert_eq!(err, ExecError::CudaNotCompiled);
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }

    /// On a machine without a GPU a CUDA build still starts and says why it cannot open one;
    /// with one, the map is honoured.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_opens_or_says_why_not() {
        match open(Backend::Cuda, DeviceMap::Shared, 2) {
            Ok(compute) => {
                assert!(compute.is_cuda());
                assert!(compute.describe().contains("share GPU 0"));
                let (free, total) = memory_info(compute.device(0)).unwrap().unwrap();
                assert!(free <= total && total > 0);
            }
            Err(err) => assert!(matches!(err, ExecError::NoGpu(_)), "{err}"),
        }
    }
}
