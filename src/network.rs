//! The link network: directed links between devices (and switches) and the route each device
//! pair's transfers take.
//!
//! A physical link is full duplex: it appears as two directed links, so traffic one way never
//! slows traffic the other way. Explicit links and the `full`, `ring` and `switch` kinds store a
//! route per device pair, minimising total latency, then hop count; a cluster stores none and
//! derives each route from its structure (node, NIC, leaf, spine), so it holds thousands of
//! devices in memory linear in their number.

use crate::graph::{shortest_routes, WeightedEdge};

/// A directed link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// Sending node (devices are nodes `0..n_devices`, switches follow).
    pub from: usize,
    /// Receiving node.
    pub to: usize,
    /// Bytes per second.
    pub bandwidth_bytes_per_s: f64,
    /// One-way latency in nanoseconds.
    pub latency_ns: u64,
}

/// The links one device pair's transfers cross, with the route's totals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route<'a> {
    /// Link indices, in order from sender to receiver; empty for a device to itself.
    pub links: Hops<'a>,
    /// Sum of the links' latencies.
    pub latency_ns: u64,
    /// The slowest link's bandwidth (infinite for an empty route).
    pub bandwidth_bytes_per_s: f64,
    /// A hand-off cost that runs alongside the links rather than after them (ns per message,
    /// ns per byte; [`Network::with_overlapping_handoff`]): a transfer then takes the longer of
    /// the two.
    pub alongside: Option<(u64, f64)>,
}

/// A route's link indices: borrowed from a stored table, or derived from a cluster's structure
/// (at most [`MAX_CLUSTER_HOPS`] links, held inline so that deriving one allocates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hops<'a> {
    /// A route stored for the pair.
    Stored(&'a [usize]),
    /// A route derived on demand: the first `len` entries.
    Derived {
        /// How many of `links` the route uses.
        len: u8,
        /// The links, in order.
        links: [usize; MAX_CLUSTER_HOPS],
    },
}

/// The most devices a cluster holds (routes are derived, so memory is linear in devices; the
/// bound keeps link and node counts, and device numbers in traces, far from any limit).
pub const MAX_CLUSTER_DEVICES: usize = 65_536;

/// The most links a cluster route crosses: NIC up, leaf up, spine down, NIC down.
pub const MAX_CLUSTER_HOPS: usize = 4;

impl std::ops::Deref for Hops<'_> {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        match self {
            Hops::Stored(links) => links,
            Hops::Derived { len, links } => &links[..*len as usize],
        }
    }
}

impl Route<'_> {
    /// The time to move `bytes` along this route with nothing else on it: latency plus
    /// serialisation at the bottleneck bandwidth, rounded up to whole nanoseconds, or the
    /// hand-off that runs [`Route::alongside`] them where that takes longer; `u64::MAX` when
    /// that does not fit.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        if self.links.is_empty() {
            return 0;
        }
        let serialisation = ceil_ns(bytes as f64 * 1e9 / self.bandwidth_bytes_per_s);
        let links = self.latency_ns.saturating_add(serialisation);
        match self.alongside {
            Some((fixed, per_byte)) => {
                links.max(fixed.saturating_add(ceil_ns(bytes as f64 * per_byte)))
            }
            None => links,
        }
    }
}

/// `x.ceil() as u64` (saturating; NaN and negatives to 0) without the call to the C library
/// that `f64::ceil` is on processors without SSE 4.1, which the simulator made per transfer.
fn ceil_ns(x: f64) -> u64 {
    // `as` truncates toward zero and saturates a float too large for u64.
    let whole = x as u64;
    if (whole as f64) < x {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// A route kept in a table: what [`Network::build`] found for one device pair.
#[derive(Debug, Clone, PartialEq)]
struct StoredRoute {
    links: Vec<usize>,
    latency_ns: u64,
    bandwidth_bytes_per_s: f64,
}

/// Two devices with no route between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Sending device.
    pub from: usize,
    /// Receiving device.
    pub to: usize,
}

/// One kind of link of a cluster, per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Bytes per second.
    pub bandwidth_bytes_per_s: f64,
    /// One-way latency in nanoseconds.
    pub latency_ns: u64,
}

