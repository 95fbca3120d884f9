//! The per-runtime event queue of post-and-drain.
//!
//! Runtime tasks *post* events (a completion, an output chunk, an exit); the caller's
//! thread *drains* them with `boxlite_runtime_drain`, and only there does user code run.
//! The queue is bounded: a producer that finds it full waits on an async notification,
//! so it yields its worker instead of blocking it. Drain takes the queued events out one
//! at a time, each under the lock and run after releasing it, so a callback may call back
//! into boxlite (even drain) without deadlock; and a drain nested in a callback runs the
//! events that come next, so delivery keeps the posting order (a whole batch taken at
//! once would let a nested drain run newer events before the batch's older ones). An
//! event dropped without running (the queue closed) drops what it carries, which frees
//! its payload.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Maximum number of buffered events before producer tasks wait.
pub const QUEUE_CAPACITY: usize = 4096;

/// One event: the callback call, with everything it needs, owned.
pub(crate) type Event = Box<dyn FnOnce() + Send>;

/// The queue was closed (the runtime was freed); the event was dropped.
#[derive(Debug)]
pub(crate) struct Closed;

#[derive(Default)]
struct Inner {
    events: VecDeque<Event>,
    closed: bool,
}

pub(crate) struct EventQueue {
    inner: Mutex<Inner>,
    /// Signalled when an event arrives or the queue closes (drainers wait on it).
    ready: Condvar,
    /// Signalled when room is made or the queue closes (producers wait on it).
    room: Notify,
    capacity: usize,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("EventQueue")
            .field("queued", &g.events.len())
            .field("closed", &g.closed)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            inner: Mutex::new(Inner::default()),
            ready: Condvar::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a thread panicked while holding it; the deque is
        // still consistent (no user code ever runs under it).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `ev`, waiting (without blocking the worker) while the queue is full.
    pub(crate) async fn post(&self, ev: Event) -> Result<(), Closed> {
        let mut ev = Some(ev);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a drain between the check and the await
            // is not missed.
            room.as_mut().enable();
            {
                let mut g = self.lock();
                if g.closed {
                    return Err(Closed);
                }
                if g.events.len() < self.capacity {
                    if let Some(ev) = ev.take() {
                        g.events.push_back(ev);
                    }
                    drop(g);
                    self.ready.notify_all();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Run the queued events on this thread: `None` waits for at least one, `Some(0)`
    /// only looks, `Some(d)` waits at most `d`. Runs at most as many as were queued when
    /// the wait ended (a producer faster than the callbacks cannot keep the caller here),
    /// fewer if a nested drain ran some. Returns how many ran.
    pub(crate) fn drain(&self, wait: Option<Duration>) -> usize {
        let limit = {
            let mut g = self.lock();
            let deadline = wait.map(|d| Instant::now() + d);
            while g.events.is_empty() && !g.closed {
                match deadline {
                    None => g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner()),
                    Some(end) => {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        g = self
                            .ready
                            .wait_timeout(g, end - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            }
            g.events.len()
        };
        let mut n = 0;
        while n < limit {
            // The guard is dropped at the end of the statement: the event runs unlocked.
            let Some(ev) = self.lock().events.pop_front() else {
                break;
            };
            self.room.notify_waiters();
            n += 1;
            // A panic in our half of an event is a bug; it must not unwind into C.
            let _ = catch_unwind(AssertUnwindSafe(ev));
        }
        n
    }

    /// Close the queue: waiting producers and drainers wake, later posts fail, and the
    /// events still queued are dropped here (freeing their payloads, calling nothing).
    pub(crate) fn close(&self) {
        let left: Vec<Event> = {
            let mut g = self.lock();
            g.closed = true;
            g.events.drain(..).collect()
        };
        self.ready.notify_all();
        self.room.notify_waiters();
        drop(left);
    }

    /// Whether [`close`](Self::close) ran: nothing posted now will ever be delivered.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter_event(c: &Arc<AtomicUsize>, i: usize, seen: &Arc<Mutex<Vec<usize>>>) -> Event {
        let c = c.clone();
        let seen = seen.clone();
        Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(i);
        })
    }

    /// A full queue makes its producer wait without blocking the worker: on a
    /// one-thread runtime, another task still runs while the producer waits, and the
    /// producer finishes once a drain makes room. Order is kept.
    #[test]
    fn a_full_queue_parks_the_producer_not_the_worker() {
        let q = Arc::new(EventQueue::new(2));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let other = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (q, ran, seen) = (q.clone(), ran.clone(), seen.clone());
            rt.spawn(async move {
                for i in 0..5 {
                    q.post(counter_event(&ran, i, &seen)).await.unwrap();
                }
            })
        };
        let bystander = {
            let other = other.clone();
            rt.spawn(async move {
                other.store(1, Ordering::SeqCst);
            })
        };
        rt.block_on(async {
            bystander.await.unwrap();
            tokio::task::yield_now().await;
        });
        // The producer is parked on a full queue; the other task ran all the same.
        assert_eq!(other.load(Ordering::SeqCst), 1);
        assert_eq!(q.len(), 2);
        assert!(!producer.is_finished());
        // Drain from another thread while the runtime keeps polling the producer.
        let drainer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while n < 5 {
                    n += q.drain(Some(Duration::from_millis(50)));
                }
                n
            })
        };
        rt.block_on(producer).unwrap();
        assert_eq!(drainer.join().unwrap(), 5);
        assert_eq!(ran.load(Ordering::SeqCst), 5);
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    /// Drain's three modes: 0 returns at once, a positive timeout returns after it
    /// with nothing, a negative one (None) waits for the next event.
    #[test]
    fn drain_polls_waits_or_blocks() {
        let q = Arc::new(EventQueue::new(8));
        assert_eq!(q.drain(Some(Duration::ZERO)), 0);
        let t = Instant::now();
        assert_eq!(q.drain(Some(Duration::from_millis(100))), 0);
        assert!(t.elapsed() >= Duration::from_millis(100));
        let poster = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(q.post(Box::new(|| {}))).unwrap();
            })
        };
        assert_eq!(q.drain(None), 1);
        poster.join().unwrap();
    }

    /// A drain nested in a callback runs the events queued next, in order, before the
    /// outer drain goes on: delivery keeps the posting order. Event 0 posts event 3 and
    /// drains while 1 and 2, queued before the outer drain began, have not run.
    #[test]
    fn a_nested_drain_keeps_the_posting_order() {
        let q = Arc::new(EventQueue::new(16));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let push = |i: usize| -> Event {
            let seen = seen.clone();
            Box::new(move || seen.lock().unwrap().push(i))
        };
        let post = |q: &EventQueue, ev: Event| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(q.post(ev)).unwrap();
        };
        let first: Event = {
            let (q, seen, last) = (q.clone(), seen.clone(), push(3));
            Box::new(move || {
                seen.lock().unwrap().push(0);
                post(&q, last);
                assert_eq!(q.drain(Some(Duration::ZERO)), 3);
            })
        };
        post(&q, first);
        post(&q, push(1));
        post(&q, push(2));
        assert_eq!(q.drain(Some(Duration::ZERO)), 1);
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3]);
    }

    /// Closing drops queued events without running them (their payloads are freed),
    /// wakes a waiting producer with an error, and later posts fail.
    #[test]
    fn close_frees_queued_payloads_and_wakes_producers() {
        struct Payload(Arc<AtomicUsize>);
        impl Drop for Payload {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let q = Arc::new(EventQueue::new(1));
        let dropped = Arc::new(AtomicUsize::new(0));
        let called = Arc::new(AtomicUsize::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let make = |d: &Arc<AtomicUsize>, c: &Arc<AtomicUsize>| -> Event {
            let p = Payload(d.clone());
            let c = c.clone();
            Box::new(move || {
                let _keep = &p;
                c.fetch_add(1, Ordering::SeqCst);
            })
        };
        rt.block_on(q.post(make(&dropped, &called))).unwrap();
        let waiting = {
            let q = q.clone();
            let ev = make(&dropped, &called);
            rt.spawn(async move { q.post(ev).await })
        };
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert!(rt.block_on(waiting).unwrap().is_err());
        assert!(rt.block_on(q.post(make(&dropped, &called))).is_err());
        assert_eq!(q.drain(Some(Duration::ZERO)), 0);
        assert_eq!(called.load(Ordering::SeqCst), 0);
        assert_eq!(dropped.load(Ordering::SeqCst), 3);
    }
}
