//! Collectives as their real steps: all-reduce, all-gather, reduce-scatter, broadcast and
//! all-to-all(v) over any group of network devices, each step one transfer on the links.
//!
//! A [`Plan`] is a dependency graph of steps. A step is a transfer of some bytes from one member
//! to another; it starts once its sender has contributed (the op feeding the collective ended
//! there) and every step it depends on has arrived, and it then queues on its route's links like
//! any hand-off (FIFO per direction, every hop held until it arrives), so collectives contend
//! with each other and with pipeline hand-offs. A member is done when it has contributed and
//! every step addressed to it has arrived.
//!
//! Algorithms, for P members and n bytes (split into P chunks to the byte: chunk j is
//! `floor(n(j+1)/P) - floor(nj/P)`):
//! - **ring** (all-reduce, reduce-scatter, all-gather): member i sends to member i+1 in rounds;
//!   at round k it forwards chunk `(i - k) mod P`, which it received (and reduced) in round
//!   k - 1. All-reduce is 2(P-1) rounds (reduce-scatter, then all-gather), the others P-1. On a
//!   uniform ring with bandwidth B and latency a an all-reduce takes `2(P-1)/P n/B + 2(P-1)a`.
//! - **tree** (all-reduce, broadcast): a binary tree in member order (member m's parent is
//!   `(m-1)/2`); an all-reduce reduces n bytes up the tree, then broadcasts the result down; a
//!   broadcast only goes down, from the root. Depth `floor(log2 P)` levels each way.
//! - **chain** (broadcast): root to the next member, and on, n bytes a step.
//! - **hierarchical** (all-reduce, as NCCL runs it across nodes): a ring reduce-scatter inside
//!   each machine, then for each local rank an all-reduce (ring or tree) of its chunk across the
//!   machines, then a ring all-gather inside each machine. It needs every machine to hold as many
//!   members; [`Algorithm::Auto`] falls back to a flat algorithm otherwise.
//! - **pairwise** (all-to-all(v)): every member sends every other its block, to member i+1
//!   first, then i+2, and on (the order NCCL's peer loop uses), one send after the other, so
//!   that in round r the members send to a shift by r of themselves: on a switch no two sends of
//!   a round share a port, and uniform blocks of b bytes take `(P-1)(a + b/B)`. (Sent all at
//!   once, transfers that hold every hop would fragment the ports' FIFO queues.)
//!
//! [`Algorithm::Auto`] picks, for an all-reduce, hierarchical when the group spans several
//! machines of a cluster, and otherwise (and for the across-machines phase) the one of ring and
//! tree with the smaller latency-bandwidth estimate on the group's slowest route (ring on a tie).

use super::queue::EventQueue;
use crate::network::{Network, Route};

/// Which collective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectiveKind {
    /// Every member ends with the element-wise sum of every member's n bytes.
    AllReduce,
    /// Every member ends with every member's n/P bytes (n is the gathered size).
    AllGather,
    /// Every member ends with its n/P bytes of the sum of every member's n bytes.
    ReduceScatter,
    /// Every member ends with the root's n bytes.
    Broadcast {
        /// The root's index among the members.
        root: usize,
    },
    /// Member i sends `blocks[i][j]` bytes to member j (all-to-all(v); n is not used).
    AllToAll {
        /// Bytes per (sender, receiver), by member index.
        blocks: Vec<Vec<u64>>,
    },
}

/// How a collective's steps are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ring (all-reduce, all-gather, reduce-scatter) or chain (broadcast).
    Ring,
    /// A binary tree (all-reduce, broadcast).
    Tree,
    /// Inside machines, across machines, inside machines (all-reduce only).
    Hierarchical,
    /// Chosen from the network and the group (see the module documentation).
    Auto,
}

/// One transfer of a collective, between member indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Sending member.
    pub from: u32,
    /// Receiving member.
    pub to: u32,
    /// Bytes carried.
    pub bytes: u64,
}

