//! The MPI transport (`--features mpi`): one rank per process, started by `mpirun`, over the
//! system's MPI through the `mpi` crate (rsmpi).
//!
//! A hand-off is one point-to-point message: its tag, its arrival time on the sender's clock
//! and the tensor (f32 data with its shape) as bytes ([`super::wire`]). Sends never wait for the
//! receiver: a thread of the endpoint's own posts them and waits for their completion, so a
//! sender computes on while its message waits to be matched, and two ranks sending to each other
//! cannot deadlock. The worker's thread probes for arrived messages. MPI is therefore
//! initialised with `MPI_THREAD_MULTIPLE`.
//!
//! An all-reduce gathers every member's offer to the group's first rank, which sums them in the
//! group's order (as the in-process transport does, so the sums are the same to the bit) and
//! sends the sum back. The epoch reports are gathered to rank 0 the same way. Waits poll with short sleeps, so ranks
//! oversubscribed on few cores leave them to the ranks that compute.
//!
//! With `--features nccl`, [`Mpi::nccl_transport`] is the same endpoint with the tensors between
//! GPUs carried by NCCL ([`super::nccl`]): MPI then carries each hand-off's tag, arrival time
//! and shape, the NCCL ids, the barriers and the reports.
//!
//! Link emulation paces each rank's sends with a clock of its own: transfers from different
//! ranks that share a link (a multi-hop route, a switch's port) do not queue for it. A
//! failing rank cannot call the run off here: its process prints its error and calls
//! `MPI_Abort` ([`Mpi::abort`]), which ends every rank.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use mpi::environment::Universe;
use mpi::point_to_point::MatchedReceiveVec;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Destination, Source};
use mpi::Threading;
use thiserror::Error;

use super::links::{LinkClock, Links};
use super::wire::{Reader, Writer};
use super::{Received, Tag, Transport};
use crate::trace::Span;

/// The environment variables one of which an MPI launcher sets in every process it starts
/// (Open MPI's `mpirun`, MPICH's Hydra, PMIx launchers).
pub const LAUNCHER_VARIABLES: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

/// MPI message tags: what a message is, beside the hand-off's own tag in its bytes.
const DATA: i32 = 1;
const OFFER: i32 = 2;
const SUM: i32 = 3;
const REPORT: i32 = 4;
#[cfg(feature = "nccl")]
const NCCL_ID: i32 = 5;

/// How long a wait sleeps between two polls.
const POLL: Duration = Duration::from_micros(20);

/// Why MPI cannot run this process's rank.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MpiError {
    /// No MPI launcher started this process.
    #[error(
        "--transport mpi runs under an MPI launcher (mpirun -np N pipegnn run SCENARIO \
         --transport mpi, one rank per schedule device): none of {} is set",
        LAUNCHER_VARIABLES.join(", ")
    )]
    NotLaunched,
    /// MPI was initialised already, or refused to be.
    #[error("MPI cannot be initialised in this process")]
    Init,
    /// The MPI library cannot serve the endpoint's two threads.
    #[error("this MPI library provides {0:?} threading, the MPI transport needs Multiple")]
    Threading(Threading),
    /// The run asks for GPUs, which the MPI transport does not reach.
    #[error(
        "--transport mpi runs on the CPU: hand-offs between GPUs in different processes go \
         over NCCL (--transport nccl, a build with --features nccl)"
    )]
    Cuda,
    /// `--transport nccl` on the CPU.
    #[error(
        "--transport nccl carries tensors between GPUs: run it with executor.backend: cuda or \
         --device cuda (--transport mpi runs on the CPU)"
    )]
    NcclOnCpu,
    /// `--transport nccl` with the stages on one GPU.
    #[error(
        "--transport nccl runs every rank on a GPU of its own (NCCL refuses two ranks on one \
         GPU): executor.device_map shared puts the stages on one"
    )]
    NcclShared,
    /// The launcher started a different number of ranks than the schedule has devices.
    #[error(
        "mpirun started {ranks} ranks for a schedule of {devices} devices: start one rank per \
         device (mpirun -np {devices})"
    )]
    Ranks {
        /// Ranks started.
        ranks: usize,
        /// Devices of the schedule.
        devices: usize,
    },
    /// A rank read different inputs than rank 0.
    #[error(
        "rank {rank} read other inputs than rank 0 (fingerprint {theirs:016x}, rank 0's \
         {ours:016x}): every rank must read the same scenario, --set overrides and dataset \
         with the same build"
    )]
    Differs {
        /// The first rank that differs.
        rank: usize,
        /// Its fingerprint.
        theirs: u64,
        /// Rank 0's.
        ours: u64,
    },
}