/// The shape of a cluster: nodes of GPUs on a node switch, NICs into one switch tier (a leaf
/// joining every node) or two (leaves of `nodes_per_leaf` nodes under a spine).
///
/// Devices fill nodes in order (device d is GPU `d % gpus_per_node` of node `d / gpus_per_node`),
/// nodes fill leaves in order; the last node and the last leaf may be partly filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterShape {
    /// GPUs per node (at least 1).
    pub gpus_per_node: usize,
    /// NICs per node; divides `gpus_per_node`. GPU i of a node uses NIC
    /// `i / (gpus_per_node / nics_per_node)`: NIC i serves GPU i when there are as many (a
    /// rail-optimised node), consecutive GPUs share one when there are fewer.
    pub nics_per_node: usize,
    /// Nodes under each leaf switch of a two-tier network; `None`: one switch joins every node.
    pub nodes_per_leaf: Option<usize>,
    /// A GPU's link into its node's switch (NVLink, or PCIe).
    pub intra: LinkSpec,
    /// A NIC's link into its leaf, and each leaf port's uplink to the spine.
    pub inter: LinkSpec,
    /// A leaf's downlink capacity over its uplink capacity (at least 1): each uplink carries
    /// `inter`'s bandwidth divided by it.
    pub oversubscription: f64,
}

/// How routes are found.
#[derive(Debug, Clone, PartialEq)]
enum Routing {
    /// Every route is empty: transfers are free.
    Free,
    /// `routes[from * n_devices + to]`, found by shortest paths.
    Table(Vec<StoredRoute>),
    /// Derived from the cluster's structure on each call.
    Cluster(ClusterShape),
}

/// Nodes, links and the device-to-device routes: a table for explicit links and the small
/// topologies, or a cluster's structure from which each route is derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    node_names: Vec<String>,
    n_devices: usize,
    links: Vec<Link>,
    routing: Routing,
    /// Added to every non-empty route: latency in ns, and time per byte in ns
    /// ([`Network::with_handoff`]).
    handoff: (u64, f64),
    /// Whether the hand-off runs alongside the links rather than after them
    /// ([`Network::with_overlapping_handoff`]).
    handoff_alongside: bool,
}

impl Network {
    /// A network where every transfer is free and instantaneous (no links at all).
    pub fn free(device_names: Vec<String>) -> Self {
        let n_devices = device_names.len();
        Network {
            node_names: device_names,
            n_devices,
            links: Vec::new(),
            routing: Routing::Free,
            handoff: (0, 0.0),
            handoff_alongside: false,
        }
    }

    /// Builds the network over `device_names` plus `switch_names` and routes every device pair.
    ///
    /// # Returns
    /// The network, or every device pair that has no route.
    ///
    /// # Complexity
    /// One Dijkstra per device; a route stored per device pair (quadratic memory, which is why
    /// scenarios with explicit links or the `full`, `ring` and `switch` kinds hold at most
    /// `schedule::MAX_DEVICES` devices).
    pub fn build(
        device_names: Vec<String>,
        switch_names: Vec<String>,
        links: Vec<Link>,
    ) -> Result<Self, Vec<Unreachable>> {
        let n_devices = device_names.len();
        let mut node_names = device_names;
        node_names.extend(switch_names);
        // Latency dominates the cost; the +1 per hop prefers fewer hops among equal latencies and
        // keeps every cost positive.
        let edges: Vec<WeightedEdge> = links
            .iter()
            .map(|link| WeightedEdge {
                from: link.from,
                to: link.to,
                cost: link.latency_ns.saturating_mul(1024).saturating_add(1),
            })
            .collect();
        let devices: Vec<usize> = (0..n_devices).collect();
        let found = shortest_routes(node_names.len(), &edges, &devices, &devices);
        let mut routes = Vec::with_capacity(n_devices * n_devices);
        let mut unreachable = Vec::new();
        for (from, row) in found.into_iter().enumerate() {
            for (to, route) in row.into_iter().enumerate() {
                match route {
                    Some(path) => routes.push(StoredRoute {
                        latency_ns: path
                            .iter()
                            .fold(0u64, |sum, &l| sum.saturating_add(links[l].latency_ns)),
                        bandwidth_bytes_per_s: path
                            .iter()
                            .map(|&l| links[l].bandwidth_bytes_per_s)
                            .fold(f64::INFINITY, f64::min),
                        links: path,
                    }),
                    None => {
                        unreachable.push(Unreachable { from, to });
                        routes.push(StoredRoute {
                            links: Vec::new(),
                            latency_ns: 0,
                            bandwidth_bytes_per_s: 0.0,
                        });
                    }
                }
            }
        }
        if !unreachable.is_empty() {
            return Err(unreachable);
        }
        Ok(Network {
            node_names,
            n_devices,
            links,
            routing: Routing::Table(routes),
            handoff: (0, 0.0),
            handoff_alongside: false,
        })
    }