/// Why a collective cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The kind has no form for the algorithm.
    #[error("{kind} has no {algorithm} form")]
    Unsupported {
        /// The collective.
        kind: &'static str,
        /// The algorithm asked for.
        algorithm: &'static str,
    },
    /// The group or the arguments are malformed.
    #[error("{0}")]
    Shape(String),
}

/// A collective's steps and their dependencies over a group of network devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    members: Vec<usize>,
    steps: Vec<Step>,
    /// Per step: steps it waits for (CSR over `dep_starts`).
    dep_starts: Vec<u32>,
    deps: Vec<u32>,
    algorithm: Algorithm,
}

/// The largest group a collective may have: its steps (at most `2 p (p - 1)`) stay within
/// `u32`.
pub const MAX_MEMBERS: usize = 16_384;

impl Plan {
    /// Plans `kind` of `bytes` over `members` (network devices, in group order; no repeats).
    ///
    /// # Returns
    /// The plan, whose [`Plan::algorithm`] is the one used (never `Auto`), or why there is none.
    ///
    /// # Complexity
    /// O(steps): 2P(P-1) for a ring all-reduce, 2(P-1) for a tree, P(P-1) for an all-to-all.
    pub fn new(
        kind: &CollectiveKind,
        algorithm: Algorithm,
        members: Vec<usize>,
        bytes: u64,
        network: &Network,
    ) -> Result<Plan, PlanError> {
        let p = members.len();
        if p == 0 {
            return Err(PlanError::Shape(
                "a collective needs at least one member".into(),
            ));
        }
        // A ring all-reduce takes 2 p (p - 1) steps, counted in u32.
        if p > MAX_MEMBERS {
            return Err(PlanError::Shape(format!(
                "a collective of {p} members is more than the {MAX_MEMBERS} the simulator steps \
                 through"
            )));
        }
        let mut sorted = members.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(PlanError::Shape(
                "a device appears twice in the group".into(),
            ));
        }
        if let Some(&bad) = sorted.last().filter(|&&d| d >= network.n_devices()) {
            return Err(PlanError::Shape(format!(
                "device {bad} is not in the network of {} devices",
                network.n_devices()
            )));
        }
        let mut builder = Builder::new(p);
        let all: Vec<u32> = (0..p as u32).collect();
        let none: Vec<Vec<u32>> = vec![Vec::new(); p];
        let used = match (kind, algorithm) {
            (CollectiveKind::AllReduce, Algorithm::Auto) => {
                match machine_groups(network, &members) {
                    Some(groups) => {
                        hierarchical(&mut builder, &groups, bytes, network, &members);
                        Algorithm::Hierarchical
                    }
                    None => {
                        let chosen = flat_choice(network, &members, bytes);
                        all_reduce_flat(&mut builder, &all, bytes, chosen, &none);
                        chosen
                    }
                }
            }
            (CollectiveKind::AllReduce, Algorithm::Hierarchical) => {
                let groups = machine_groups(network, &members).ok_or_else(|| {
                    PlanError::Shape(
                        "a hierarchical all-reduce needs members on several machines of a \
                         cluster, as many on each"
                            .into(),
                    )
                })?;
                hierarchical(&mut builder, &groups, bytes, network, &members);
                Algorithm::Hierarchical
            }
            (CollectiveKind::AllReduce, a) => {
                all_reduce_flat(&mut builder, &all, bytes, a, &none);
                a
            }
            (CollectiveKind::ReduceScatter | CollectiveKind::AllGather, Algorithm::Ring)
            | (CollectiveKind::ReduceScatter | CollectiveKind::AllGather, Algorithm::Auto) => {
                let rounds = p.saturating_sub(1);
                builder.ring(
                    &all,
                    rounds,
                    |k, i| chunk(bytes, p, (i + p - k % p) % p),
                    &none,
                );
                Algorithm::Ring
            }
            (CollectiveKind::Broadcast { root }, a) => {
                if *root >= p {
                    return Err(PlanError::Shape(format!(
                        "broadcast root {root} is not one of the {p} members"
                    )));
                }
                // Members in order from the root.
                let order: Vec<u32> = (0..p).map(|i| ((root + i) % p) as u32).collect();
                match a {
                    Algorithm::Ring => {
                        builder.chain(&order, bytes);
                        Algorithm::Ring
                    }
                    Algorithm::Tree | Algorithm::Auto => {
                        builder.tree_down(&order, bytes, &none);
                        Algorithm::Tree
                    }
                    Algorithm::Hierarchical => {
                        return Err(PlanError::Unsupported {
                            kind: "a broadcast",
                            algorithm: "hierarchical",
                        })
                    }
                }
            }
            (CollectiveKind::AllToAll { blocks }, Algorithm::Auto | Algorithm::Ring) => {
                if blocks.len() != p || blocks.iter().any(|row| row.len() != p) {
                    return Err(PlanError::Shape(format!(
                        "an all-to-all over {p} members needs {p} x {p} blocks"
                    )));
                }
                for (i, row) in blocks.iter().enumerate() {
                    let mut previous: Vec<u32> = Vec::new();
                    for shift in 1..p {
                        let j = (i + shift) % p;
                        if row[j] > 0 {
                            let step = builder.step(i as u32, j as u32, row[j], &[&previous]);
                            previous = vec![step];
                        }
                    }
                }
                Algorithm::Ring
            }
            (kind, a) => {
                return Err(PlanError::Unsupported {
                    kind: kind_name(kind),
                    algorithm: algorithm_name(a),
                })
            }
        };
        Ok(builder.finish(members, used))
    }

    /// The members' network devices, in group order.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// Every step, in the order they were planned.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The steps `step` waits for.
    pub fn deps(&self, step: usize) -> &[u32] {
        &self.deps[self.dep_starts[step] as usize..self.dep_starts[step + 1] as usize]
    }

    /// The algorithm the plan follows.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Bytes each member sends, by member index.
    pub fn bytes_sent(&self) -> Vec<u64> {
        let mut sent = vec![0u64; self.members.len()];
        for step in &self.steps {
            sent[step.from as usize] += step.bytes;
        }
        sent
    }
}