/// Whether an MPI launcher started this process.
pub fn launched() -> bool {
    LAUNCHER_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// MPI, initialised in this process; finalised when dropped.
pub struct Mpi {
    _universe: Universe,
    rank: usize,
    size: usize,
}

impl Mpi {
    /// Initialises MPI with the threading the transport needs; an error outside a launcher.
    pub fn init() -> Result<Mpi, MpiError> {
        if !launched() {
            return Err(MpiError::NotLaunched);
        }
        let (universe, threading) =
            mpi::initialize_with_threading(Threading::Multiple).ok_or(MpiError::Init)?;
        if threading != Threading::Multiple {
            return Err(MpiError::Threading(threading));
        }
        let world = universe.world();
        Ok(Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            _universe: universe,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many ranks the launcher started.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This process's rank among the ranks on its host (the GPU an NCCL rank computes on).
    pub fn local_rank(&self) -> usize {
        SimpleCommunicator::world()
            .split_shared(self.rank as i32)
            .rank() as usize
    }

    /// An error unless there is one rank per schedule device (every rank finds the same).
    pub fn check_ranks(&self, devices: usize) -> Result<(), MpiError> {
        if self.size != devices {
            return Err(MpiError::Ranks {
                ranks: self.size,
                devices,
            });
        }
        Ok(())
    }

    /// Compares every rank's `fingerprint` with rank 0's; every rank returns the same error
    /// when one differs.
    pub fn agree(&self, fingerprint: u64) -> Result<(), MpiError> {
        let mut all = vec![0u64; self.size];
        SimpleCommunicator::world().all_gather_into(&fingerprint, &mut all[..]);
        match all.iter().position(|&f| f != all[0]) {
            Some(rank) => Err(MpiError::Differs {
                rank,
                theirs: all[rank],
                ours: all[0],
            }),
            None => Ok(()),
        }
    }

    /// This rank's endpoint, its messages crossing `links`.
    pub fn transport<'a>(&'a self, links: Links<'a>) -> MpiTransport<'a> {
        let (outbox, posts) = channel();
        let sender = std::thread::spawn(move || post_all(&posts));
        let world = SimpleCommunicator::world();
        // The links' clocks start together (within the barrier's skew).
        world.barrier();
        MpiTransport {
            rank: self.rank,
            size: self.size,
            clock: LinkClock::new(&links),
            links,
            outbox: Some(outbox),
            sender: Some(sender),
            arrived: VecDeque::new(),
            offer: None,
            carrier: Carrier::Mpi,
        }
    }

    /// This rank's endpoint with its tensors carried between GPUs by NCCL, `device` being this
    /// rank's GPU: rank 0 makes the NCCL ids of every pair of ranks and of the world, MPI
    /// hands them to every rank, and each rank joins its communicators.
    #[cfg(feature = "nccl")]
    pub fn nccl_transport<'a>(
        &'a self,
        links: Links<'a>,
        device: &Device,
    ) -> candle_core::Result<MpiTransport<'a>> {
        use mpi::traits::Root;
        let mut ids = match self.rank {
            0 => super::nccl::new_ids(self.size)?,
            _ => vec![0; super::nccl::ids_len(self.size)],
        };
        SimpleCommunicator::world()
            .process_at_rank(0)
            .broadcast_into(&mut ids[..]);
        let nccl = super::nccl::Nccl::connect(device, self.rank, self.size, &ids)?;
        let mut transport = self.transport(links);
        transport.carrier = Carrier::Nccl(Box::new(nccl));
        Ok(transport)
    }

    /// Measures what one hand-off between two ranks costs beyond the links, through this
    /// transport's own path (the tensor encoded, posted by the sending thread, probed for with
    /// the worker's polling, decoded): ranks 0 and 1 bounce f32 tensors of 1 KiB to 8 MiB
    /// ([`HANDOFF_SIZES`]) with links left unpaced, two warm-up round trips then nine timed
    /// ones per size. Every rank takes part (the others wait at the barriers); rank 0 returns
    /// each size's bytes with the median one-way time (half the round trip), the other ranks
    /// `None`, as does a run of one rank. With `nccl` (this rank's GPU), the tensors are on
    /// the GPUs and NCCL carries them, as [`Mpi::nccl_transport`]'s do.
    pub fn measure_handoff(
        &self,
        network: &crate::network::Network,
        nccl: Option<&Device>,
    ) -> candle_core::Result<Option<Vec<(u64, u64)>>> {
        if self.size < 2 || network.n_devices() < 2 {
            return Ok(None);
        }
        let links = Links {
            network,
            placement: &[0, 1],
            emulate: false,
        };
        let (mut transport, device) = match nccl {
            None => (self.transport(links), Device::Cpu),
            #[cfg(feature = "nccl")]
            Some(device) => (self.nccl_transport(links, device)?, device.clone()),
            #[cfg(not(feature = "nccl"))]
            Some(_) => candle_core::bail!("this build has no NCCL (--features nccl)"),
        };
        let mut samples = Vec::new();
        if self.rank < 2 {
            let peer = 1 - self.rank;
            for (i, &elements) in HANDOFF_SIZES.iter().enumerate() {
                let tensor = Tensor::zeros(elements, candle_core::DType::F32, &device)?;
                let tag = Tag {
                    payload: crate::schedule::lower::Payload::Activation,
                    to: crate::schedule::Op::forward(i as u32, 0),
                    from_chunk: i as u32,
                    from_stage: 0,
                };
                let mut times = Vec::new();
                for round in 0..11 {
                    let start = Instant::now();
                    if self.rank == 0 {
                        transport.send(peer, tag, &tensor, start)?;
                        wait(&mut transport)?;
                    } else {
                        let back = wait(&mut transport)?;
                        transport.send(peer, tag, &back, start)?;
                    }
                    if round >= 2 {
                        times.push(start.elapsed().as_nanos() as u64 / 2);
                    }
                }
                times.sort_unstable();
                samples.push(((elements * 4) as u64, times[times.len() / 2]));
            }
        }
        transport.barrier()?;
        drop(transport);
        Ok((self.rank == 0).then_some(samples))
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        SimpleCommunicator::world().barrier();
    }

    /// Ends every rank of the run with `code` (`MPI_Abort`); print the reason first.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }
}

/// The f32 element counts [`Mpi::measure_handoff`] sends: 1 KiB, 64 KiB, 1 MiB and 8 MiB.
pub const HANDOFF_SIZES: [usize; 4] = [256, 16_384, 262_144, 2_097_152];

/// The next message of a hand-off measurement, waiting at most ten seconds for it.
fn wait(transport: &mut MpiTransport<'_>) -> candle_core::Result<Tensor> {
    match transport.recv_timeout(Duration::from_secs(10))? {
        Some(received) => Ok(received.tensor),
        None => candle_core::bail!("no reply within 10 s while measuring a hand-off"),
    }
}

/// A message to post: (rank, MPI tag, bytes).
type Post = (usize, i32, Vec<u8>);

/// The sending thread: posts every message handed to it, a batch at a time, and waits for the
/// batch to complete, until the endpoint is dropped.
fn post_all(posts: &Receiver<Post>) {
    let world = SimpleCommunicator::world();
    while let Ok(first) = posts.recv() {
        let mut batch = vec![first];
        batch.extend(posts.try_iter());
        mpi::request::multiple_scope(batch.len(), |scope, requests| {
            for (to, tag, bytes) in &batch {
                let process = world.process_at_rank(*to as i32);
                requests.add(process.immediate_send_with_tag(scope, &bytes[..], *tag));
            }
            let mut done = Vec::new();
            while requests.incomplete() > 0 {
                requests.test_some(&mut done);
                if done.is_empty() {
                    std::thread::sleep(POLL);
                }
            }
        });
    }
}

/// What carries the tensors of hand-offs and all-reduces.
enum Carrier {
    /// MPI's messages themselves, the tensors as bytes (the CPU).
    Mpi,
    /// NCCL, between GPUs, beside MPI's messages.
    #[cfg(feature = "nccl")]
    Nccl(Box<super::nccl::Nccl>),
}

/// One rank's endpoint of the MPI transport.
pub struct MpiTransport<'a> {
    rank: usize,
    size: usize,
    links: Links<'a>,
    clock: LinkClock,
    /// To the sending thread; `None` once dropped.
    outbox: Option<Sender<Post>>,
    sender: Option<JoinHandle<()>>,
    /// Messages received and not yet handed to the worker, with their senders.
    arrived: VecDeque<(usize, Vec<u8>)>,
    /// This rank's all-reduce offer, with its group.
    offer: Option<(Vec<usize>, Vec<Tensor>)>,
    carrier: Carrier,
}

