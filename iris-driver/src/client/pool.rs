//! Bounded handler execution: at most N deliveries run at once and at most M bytes wait.
//! This is the Go client's per-service and per-topic limit, enforced on the client side.

use super::spawner::Spawner;
use event_listener::Event;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How much work a handler may have at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries handled concurrently.
    pub concurrency: usize,
    /// Bytes of deliveries queued but not yet started; a delivery that would exceed this is
    /// dropped (a dropped request gets no reply, so its requester times out).
    pub memory: usize,
}

impl Default for Limits {
    /// The Go client's defaults: 4 x CPU tasks and 64 MiB.
    fn default() -> Limits {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Limits {
            concurrency: 4 * cpus,
            memory: 64 << 20,
        }
    }
}

/// A FIFO of deliveries drained by a fixed set of workers.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    state: Mutex<State<T>>,
    wake: Event,
    limits: Limits,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct State<T> {
    queue: VecDeque<(T, usize)>,
    bytes: usize,
    closed: bool,
}

impl<T: Send + 'static> Pool<T> {
    pub(crate) fn new(limits: Limits) -> Pool<T> {
        Pool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            wake: Event::new(),
            limits,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a delivery of `size` bytes; `false` if it was dropped for the memory cap.
    pub(crate) fn submit(&self, item: T, size: usize) -> bool {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.closed || s.bytes + size > self.limits.memory {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            s.bytes += size;
            s.queue.push_back((item, size));
        }
        self.wake.notify(1);
        true
    }

    /// Deliveries dropped so far for the memory cap.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops the workers once the queue is empty; later submissions are dropped.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.wake.notify(usize::MAX);
    }

    /// Starts the workers; each runs `work` on one delivery at a time.
    pub(crate) fn start<F, Fut>(self: &std::sync::Arc<Self>, spawner: Spawner, work: F)
    where
        F: Fn(T) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for _ in 0..self.limits.concurrency.max(1) {
            let pool = self.clone();
            let work = work.clone();
            spawner.spawn(async move {
                while let Some(item) = pool.next().await {
                    work(item).await;
                }
            });
        }
    }

    async fn next(&self) -> Option<T> {
        let mut notified = None;
        loop {
            {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((item, size)) = s.queue.pop_front() {
                    s.bytes -= size;
                    // Pass the baton: another worker may have been woken for this item.
                    if !s.queue.is_empty() {
                        self.wake.notify(1);
                    }
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            // Listen, then look once more before sleeping: a listener is an allocation,
            // made only by a worker that finds the queue empty.
            match notified.take() {
                Some(listener) => listener.await,
                None => notified = Some(self.wake.listen()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn memory_cap_drops_and_concurrency_is_bounded() {
        let pool = Arc::new(Pool::new(Limits {
            concurrency: 2,
            memory: 10,
        }));
        assert!(pool.submit(1u32, 6));
        assert!(pool.submit(2, 4));
        assert!(!pool.submit(3, 1), "over the byte cap");
        assert_eq!(pool.dropped(), 1);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Semaphore::new(0));
        let (r, p, d) = (running.clone(), peak.clone(), done.clone());
        let spawner = Spawner::new(
            |f| {
                tokio::spawn(f);
            },
            |d| Box::pin(tokio::time::sleep(d)),
        );
        pool.start(spawner, move |_item: u32| {
            let (r, p, d) = (r.clone(), p.clone(), d.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                r.fetch_sub(1, Ordering::SeqCst);
                d.add_permits(1);
            }
        });
        for i in 0..8 {
            while !pool.submit(10 + i, 1) {
                tokio::task::yield_now().await;
            }
        }
        let _ = done.acquire_many(10).await.unwrap();
        assert!(peak.load(Ordering::SeqCst) <= 2);
        pool.close();
    }
}