/// A name for messages.
fn kind_name(kind: &CollectiveKind) -> &'static str {
    match kind {
        CollectiveKind::AllReduce => "an all-reduce",
        CollectiveKind::AllGather => "an all-gather",
        CollectiveKind::ReduceScatter => "a reduce-scatter",
        CollectiveKind::Broadcast { .. } => "a broadcast",
        CollectiveKind::AllToAll { .. } => "an all-to-all",
    }
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Ring => "ring",
        Algorithm::Tree => "tree",
        Algorithm::Hierarchical => "hierarchical",
        Algorithm::Auto => "automatic",
    }
}

/// Chunk `j` of `bytes` split into `parts`: `floor(bytes (j+1) / parts) - floor(bytes j / parts)`.
fn chunk(bytes: u64, parts: usize, j: usize) -> u64 {
    let (b, p) = (u128::from(bytes), parts as u128);
    ((b * (j as u128 + 1)) / p - (b * j as u128) / p) as u64
}

/// A flat all-reduce over `group` (member indices).
fn all_reduce_flat(
    builder: &mut Builder,
    group: &[u32],
    bytes: u64,
    algorithm: Algorithm,
    first: &[Vec<u32>],
) -> Vec<Vec<u32>> {
    let p = group.len();
    match algorithm {
        Algorithm::Tree => {
            let up = builder.tree_up(group, bytes, first);
            builder.tree_down(group, bytes, &up)
        }
        _ => builder.ring(
            group,
            2 * p.saturating_sub(1),
            |k, i| chunk(bytes, p, (i + 2 * p - k % (2 * p)) % p),
            first,
        ),
    }
}

