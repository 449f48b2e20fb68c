//! The retry policy, shared by producer and consumer.
//!
//! Three pieces, kept apart as in tower's retry module:
//! - the **decision** — [`RetryPolicy::max_attempts`]: may attempt `n` run?
//! - the **schedule** — [`Schedule`]: how long to wait before attempt `n`;
//! - the **execution** — [`retry`] runs an async operation with
//!   [`backon`](https://docs.rs/backon) and a [`Clock`]
//!   as its sleeper. The consumer engine runs its own loop instead, because it
//!   must persist the checkpoint around every attempt and resume the attempt
//!   count after a restart; it asks the same schedule for its waits. The
//!   producer never sleeps: it asks the schedule when the next try is due.
//!
//! `RetryPolicy` implements [`backon::BackoffBuilder`], so it can also drive
//! any `backon` retry of the user's own.

use std::time::Duration;

use crate::clock::Clock;

/// How long to wait between attempts.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// An explicit list: wait `waits[i]` before attempt `i + 2`, and the last
    /// value before every attempt after that. An empty list means no wait.
    Waits(Vec<Duration>),
    /// `multiplier * base^i` seconds before attempt `i + 2`, clamped to
    /// `[min, max]`; with `jitter`, a uniformly random value in `[d/2, d]`.
    Exponential {
        /// Seconds of the first wait before clamping.
        multiplier: f64,
        /// Growth factor per attempt.
        base: f64,
        /// Lower bound of a wait.
        min: Duration,
        /// Upper bound of a wait.
        max: Duration,
        /// Randomize each wait to spread out retries of many clients.
        jitter: bool,
    },
}

/// A retry policy: a [`Schedule`] and a maximum number of attempts.
///
/// ```
/// use std::time::Duration;
/// use unistream_core::retry::RetryPolicy;
///
/// // The producer's default: 1, 2, 4, 8, 15, 30, 60 s, then 60 s forever.
/// let p = RetryPolicy::unbounded_backoff_to_a_minute();
/// assert_eq!(p.delay_before(2), Duration::from_secs(1));
/// assert_eq!(p.delay_before(9), Duration::from_secs(60));
/// assert_eq!(p.delay_before(100), Duration::from_secs(60));
///
/// let p = RetryPolicy::exponential(1.0, 2.0, Duration::ZERO, Duration::from_secs(5))
///     .with_max_attempts(4);
/// let waits: Vec<_> = p.delays().collect();
/// assert_eq!(waits, [1, 2, 4].map(Duration::from_secs));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    schedule: Schedule,
    max_attempts: u32,
}

impl RetryPolicy {
    /// An explicit list of waits; `max_attempts` defaults to `waits.len() + 1`.
    pub fn waits(waits: impl IntoIterator<Item = Duration>) -> Self {
        let waits: Vec<Duration> = waits.into_iter().collect();
        let max_attempts = u32::try_from(waits.len()).unwrap_or(u32::MAX - 1) + 1;
        RetryPolicy {
            schedule: Schedule::Waits(waits),
            max_attempts,
        }
    }

    /// An exponential schedule (no jitter), 5 attempts by default.
    pub fn exponential(multiplier: f64, base: f64, min: Duration, max: Duration) -> Self {
        RetryPolicy {
            schedule: Schedule::Exponential {
                multiplier,
                base,
                min,
                max,
                jitter: false,
            },
            max_attempts: 5,
        }
    }

    /// Waits of 1, 2, 4, 8, 15, 30, 60 seconds, then 60 s for every attempt
    /// after, with no attempt limit: the [`ProducerConfig`] default (a
    /// producer never drops a record; the seed's producer schedule).
    ///
    /// [`ProducerConfig`]: crate::producer::ProducerConfig
    pub fn unbounded_backoff_to_a_minute() -> Self {
        RetryPolicy::waits([1, 2, 4, 8, 15, 30, 60].map(Duration::from_secs))
            .with_max_attempts(u32::MAX)
    }

    /// Sets the maximum number of attempts (at least 1). `u32::MAX` means
    /// "no limit" in practice.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Turns jitter on for an exponential schedule (no effect on a list).
    pub fn with_jitter(mut self) -> Self {
        if let Schedule::Exponential { jitter, .. } = &mut self.schedule {
            *jitter = true;
        }
        self
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The maximum number of attempts, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether attempt number `attempt` (1-based) may run.
    pub fn allows(&self, attempt: u32) -> bool {
        attempt <= self.max_attempts
    }

    /// How long to wait before attempt number `attempt` (1-based); zero for
    /// the first attempt.
    pub fn delay_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let i = (attempt - 2) as usize;
        match &self.schedule {
            Schedule::Waits(waits) => waits
                .get(i)
                .or(waits.last())
                .copied()
                .unwrap_or(Duration::ZERO),
            Schedule::Exponential {
                multiplier,
                base,
                min,
                max,
                jitter,
            } => {
                let exp = i32::try_from(i).unwrap_or(i32::MAX);
                let secs = multiplier * base.powi(exp);
                let d = if secs.is_finite() && secs >= 0.0 {
                    Duration::try_from_secs_f64(secs).unwrap_or(*max)
                } else {
                    *max
                };
                let d = d.clamp(*min, (*max).max(*min));
                if *jitter {
                    d.mul_f64(0.5 + fastrand::f64() / 2.0)
                } else {
                    d
                }
            }
        }
    }

