//! Link emulation and transfer spans, for every transport: the network a rank's messages cross,
//! and the links' clock that paces them. Each directed link carries one transfer at a time, first
//! come first served, for the route's latency plus the bytes at its bandwidth, as the simulator's
//! links do; without emulation a message arrives as it is sent. Either way a transfer's spans
//! record its bytes on every link of its route.

use std::time::Instant;

use super::Tag;
use crate::network::Network;
use crate::trace::{Span, SpanKind};

/// The network the ranks' transfers cross.
#[derive(Clone, Copy)]
pub struct Links<'a> {
    /// The links and routes.
    pub network: &'a Network,
    /// Rank (schedule device) -> network device.
    pub placement: &'a [usize],
    /// Pace transfers to the links' latency and bandwidth.
    pub emulate: bool,
}

/// When each directed link is free again, in ns after `origin`. Kept on one clock for the whole
/// run, so a transfer still on a link when an epoch ends holds the link into the next epoch and
/// no longer than that.
pub(super) struct LinkClock {
    free: Vec<u64>,
    origin: Instant,
}

impl LinkClock {
    /// Every link of `links` free from now on.
    pub(super) fn new(links: &Links<'_>) -> Self {
        LinkClock {
            free: vec![0; links.network.links().len()],
            origin: Instant::now(),
        }
    }

    /// Carries `bytes` under `tag` from rank `from` to rank `to`, sent now: the spans, one per
    /// hop of the route, and when the message arrives, both in ns from `epoch_start`.
    pub(super) fn carry(
        &mut self,
        links: &Links<'_>,
        (from, to): (usize, usize),
        tag: Tag,
        bytes: u64,
        epoch_start: Instant,
    ) -> (Vec<Span>, u64) {
        let (src, dst) = (links.placement[from], links.placement[to]);
        let now = epoch_start.elapsed().as_nanos() as u64;
        let route = links.network.route(src, dst);
        let (begin, end) = if links.emulate && src != dst {
            // The links' clock runs from the origin; spans count from the epoch's start.
            let offset = epoch_start
                .saturating_duration_since(self.origin)
                .as_nanos() as u64;
            let begin = route
                .links
                .iter()
                .map(|&l| self.free[l].saturating_sub(offset))
                .fold(now, u64::max);
            let end = begin + route.transfer_ns(bytes);
            for &l in route.links.iter() {
                self.free[l] = offset + end;
            }
            (begin, end)
        } else {
            (now, now)
        };
        let spans = route
            .links
            .iter()
            .enumerate()
            .map(|(hop, &link)| Span {
                kind: SpanKind::Transfer(tag.payload),
                hop: hop as u16,
                lane_index: link as u32,
                chunk: tag.to.chunk,
                stage: tag.to.stage,
                device: dst as u32,
                start_ns: begin,
                end_ns: end,
                bytes,
                requested_ns: now,
            })
            .collect();
        (spans, end)
    }
}