/// Ring or tree for `bytes` over `members`, by the latency-bandwidth estimate on the slowest
/// route between consecutive members (ring on a tie).
fn flat_choice(network: &Network, members: &[usize], bytes: u64) -> Algorithm {
    let p = members.len();
    if p <= 2 {
        return Algorithm::Ring;
    }
    let (mut latency, mut bandwidth) = (0u64, f64::INFINITY);
    for i in 0..p {
        let route = network.route(members[i], members[(i + 1) % p]);
        latency = latency.max(route.latency_ns);
        bandwidth = bandwidth.min(route.bandwidth_bytes_per_s);
    }
    let (a, n) = (latency as f64, bytes as f64 * 1e9 / bandwidth);
    let rounds = 2.0 * (p as f64 - 1.0);
    let ring = rounds * a + rounds / p as f64 * n;
    let depth = 2.0 * (p as f64).log2().floor();
    let tree = depth * (a + n);
    if tree < ring {
        Algorithm::Tree
    } else {
        Algorithm::Ring
    }
}

/// The members grouped by machine (member indices, machines in order of first member), when
/// the group spans more than one machine of a cluster with as many members on each (and more
/// than one on some); `None` otherwise.
fn machine_groups(network: &Network, members: &[usize]) -> Option<Vec<Vec<u32>>> {
    network.cluster_shape()?;
    let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
    for (m, &device) in members.iter().enumerate() {
        let machine = network.machine_of(device);
        match groups.iter_mut().find(|(id, _)| *id == machine) {
            Some((_, group)) => group.push(m as u32),
            None => groups.push((machine, vec![m as u32])),
        }
    }
    let local = groups[0].1.len();
    (groups.len() > 1 && local > 1 && groups.iter().all(|(_, g)| g.len() == local))
        .then(|| groups.into_iter().map(|(_, g)| g).collect())
}

/// Ring reduce-scatter inside each machine, an all-reduce of each local rank's chunk across the
/// machines, ring all-gather inside each machine.
fn hierarchical(
    builder: &mut Builder,
    groups: &[Vec<u32>],
    bytes: u64,
    network: &Network,
    members: &[usize],
) {
    let local = groups[0].len();
    let none: Vec<Vec<u32>> = vec![Vec::new(); local];
    // Phase 1: after it, local rank i holds chunk (i + 1) mod L of the machine's sum.
    let mut after_rs: Vec<Vec<Vec<u32>>> = Vec::new();
    for group in groups {
        after_rs.push(builder.ring(
            group,
            local - 1,
            |k, i| chunk(bytes, local, (i + local - k % local) % local),
            &none,
        ));
    }
    // Phase 2: per local rank, its chunk across the machines.
    let mut after_ar: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); local]; groups.len()];
    for rank in 0..local {
        let across: Vec<u32> = groups.iter().map(|g| g[rank]).collect();
        let first: Vec<Vec<u32>> = after_rs.iter().map(|r| r[rank].clone()).collect();
        let share = chunk(bytes, local, (rank + 1) % local);
        let devices: Vec<usize> = across.iter().map(|&m| members[m as usize]).collect();
        let algorithm = flat_choice(network, &devices, share);
        let done = all_reduce_flat(builder, &across, share, algorithm, &first);
        for (machine, step) in done.into_iter().enumerate() {
            after_ar[machine][rank] = step;
        }
    }
    // Phase 3: local rank i starts with chunk (i + 1) mod L.
    for (group, first) in groups.iter().zip(&after_ar) {
        builder.ring(
            group,
            local - 1,
            |k, i| chunk(bytes, local, (i + 1 + local - k % local) % local),
            first,
        );
    }
}

/// Accumulates steps and their dependencies.
struct Builder {
    n_members: usize,
    steps: Vec<Step>,
    dep_starts: Vec<u32>,
    deps: Vec<u32>,
}

