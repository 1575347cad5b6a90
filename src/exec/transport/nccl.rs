//! The NCCL carrier (`--features nccl`): the MPI transport's tensors between GPUs, device to
//! device, with MPI left to carry what describes them.
//!
//! A hand-off is an MPI message with its tag, arrival time and shape (as on the CPU), and the
//! tensor itself goes over NCCL. Each ordered pair of ranks has a communicator of two of its
//! own, on a CUDA stream of its own, that only the first sends on and only the second receives
//! on: sends between a pair in both directions never queue behind each other in one stream's
//! order, and a rank's receives from one sender are posted in the order its headers arrive,
//! which MPI keeps per sender, so they match the sends one for one. NCCL connects a pair on its
//! first send and receive, a meeting of both ranks' host threads, so each pair exchanges one
//! element as it is made, while both ranks are there; a later send only queues on its stream.
//! The sender posts its NCCL send before the header; the receiver, on reading the header,
//! posts the receive and waits for it, so a received tensor is on its GPU when the worker takes
//! it. The NCCL stream waits for the compute stream's writes of a sent tensor (cudarc's event
//! tracking), and the transport keeps the tensor until its send is done: cudarc remembers only
//! a buffer's last reader, and a tensor may be sent to several ranks. Received buffers are
//! allocated on the compute stream, which uses and frees them. Dropped, the carrier first waits
//! for its sends, so that no communicator is torn down under a send its peer still expects.
//!
//! An all-reduce runs on a communicator of its group: the world's is made with the pairs', a
//! smaller group's (GNNPipe's hybrid: a stage's lanes) the first time it meets, with the
//! group's first rank sending the NCCL id to the others over MPI. Members meet their
//! all-reduces in the same order ([`super::Transport::start_all_reduce`]), so those messages,
//! and the blocking creation of the communicator, match as the all-reduces do. Every member
//! gets the same sums, to the bit, added in NCCL's order (with three or more ranks not the
//! in-process transport's, so the sums may differ from it in the last bits).
//!
//! NCCL refuses two ranks on one GPU, so every rank computes on a GPU of its own. The library
//! (`libnccl.so.2`) is loaded at run time, when the first communicator is made; a machine
//! without it gets an error naming it.
//!
//! NCCL communicators are raw handles, which Rust cannot know to be `Send`: NCCL allows a
//! communicator to be called from any thread, one call at a time. The transport that holds
//! them is moved once, to its worker's thread, and used there through `&mut self`, so no two
//! threads ever call one; that is the whole of this module's `unsafe`.
#![allow(unsafe_code)]

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{CudaContext, CudaEvent, CudaSlice};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};

/// Bytes of one NCCL unique id.
const ID_BYTES: usize = 128;

/// One rank's NCCL communicators and the GPU they serve.
pub(super) struct Nccl {
    device: CudaDevice,
    context: Arc<CudaContext>,
    /// Per peer: the communicator this rank sends to it on.
    to: Vec<Option<Comm>>,
    /// Per peer: the communicator this rank receives from it on.
    from: Vec<Option<Comm>>,
    /// The all-reduce communicators made so far, by group (the world's first).
    groups: Vec<(Vec<usize>, Comm)>,
    /// Sends not known to be done: the event after each on its stream, and its tensor.
    sending: Vec<(CudaEvent, Tensor)>,
}

// SAFETY: see the module's documentation: the communicators are only ever called through
// `&mut Nccl`, from the one thread that holds the transport at a time.
unsafe impl Send for Nccl {}

fn nccl_error(what: &str, err: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("NCCL: {what}: {err:?}"))
}

/// Runs `f`, turning cudarc's panic when it cannot load `libnccl.so.2` into an error.
fn loading<T>(f: impl FnOnce() -> candle_core::Result<T>) -> candle_core::Result<T> {
    crate::exec::device::catch_load_panic(f).unwrap_or_else(|(cause, _)| {
        candle_core::bail!(
            "NCCL could not be loaded: {cause} (libnccl.so.2 must be on LD_LIBRARY_PATH; \
             PyTorch's nvidia-nccl wheel has one)"
        )
    })
}

/// A new NCCL unique id, as bytes.
pub(super) fn new_id() -> candle_core::Result<Vec<u8>> {
    loading(|| {
        let id = Id::new().map_err(|e| nccl_error("cannot make a unique id", e))?;
        Ok(id.internal().iter().map(|&c| c as u8).collect())
    })
}

/// The ids of a run of `n` ranks, made by rank 0: one per ordered pair `(a, b)`, `a != b`, in
/// order, then the world's.
pub(super) fn new_ids(n: usize) -> candle_core::Result<Vec<u8>> {
    let mut ids = Vec::with_capacity(ids_len(n));
    for _ in 0..n * (n - 1) + 1 {
        ids.extend(new_id()?);
    }
    Ok(ids)
}

