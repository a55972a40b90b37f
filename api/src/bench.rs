//! `corral bench`: benchmarks beside same-run baselines.

use clap::Args;

use corral_api::runtime::BoxError;

/// Benchmark options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Scale factor for data sizes (1.0 = the documented sizes).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

pub async fn run(_args: BenchArgs) -> Result<(), BoxError> {
    Err("benchmarks are not built yet".into())
}