impl Builder {
    fn new(n_members: usize) -> Self {
        Builder {
            n_members,
            steps: Vec::new(),
            dep_starts: vec![0],
            deps: Vec::new(),
        }
    }

    fn step(&mut self, from: u32, to: u32, bytes: u64, deps: &[&[u32]]) -> u32 {
        debug_assert!((from as usize) < self.n_members && (to as usize) < self.n_members);
        self.steps.push(Step { from, to, bytes });
        for group in deps {
            self.deps.extend_from_slice(group);
        }
        self.dep_starts.push(self.deps.len() as u32);
        self.steps.len() as u32 - 1
    }

    /// `rounds` ring rounds over `group`: at round k, position i sends `bytes(k, i)` to position
    /// i + 1 after what it received at round k - 1 and after `first[i]`.
    ///
    /// # Returns
    /// Per position, the last step into it (`first[i]` when there are no rounds).
    fn ring(
        &mut self,
        group: &[u32],
        rounds: usize,
        bytes: impl Fn(usize, usize) -> u64,
        first: &[Vec<u32>],
    ) -> Vec<Vec<u32>> {
        let p = group.len();
        if p < 2 || rounds == 0 {
            return first.to_vec();
        }
        let mut previous: Vec<u32> = Vec::new();
        for k in 0..rounds {
            let mut current = Vec::with_capacity(p);
            for i in 0..p {
                let received: &[u32] = match previous.get((i + p - 1) % p) {
                    Some(step) => std::slice::from_ref(step),
                    None => &[],
                };
                let to = group[(i + 1) % p];
                current.push(self.step(group[i], to, bytes(k, i), &[received, &first[i]]));
            }
            previous = current;
        }
        // The step into position i is the one position i - 1 sent.
        (0..p).map(|i| vec![previous[(i + p - 1) % p]]).collect()
    }

    /// Reduce up a binary tree over `group` (position m's parent is (m - 1) / 2): each position
    /// sends `bytes` to its parent once its children's sends arrived and after `first[m]`.
    ///
    /// # Returns
    /// Per position, the steps that complete its part: for the root its children's sends into
    /// it (and `first[0]`), for the others their own send.
    fn tree_up(&mut self, group: &[u32], bytes: u64, first: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let p = group.len();
        let mut into: Vec<Vec<u32>> = vec![Vec::new(); p];
        let mut done = first.to_vec();
        // Children have larger positions, so the deepest first.
        for m in (1..p).rev() {
            let children = std::mem::take(&mut into[m]);
            let sent = self.step(group[m], group[(m - 1) / 2], bytes, &[&children, &first[m]]);
            into[(m - 1) / 2].push(sent);
            done[m] = vec![sent];
        }
        if p > 0 {
            done[0].extend(std::mem::take(&mut into[0]));
        }
        done
    }

    /// Broadcast down a binary tree over `group` from position 0: each parent sends `bytes` to
    /// each child once it has them (after `first[parent]`, or the send into it).
    fn tree_down(&mut self, group: &[u32], bytes: u64, first: &[Vec<u32>]) -> Vec<Vec<u32>> {
        let p = group.len();
        let mut has: Vec<Vec<u32>> = vec![Vec::new(); p];
        if p > 0 {
            has[0] = first[0].clone();
        }
        for m in 1..p {
            let parent = (m - 1) / 2;
            let sent = self.step(group[parent], group[m], bytes, &[&has[parent], &first[m]]);
            has[m] = vec![sent];
        }
        has
    }

    /// A chain from position 0: each position forwards `bytes` once they arrived.
    fn chain(&mut self, group: &[u32], bytes: u64) {
        let mut previous: Vec<u32> = Vec::new();
        for i in 1..group.len() {
            previous = vec![self.step(group[i - 1], group[i], bytes, &[&previous])];
        }
    }

    fn finish(self, members: Vec<usize>, algorithm: Algorithm) -> Plan {
        Plan {
            members,
            steps: self.steps,
            dep_starts: self.dep_starts,
            deps: self.deps,
            algorithm,
        }
    }
}

