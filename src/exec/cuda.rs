//! CUDA kernels behind the sparse and attention custom ops (`--features cuda`).
//!
//! The kernels are CUDA C compiled once per process with NVRTC (loaded at run time, like the
//! rest of CUDA) and loaded into each device's context. Every kernel is a gather: one thread per
//! output element walks its row of the CSR pattern (or of the transpose, for gradients over
//! sources) in the same order as the CPU code, so there are no atomics and a run is as
//! deterministic on a GPU as on the CPU. A fixed pattern's index arrays are uploaded once per
//! GPU and kept with the pattern ([`DeviceCache`]).
//!
//! Without the feature only [`DeviceCache`] exists, as an empty marker, so the CPU types need
//! no `#[cfg]`.

#[cfg(feature = "cuda")]
pub(super) use imp::*;

/// Per-GPU copies of a fixed pattern's arrays, filled on first use. Equality and cloning ignore
/// it: it is a cache of the data beside it.
#[derive(Default)]
pub(super) struct DeviceCache {
    #[cfg(feature = "cuda")]
    copies: std::sync::Mutex<Vec<(usize, std::sync::Arc<dyn std::any::Any + Send + Sync>)>>,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCache")
    }
}

impl Clone for DeviceCache {
    fn clone(&self) -> Self {
        DeviceCache::default()
    }
}

impl PartialEq for DeviceCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The kernels' CUDA C: compiled by NVRTC for a GPU, and as C++ on the host by a test that
/// runs it one thread at a time against the CPU code.
#[cfg(any(test, feature = "cuda"))]
pub(super) const SOURCE: &str = r#"
typedef unsigned long long u64;
typedef unsigned int u32;

#define GRID_STRIDE(i, n) \
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); \
         i += (u64)blockDim.x * gridDim.x)

// out[r, c] = sum_k values[k] * x[indices[k], c]
extern "C" __global__ void csr_spmm(const u64* offsets, const u32* indices, const float* values,
                                    const float* x, float* out, u64 rows, u64 width) {
    GRID_STRIDE(i, rows * width) {
        u64 r = i / width, c = i % width;
        float acc = 0.0f;
        for (u64 k = offsets[r]; k < offsets[r + 1]; ++k)
            acc += values[k] * x[(u64)indices[k] * width + c];
        out[i] = acc;
    }
}

// out[k, h] = LeakyReLU(s_src[col(k), h] + s_dst[row(k), h])
extern "C" __global__ void gat_edge_scores(const u64* offsets, const u32* indices,
                                           const float* s_src, const float* s_dst, float* out,
                                           u64 rows, u64 heads, float slope) {
    GRID_STRIDE(i, rows * heads) {
        u64 r = i / heads, h = i % heads;
        float d = s_dst[i];
        for (u64 k = offsets[r]; k < offsets[r + 1]; ++k) {
            float e = s_src[(u64)indices[k] * heads + h] + d;
            out[k * heads + h] = e > 0.0f ? e : slope * e;
        }
    }
}

// out[seg, h] = sum over the segment's edges of the LeakyReLU's gradient; `edges` maps a
// transposed entry to its edge (null: the entries are the edges).
extern "C" __global__ void gat_leaky_segment_sum(const u64* offsets, const u32* edges,
                                                 const float* res, const float* grad,
                                                 float* out, u64 segments, u64 heads,
                                                 float slope) {
    GRID_STRIDE(i, segments * heads) {
        u64 s = i / heads, h = i % heads;
        float acc = 0.0f;
        for (u64 t = offsets[s]; t < offsets[s + 1]; ++t) {
            u64 k = edges ? (u64)edges[t] : t;
            float g = grad[k * heads + h];
            acc += res[k * heads + h] > 0.0f ? g : slope * g;
        }
        out[i] = acc;
    }
}

