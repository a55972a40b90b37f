//! Network sweeps, poller side: the protocol shared with the server ([`protocol`]), the
//! reference poller that runs sweep jobs ([`poller`]) and its probes ([`probe`]).

pub mod poller;
pub mod probe;
pub mod protocol;

pub use poller::{run, BoxError, PollerConfig, DEFAULT_HEARTBEAT_INTERVAL};
pub use protocol::{
    ensure_buckets, job_key, report_subject, HostResult, PollerHeartbeat, ReportKind, SweepJob,
    SweepNames, SweepReport,
};