    /// Builds a cluster over `device_names` (see [`ClusterShape`] for the placement rule).
    ///
    /// Nodes after the devices: per node its switch (`nodeM.switch`) and NICs (`nodeM.nicK`),
    /// then the leaves (`leafL`) and, with two tiers, the spine (`spine`). Links, each full
    /// duplex: every GPU to its node's switch (`intra`); with more than one node, every NIC to
    /// its leaf (`inter`), and with two tiers, one uplink from each leaf port (each NIC under the
    /// leaf) to the spine (`inter`, its bandwidth divided by the oversubscription).
    ///
    /// Routes: within a node, GPU to node switch to GPU; between nodes, the sender's NIC up to
    /// its leaf, across the spine when the leaves differ (up the sender's port's uplink, down
    /// the receiver's), and down to the receiver's NIC. A GPU's own hop to its NIC is not a link
    /// of its own: the NIC's link is the narrower.
    ///
    /// # Complexity
    /// O(devices) time and memory; each route is derived in O(1) when asked for.
    pub fn cluster(device_names: Vec<String>, shape: ClusterShape) -> Self {
        let n_devices = device_names.len();
        let gpus = shape.gpus_per_node.max(1);
        let n_nodes = n_devices.div_ceil(gpus).max(1);
        let mut node_names = device_names;
        let mut links = Vec::with_capacity(6 * n_devices);
        let duplex = |links: &mut Vec<Link>, a: usize, b: usize, spec: LinkSpec| {
            for (from, to) in [(a, b), (b, a)] {
                links.push(Link {
                    from,
                    to,
                    bandwidth_bytes_per_s: spec.bandwidth_bytes_per_s,
                    latency_ns: spec.latency_ns,
                });
            }
        };
        let switch0 = node_names.len();
        for node in 0..n_nodes {
            node_names.push(format!("node{node}.switch"));
        }
        for device in 0..n_devices {
            duplex(&mut links, device, switch0 + device / gpus, shape.intra);
        }
        if n_nodes > 1 {
            let nics = shape.nics_per_node;
            let nic0 = node_names.len();
            for node in 0..n_nodes {
                for nic in 0..nics {
                    node_names.push(format!("node{node}.nic{nic}"));
                }
            }
            let per_leaf = shape.nodes_per_leaf.unwrap_or(n_nodes);
            let n_leaves = n_nodes.div_ceil(per_leaf);
            let leaf0 = node_names.len();
            for leaf in 0..n_leaves {
                node_names.push(format!("leaf{leaf}"));
            }
            for q in 0..n_nodes * nics {
                duplex(
                    &mut links,
                    nic0 + q,
                    leaf0 + q / nics / per_leaf,
                    shape.inter,
                );
            }
            if shape.nodes_per_leaf.is_some() && n_leaves > 1 {
                let spine = node_names.len();
                node_names.push("spine".to_string());
                let uplink = LinkSpec {
                    bandwidth_bytes_per_s: shape.inter.bandwidth_bytes_per_s
                        / shape.oversubscription,
                    latency_ns: shape.inter.latency_ns,
                };
                for q in 0..n_nodes * nics {
                    duplex(&mut links, leaf0 + q / nics / per_leaf, spine, uplink);
                }
            }
        }
        Network {
            node_names,
            n_devices,
            links,
            routing: Routing::Cluster(shape),
            handoff: (0, 0.0),
            handoff_alongside: false,
        }
    }

    /// Number of devices.
    pub fn n_devices(&self) -> usize {
        self.n_devices
    }

    /// All directed links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The name of a node (device or switch).
    pub fn node_name(&self, node: usize) -> &str {
        &self.node_names[node]
    }

    /// The cluster's shape, when the network is one.
    pub fn cluster_shape(&self) -> Option<&ClusterShape> {
        match &self.routing {
            Routing::Cluster(shape) => Some(shape),
            _ => None,
        }
    }

