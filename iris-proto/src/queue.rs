//! Queues that give their memory back. A burst (a client subscribing to thousands of
//! topics in one read, a node joining every tree at once) can grow a machine's output
//! queue to many megabytes; a `VecDeque` keeps its largest buffer for good, so each node
//! would hold the most it ever queued. These helpers free a large emptied buffer.

use std::collections::VecDeque;

/// Capacity kept by an emptied queue: small queues keep their buffer, so that steady
/// traffic does not allocate on every drain.
const KEEP: usize = 64;

/// The front of `queue`; once it is empty, a buffer larger than [`KEEP`] is freed.
pub(crate) fn pop_front<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let front = queue.pop_front();
    if front.is_none() && queue.capacity() > KEEP {
        *queue = VecDeque::new();
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_queue_keeps_a_small_buffer_and_frees_a_large_one() {
        let mut q: VecDeque<u32> = (0..10).collect();
        let small = q.capacity();
        while pop_front(&mut q).is_some() {}
        assert_eq!(q.capacity(), small, "a small buffer stays");
        q.extend(0..10_000);
        assert_eq!(pop_front(&mut q), Some(0));
        assert!(q.capacity() >= 10_000, "kept while not empty");
        while pop_front(&mut q).is_some() {}
        assert_eq!(q.capacity(), 0, "an emptied large buffer is freed");
    }
}
