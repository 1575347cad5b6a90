//! The discrete-event simulator: interprets a [`crate::schedule::Schedule`] with a cost model
//! and a network, and pushes what happens into a [`crate::trace::TraceSink`].
//!
//! **Ordering contract.** Time is integer nanoseconds. Events are processed in `(time, sequence)`
//! order, where the sequence number counts events in the order they were scheduled, so events at
//! the same instant are handled first-in first-out and a run is a pure function of its input.
//! Each device issues its list strictly in order; an op starts as soon as its device is free and
//! its inputs have arrived.
//!
//! **One pass.** Time order decides something only where two parties compete: senders for a
//! link, devices for a shared processor, members of a collective, ops slowing each other down.
//! Where none do (no shared processor, no contention, no all-reduce, and no directed link that
//! hand-offs from two network devices cross: a free network, a chain, a full mesh), the one
//! pass (`pass.rs`) computes the same times walking the schedule in dependency order, with no
//! event queue; everywhere else the event loop runs.
//! Both record the same spans and memory events (`tests/it/one_pass.rs`), in different orders.
//!
//! **A shared processor.** With `SimInput::compute_slots` an op also needs a slot of the one
//! processor all devices share: one slot for stages on one GPU, one stream each
//! (`executor.device_map: shared`); the cores over the threads per device for CPU workers whose
//! threads outnumber the cores (`executor.cores`). A device whose next op is ready while every
//! slot is busy waits first-in first-out, ahead of devices that become ready later.
//!
//! **Contention.** With `SimInput::contention` the devices compute on one machine whose ops
//! slow each other down while they run at once (its memory system and last-level cache are
//! shared): each running op advances at the speed the machine's measured slowdown for that many
//! ops at once gives it (processor sharing), so its end moves whenever an op starts or ends
//! beside it. A profile measures the slowdown (`calibrate`'s co-run benchmark).
//!
//! **Links.** A transfer over a route takes the route's latency plus its bytes over the slowest
//! link's bandwidth. A directed link carries one transfer at a time: a transfer starts when
//! every link of its route is free, holds them all until it arrives (cut-through), and transfers
//! that overlap queue in the order they were requested (FIFO). Opposite directions of a link
//! never contend.
//!
//! **Collectives.** A gate of weight gradients (graph parallelism's all-reduce) runs as a
//! [`collective`]: a device contributes when it has sent its last hand-off into the gate, each
//! step of the collective is a transfer under the link rule above, requested when its sender has
//! contributed and the steps it builds on have arrived, and the gate's op on a device is released
//! when every step into that device has arrived. A gate whose members share a network device
//! stays a plain gate (its hand-offs are transfers, and it opens when all have arrived).
//!
//! **Bulk-synchronous programs.** Graph parallelism's 1.5D, 2D and 3D products are not op
//! lists with hand-offs but phases of collectives, each followed by compute: [`bulk`] runs
//! them under the same link rule and on the same collectives, with the same trace vocabulary.
//!
//! **Memory.** Resident memory (parameters, gradients, optimizer state) is allocated at time 0.
//! A forward allocates its chunk's stash when it starts and the chunk's backward frees it when it
//! ends; a split backward's `I` frees all but what its `W` reads (`CostModel::weight_stash`,
//! counted as activations, with the output gradients `I` makes for it) and `W` frees that.
//! Every op holds its temporaries (`CostModel::transient`, counted as workspace) from its start
//! to its end. A received activation or gradient occupies a communication buffer on the receiver from arrival
//! until the op that consumes it ends; a collective's, the bytes the device received, from when
//! it is done until the released op ends.
//!
//! **Architecture Invariant:** `sim` never imports `exec` or candle.

pub mod bulk;
pub mod collective;
mod engine;
mod pass;
mod queue;

pub use engine::{
    simulate, simulate_events_into, simulate_free, simulate_into, takes_one_pass, Contention,
    SimError, SimInput,
};

use crate::network::Network;
use crate::trace::TraceLink;

/// The trace's lanes for `network`'s directed links, named by their ends.
fn trace_links(network: &Network) -> Vec<TraceLink> {
    network
        .links()
        .iter()
        .map(|link| TraceLink {
            from: network.node_name(link.from).to_string(),
            to: network.node_name(link.to).to_string(),
        })
        .collect()
}
