//! The in-process transport: every rank a thread of this process, messages over channels, the
//! barrier and the all-reduce on memory the ranks share.
//!
//! The links' emulated clock ([`super::links`]) is one for all ranks, so transfers from
//! different ranks queue for a link they share; the receiver waits for a message's arrival.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::links::{LinkClock, Links};
use super::{Received, Tag, Transport};
use crate::trace::Span;

/// A barrier that can be called off: once the run's stop flag is raised, every wait returns an
/// error, so a failing party cannot leave the others waiting for it.
pub struct Rendezvous {
    parties: usize,
    state: Mutex<(usize, u64)>,
    turn: Condvar,
    stop: Arc<AtomicBool>,
}

impl Rendezvous {
    /// A barrier for `parties`, called off by `stop`.
    pub fn new(parties: usize, stop: Arc<AtomicBool>) -> Self {
        Rendezvous {
            parties,
            state: Mutex::new((0, 0)),
            turn: Condvar::new(),
            stop,
        }
    }

    /// Waits for every party; an error if the run was aborted.
    pub fn wait(&self) -> candle_core::Result<()> {
        let mut state = self.state.lock().expect("no party panics holding the lock");
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1);
            self.turn.notify_all();
        } else {
            while state.1 == generation && !self.is_aborted() {
                state = self
                    .turn
                    .wait_timeout(state, Duration::from_millis(20))
                    .expect("no party panics holding the lock")
                    .0;
            }
        }
        if self.is_aborted() {
            candle_core::bail!("the run was stopped");
        }
        Ok(())
    }

    /// Calls the run off.
    pub fn abort(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.turn.notify_all();
    }

    /// Whether the run was called off.
    pub fn is_aborted(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// What the ranks share: the barrier, the all-reduce's offers and the links' emulated state.
struct Hub {
    barrier: Rendezvous,
    offers: Mutex<Offers>,
    offered: Condvar,
    /// The emulated links, shared by every rank's transfers.
    clock: Mutex<LinkClock>,
}

/// The all-reduces in progress: each rank's offer with the group it is for, and whether it has
/// taken its group's sum.
struct Offers {
    tensors: Vec<Option<(Vec<usize>, Vec<Tensor>)>>,
    taken: Vec<bool>,
}

impl Hub {
    /// Waits until `ready` holds of the offers (or the run is stopped) and returns them locked.
    fn wait_until(
        &self,
        ready: impl Fn(&Offers) -> bool,
    ) -> candle_core::Result<MutexGuard<'_, Offers>> {
        let mut offers = self.offers.lock().expect("no rank panics holding the lock");
        while !ready(&offers) {
            if self.barrier.is_aborted() {
                candle_core::bail!("the run was stopped");
            }
            offers = self
                .offered
                .wait_timeout(offers, Duration::from_millis(20))
                .expect("no rank panics holding the lock")
                .0;
        }
        Ok(offers)
    }
}

/// One rank's endpoint of the in-process transport.
pub struct ChannelTransport<'a> {
    rank: usize,
    senders: Vec<Sender<Received>>,
    inbox: Receiver<Received>,
    hub: Arc<Hub>,
    links: Links<'a>,
    /// The group of the all-reduce this rank started and has not finished.
    group: Vec<usize>,
}

impl<'a> ChannelTransport<'a> {
    /// Endpoints for `n_ranks` ranks that reach each other over `links`, called off by `stop`
    /// (shared with whoever else must stop with them).
    pub fn mesh(n_ranks: usize, links: Links<'a>, stop: Arc<AtomicBool>) -> Vec<Self> {
        let (senders, receivers): (Vec<Sender<Received>>, Vec<Receiver<Received>>) =
            (0..n_ranks).map(|_| channel()).unzip();
        let hub = Arc::new(Hub {
            barrier: Rendezvous::new(n_ranks, stop),
            offers: Mutex::new(Offers {
                tensors: vec![None; n_ranks],
                taken: vec![false; n_ranks],
            }),
            offered: Condvar::new(),
            clock: Mutex::new(LinkClock::new(&links)),
        });
        receivers
            .into_iter()
            .enumerate()
            .map(|(rank, inbox)| ChannelTransport {
                rank,
                senders: senders.clone(),
                inbox,
                hub: hub.clone(),
                links,
                group: Vec::new(),
            })
            .collect()
    }
}