// The softmax of each row's scores, per head.
extern "C" __global__ void gat_edge_softmax(const u64* offsets, const float* scores, float* out,
                                            u64 rows, u64 heads) {
    GRID_STRIDE(i, rows * heads) {
        u64 r = i / heads, h = i % heads;
        u64 lo = offsets[r], hi = offsets[r + 1];
        float m = __int_as_float(0xff800000);  // -infinity (NVRTC has no math.h)
        for (u64 k = lo; k < hi; ++k) m = fmaxf(m, scores[k * heads + h]);
        float sum = 0.0f;
        for (u64 k = lo; k < hi; ++k) {
            float e = expf(scores[k * heads + h] - m);
            out[k * heads + h] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (u64 k = lo; k < hi; ++k) out[k * heads + h] *= inv;
    }
}

// alpha * (grad - sum over the row of alpha * grad), per head.
extern "C" __global__ void gat_edge_softmax_grad(const u64* offsets, const float* alpha,
                                                 const float* grad, float* out, u64 rows,
                                                 u64 heads) {
    GRID_STRIDE(i, rows * heads) {
        u64 r = i / heads, h = i % heads;
        u64 lo = offsets[r], hi = offsets[r + 1];
        float dot = 0.0f;
        for (u64 k = lo; k < hi; ++k) dot += alpha[k * heads + h] * grad[k * heads + h];
        for (u64 k = lo; k < hi; ++k)
            out[k * heads + h] = alpha[k * heads + h] * (grad[k * heads + h] - dot);
    }
}

// out[r, h, c] = sum over edges k = (r, j) of alpha[k, h] * x[j, h, c]; through the transpose
// (`t_edges` non-null) the same with rows and sources swapped, x being the gradient.
extern "C" __global__ void gat_edge_aggregate(const u64* offsets, const u32* indices,
                                              const u32* t_edges, const float* alpha,
                                              const float* x, float* out, u64 rows, u64 heads,
                                              u64 channels) {
    u64 width = heads * channels;
    GRID_STRIDE(i, rows * width) {
        u64 r = i / width, c = i % width, h = c / channels;
        float acc = 0.0f;
        for (u64 t = offsets[r]; t < offsets[r + 1]; ++t) {
            u64 k = t_edges ? (u64)t_edges[t] : t;
            acc += alpha[k * heads + h] * x[(u64)indices[t] * width + c];
        }
        out[i] = acc;
    }
}

// dalpha[k, h] = <grad[r, h, :], x[j, h, :]> for each edge k = (r, j).
extern "C" __global__ void gat_aggregate_grad_alpha(const u64* offsets, const u32* indices,
                                                    const float* x, const float* grad,
                                                    float* out, u64 rows, u64 heads,
                                                    u64 channels) {
    u64 width = heads * channels;
    GRID_STRIDE(i, rows * heads) {
        u64 r = i / heads, h = i % heads;
        const float* g = grad + r * width + h * channels;
        for (u64 k = offsets[r]; k < offsets[r + 1]; ++k) {
            const float* s = x + (u64)indices[k] * width + h * channels;
            float acc = 0.0f;
            for (u64 c = 0; c < channels; ++c) acc += g[c] * s[c];
            out[k * heads + h] = acc;
        }
    }
}
"#;

/// What a kernel parameter is, from its C type.
#[cfg(any(test, feature = "cuda"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `const u64*`
    U64s,
    /// `const u32*` (possibly null)
    U32s,
    /// `const float*`
    F32s,
    /// `float*`: the output
    Out,
    /// `u64`
    Size,
    /// `float`
    Float,
}

/// The parameters of kernel `name` as declared in [`SOURCE`] (parsed once per process).
#[cfg(any(test, feature = "cuda"))]
pub(super) fn signature(name: &str) -> Option<&'static [Kind]> {
    static SIGNATURES: std::sync::OnceLock<Vec<(&'static str, Vec<Kind>)>> =
        std::sync::OnceLock::new();
    let all = SIGNATURES.get_or_init(|| {
        let head = "__global__ void ";
        SOURCE
            .match_indices(head)
            .filter_map(|(at, _)| {
                let rest = &SOURCE[at + head.len()..];
                let (name, rest) = rest.split_once('(')?;
                let params = &rest[..rest.find(')')?];
                let kinds = params.split(',').map(kind_of).collect::<Option<Vec<_>>>()?;
                Some((name, kinds))
            })
            .collect()
    });
    all.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, kinds)| kinds.as_slice())
}

