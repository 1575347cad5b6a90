//! The link network: directed links between devices (and switches) and the route each device
//! pair's transfers take.
//!
//! A physical link is full duplex: it appears as two directed links, so traffic one way never
//! slows traffic the other way. Routes minimise total latency, then hop count.

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
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Link indices, in order from sender to receiver; empty for a device to itself.
    pub links: Vec<usize>,
    /// Sum of the links' latencies.
    pub latency_ns: u64,
    /// The slowest link's bandwidth (infinite for an empty route).
    pub bandwidth_bytes_per_s: f64,
}

impl Route {
    /// The time to move `bytes` along this route with nothing else on it: latency plus
    /// serialisation at the bottleneck bandwidth, rounded up to whole nanoseconds; `u64::MAX`
    /// when that does not fit.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        if self.links.is_empty() {
            return 0;
        }
        let serialisation = (bytes as f64 * 1e9 / self.bandwidth_bytes_per_s).ceil();
        // `as` saturates a float too large for u64 (or NaN, to 0; bandwidths are positive).
        self.latency_ns.saturating_add(serialisation as u64)
    }
}

/// Two devices with no route between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Sending device.
    pub from: usize,
    /// Receiving device.
    pub to: usize,
}

/// Nodes, links and all device-to-device routes.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    node_names: Vec<String>,
    n_devices: usize,
    links: Vec<Link>,
    /// `routes[from * n_devices + to]`.
    routes: Vec<Route>,
}

impl Network {
    /// A network where every transfer is free and instantaneous (no links at all).
    pub fn free(device_names: Vec<String>) -> Self {
        let n_devices = device_names.len();
        let free = Route {
            links: Vec::new(),
            latency_ns: 0,
            bandwidth_bytes_per_s: f64::INFINITY,
        };
        Network {
            node_names: device_names,
            n_devices,
            links: Vec::new(),
            routes: vec![free; n_devices * n_devices],
        }
    }

    /// Builds the network over `device_names` plus `switch_names` and routes every device pair.
    ///
    /// # Returns
    /// The network, or every device pair that has no route.
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
                    Some(path) => routes.push(Route {
                        latency_ns: path.iter().map(|&l| links[l].latency_ns).sum(),
                        bandwidth_bytes_per_s: path
                            .iter()
                            .map(|&l| links[l].bandwidth_bytes_per_s)
                            .fold(f64::INFINITY, f64::min),
                        links: path,
                    }),
                    None => {
                        unreachable.push(Unreachable { from, to });
                        routes.push(Route {
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
            routes,
        })
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

    /// The route from one device to another.
    pub fn route(&self, from: usize, to: usize) -> &Route {
        &self.routes[from * self.n_devices + to]
    }

    /// The same network with `extra_ns` more latency and `ns_per_byte` more time per byte on
    /// every route between two devices: what a hand-off costs beyond the links on the machine
    /// that measured it (a profile's wake-up and the receiver's copy).
    pub fn with_handoff(&self, extra_ns: u64, ns_per_byte: f64) -> Network {
        let mut network = self.clone();
        for route in network.routes.iter_mut().filter(|r| !r.links.is_empty()) {
            route.latency_ns += extra_ns;
            if ns_per_byte > 0.0 {
                route.bandwidth_bytes_per_s =
                    1.0 / (1.0 / route.bandwidth_bytes_per_s + ns_per_byte * 1e-9);
            }
        }
        network
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