/// A plan's progress: which steps may start and which members are done, as contributions and
/// arrivals come in. The timing is the caller's (the engine's, or [`simulate`]'s).
#[derive(Debug, Clone)]
pub struct Progress {
    /// Per step: dependencies not yet arrived, plus one until its sender contributed.
    waiting: Vec<u32>,
    /// Per member: steps into it not yet arrived, plus one until it contributed.
    incoming: Vec<u32>,
    /// Per member: bytes received so far.
    received: Vec<u64>,
    /// Steps by sender (CSR), and each step's dependents (CSR).
    sends_start: Vec<u32>,
    sends: Vec<u32>,
    dependents_start: Vec<u32>,
    dependents: Vec<u32>,
}

impl Progress {
    /// Nothing contributed, nothing sent.
    pub fn new(plan: &Plan) -> Self {
        let (p, n) = (plan.members.len(), plan.steps.len());
        let waiting: Vec<u32> = (0..n).map(|s| plan.deps(s).len() as u32 + 1).collect();
        let mut incoming = vec![1u32; p];
        let mut send_count = vec![0u32; p + 1];
        let mut dependent_count = vec![0u32; n + 1];
        for (s, step) in plan.steps.iter().enumerate() {
            incoming[step.to as usize] += 1;
            send_count[step.from as usize + 1] += 1;
            for &d in plan.deps(s) {
                dependent_count[d as usize + 1] += 1;
            }
        }
        let prefix = |counts: &mut Vec<u32>| {
            for i in 1..counts.len() {
                counts[i] += counts[i - 1];
            }
        };
        prefix(&mut send_count);
        prefix(&mut dependent_count);
        let mut sends = vec![0u32; n];
        let mut dependents = vec![0u32; plan.deps.len()];
        let (mut send_fill, mut dep_fill) = (send_count.clone(), dependent_count.clone());
        for (s, step) in plan.steps.iter().enumerate() {
            let slot = &mut send_fill[step.from as usize];
            sends[*slot as usize] = s as u32;
            *slot += 1;
            for &d in plan.deps(s) {
                let slot = &mut dep_fill[d as usize];
                dependents[*slot as usize] = s as u32;
                *slot += 1;
            }
        }
        Progress {
            waiting,
            incoming,
            received: vec![0; p],
            sends_start: send_count,
            sends,
            dependents_start: dependent_count,
            dependents,
        }
    }

    /// Member `member` contributed: pushes the steps that may now start onto `start`, and the
    /// member onto `done` if it is done.
    pub fn contribute(&mut self, member: usize, start: &mut Vec<u32>, done: &mut Vec<u32>) {
        let range = self.sends_start[member] as usize..self.sends_start[member + 1] as usize;
        for i in range {
            let s = self.sends[i];
            self.unblock(s, start);
        }
        self.arrive_at(member, done);
    }

    /// Step `step` of `plan` arrived: pushes the steps that may now start and the member if done.
    pub fn arrived(&mut self, plan: &Plan, step: u32, start: &mut Vec<u32>, done: &mut Vec<u32>) {
        let s = step as usize;
        let range = self.dependents_start[s] as usize..self.dependents_start[s + 1] as usize;
        for i in range {
            let next = self.dependents[i];
            self.unblock(next, start);
        }
        let to = plan.steps[s].to as usize;
        self.received[to] += plan.steps[s].bytes;
        self.arrive_at(to, done);
    }

    /// Bytes member `member` has received.
    pub fn received(&self, member: usize) -> u64 {
        self.received[member]
    }

    fn unblock(&mut self, step: u32, start: &mut Vec<u32>) {
        let left = &mut self.waiting[step as usize];
        *left -= 1;
        if *left == 0 {
            start.push(step);
        }
    }

    fn arrive_at(&mut self, member: usize, done: &mut Vec<u32>) {
        let left = &mut self.incoming[member];
        *left -= 1;
        if *left == 0 {
            done.push(member as u32);
        }
    }
}