/// A parameter's kind from its declaration, e.g. `const u64* offsets`.
#[cfg(any(test, feature = "cuda"))]
fn kind_of(param: &str) -> Option<Kind> {
    let (ty, _) = param.trim().rsplit_once(' ')?;
    Some(match ty.trim() {
        "const u64*" => Kind::U64s,
        "const u32*" => Kind::U32s,
        "const float*" => Kind::F32s,
        "float*" => Kind::Out,
        "u64" => Kind::Size,
        "float" => Kind::Float,
        _ => return None,
    })
}

/// Whether a launch of `name` passes arguments of the kinds its C signature declares, in order:
/// a mismatch would be memory corruption on the GPU, so it is an error before launching.
#[cfg(any(test, feature = "cuda"))]
pub(super) fn check_arguments(name: &str, kinds: &[Kind]) -> Result<(), String> {
    match signature(name) {
        None => Err(format!("no kernel {name} in the graph kernels")),
        Some(declared) if declared == kinds => Ok(()),
        Some(declared) => Err(format!(
            "kernel {name} takes {declared:?} but was passed {kinds:?}"
        )),
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use std::any::Any;
    use std::sync::{Arc, OnceLock};

    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
    };
    use candle_core::cuda_backend::cudarc::nvrtc;
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, CudaStorage, Layout, Result, Shape};

    use super::{check_arguments, DeviceCache, Kind, SOURCE};

    const MODULE: &str = "pipegnn_graph";

    /// The kernels' PTX, compiled on first use.
    pub(super) fn ptx() -> Result<&'static str> {
        static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            nvrtc::compile_ptx(SOURCE)
                .map(|ptx| ptx.to_src())
                .map_err(|e| format!("NVRTC could not compile the graph kernels: {e:?}"))
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Msg(e.clone()))
    }

    /// A contiguous f32 input of a custom op, checked to be `(rows, width)`.
    pub(in crate::exec) fn input<'a>(
        op: &str,
        what: &str,
        storage: &'a CudaStorage,
        layout: &Layout,
        dims: (usize, usize),
    ) -> Result<CudaView<'a, f32>> {
        let (start, end) = super::super::attention::contiguous_range(op, what, layout, dims)?;
        Ok(storage.as_cuda_slice::<f32>()?.slice(start..end))
    }

    /// An argument of a kernel launch.
    pub(in crate::exec) enum Arg<'a> {
        U64s(&'a CudaSlice<u64>),
        U32s(&'a CudaSlice<u32>),
        /// A null `u32` pointer (an absent index array).
        NoU32s,
        F32s(&'a CudaSlice<f32>),
        View(&'a CudaView<'a, f32>),
        Out(&'a CudaSlice<f32>),
        Size(u64),
        Float(f32),
    }

    impl Arg<'_> {
        fn kind(&self) -> Kind {
            match self {
                Arg::U64s(_) => Kind::U64s,
                Arg::U32s(_) | Arg::NoU32s => Kind::U32s,
                Arg::F32s(_) | Arg::View(_) => Kind::F32s,
                Arg::Out(_) => Kind::Out,
                Arg::Size(_) => Kind::Size,
                Arg::Float(_) => Kind::Float,
            }
        }
    }

    /// Runs kernel `name` over `threads` threads (grid-stride loops cover any count).
    pub(in crate::exec) fn launch(
        device: &CudaDevice,
        name: &str,
        threads: usize,
        args: &[Arg<'_>],
    ) -> Result<()> {
        let kinds: Vec<Kind> = args.iter().map(Arg::kind).collect();
        check_arguments(name, &kinds).map_err(candle_core::Error::Msg)?;
        if threads > 0 {
            let func = device.get_or_load_custom_func(name, MODULE, ptx()?)?;
            let null: u64 = 0;
            let mut builder = func.builder();
            for arg in args {
                match arg {
                    Arg::U64s(s) => builder.arg(*s),
                    Arg::U32s(s) => builder.arg(*s),
                    Arg::NoU32s => builder.arg(&null),
                    Arg::F32s(s) => builder.arg(*s),
                    Arg::View(v) => builder.arg(*v),
                    Arg::Out(s) => builder.arg(*s),
                    Arg::Size(n) => builder.arg(n),
                    Arg::Float(x) => builder.arg(x),
                };
            }
            // Enough blocks to fill the GPU; grid-stride loops do the rest.
            let config = LaunchConfig::for_num_elems(threads.min(1 << 26) as u32);
            // SAFETY: every kernel in SOURCE takes exactly the arguments its callers push, in
            // order (device arrays as pointers, sizes as u64, the slope as f32); the callers
            // checked each input's shape against the pattern, so every index a thread reads or
            // writes is in bounds: pattern indices were checked against the column count when
            // the pattern was built, and the outputs were allocated with the sizes the loops
            // cover.
            #[allow(unsafe_code)]
            let launched = unsafe { builder.launch(config) };
            launched.w()?;
        }
        Ok(())
    }

    /// A kernel's output as candle storage of `shape`.
    pub(in crate::exec) fn finish(
        device: &CudaDevice,
        out: CudaSlice<f32>,
        shape: Shape,
    ) -> (CudaStorage, Shape) {
        (CudaStorage::wrap_cuda_slice(out, device.clone()), shape)
    }

    /// A zeroed output of `len` floats.
    pub(in crate::exec) fn output(device: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
        device.alloc_zeros::<f32>(len.max(1))
    }

    /// Copies a host array to the device.
    pub(in crate::exec) fn upload<T: DeviceRepr + ValidAsZeroBits + 'static>(
        device: &CudaDevice,
        host: &[T],
    ) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            // A one-element placeholder: a zero-length allocation is not a valid pointer.
            return device.alloc_zeros::<T>(1);
        }
        device.clone_htod(host)
    }

    /// The GPU a device computes on.
    fn ordinal(device: &CudaDevice) -> usize {
        device.cuda_stream().context().ordinal()
    }

    impl DeviceCache {
        /// This GPU's copy, uploaded by `make` the first time it is asked for.
        pub(in crate::exec) fn get<T: Any + Send + Sync>(
            &self,
            device: &CudaDevice,
            make: impl FnOnce() -> Result<T>,
        ) -> Result<Arc<T>> {
            let gpu = ordinal(device);
            let mut copies = self
                .copies
                .lock()
                .expect("no thread panics holding the lock");
            if let Some((_, copy)) = copies.iter().find(|(g, _)| *g == gpu) {
                if let Ok(copy) = copy.clone().downcast::<T>() {
                    return Ok(copy);
                }
            }
            let copy = Arc::new(make()?);
            copies.push((gpu, copy.clone()));
            Ok(copy)
        }
    }
}

