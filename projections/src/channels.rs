//! Every PostgreSQL `NOTIFY` channel Corral uses, declared once.

/// Commits of events: wakes the projectors of other processes (coalesced, sent outside the
/// writing transaction).
pub const EVENTS: &str = "corral_events";
/// A projector stored its checkpoint (payload `name:transaction_id:global_position`): wakes
/// the read-your-writes waiters.
pub const CHECKPOINTS: &str = "corral_checkpoints";
/// The sequencer gave positions up to the payload: wakes the readers of the public log.
pub const LOG: &str = "corral_log";

/// Every channel.
pub const ALL: [&str; 3] = [EVENTS, CHECKPOINTS, LOG];

#[cfg(test)]
mod tests {
    #[test]
    fn every_channel_has_its_own_name() {
        let distinct: std::collections::HashSet<&str> = super::ALL.into_iter().collect();
        assert_eq!(distinct.len(), super::ALL.len());
    }
}