/// Puts a transfer of `bytes` requested at `now` on `route`'s links: it starts when every link
/// is free and holds them all until it arrives.
///
/// # Returns
/// Its start and arrival, in ns.
pub fn reserve(route: &Route<'_>, link_free: &mut [u64], now: u64, bytes: u64) -> (u64, u64) {
    let start = route
        .links
        .iter()
        .map(|&l| link_free[l])
        .fold(now, u64::max);
    let end = start.saturating_add(route.transfer_ns(bytes));
    for &link in route.links.iter() {
        link_free[link] = end;
    }
    (start, end)
}

/// What [`simulate`] found for one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Per member, when it was done, in ns.
    pub done_ns: Vec<u64>,
    /// Per member, bytes it sent.
    pub sent_bytes: Vec<u64>,
}

/// Runs plans alone on `network` (nothing else on the links), each member of plan i
/// contributing at `ready_ns[i][member]`, with the engine's link rule.
///
/// # Complexity
/// O(S log S) in the steps of all plans.
pub fn simulate(network: &Network, plans: &[(&Plan, Vec<u64>)]) -> Vec<Outcome> {
    let mut link_free = vec![0u64; network.links().len()];
    let mut queue = EventQueue::with_capacity(16);
    let mut progress: Vec<Progress> = plans.iter().map(|(plan, _)| Progress::new(plan)).collect();
    let mut outcomes: Vec<Outcome> = plans
        .iter()
        .map(|(plan, _)| Outcome {
            done_ns: vec![u64::MAX; plan.members.len()],
            sent_bytes: vec![0; plan.members.len()],
        })
        .collect();
    // Events: (plan, member or step, which) packed in a slab indexed by the queue's payload.
    let mut events: Vec<(u32, u32, bool)> = Vec::new();
    for (i, (_, ready)) in plans.iter().enumerate() {
        for (member, &at) in ready.iter().enumerate() {
            events.push((i as u32, member as u32, false));
            queue.push(at, events.len() as u32 - 1);
        }
    }
    let (mut start, mut done) = (Vec::new(), Vec::new());
    while let Some((now, code)) = queue.pop() {
        let (i, index, is_step) = events[code as usize];
        let (plan, _) = plans[i as usize];
        if is_step {
            progress[i as usize].arrived(plan, index, &mut start, &mut done);
        } else {
            progress[i as usize].contribute(index as usize, &mut start, &mut done);
        }
        for member in done.drain(..) {
            outcomes[i as usize].done_ns[member as usize] = now;
        }
        for step in std::mem::take(&mut start) {
            let s = plan.steps[step as usize];
            let route = network.route(plan.members[s.from as usize], plan.members[s.to as usize]);
            let (_, end) = reserve(&route, &mut link_free, now, s.bytes);
            outcomes[i as usize].sent_bytes[s.from as usize] += s.bytes;
            events.push((i, step, true));
            queue.push(end, events.len() as u32 - 1);
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_add_up_and_differ_by_at_most_one_byte() {
        for (bytes, parts) in [(10u64, 3usize), (7, 7), (3, 5), (1 << 40, 4096)] {
            let sizes: Vec<u64> = (0..parts).map(|j| chunk(bytes, parts, j)).collect();
            assert_eq!(sizes.iter().sum::<u64>(), bytes);
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn a_ring_all_reduce_sends_every_chunk_but_one_per_phase() {
        let network = Network::free((0..5).map(|d| format!("d{d}")).collect());
        let plan = Plan::new(
            &CollectiveKind::AllReduce,
            Algorithm::Ring,
            (0..5).collect(),
            1000,
            &network,
        )
        .unwrap();
        assert_eq!(plan.steps().len(), 2 * 4 * 5);
        assert_eq!(plan.bytes_sent(), vec![2 * 4 * 200; 5]);
    }
}