    /// The waits between the attempts this policy allows (`max_attempts - 1`
    /// of them).
    pub fn delays(&self) -> Delays {
        Delays {
            policy: self.clone(),
            next_attempt: 2,
        }
    }
}

impl Default for RetryPolicy {
    /// The seed consumer's defaults: 3 attempts, waits of 1 s and 2 s.
    fn default() -> Self {
        RetryPolicy::waits([1, 2].map(Duration::from_secs))
    }
}

/// The iterator of waits of a [`RetryPolicy`]; a [`backon::Backoff`].
#[derive(Debug, Clone)]
pub struct Delays {
    policy: RetryPolicy,
    next_attempt: u32,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if !self.policy.allows(self.next_attempt) {
            return None;
        }
        let d = self.policy.delay_before(self.next_attempt);
        self.next_attempt = self.next_attempt.saturating_add(1);
        Some(d)
    }
}

impl backon::BackoffBuilder for RetryPolicy {
    type Backoff = Delays;

    fn build(self) -> Delays {
        self.delays()
    }
}

impl backon::BackoffBuilder for &RetryPolicy {
    type Backoff = Delays;

    fn build(self) -> Delays {
        self.delays()
    }
}

/// Runs `op` until it succeeds or `policy` gives up, waiting on `clock`
/// between attempts (so tests run in virtual time). `notify` sees every
/// failure that will be retried, with the wait before the next attempt.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use unistream_core::{clock::VirtualClock, retry::{retry, RetryPolicy}};
///
/// let clock = VirtualClock::default();
/// let policy = RetryPolicy::waits([Duration::from_secs(1), Duration::from_secs(2)]);
/// let mut calls = 0;
/// let result: Result<u32, String> = retry(&policy, &clock, || {
///     calls += 1;
///     let n = calls;
///     async move { if n < 3 { Err(format!("try {n} failed")) } else { Ok(n) } }
/// }, |_, _| {}).await;
/// assert_eq!(result, Ok(3));
/// assert_eq!(clock.total_slept(), Duration::from_secs(3));
/// # }
/// ```
///
/// # Errors
///
/// The last error of `op`, once the policy allows no more attempts.
pub fn retry<T, E, Fut, F, N>(
    policy: &RetryPolicy,
    clock: &(impl Clock + Clone),
    op: F,
    notify: N,
) -> impl std::future::Future<Output = Result<T, E>> + Send
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, E>> + Send,
    N: FnMut(&E, Duration) + Send,
    T: Send,
    E: Send,
{
    use backon::Retryable;
    let clock = clock.clone();
    op.retry(policy.clone())
        .sleep(move |d| clock.sleep(d))
        .notify(notify)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn waits_list_repeats_last_value() {
        let p = RetryPolicy::waits(secs(&[1, 2, 4])).with_max_attempts(6);
        assert_eq!(p.delays().collect::<Vec<_>>(), secs(&[1, 2, 4, 4, 4]));
        assert_eq!(p.delay_before(1), Duration::ZERO);
    }

    #[test]
    fn default_max_attempts_of_a_list_is_len_plus_one() {
        assert_eq!(RetryPolicy::waits(secs(&[1, 2, 4])).max_attempts(), 4);
        assert_eq!(RetryPolicy::waits([]).max_attempts(), 1);
    }

    #[test]
    fn exponential_is_clamped() {
        let p = RetryPolicy::exponential(0.5, 3.0, Duration::from_secs(1), Duration::from_secs(10))
            .with_max_attempts(6);
        let got: Vec<_> = p.delays().collect();
        assert_eq!(
            got,
            vec![
                Duration::from_secs(1),
                Duration::from_secs_f64(1.5),
                Duration::from_secs_f64(4.5),
                Duration::from_secs(10),
                Duration::from_secs(10)
            ]
        );
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        let p = RetryPolicy::exponential(8.0, 1.0, Duration::ZERO, Duration::from_secs(8))
            .with_jitter()
            .with_max_attempts(200);
        for d in p.delays() {
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    #[test]
    fn huge_exponents_saturate_at_max() {
        let p = RetryPolicy::exponential(1.0, 10.0, Duration::ZERO, Duration::from_secs(60));
        assert_eq!(p.delay_before(1000), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn retry_gives_up_after_max_attempts_in_virtual_time() {
        let clock = crate::clock::VirtualClock::default();
        let p = RetryPolicy::waits(secs(&[5, 10])).with_max_attempts(3);
        let mut calls = 0;
        let mut notified = Vec::new();
        let r: Result<(), u32> = retry(
            &p,
            &clock,
            || {
                calls += 1;
                let n = calls;
                async move { Err(n) }
            },
            |e, d| notified.push((*e, d)),
        )
        .await;
        assert_eq!(r, Err(3));
        assert_eq!(calls, 3);
        assert_eq!(
            notified,
            vec![(1, Duration::from_secs(5)), (2, Duration::from_secs(10))]
        );
        assert_eq!(clock.sleeps(), secs(&[5, 10]));
    }
}
