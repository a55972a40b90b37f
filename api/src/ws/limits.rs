//! How many websocket connections a process holds: those still waiting to authenticate, and
//! all of them. A slot is a guard, so a connection frees its slots however it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The websocket connections of one process (one per [`crate::state::AppState`]).
#[derive(Clone, Default)]
pub struct Connections {
    /// Upgraded, not yet authenticated.
    pending: Arc<AtomicUsize>,
    /// Open, authenticated or not.
    open: Arc<AtomicUsize>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `max_pending` connections are waiting to authenticate.
    Pending,
    /// `max_connections` connections are open.
    Open,
}

/// The slots a new connection holds: `pending` until it authenticates, `open` until it ends.
pub struct Admission {
    /// Freed when the connection authenticates (or ends).
    pub pending: Slot,
    /// Freed when the connection ends.
    pub open: Slot,
}

impl Connections {
    /// Takes a pending and an open slot, or neither.
    pub fn admit(&self, max_pending: usize, max_connections: usize) -> Result<Admission, Full> {
        let open = Slot::take(&self.open, max_connections).ok_or(Full::Open)?;
        let pending = Slot::take(&self.pending, max_pending).ok_or(Full::Pending)?;
        Ok(Admission { pending, open })
    }

    /// Connections waiting to authenticate now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// One counted connection; dropping it gives the slot back.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Counts one more unless `max` are counted already.
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(counter.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_when_dropped() {
        let connections = Connections::default();
        let first = connections.admit(2, 3).expect("first");
        let second = connections.admit(2, 3).expect("second");
        assert_eq!(connections.admit(2, 3).err(), Some(Full::Pending));
        assert_eq!((connections.pending(), connections.open()), (2, 2));
        // The first authenticates: its pending slot is freed, its open slot kept.
        let Admission {
            pending,
            open: _first_open,
        } = first;
        drop(pending);
        let third = connections.admit(2, 3).expect("third");
        assert_eq!(connections.admit(2, 3).err(), Some(Full::Open));
        assert_eq!((connections.pending(), connections.open()), (2, 3));
        drop(second);
        drop(third);
        assert_eq!((connections.pending(), connections.open()), (0, 1));
    }
}