impl Transport for ChannelTransport<'_> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn n_ranks(&self) -> usize {
        self.senders.len()
    }

    fn send(
        &mut self,
        to: usize,
        tag: Tag,
        tensor: &Tensor,
        epoch_start: Instant,
    ) -> candle_core::Result<Vec<Span>> {
        let bytes = (tensor.elem_count() * tensor.dtype().size_in_bytes()) as u64;
        let (spans, ready_ns) = self
            .hub
            .clock
            .lock()
            .expect("no rank panics holding the lock")
            .carry(&self.links, (self.rank, to), tag, bytes, epoch_start);
        // A receiver that has stopped has nothing left to take it; the run is being called off.
        let _ = self.senders[to].send(Received {
            tag,
            tensor: tensor.detach(),
            ready_ns,
        });
        Ok(spans)
    }

    fn try_recv(&mut self) -> candle_core::Result<Option<Received>> {
        match self.inbox.try_recv() {
            Ok(message) => Ok(Some(message)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(None),
        }
    }

    fn recv_timeout(&mut self, timeout: Duration) -> candle_core::Result<Option<Received>> {
        match self.inbox.recv_timeout(timeout) {
            Ok(message) => Ok(Some(message)),
            Err(RecvTimeoutError::Timeout) if !self.hub.barrier.is_aborted() => Ok(None),
            Err(_) => candle_core::bail!("the run was stopped"),
        }
    }

    fn barrier(&mut self) -> candle_core::Result<()> {
        self.hub.barrier.wait()
    }

    fn start_all_reduce(
        &mut self,
        group: &[usize],
        tensors: Vec<Tensor>,
    ) -> candle_core::Result<()> {
        let rank = self.rank;
        super::check_group(group, rank, self.senders.len())?;
        // The previous all-reduce must have been taken by every member first.
        let mut offers = self.hub.wait_until(|o| o.tensors[rank].is_none())?;
        offers.tensors[rank] = Some((group.to_vec(), tensors));
        self.hub.offered.notify_all();
        self.group = group.to_vec();
        Ok(())
    }

    fn finish_all_reduce(&mut self, device: &Device) -> candle_core::Result<Vec<Tensor>> {
        let group = std::mem::take(&mut self.group);
        if group.is_empty() {
            candle_core::bail!("rank {} finishes an all-reduce it never started", self.rank);
        }
        let group = &group[..];
        // Every member's offer for this group (a member may still be in another group's).
        let mut offers = self.hub.wait_until(|o| {
            group
                .iter()
                .all(|&r| matches!(&o.tensors[r], Some((theirs, _)) if theirs == group))
        })?;
        // The sum is on `device`: a rank on another GPU sends its offer over.
        let mut sum: Option<Vec<Tensor>> = None;
        for (_, tensors) in group.iter().filter_map(|&r| offers.tensors[r].as_ref()) {
            let tensors = tensors
                .iter()
                .map(|t| t.to_device(device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            sum = Some(match sum {
                None => tensors,
                Some(acc) if acc.len() == tensors.len() => acc
                    .iter()
                    .zip(&tensors)
                    .map(|(a, b)| a + b)
                    .collect::<candle_core::Result<Vec<_>>>()?,
                Some(acc) => candle_core::bail!(
                    "the members of all-reduce {group:?} offered {} and {} tensors",
                    acc.len(),
                    tensors.len()
                ),
            });
        }
        offers.taken[self.rank] = true;
        if group.iter().all(|&r| offers.taken[r]) {
            for &r in group {
                offers.tensors[r] = None;
                offers.taken[r] = false;
            }
            self.hub.offered.notify_all();
        }
        Ok(sum.unwrap_or_default())
    }

    fn abort(&self) {
        self.hub.barrier.abort();
        self.hub.offered.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;
    use crate::schedule::lower::Payload;
    use crate::schedule::Op;

    static PLACEMENT: [usize; 4] = [0, 1, 2, 3];

    fn mesh(network: &Network, n: usize) -> Vec<ChannelTransport<'_>> {
        let links = Links {
            network,
            placement: &PLACEMENT[..n],
            emulate: false,
        };
        ChannelTransport::mesh(n, links, Arc::new(AtomicBool::new(false)))
    }

    fn free(n: usize) -> Network {
        Network::free((0..n).map(|d| format!("dev{d}")).collect())
    }

    #[test]
    fn tagged_messages_arrive_whole_and_in_any_order() -> candle_core::Result<()> {
        let network = free(2);
        let mut ranks = mesh(&network, 2);
        let (mut zero, mut one) = (ranks.remove(0), ranks.remove(0));
        let start = Instant::now();
        let tag = |chunk| Tag {
            payload: Payload::Activation,
            to: Op::forward(chunk, 1),
            from_chunk: chunk,
            from_stage: 0,
        };
        let a = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let b = Tensor::new(&[5f32], &Device::Cpu)?;
        // A free network has no links: nothing to record.
        assert!(zero.send(1, tag(0), &a, start)?.is_empty());
        zero.send(1, tag(1), &b, start)?;
        assert_eq!((zero.rank(), one.rank(), one.n_ranks()), (0, 1, 2));
        let first = one
            .recv_timeout(Duration::from_secs(1))?
            .expect("sent above");
        let second = one.try_recv()?.expect("sent above");
        assert_eq!(first.tag, tag(0));
        assert_eq!(
            first.tensor.to_vec2::<f32>()?,
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert_eq!(second.tag, tag(1));
        assert!(one.try_recv()?.is_none());
        Ok(())
    }

    #[test]
    fn the_all_reduce_sums_in_rank_order_on_every_rank_and_aborts_end_waits(
    ) -> candle_core::Result<()> {
        let network = free(3);
        let ranks = mesh(&network, 3);
        let sums = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|mut rank| {
                    scope.spawn(move || -> candle_core::Result<Vec<f32>> {
                        let mut last = Vec::new();
                        // Twice: the second round starts only once every rank took the first.
                        for round in 0..2 {
                            let mine = (rank.rank() + 10 * round) as f32;
                            let t = Tensor::new(&[mine, 1.0], &Device::Cpu)?;
                            rank.start_all_reduce(&[0, 1, 2], vec![t])?;
                            let sum = rank.finish_all_reduce(&Device::Cpu)?;
                            rank.barrier()?;
                            last = sum[0].to_vec1::<f32>()?;
                        }
                        Ok(last)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no rank panics"))
                .collect::<candle_core::Result<Vec<_>>>()
        })?;
        for sum in sums {
            assert_eq!(sum, vec![33.0, 3.0]);
        }
        // One rank calls the run off: another's wait ends with an error.
        let mut ranks = mesh(&network, 2);
        ranks[0].abort();
        assert!(ranks[1].barrier().is_err());
        assert!(ranks[1].recv_timeout(Duration::from_millis(1)).is_err());
        Ok(())
    }

    /// GNNPipe's hybrid all-reduces each stage's weights within its group, the groups at once:
    /// each sums its own members' offers, in the group's order, round after round.
    #[test]
    fn disjoint_groups_all_reduce_at_once_each_over_its_own_members() -> candle_core::Result<()> {
        let network = free(4);
        let ranks = mesh(&network, 4);
        let sums = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|mut rank| {
                    scope.spawn(move || -> candle_core::Result<Vec<Vec<f32>>> {
                        let group: Vec<usize> = if rank.rank() < 2 {
                            vec![1, 0]
                        } else {
                            vec![2, 3]
                        };
                        let mut all = Vec::new();
                        for round in 0..3 {
                            let mine = (rank.rank() + 10 * round) as f32;
                            let t = Tensor::new(&[mine], &Device::Cpu)?;
                            rank.start_all_reduce(&group, vec![t])?;
                            all.push(rank.finish_all_reduce(&Device::Cpu)?[0].to_vec1()?);
                        }
                        Ok(all)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no rank panics"))
                .collect::<candle_core::Result<Vec<_>>>()
        })?;
        let expect = |a: usize, b: usize| -> Vec<Vec<f32>> {
            (0..3)
                .map(|round| vec![(a + b + 20 * round) as f32])
                .collect()
        };
        assert_eq!(sums[0], expect(0, 1));
        assert_eq!(sums[1], expect(0, 1));
        assert_eq!(sums[2], expect(2, 3));
        assert_eq!(sums[3], expect(2, 3));
        // A rank outside the group it names is a bug, said as an error.
        let mut ranks = mesh(&network, 2);
        assert!(ranks[0].start_all_reduce(&[1], Vec::new()).is_err());
        assert!(ranks[0].start_all_reduce(&[0, 1, 0], Vec::new()).is_err());
        assert!(ranks[0].finish_all_reduce(&Device::Cpu).is_err());
        Ok(())
    }

    /// Found reading the executor (issue 13): the links' busy times were kept relative to each
    /// epoch's start and never reset, so an epoch's first transfer waited for the previous
    /// epoch's last one as if the link were still busy.
    #[test]
    fn an_emulated_link_busy_in_one_epoch_is_free_in_the_next() -> candle_core::Result<()> {
        let names = vec!["dev0".to_string(), "dev1".to_string()];
        let link = |from, to| crate::network::Link {
            from,
            to,
            bandwidth_bytes_per_s: 1e6,
            latency_ns: 0,
        };
        let network = Network::build(names, vec![], vec![link(0, 1), link(1, 0)])
            .expect("two linked devices");
        let links = Links {
            network: &network,
            placement: &PLACEMENT[..2],
            emulate: true,
        };
        let mut ranks = ChannelTransport::mesh(2, links, Arc::new(AtomicBool::new(false)));
        let tag = Tag {
            payload: Payload::Activation,
            to: Op::forward(0, 1),
            from_chunk: 0,
            from_stage: 0,
        };
        // 4 KB at 1 MB/s: the link is busy for about 4 ms of the first epoch.
        let tensor = Tensor::zeros(1000, candle_core::DType::F32, &Device::Cpu)?;
        let first = Instant::now();
        let spans = ranks[0].send(1, tag, &tensor, first)?;
        assert!(spans[0].end_ns >= 4_000_000, "{spans:?}");
        // The next epoch starts once the transfer is over: its transfer starts at once.
        std::thread::sleep(Duration::from_millis(6));
        let second = Instant::now();
        let spans = ranks[0].send(1, tag, &tensor, second)?;
        assert!(spans[0].start_ns < 1_000_000, "{spans:?}");
        Ok(())
    }
}
