//! Waking a sleeping sweeper when a save creates an earlier deadline, and
//! telling a host's timer service about new deadlines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;

use crate::types::{DispatchId, Timestamp};

/// Lets one sweeper sleep until the earliest deadline in the store and be
/// woken early when a save sets an earlier one. Every [`crate::Relay`]
/// has one ([`crate::Relay::deadline_watch`]); the driver calls
/// [`DeadlineWatch::saved`] after every save that gives a dispatch a
/// deadline.
///
/// # Call order (one sweeper per relay)
///
/// 1. [`DeadlineWatch::arm`], *before* asking the store for its earliest
///    deadline: from here on, any save with a deadline wakes the sweeper,
///    so a save racing with the query is never missed.
/// 2. Ask the store ([`crate::Relay::next_deadline`]).
/// 3. [`DeadlineWatch::sleep_until`] with the time the sweeper will wake
///    at by itself: from here on, only a deadline before it wakes it.
/// 4. Wait for the earlier of that time and [`DeadlineWatch::woken`], then
///    sweep and start over.
///
/// A wake that comes while nobody waits is kept until the next
/// [`DeadlineWatch::woken`] (or cleared by the next `arm`, which is
/// followed by a fresh query anyway). Several sweepers waiting on one
/// watch would take each other's wakes: give each relay one sweeper.
#[derive(Debug, Default)]
pub struct DeadlineWatch {
    inner: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// When the sweeper wakes by itself; `None` while it is awake (every
    /// new deadline counts).
    until: Option<Timestamp>,
    /// A wake not yet taken.
    woken: bool,
    waker: Option<Waker>,
}

impl DeadlineWatch {
    /// A watch nobody waits on.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sweeper is about to read the earliest deadline: clears any wake
    /// taken into account by that read, and counts every deadline saved
    /// from now on.
    pub fn arm(&self) {
        let mut s = self.state();
        s.until = None;
        s.woken = false;
    }

    /// The sweeper will wake by itself at `t`: only a deadline saved
    /// before `t` wakes it earlier.
    pub fn sleep_until(&self, t: Timestamp) {
        self.state().until = Some(t);
    }

    /// A save gave a dispatch the deadline `at`: wakes the sweeper if it
    /// sleeps past it (or is between [`DeadlineWatch::arm`] and
    /// [`DeadlineWatch::sleep_until`]).
    pub fn saved(&self, at: Timestamp) {
        let waker = {
            let mut s = self.state();
            if s.until.is_some_and(|t| t <= at) {
                return;
            }
            s.woken = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether a wake is pending (for tests and logs).
    pub fn is_woken(&self) -> bool {
        self.state().woken
    }

    /// Resolves when a save sets a deadline earlier than the sweeper's
    /// wake-up time (at once if one did since the last [`DeadlineWatch::arm`]),
    /// and takes that wake.
    pub fn woken(&self) -> Woken<'_> {
        Woken { watch: self }
    }
}

/// The future of [`DeadlineWatch::woken`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Woken<'a> {
    watch: &'a DeadlineWatch,
}

impl Future for Woken<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.watch.state();
        if s.woken {
            s.woken = false;
            s.waker = None;
            Poll::Ready(())
        } else {
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
    }
}

/// Why a [`Timers`] port could not take a deadline.
#[derive(Debug, thiserror::Error)]
#[error("timer error: {0}")]
pub struct TimerError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A host's timer service, told about every new deadline (an SQS queue of
/// delayed messages on AWS Lambda, where no process sleeps until the
/// deadline).
///
/// # Contract
///
/// - `scheduled(id, at)` is called after a save that gave dispatch `id`
///   the earliest deadline `at`, when it differs from the one it had
///   before. It should arrange for the relay to be asked to fire `id` at
///   `at` (a sweep, or [`crate::Relay::fire`]).
/// - It is a hint: the driver logs its failure and goes on (the saved
///   deadline stays in the store's due index, where a slower safety-net
///   sweep finds it). Firing too early, too late or twice is harmless:
///   a deadline that moved on does nothing.
#[async_trait]
pub trait Timers: Send + Sync {
    /// Dispatch `id` is due at `at`.
    async fn scheduled(&self, id: DispatchId, at: Timestamp) -> Result<(), TimerError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(w: &DeadlineWatch, waker: &Waker) -> Poll<()> {
        let mut fut = w.woken();
        Pin::new(&mut fut).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn only_a_deadline_before_the_wake_up_time_wakes_the_sleeper() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let w = DeadlineWatch::new();
        w.arm();
        w.sleep_until(Timestamp::from_millis(1_000));
        assert!(poll(&w, &waker).is_pending());
        w.saved(Timestamp::from_millis(1_000));
        w.saved(Timestamp::from_millis(5_000));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "later deadlines wake nobody"
        );
        assert!(poll(&w, &waker).is_pending());
        w.saved(Timestamp::from_millis(999));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "an earlier one does");
        assert!(poll(&w, &waker).is_ready());
        assert!(poll(&w, &waker).is_pending(), "a wake is taken once");
    }

    #[test]
    fn a_save_between_arm_and_sleep_is_kept_for_the_next_wait() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let w = DeadlineWatch::new();
        w.arm();
        // The store query runs; a save lands meanwhile, even a late one.
        w.saved(Timestamp::from_millis(9_000));
        w.sleep_until(Timestamp::from_millis(1_000));
        assert!(w.is_woken());
        assert!(poll(&w, &waker).is_ready(), "the racing save is not lost");
        w.arm();
        assert!(!w.is_woken(), "arm clears what the next query will see");
    }
}