/// The kernels compile with NVRTC, which needs no GPU, only `libnvrtc.so.13` (the NVIDIA wheel
/// `nvidia-cuda-nvrtc`); where it cannot be loaded the test says so and passes, unless
/// `PIPEGNN_REQUIRE_GPU` is set.
#[cfg(all(test, feature = "cuda"))]
mod tests {
    #[test]
    fn the_kernels_compile_with_nvrtc() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let compiled = std::panic::catch_unwind(super::imp::ptx);
        std::panic::set_hook(hook);
        let ptx = match compiled {
            Ok(ptx) => ptx.unwrap_or_else(|e| panic!("{e}")),
            Err(_) => {
                assert!(
                    std::env::var_os("PIPEGNN_REQUIRE_GPU").is_none(),
                    "PIPEGNN_REQUIRE_GPU is set, but NVRTC cannot be loaded"
                );
                eprintln!("NVRTC test skipped: libnvrtc.so.13 cannot be loaded");
                return;
            }
        };
        for kernel in [
            "csr_spmm",
            "gat_edge_scores",
            "gat_leaky_segment_sum",
            "gat_edge_softmax",
            "gat_edge_softmax_grad",
            "gat_edge_aggregate",
            "gat_aggregate_grad_alpha",
        ] {
            assert!(ptx.contains(&format!(".entry {kernel}(")), "{kernel}");
        }
        let path = std::env::temp_dir().join("pipegnn-kernels.ptx");
        std::fs::write(&path, ptx).expect("the temporary folder is writable");
    }
}

