//! Network sweeps, poller side: the protocol shared with the server ([`protocol`]), the
//! reference poller that runs sweep jobs ([`poller`]), its journal (`journal`) and its probes
//! ([`probe`]).

mod journal;
pub mod poller;
pub mod probe;
pub mod protocol;

pub use journal::DEFAULT_JOURNAL_MAX_AGE;
pub use poller::{run, BoxError, PollerConfig, DEFAULT_HEARTBEAT_INTERVAL};
pub use protocol::{
    ensure_buckets, job_key, report_subject, HostResult, PollerHeartbeat, ReportKind, SweepJob,
    SweepNames, SweepReport,
};
