//! Time, behind a trait so tests run in virtual time.
//!
//! The engines never call `Utc::now()` or `tokio::time::sleep` directly: they
//! ask a [`Clock`]. [`SystemClock`] is the real one; [`VirtualClock`] advances
//! instantly when slept on, so a test of a 60-second backoff takes
//! microseconds and can assert exactly how long the engine waited.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of wall-clock time and of (async) sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Completes after `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: `Utc::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: `sleep` moves the time forward at once and records the
/// wait. Clones share the same time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use unistream_core::clock::{Clock, VirtualClock};
///
/// let clock = VirtualClock::default();
/// let t0 = clock.now();
/// clock.sleep(Duration::from_secs(60)).await; // returns immediately
/// assert_eq!((clock.now() - t0).num_seconds(), 60);
/// assert_eq!(clock.sleeps(), vec![Duration::from_secs(60)]);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct VirtualClock {
    state: Arc<Mutex<VirtualState>>,
}

#[derive(Debug)]
struct VirtualState {
    now: DateTime<Utc>,
    sleeps: Vec<Duration>,
}

impl Default for VirtualClock {
    /// Starts at 2024-01-09T06:24:06Z, the seed's demo time.
    fn default() -> Self {
        let start = DateTime::from_timestamp(1_704_781_446, 0).unwrap_or_default();
        VirtualClock::new(start)
    }
}

impl VirtualClock {
    /// A virtual clock starting at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock {
            state: Arc::new(Mutex::new(VirtualState {
                now: start,
                sleeps: Vec::new(),
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut VirtualState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Moves the time forward without recording a sleep.
    pub fn advance(&self, duration: Duration) {
        self.with(|s| s.now += duration);
    }

    /// Every duration slept on this clock, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.with(|s| s.sleeps.clone())
    }

    /// The sum of all sleeps.
    pub fn total_slept(&self) -> Duration {
        self.with(|s| s.sleeps.iter().sum())
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        self.with(|s| s.now)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.with(|s| {
            s.now += duration;
            s.sleeps.push(duration);
        });
        // Yield so that other tasks (e.g. a shutdown trigger) get to run, as
        // they would during a real sleep.
        Box::pin(tokio::task::yield_now())
    }
}

/// A shared clock handle, as the engines hold it.
pub type SharedClock = Arc<dyn Clock>;

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(duration)
    }
}