/// The kernels' source compiled as C++ for the host and run as one thread (a grid-stride loop
/// then covers every element), so tests on any machine check their index arithmetic against the
/// CPU code. Needs `c++` on the PATH; without it a test says so and passes.
#[cfg(test)]
pub(super) mod host {
    use std::io::Write;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::OnceLock;

    use super::{check_arguments, Kind, SOURCE};

    /// An argument of a host run, in the kernel's parameter order.
    pub(in crate::exec) enum HostArg<'a> {
        U64s(&'a [u64]),
        U32s(&'a [u32]),
        NoU32s,
        F32s(&'a [f32]),
        /// The output, of this many floats.
        Out(usize),
        Size(u64),
        Float(f32),
    }

    const PRELUDE: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
struct Dim { unsigned x; };
static Dim blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};
#define __global__
static inline float __int_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
"#;

    const MAIN: &str = r#"
static std::vector<std::vector<char>> buffers;
static void* P[16];
static u64 S[16];
static float F[16];
template <class T> static T take(FILE* in) { T v; if (fread(&v, sizeof v, 1, in) != 1) exit(2); return v; }
int main(int argc, char** argv) {
    FILE* in = fopen(argv[1], "rb");
    if (!in) return 2;
    char name[64] = {0};
    u64 len = take<u64>(in);
    if (len >= sizeof name || fread(name, 1, len, in) != len) return 2;
    u64 n = take<u64>(in);
    int out = -1;
    u64 out_len = 0;
    buffers.reserve(16);
    for (u64 i = 0; i < n; ++i) {
        int tag = fgetc(in);
        if (tag == 'A' || tag == 'O') {
            u64 bytes = take<u64>(in);
            buffers.emplace_back(bytes + 8, 0);
            if (tag == 'A' && fread(buffers.back().data(), 1, bytes, in) != bytes) return 2;
            if (tag == 'O') { out = (int)i; out_len = bytes; }
            P[i] = buffers.back().data();
        } else if (tag == 'N') { P[i] = nullptr; }
        else if (tag == 'S') { S[i] = take<u64>(in); }
        else if (tag == 'F') { F[i] = take<float>(in); }
        else return 2;
    }
#define A(T, i) ((T*)P[i])
    if (!strcmp(name, "csr_spmm"))
        csr_spmm(A(const u64, 0), A(const u32, 1), A(const float, 2), A(const float, 3), A(float, 4), S[5], S[6]);
    else if (!strcmp(name, "gat_edge_scores"))
        gat_edge_scores(A(const u64, 0), A(const u32, 1), A(const float, 2), A(const float, 3), A(float, 4), S[5], S[6], F[7]);
    else if (!strcmp(name, "gat_leaky_segment_sum"))
        gat_leaky_segment_sum(A(const u64, 0), A(const u32, 1), A(const float, 2), A(const float, 3), A(float, 4), S[5], S[6], F[7]);
    else if (!strcmp(name, "gat_edge_softmax"))
        gat_edge_softmax(A(const u64, 0), A(const float, 1), A(float, 2), S[3], S[4]);
    else if (!strcmp(name, "gat_edge_softmax_grad"))
        gat_edge_softmax_grad(A(const u64, 0), A(const float, 1), A(const float, 2), A(float, 3), S[4], S[5]);
    else if (!strcmp(name, "gat_edge_aggregate"))
        gat_edge_aggregate(A(const u64, 0), A(const u32, 1), A(const u32, 2), A(const float, 3), A(const float, 4), A(float, 5), S[6], S[7], S[8]);
    else if (!strcmp(name, "gat_aggregate_grad_alpha"))
        gat_aggregate_grad_alpha(A(const u64, 0), A(const u32, 1), A(const float, 2), A(const float, 3), A(float, 4), S[5], S[6], S[7]);
    else return 3;
    if (out < 0) return 4;
    fwrite(P[out], 1, out_len, stdout);
    return 0;
}
"#;

    /// The compiled harness, or none without a C++ compiler.
    fn harness() -> Option<&'static PathBuf> {
        static HARNESS: OnceLock<Option<PathBuf>> = OnceLock::new();
        HARNESS
            .get_or_init(|| {
                let dir =
                    std::env::temp_dir().join(format!("pipegnn-kernels-{}", std::process::id()));
                std::fs::create_dir_all(&dir).ok()?;
                let source = dir.join("harness.cpp");
                std::fs::write(&source, format!("{PRELUDE}{SOURCE}{MAIN}")).ok()?;
                let binary = dir.join("harness");
                let built = Command::new("c++")
                    .args(["-std=c++17", "-O1", "-o"])
                    .arg(&binary)
                    .arg(&source)
                    .output();
                match built {
                    Ok(out) if out.status.success() => Some(binary),
                    Ok(out) => panic!(
                        "the kernels do not compile as C++:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                    Err(err) => {
                        eprintln!("host kernel test skipped: no c++ compiler ({err})");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Runs kernel `name` on the host; none without a compiler.
    pub(in crate::exec) fn run(name: &str, args: &[HostArg<'_>]) -> Option<Vec<f32>> {
        let kinds: Vec<Kind> = args
            .iter()
            .map(|a| match a {
                HostArg::U64s(_) => Kind::U64s,
                HostArg::U32s(_) | HostArg::NoU32s => Kind::U32s,
                HostArg::F32s(_) => Kind::F32s,
                HostArg::Out(_) => Kind::Out,
                HostArg::Size(_) => Kind::Size,
                HostArg::Float(_) => Kind::Float,
            })
            .collect();
        check_arguments(name, &kinds).unwrap_or_else(|e| panic!("{e}"));
        let binary = harness()?;
        let mut input = Vec::new();
        let bytes = |input: &mut Vec<u8>, tag: u8, data: &[u8]| {
            input.push(tag);
            input.extend((data.len() as u64).to_le_bytes());
            input.extend(data);
        };
        input.extend((name.len() as u64).to_le_bytes());
        input.extend(name.as_bytes());
        input.extend((args.len() as u64).to_le_bytes());
        for arg in args {
            match arg {
                HostArg::U64s(v) => {
                    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    bytes(&mut input, b'A', &data);
                }
                HostArg::U32s(v) => {
                    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    bytes(&mut input, b'A', &data);
                }
                HostArg::F32s(v) => {
                    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    bytes(&mut input, b'A', &data);
                }
                HostArg::NoU32s => input.push(b'N'),
                HostArg::Out(n) => {
                    input.push(b'O');
                    input.extend((4 * *n as u64).to_le_bytes());
                }
                HostArg::Size(n) => {
                    input.push(b'S');
                    input.extend(n.to_le_bytes());
                }
                HostArg::Float(x) => {
                    input.push(b'F');
                    input.extend(x.to_le_bytes());
                }
            }
        }
        let path = binary.with_file_name(format!("{name}-{:?}.in", std::thread::current().id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&input))
            .expect("the temporary folder is writable");
        let out = Command::new(binary)
            .arg(&path)
            .output()
            .expect("the harness starts");
        assert!(
            out.status.success(),
            "{name}: harness exit {:?}",
            out.status
        );
        Some(
            out.stdout
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod signature_tests {
    use super::{check_arguments, signature, Kind};

    #[test]
    fn launches_are_checked_against_the_declared_parameters() {
        assert_eq!(
            signature("gat_edge_softmax"),
            Some(&[Kind::U64s, Kind::F32s, Kind::Out, Kind::Size, Kind::Size][..])
        );
        let spmm = [
            Kind::U64s,
            Kind::U32s,
            Kind::F32s,
            Kind::F32s,
            Kind::Out,
            Kind::Size,
            Kind::Size,
        ];
        assert_eq!(check_arguments("csr_spmm", &spmm), Ok(()));
        let mut swapped = spmm;
        swapped.swap(0, 1);
        assert!(check_arguments("csr_spmm", &swapped)
            .unwrap_err()
            .contains("takes"));
        assert!(check_arguments("csr_spmm", &spmm[..6]).is_err());
        assert!(check_arguments("no_such_kernel", &spmm)
            .unwrap_err()
            .contains("no kernel"));
    }
}