/// Bytes of [`new_ids`]'s ids for `n` ranks.
pub(super) fn ids_len(n: usize) -> usize {
    (n * (n - 1) + 1) * ID_BYTES
}

fn id_of(bytes: &[u8]) -> candle_core::Result<Id> {
    let internal: [u8; ID_BYTES] = bytes
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("an NCCL id of {} bytes", bytes.len())))?;
    Ok(Id::uninit(internal.map(|b| b as std::ffi::c_char)))
}

impl Nccl {
    /// Rank `rank`'s communicators among `n` ranks, from rank 0's `ids` ([`new_ids`]), on
    /// `device`. Every rank makes its pairs' communicators in the ids' order, each a blocking
    /// meeting of its two ranks: the first pair still to meet has both its ranks waiting for
    /// it, so every pair meets.
    pub(super) fn connect(
        device: &Device,
        rank: usize,
        n: usize,
        ids: &[u8],
    ) -> candle_core::Result<Self> {
        let Device::Cuda(cuda) = device else {
            candle_core::bail!(
                "--transport nccl carries tensors between GPUs: rank {rank} computes on the CPU"
            );
        };
        if ids.len() != ids_len(n) {
            candle_core::bail!("{} bytes of NCCL ids for {n} ranks", ids.len());
        }
        let context = cuda.cuda_stream().context().clone();
        let mut nccl = Nccl {
            device: cuda.clone(),
            context,
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            groups: Vec::new(),
            sending: Vec::new(),
        };
        let mut ids = ids.chunks_exact(ID_BYTES);
        let one = Tensor::zeros(1, DType::F32, device)?;
        for a in 0..n {
            for b in (0..n).filter(|&b| b != a) {
                let id = ids.next().expect("ids_len counts every pair");
                // Made, then connected by a first exchange while both ranks are here.
                if rank == a {
                    nccl.to[b] = Some(nccl.comm(0, 2, id)?);
                    nccl.send(b, &one)?;
                    nccl.wait_for_sends()?;
                } else if rank == b {
                    nccl.from[a] = Some(nccl.comm(1, 2, id)?);
                    nccl.recv(a, vec![1], 1)?;
                }
            }
        }
        let world = nccl.comm(rank, n, ids.next().expect("ids_len counts the world's"))?;
        nccl.groups.push(((0..n).collect(), world));
        Ok(nccl)
    }

    /// This rank's communicator as `rank` of `size` with `id`, on a new stream of the GPU.
    fn comm(&self, rank: usize, size: usize, id: &[u8]) -> candle_core::Result<Comm> {
        let id = id_of(id)?;
        self.bind()?;
        let stream = self
            .context
            .new_stream()
            .map_err(|e| nccl_error("cannot make a stream", e))?;
        loading(|| {
            Comm::from_rank(stream, rank, size, id)
                .map_err(|e| nccl_error(&format!("cannot join a communicator of {size}"), e))
        })
    }

    /// Makes the GPU's context the calling thread's: NCCL works on the current device.
    fn bind(&self) -> candle_core::Result<()> {
        self.context
            .bind_to_thread()
            .map_err(|e| nccl_error("cannot bind the GPU's context", e))
    }

    /// Posts `tensor` (f32) to rank `to`.
    pub(super) fn send(&mut self, to: usize, tensor: &Tensor) -> candle_core::Result<()> {
        if tensor.elem_count() == 0 {
            return Ok(());
        }
        let comm = self.to.get(to).and_then(Option::as_ref).ok_or_else(|| {
            candle_core::Error::Msg(format!("NCCL: no communicator to rank {to}"))
        })?;
        let tensor = tensor.to_dtype(DType::F32)?.contiguous()?;
        self.bind()?;
        let done = {
            let (guard, layout) = tensor.storage_and_layout();
            let Storage::Cuda(storage) = &*guard else {
                candle_core::bail!("NCCL sends GPU tensors, this one is on the CPU");
            };
            let start = layout.start_offset();
            let view = storage
                .as_cuda_slice::<f32>()?
                .slice(start..start + tensor.elem_count());
            comm.send(&view, 1)
                .map_err(|e| nccl_error(&format!("send to rank {to}"), e))?;
            comm.stream()
                .record_event(None)
                .map_err(|e| nccl_error("cannot record a send's event", e))?
        };
        self.sending.retain(|(event, _)| !event.is_complete());
        self.sending.push((done, tensor));
        Ok(())
    }

    /// Waits until every send posted so far is done.
    fn wait_for_sends(&mut self) -> candle_core::Result<()> {
        for (event, _) in self.sending.drain(..) {
            event
                .synchronize()
                .map_err(|e| nccl_error("waiting for a send", e))?;
        }
        Ok(())
    }