    /// The node (machine) a device sits in: its cluster node, or the device itself on a network
    /// that is not a cluster.
    pub fn machine_of(&self, device: usize) -> usize {
        match &self.routing {
            Routing::Cluster(shape) => device / shape.gpus_per_node.max(1),
            _ => device,
        }
    }

    /// The route from one device to another.
    pub fn route(&self, from: usize, to: usize) -> Route<'_> {
        let route = match &self.routing {
            Routing::Free => return empty_route(),
            Routing::Table(routes) => {
                let stored = &routes[from * self.n_devices + to];
                Route {
                    links: Hops::Stored(&stored.links),
                    latency_ns: stored.latency_ns,
                    bandwidth_bytes_per_s: stored.bandwidth_bytes_per_s,
                    alongside: None,
                }
            }
            Routing::Cluster(shape) => self.cluster_route(shape, from, to),
        };
        let (extra_ns, ns_per_byte) = self.handoff;
        if route.links.is_empty() || (extra_ns == 0 && ns_per_byte <= 0.0) {
            return route;
        }
        let mut route = route;
        if self.handoff_alongside {
            route.alongside = Some((extra_ns, ns_per_byte));
            return route;
        }
        route.latency_ns = route.latency_ns.saturating_add(extra_ns);
        if ns_per_byte > 0.0 {
            route.bandwidth_bytes_per_s =
                1.0 / (1.0 / route.bandwidth_bytes_per_s + ns_per_byte * 1e-9);
        }
        route
    }

    /// A cluster route, from the link numbering [`Network::cluster`] builds: GPU d's links are
    /// `2d` (up) and `2d + 1` (down); then NIC q's (q counting every node's NICs) at
    /// `2n + 2q` and `2n + 2q + 1`; then the uplink of leaf port q at `2n + 2Q + 2q` and one
    /// more, for Q NICs in all.
    fn cluster_route(&self, shape: &ClusterShape, from: usize, to: usize) -> Route<'_> {
        if from == to {
            return empty_route();
        }
        let gpus = shape.gpus_per_node;
        let (node_a, node_b) = (from / gpus, to / gpus);
        let mut links = [0usize; MAX_CLUSTER_HOPS];
        if node_a == node_b {
            links[0] = 2 * from;
            links[1] = 2 * to + 1;
            return Route {
                links: Hops::Derived { len: 2, links },
                latency_ns: shape.intra.latency_ns.saturating_mul(2),
                bandwidth_bytes_per_s: shape.intra.bandwidth_bytes_per_s,
                alongside: None,
            };
        }
        let n = self.n_devices;
        let nics = shape.nics_per_node;
        let n_nics = n.div_ceil(gpus) * nics;
        let nic_of = |device: usize| (device / gpus) * nics + (device % gpus) / (gpus / nics);
        let (qa, qb) = (nic_of(from), nic_of(to));
        let per_leaf = shape.nodes_per_leaf.unwrap_or(usize::MAX);
        let nic_base = 2 * n;
        links[0] = nic_base + 2 * qa;
        if node_a / per_leaf == node_b / per_leaf {
            links[1] = nic_base + 2 * qb + 1;
            return Route {
                links: Hops::Derived { len: 2, links },
                latency_ns: shape.inter.latency_ns.saturating_mul(2),
                bandwidth_bytes_per_s: shape.inter.bandwidth_bytes_per_s,
                alongside: None,
            };
        }
        let up_base = nic_base + 2 * n_nics;
        links[1] = up_base + 2 * qa;
        links[2] = up_base + 2 * qb + 1;
        links[3] = nic_base + 2 * qb + 1;
        Route {
            links: Hops::Derived { len: 4, links },
            latency_ns: shape.inter.latency_ns.saturating_mul(4),
            bandwidth_bytes_per_s: shape
                .inter
                .bandwidth_bytes_per_s
                .min(shape.inter.bandwidth_bytes_per_s / shape.oversubscription),
            alongside: None,
        }
    }

    /// The same network with `extra_ns` more latency and `ns_per_byte` more time per byte on
    /// every route between two devices: what a hand-off costs beyond the links on the machine
    /// that measured it (a profile's wake-up, or a message between processes).
    pub fn with_handoff(&self, extra_ns: u64, ns_per_byte: f64) -> Network {
        let mut network = self.clone();
        network.handoff = (
            network.handoff.0.saturating_add(extra_ns),
            network.handoff.1 + ns_per_byte.max(0.0),
        );
        network
    }

    /// As [`Network::with_handoff`], for a hand-off that runs alongside the links rather than
    /// after them: between processes with emulated links, a message travels while its receiver
    /// waits out the links' pacing, so a transfer takes the longer of the two, not their sum.
    pub fn with_overlapping_handoff(&self, extra_ns: u64, ns_per_byte: f64) -> Network {
        let mut network = self.with_handoff(extra_ns, ns_per_byte);
        network.handoff_alongside = true;
        network
    }
}

