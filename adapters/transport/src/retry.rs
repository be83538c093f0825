//! [`RetryPolicy`]: when a client retries, and the loop that does it
//! ([`RetryPolicy::run`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A failed attempt, as [`RetryPolicy::run`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failed<E> {
    /// The error, returned if no further attempt is made.
    pub error: E,
    /// Whether another attempt may be made (the peer guarantees this one
    /// did nothing).
    pub retry: bool,
    /// How long the peer asked to wait (`Retry-After`), instead of the
    /// backoff.
    pub after: Option<Duration>,
}

impl<E> Failed<E> {
    /// A failure that may be retried (`retry`) or not.
    pub fn new(error: E, retry: bool) -> Self {
        Self {
            error,
            retry,
            after: None,
        }
    }

    /// The same, waiting `after` (when given) before the next attempt.
    pub fn after(mut self, after: Option<Duration>) -> Self {
        self.after = after;
        self
    }
}

/// A setting [`RetryPolicy::validate`] refused: its name and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidSetting {
    /// The setting (`timeout`, `retry.max_total`, …).
    pub setting: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// When and how often a client retries a call (only where the peer
/// guarantees nothing was done: a connection that could not be made, a
/// throttled request), with exponential backoff and jitter, a bounded
/// number of attempts and a bounded total time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; doubled after each attempt.
    pub base_delay: Duration,
    /// The longest backoff (before jitter).
    pub max_delay: Duration,
    /// The time budget of one call, retries and waits included. For a send,
    /// it must stay below the relay's outbox grace period (60 s,
    /// `qdn_relay_core::OUTBOX_GRACE`); a retry that would not start before
    /// it runs out is not made.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            max_total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff before attempt `attempt + 1`: exponential, capped, with
    /// "equal jitter" (between half and all of it).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let d = exp.min(self.max_delay);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Checks the policy with a client's call timeouts: at least one
    /// attempt, timeouts longer than zero, one call's `timeout` within the
    /// budget, and the budget below `limit` (for a send, the relay's
    /// outbox grace period).
    pub fn validate(
        &self,
        timeout: Duration,
        connect_timeout: Duration,
        limit: Duration,
    ) -> Result<(), InvalidSetting> {
        let invalid = |setting, reason| Err(InvalidSetting { setting, reason });
        if timeout.is_zero() || connect_timeout.is_zero() {
            return invalid("timeout", "timeouts must be longer than zero");
        }
        if self.max_attempts == 0 {
            return invalid("retry.max_attempts", "at least one attempt is needed");
        }
        if self.max_total >= limit {
            return invalid(
                "retry.max_total",
                "a send must finish well within the relay's outbox grace period (60 s)",
            );
        }
        if timeout > self.max_total {
            return invalid(
                "timeout",
                "one call's timeout cannot exceed the send's total budget (retry.max_total)",
            );
        }
        Ok(())
    }

    /// Makes attempts until one succeeds, one fails for good (not
    /// [`Failed::retry`]), the attempts are used up, or the next one could
    /// not start (with a second to spare) before the budget
    /// (`max_total`) runs out; then returns the last error. Each attempt
    /// gets `timeout`, cut to what is left of the budget. Before each
    /// retry, `before_retry` is told the attempt number, the wait and the
    /// error (to log it).
    pub async fn run<T, E, F, Fut>(
        &self,
        timeout: Duration,
        mut attempt: F,
        mut before_retry: impl FnMut(u32, Duration, &E),
    ) -> Result<T, E>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Failed<E>>>,
    {
        let deadline = Instant::now() + self.max_total;
        let mut n = 0u32;
        loop {
            n += 1;
            let per_call = timeout.min(deadline.saturating_duration_since(Instant::now()));
            let failed = match attempt(per_call).await {
                Ok(t) => return Ok(t),
                Err(f) => f,
            };
            if !failed.retry || n >= self.max_attempts {
                return Err(failed.error);
            }
            let delay = failed.after.unwrap_or_else(|| self.backoff(n));
            if Instant::now() + delay + Duration::from_secs(1) > deadline {
                return Err(failed.error);
            }
            before_retry(n, delay, &failed.error);
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn run_retries_what_may_be_retried_within_the_budget() {
        let p = RetryPolicy {
            max_attempts: 5,
            max_total: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        // Succeeds on the third attempt.
        let calls = Cell::new(0);
        let mut retries = Vec::new();
        let out: Result<u32, &str> = p
            .run(
                Duration::from_secs(2),
                |t| {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        assert!(t <= Duration::from_secs(2));
                        if n < 3 {
                            Err(Failed::new("busy", true))
                        } else {
                            Ok(n)
                        }
                    }
                },
                |n, _, e| retries.push((n, *e)),
            )
            .await;
        assert_eq!(out, Ok(3));
        assert_eq!(retries, [(1, "busy"), (2, "busy")]);
        // A final failure is returned at once.
        calls.set(0);
        let out: Result<(), &str> = p
            .run(
                Duration::from_secs(2),
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err(Failed::new("refused", false)) }
                },
                |_, _, _| {},
            )
            .await;
        assert_eq!((out, calls.get()), (Err("refused"), 1));
        // Retry-After wins over the backoff, and an attempt that could not
        // start within the budget is not made.
        calls.set(0);
        let started = Instant::now();
        let out: Result<(), &str> = p
            .run(
                Duration::from_secs(2),
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err(Failed::new("later", true).after(Some(Duration::from_secs(4)))) }
                },
                |_, d, _| assert_eq!(d, Duration::from_secs(4)),
            )
            .await;
        // 0 s, 4 s, 8 s; a fourth at 12 s would pass the 10 s budget.
        assert_eq!((out, calls.get()), (Err("later"), 3));
        assert_eq!(started.elapsed(), Duration::from_secs(8));
    }

    #[test]
    fn validate_names_the_setting() {
        let p = RetryPolicy::default();
        let grace = Duration::from_secs(60);
        let s = Duration::from_secs(5);
        assert_eq!(p.validate(s, s, grace), Ok(()));
        let setting = |r: Result<(), InvalidSetting>| r.map_err(|e| e.setting);
        assert_eq!(
            setting(p.validate(Duration::ZERO, s, grace)),
            Err("timeout")
        );
        assert_eq!(
            setting(p.validate(Duration::from_secs(31), s, grace)),
            Err("timeout")
        );
        assert_eq!(
            setting(p.validate(s, s, Duration::from_secs(30))),
            Err("retry.max_total")
        );
        assert_eq!(
            setting(
                RetryPolicy {
                    max_attempts: 0,
                    ..p
                }
                .validate(s, s, grace)
            ),
            Err("retry.max_attempts")
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(125) && d1 <= Duration::from_millis(250));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(500) && d3 <= Duration::from_millis(1000));
            let d20 = p.backoff(20);
            assert!(d20 >= Duration::from_secs(2) && d20 <= Duration::from_secs(4));
        }
    }
}
