//! The dead letters of one batch run, by how far their exhaustion is from
//! the store.
//!
//! A record goes to the dead-letter queue only once its exhaustion (or, for
//! an undecodable record, its exhausted tracker) is durable: after a crash
//! the checkpoint then says "exhausted", and the letter is sent again rather
//! than the record retried past `max_attempts`. So each exhausted record at
//! its lane's front is in exactly one of three states:
//!
//! ```text
//! exhausted ──► Unsaved ──(a write starts)──► InWrite ──(it returns)──► Ready ──► sent
//!                  └──────(a write awaited in place)─────────────────────┘
//! ```

/// Exhausted records at their lane's front, by state (each index in one
/// list at most; the engine moves them, oldest first).
#[derive(Debug, Default)]
pub(super) struct Letters {
    /// Exhaustion changed in memory, not yet in any write.
    unsaved: Vec<usize>,
    /// Exhaustion carried by the write in flight.
    in_write: Vec<usize>,
    /// Exhaustion durable: the letter may be sent.
    ready: Vec<usize>,
}

impl Letters {
    /// Record `i` is exhausted, and the store does not know it yet.
    #[inline]
    pub(super) fn unsaved(&mut self, i: usize) {
        self.unsaved.push(i);
    }

    /// Record `i` is exhausted, and the store already says so (a restart).
    #[inline]
    pub(super) fn ready(&mut self, i: usize) {
        self.ready.push(i);
    }

    /// A write that carries every unsaved exhaustion started (and runs
    /// while the engine goes on).
    #[inline]
    pub(super) fn write_started(&mut self) {
        self.in_write.append(&mut self.unsaved);
    }

    /// The write in flight returned: what it carried is durable.
    #[inline]
    pub(super) fn write_done(&mut self) {
        self.ready.append(&mut self.in_write);
    }

    /// A write awaited in place (no write was in flight) returned: every
    /// unsaved exhaustion is durable.
    #[inline]
    pub(super) fn saved_in_place(&mut self) {
        debug_assert!(self.in_write.is_empty());
        self.ready.append(&mut self.unsaved);
    }

    /// Whether an exhaustion waits for a write.
    #[inline]
    pub(super) fn any_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Whether a letter may be sent.
    #[inline]
    pub(super) fn any_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The letters that may be sent, taken (oldest first).
    #[inline]
    pub(super) fn take_ready(&mut self) -> std::vec::Drain<'_, usize> {
        self.ready.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::Letters;

    #[test]
    fn a_letter_is_ready_only_once_its_write_returned() {
        let mut l = Letters::default();
        l.unsaved(3);
        assert!(l.any_unsaved() && !l.any_ready());
        l.write_started();
        assert!(!l.any_unsaved() && !l.any_ready());
        l.unsaved(5); // exhausted while the write runs: the next write's
        l.write_done();
        assert_eq!(l.take_ready().collect::<Vec<_>>(), [3]);
        assert!(l.any_unsaved());
        l.saved_in_place();
        assert_eq!(l.take_ready().collect::<Vec<_>>(), [5]);
        assert!(!l.any_unsaved() && !l.any_ready());
    }

    #[test]
    fn a_durable_exhaustion_is_ready_at_once() {
        let mut l = Letters::default();
        l.ready(7);
        assert!(l.any_ready() && !l.any_unsaved());
        assert_eq!(l.take_ready().collect::<Vec<_>>(), [7]);
    }
}