fn empty_route() -> Route<'static> {
    Route {
        links: Hops::Stored(&[]),
        latency_ns: 0,
        bandwidth_bytes_per_s: f64::INFINITY,
        alongside: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplex(a: usize, b: usize, gbps: f64, latency_ns: u64) -> [Link; 2] {
        let link = |from, to| Link {
            from,
            to,
            bandwidth_bytes_per_s: gbps * 1e9,
            latency_ns,
        };
        [link(a, b), link(b, a)]
    }

    #[test]
    fn ceil_ns_is_ceil_saturating() {
        let edges = [
            0.0,
            -0.0,
            -0.5,
            -3.0,
            0.25,
            1.0,
            1.0 + f64::EPSILON,
            2.5e9,
            4_503_599_627_370_495.5,
            9_007_199_254_740_993.0,
            1.8e19,
            u64::MAX as f64,
            2e19,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for x in edges {
            assert_eq!(ceil_ns(x), x.ceil() as u64, "{x}");
        }
        let mut state = 7u64;
        for _ in 0..10_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = f64::from_bits(state >> 2) % 1e15;
            assert_eq!(ceil_ns(x), x.ceil() as u64, "{x}");
        }
    }

    #[test]
    fn ring_routes_take_the_short_way() {
        let names = (0..4).map(|i| format!("d{i}")).collect();
        let links: Vec<Link> = [(0, 1), (1, 2), (2, 3), (3, 0)]
            .iter()
            .flat_map(|&(a, b)| duplex(a, b, 10.0, 1000))
            .collect();
        let net = Network::build(names, vec![], links).unwrap();
        assert_eq!(net.route(0, 3).links.len(), 1);
        assert_eq!(net.route(0, 2).links.len(), 2);
        assert_eq!(net.route(0, 2).latency_ns, 2000);
        // 1 MB at 10 GB/s is 100 us, plus two 1 us hops.
        assert_eq!(net.route(0, 2).transfer_ns(1_000_000), 102_000);
    }

    #[test]
    fn a_hand_off_adds_to_the_links_or_runs_alongside_them() {
        let names = (0..2).map(|i| format!("d{i}")).collect();
        // 1 MB at 10 GB/s: 100 us plus a 1 us hop.
        let net = Network::build(names, vec![], duplex(0, 1, 10.0, 1000).to_vec()).unwrap();
        let mb = 1_000_000;
        // A hand-off of 50 us + 0.01 ns/byte (10 us for the MB) after the links: 161 us (to a
        // nanosecond: the per-byte part is folded into the bandwidth).
        let after = net.with_handoff(50_000, 0.01);
        assert!((161_000..=161_001).contains(&after.route(0, 1).transfer_ns(mb)));
        // Alongside them, the longer of the two: the links' 101 us, or for a small message
        // the hand-off's 50 us against the links' 1 us.
        let alongside = net.with_overlapping_handoff(50_000, 0.01);
        assert_eq!(alongside.route(0, 1).transfer_ns(mb), 101_000);
        assert_eq!(alongside.route(0, 1).transfer_ns(100), 50_001);
        // A device to itself moves nothing either way.
        assert_eq!(alongside.route(0, 0).transfer_ns(mb), 0);
    }

    #[test]
    fn bottleneck_bandwidth_and_unreachable_pairs() {
        let names = (0..3).map(|i| format!("d{i}")).collect();
        let mut links = duplex(0, 1, 10.0, 0).to_vec();
        links.push(Link {
            from: 1,
            to: 2,
            bandwidth_bytes_per_s: 1e9,
            latency_ns: 0,
        });
        let missing = Network::build(names, vec![], links).unwrap_err();
        assert!(missing.contains(&Unreachable { from: 2, to: 0 }));
        assert!(!missing.contains(&Unreachable { from: 0, to: 2 }));
    }
}
