//! A min-priority event queue keyed by `(time, sequence)`, so same-time events pop FIFO.
//!
//! Each entry is one `u128`: time in the high 64 bits, a 32-bit insertion counter, and a 32-bit
//! payload. One integer comparison orders two events, and the heap moves 16 bytes per swap,
//! which matters at a million events per simulation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Events ordered by time, ties broken by insertion order, each carrying a `u32` payload.
pub struct EventQueue {
    heap: BinaryHeap<Reverse<u128>>,
    next_seq: u32,
}

impl EventQueue {
    /// An empty queue with room for `capacity` events.
    pub fn with_capacity(capacity: usize) -> Self {
        EventQueue {
            heap: BinaryHeap::with_capacity(capacity),
            next_seq: 0,
        }
    }

    /// Schedules `payload` at `time_ns`.
    pub fn push(&mut self, time_ns: u64, payload: u32) {
        let key =
            (u128::from(time_ns) << 64) | (u128::from(self.next_seq) << 32) | u128::from(payload);
        self.heap.push(Reverse(key));
        // A simulation pushes at most a few events per op and schedules hold at most 2^22 (`schedule::MAX_STAGE_CHUNKS`)
        // stage-chunk pairs, so the counter never wraps.
        self.next_seq += 1;
    }

    /// Removes and returns the earliest event's time and payload.
    pub fn pop(&mut self) -> Option<(u64, u32)> {
        self.heap
            .pop()
            .map(|Reverse(key)| ((key >> 64) as u64, key as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order_like_a_sorted_list() {
        // A deterministic scramble of pushes interleaved with pops, against a sorted reference.
        let mut queue = EventQueue::with_capacity(4);
        let mut reference: Vec<(u64, u32)> = Vec::new();
        let mut state = 12345u64;
        for step in 0..5000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if state >> 62 != 0 || reference.is_empty() {
                let time = (state >> 20) % 1000;
                queue.push(time, step);
                reference.push((time, step));
            } else {
                reference.sort();
                assert_eq!(queue.pop(), Some(reference.remove(0)));
            }
        }
        reference.sort();
        let rest: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(rest, reference);
    }

    #[test]
    fn ties_pop_in_insertion_order() {
        let mut queue = EventQueue::with_capacity(4);
        queue.push(5, 10);
        queue.push(3, 11);
        queue.push(5, 12);
        queue.push(3, 13);
        queue.push(u64::MAX >> 1, 14);
        let order: Vec<u32> = std::iter::from_fn(|| queue.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec![11, 13, 10, 12, 14]);
    }
}