    /// Receives the tensor of shape `dims` (`n` elements) that rank `from` sent, once it has
    /// arrived.
    pub(super) fn recv(
        &mut self,
        from: usize,
        dims: Vec<usize>,
        n: usize,
    ) -> candle_core::Result<Tensor> {
        if n == 0 {
            return Tensor::zeros(dims, DType::F32, &Device::Cuda(self.device.clone()));
        }
        let comm = self
            .from
            .get(from)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("NCCL: no communicator from rank {from}"))
            })?;
        let mut buffer = self.buffer(n)?;
        comm.recv(&mut buffer, 0)
            .map_err(|e| nccl_error(&format!("receive from rank {from}"), e))?;
        comm.stream()
            .synchronize()
            .map_err(|e| nccl_error(&format!("receive from rank {from}"), e))?;
        Ok(self.wrap(buffer, dims))
    }

    /// Whether the all-reduce communicator of `group` exists.
    pub(super) fn has_group(&self, group: &[usize]) -> bool {
        self.groups.iter().any(|(g, _)| g == group)
    }

    /// Joins `group`'s all-reduce communicator, made with `id` by its first rank.
    pub(super) fn join_group(
        &mut self,
        group: &[usize],
        rank: usize,
        id: &[u8],
    ) -> candle_core::Result<()> {
        let index = group
            .iter()
            .position(|&r| r == rank)
            .expect("check_group put the rank in its group");
        let comm = self.comm(index, group.len(), id)?;
        self.groups.push((group.to_vec(), comm));
        Ok(())
    }

    /// Sums `tensors` over `group` (whose communicator exists): one NCCL all-reduce of them
    /// all, laid end to end; every member gets the same sums.
    pub(super) fn all_reduce(
        &mut self,
        group: &[usize],
        tensors: &[Tensor],
        device: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        let (_, comm) = self
            .groups
            .iter()
            .find(|(g, _)| g == group)
            .expect("the transport joins a group before its first all-reduce");
        let flat = tensors
            .iter()
            .map(|t| t.to_device(device)?.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let n: usize = flat.iter().map(Tensor::elem_count).sum();
        if n == 0 {
            return tensors
                .iter()
                .map(|t| Tensor::zeros(t.dims(), DType::F32, device))
                .collect();
        }
        let laid = Tensor::cat(&flat, 0)?;
        let mut sum = self.buffer(n)?;
        {
            let (storage, layout) = laid.storage_and_layout();
            let Storage::Cuda(storage) = &*storage else {
                candle_core::bail!("NCCL all-reduces GPU tensors, these are on the CPU");
            };
            let start = layout.start_offset();
            let view = storage.as_cuda_slice::<f32>()?.slice(start..start + n);
            comm.all_reduce(&view, &mut sum, &ReduceOp::Sum)
                .map_err(|e| nccl_error(&format!("all-reduce among ranks {group:?}"), e))?;
        }
        let sum = self.wrap(sum, vec![n]);
        let mut at = 0;
        tensors
            .iter()
            .map(|t| {
                let part = sum.narrow(0, at, t.elem_count())?.reshape(t.dims());
                at += t.elem_count();
                part
            })
            .collect()
    }

    /// `n` elements on the compute stream, which will use and free them (the context bound).
    fn buffer(&self, n: usize) -> candle_core::Result<CudaSlice<f32>> {
        self.bind()?;
        self.device
            .cuda_stream()
            .alloc_zeros::<f32>(n)
            .map_err(|e| nccl_error(&format!("cannot allocate {n} elements"), e))
    }

    /// `buffer` (allocated on the compute stream) as a tensor of shape `dims` on this rank's
    /// GPU.
    fn wrap(&self, buffer: CudaSlice<f32>, dims: Vec<usize>) -> Tensor {
        let storage = CudaStorage::wrap_cuda_slice(buffer, self.device.clone());
        Tensor::from_storage(Storage::Cuda(storage), dims, BackpropOp::none(), false)
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // Before the communicators go (cudarc aborts them): a send still queued would leave
        // its peer waiting. A failure here has nobody to tell; the run has ended either way.
        let _ = self.wait_for_sends();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id travels as its 128 bytes; a run of `n` ranks has one per ordered pair and the
    /// world's.
    #[test]
    fn ids_survive_their_bytes() {
        assert_eq!(ids_len(1), ID_BYTES);
        assert_eq!(ids_len(4), 13 * ID_BYTES);
        let bytes: Vec<u8> = (0..ID_BYTES).map(|i| (i * 7) as u8).collect();
        let id = id_of(&bytes).unwrap();
        let back: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
        assert_eq!(back, bytes);
        assert!(id_of(&bytes[1..]).is_err());
    }
}