impl MpiTransport<'_> {
    fn post(&self, to: usize, tag: i32, bytes: Vec<u8>) -> candle_core::Result<()> {
        let outbox = self
            .outbox
            .as_ref()
            .expect("only dropping takes the outbox");
        outbox
            .send((to, tag, bytes))
            .map_err(|_| candle_core::Error::Msg("the MPI sending thread stopped".into()))
    }

    /// Waits for the message tagged `tag` from rank `from`.
    fn receive(&mut self, from: usize, tag: i32) -> Vec<u8> {
        let world = SimpleCommunicator::world();
        let process = world.process_at_rank(from as i32);
        loop {
            if let Some(message) = process.immediate_matched_probe_with_tag(tag) {
                return message.matched_receive_vec::<u8>().0;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Takes in one hand-off that has arrived, if any.
    fn poll(&mut self) -> candle_core::Result<Option<Received>> {
        if self.arrived.is_empty() {
            let world = SimpleCommunicator::world();
            if let Some(message) = world.any_process().immediate_matched_probe_with_tag(DATA) {
                let from = message.1.source_rank() as usize;
                self.arrived
                    .push_back((from, message.matched_receive_vec::<u8>().0));
            }
        }
        let Some((from, bytes)) = self.arrived.pop_front() else {
            return Ok(None);
        };
        let mut r = Reader::new(&bytes);
        let tag = r.tag()?;
        let ready_ns = r.u64()?;
        // Only NCCL's carrier reads the sender.
        #[cfg(not(feature = "nccl"))]
        let _ = from;
        let tensor = match &mut self.carrier {
            Carrier::Mpi => r.tensor(&Device::Cpu)?,
            #[cfg(feature = "nccl")]
            Carrier::Nccl(nccl) => {
                let (dims, n) = r.dims()?;
                nccl.recv(from, dims, n)?
            }
        };
        Ok(Some(Received {
            tag,
            tensor,
            ready_ns,
        }))
    }
}

#[cfg(feature = "nccl")]
impl MpiTransport<'_> {
    /// The all-reduce of `offer` over `group` on NCCL, the group's communicator made the first
    /// time it meets (its first rank sends the id to the others).
    fn nccl_all_reduce(
        &mut self,
        group: &[usize],
        offer: &[Tensor],
        device: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        let joined = matches!(&self.carrier, Carrier::Nccl(nccl) if nccl.has_group(group));
        let id = match joined {
            true => None,
            false if self.rank == group[0] => {
                let id = super::nccl::new_id()?;
                for &to in &group[1..] {
                    self.post(to, NCCL_ID, id.clone())?;
                }
                Some(id)
            }
            false => Some(self.receive(group[0], NCCL_ID)),
        };
        let Carrier::Nccl(nccl) = &mut self.carrier else {
            unreachable!("called on NCCL's carrier only")
        };
        if let Some(id) = id {
            nccl.join_group(group, self.rank, &id)?;
        }
        nccl.all_reduce(group, offer, device)
    }
}

impl Transport for MpiTransport<'_> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn n_ranks(&self) -> usize {
        self.size
    }

    fn send(
        &mut self,
        to: usize,
        tag: Tag,
        tensor: &Tensor,
        epoch_start: Instant,
    ) -> candle_core::Result<Vec<Span>> {
        let bytes = (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
        let (spans, ready_ns) =
            self.clock
                .carry(&self.links, (self.rank, to), tag, bytes, epoch_start);
        let mut w = Writer::default();
        w.tag(tag);
        w.u64(ready_ns);
        match &mut self.carrier {
            Carrier::Mpi => w.tensor(tensor)?,
            // The data first, so that the receiver, posting its receive on the header, finds
            // the send posted.
            #[cfg(feature = "nccl")]
            Carrier::Nccl(nccl) => {
                nccl.send(to, tensor)?;
                w.dims(tensor.dims());
            }
        }
        self.post(to, DATA, w.0)?;
        Ok(spans)
    }

    fn try_recv(&mut self) -> candle_core::Result<Option<Received>> {
        self.poll()
    }

    fn recv_timeout(&mut self, timeout: Duration) -> candle_core::Result<Option<Received>> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(message) = self.poll()? {
                return Ok(Some(message));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    fn barrier(&mut self) -> candle_core::Result<()> {
        SimpleCommunicator::world().barrier();
        Ok(())
    }

    fn start_all_reduce(
        &mut self,
        group: &[usize],
        tensors: Vec<Tensor>,
    ) -> candle_core::Result<()> {
        super::check_group(group, self.rank, self.size)?;
        self.offer = Some((group.to_vec(), tensors));
        Ok(())
    }

    fn finish_all_reduce(&mut self, device: &Device) -> candle_core::Result<Vec<Tensor>> {
        let Some((group, offer)) = self.offer.take() else {
            candle_core::bail!("rank {} finishes an all-reduce it never started", self.rank);
        };
        #[cfg(feature = "nccl")]
        if matches!(self.carrier, Carrier::Nccl(_)) {
            return self.nccl_all_reduce(&group, &offer, device);
        }
        let encode = |tensors: &[Tensor]| -> candle_core::Result<Vec<u8>> {
            let mut w = Writer::default();
            w.u64(tensors.len() as u64);
            for t in tensors {
                w.tensor(t)?;
            }
            Ok(w.0)
        };
        let decode = |bytes: &[u8]| -> candle_core::Result<Vec<Tensor>> {
            let mut r = Reader::new(bytes);
            let n = r.u64()?;
            (0..n).map(|_| r.tensor(device)).collect()
        };
        // The group's first rank sums. Every pair of ranks meets in its all-reduces in the same
        // order and MPI keeps a pair's messages of one tag in order, so an offer or a sum is
        // never taken for another group's.
        let leader = group[0];
        if self.rank != leader {
            self.post(leader, OFFER, encode(&offer)?)?;
            return decode(&self.receive(leader, SUM));
        }
        // The leader's offer first, then every other member's in the group's order, as the
        // in-process transport adds them.
        let mut sum: Vec<Tensor> = offer
            .iter()
            .map(|t| t.to_device(device))
            .collect::<candle_core::Result<_>>()?;
        for &from in &group[1..] {
            let theirs = decode(&self.receive(from, OFFER))?;
            if theirs.len() != sum.len() {
                candle_core::bail!(
                    "rank {from} offered {} tensors to the all-reduce, rank {leader} {}",
                    theirs.len(),
                    sum.len()
                );
            }
            sum = sum
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?;
        }
        let bytes = encode(&sum)?;
        for &to in &group[1..] {
            self.post(to, SUM, bytes.clone())?;
        }
        Ok(sum)
    }

    fn abort(&self) {
        // The failing rank's process calls `Mpi::abort` once it has said why.
    }

    fn across_processes(&self) -> bool {
        true
    }

    fn gather(&mut self, bytes: Vec<u8>) -> candle_core::Result<Option<Vec<Vec<u8>>>> {
        if self.rank != 0 {
            self.post(0, REPORT, bytes)?;
            return Ok(None);
        }
        let mut all = vec![bytes];
        for from in 1..self.size {
            all.push(self.receive(from, REPORT));
        }
        Ok(Some(all))
    }
}

impl Drop for MpiTransport<'_> {
    fn drop(&mut self) {
        // Every message posted is sent before MPI is finalised.
        drop(self.outbox.take());
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}
