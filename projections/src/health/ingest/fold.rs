//! What a batch changes: its samples folded into per-entity buckets, and the change of each
//! entity bucket turned into the change of every group rollup that counts the entity. Pure:
//! the SQL (`write.rs`) reads and writes the rows, tested below without a database.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ServiceCheck, SysmonSample};
use crate::health::{bin_of, BucketSize, BINS};

/// An entity's bucket: (entity id, bucket size, bucket start).
pub(super) type BucketKey = (String, i32, DateTime<Utc>);
/// A group's rollup row: (group id, bucket size, bucket start).
pub(super) type GroupKey = (Uuid, i32, DateTime<Utc>);

/// Values are stored as `real`: the buckets fold the same rounded values.
pub(super) fn stored(x: f64) -> f32 {
    x as f32
}

/// One device's bucket, accumulated from a batch: samples, and per metric (cpu, mem, disk)
/// the sum and the maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct DeviceAcc {
    pub(super) samples: i32,
    pub(super) sums: [f64; 3],
    pub(super) maxes: [f32; 3],
}

/// One service's bucket, accumulated from a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ServiceAcc {
    pub(super) checks: i32,
    pub(super) up: i32,
    pub(super) down: i32,
    pub(super) latency_sum: f64,
    pub(super) latency_n: i32,
}

/// The change to one group rollup row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RollupDelta {
    pub(super) samples: i64,
    pub(super) devices: i32,
    pub(super) sums: [f64; 3],
    pub(super) maxes: [Option<f32>; 3],
    pub(super) bins: [[i32; BINS]; 3],
    pub(super) checks: i64,
    pub(super) up: i32,
    pub(super) down: i32,
}

impl Default for RollupDelta {
    fn default() -> Self {
        RollupDelta {
            samples: 0,
            devices: 0,
            sums: [0.0; 3],
            maxes: [None; 3],
            bins: [[0; BINS]; 3],
            checks: 0,
            up: 0,
            down: 0,
        }
    }
}

/// The samples folded into the device buckets of every size.
pub(super) fn device_buckets(valid: &[&SysmonSample]) -> BTreeMap<BucketKey, DeviceAcc> {
    let mut buckets: BTreeMap<BucketKey, DeviceAcc> = BTreeMap::new();
    for s in valid {
        let values = [
            stored(s.cpu_percent),
            stored(s.mem_percent),
            stored(s.disk_percent),
        ];
        for size in BucketSize::ALL {
            let acc = buckets
                .entry((s.device_id.clone(), size.column(), size.start_of(s.ts)))
                .or_default();
            acc.samples += 1;
            let first = acc.samples == 1;
            for ((sum, max), &v) in acc.sums.iter_mut().zip(&mut acc.maxes).zip(&values) {
                *sum += f64::from(v);
                *max = if first { v } else { max.max(v) };
            }
        }
    }
    buckets
}

/// The checks folded into the service buckets of every size.
pub(super) fn service_buckets(valid: &[&ServiceCheck]) -> BTreeMap<BucketKey, ServiceAcc> {
    let mut buckets: BTreeMap<BucketKey, ServiceAcc> = BTreeMap::new();
    for c in valid {
        for size in BucketSize::ALL {
            let acc = buckets
                .entry((c.service_id.clone(), size.column(), size.start_of(c.ts)))
                .or_default();
            acc.checks += 1;
            if c.available {
                acc.up += 1;
            } else {
                acc.down += 1;
            }
            if let Some(l) = c.latency_ms {
                acc.latency_sum += f64::from(stored(l));
                acc.latency_n += 1;
            }
        }
    }
    buckets
}

/// A device bucket after the batch's upsert, and as it was before (`None`: new).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DeviceBucket {
    pub(super) device: String,
    pub(super) size: i32,
    pub(super) start: DateTime<Utc>,
    pub(super) samples: i32,
    pub(super) sums: [f64; 3],
    pub(super) maxes: [f32; 3],
    pub(super) old_samples: Option<i32>,
    pub(super) old_sums: [Option<f64>; 3],
}

/// The rollup change of every group that counts a changed device: samples and sums by the
/// bucket's growth, one more reporting device for a new bucket, the maxima raised, and the
/// bucket's average moved from its old p95 bin to its new one.
pub(super) fn device_deltas(
    buckets: &[DeviceBucket],
    groups: &HashMap<String, Vec<Uuid>>,
) -> BTreeMap<GroupKey, RollupDelta> {
    let mut deltas: BTreeMap<GroupKey, RollupDelta> = BTreeMap::new();
    for b in buckets {
        let Some(device_groups) = groups.get(&b.device) else {
            continue;
        };
        for &group in device_groups {
            let d = deltas.entry((group, b.size, b.start)).or_default();
            d.samples += i64::from(b.samples - b.old_samples.unwrap_or(0));
            if b.old_samples.is_none() {
                d.devices += 1;
            }
            for m in 0..3 {
                d.sums[m] += b.sums[m] - b.old_sums[m].unwrap_or(0.0);
                d.maxes[m] = Some(d.maxes[m].map_or(b.maxes[m], |x| x.max(b.maxes[m])));
                if let (Some(n), Some(s)) = (b.old_samples, b.old_sums[m]) {
                    d.bins[m][bin_of(s / f64::from(n))] -= 1;
                }
                d.bins[m][bin_of(b.sums[m] / f64::from(b.samples))] += 1;
            }
        }
    }
    deltas
}

/// A service bucket after the batch's upsert, as it was before (`None`: new), and the checks
/// the batch added.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ServiceBucket {
    pub(super) service: String,
    pub(super) size: i32,
    pub(super) start: DateTime<Utc>,
    pub(super) up: i32,
    pub(super) down: i32,
    pub(super) old_up: Option<i32>,
    pub(super) old_down: Option<i32>,
    pub(super) added: i32,
}

/// Service status in a bucket: down when any check failed, up when all passed.
pub(super) fn status(up: i32, down: i32) -> Option<bool> {
    if down > 0 {
        Some(false)
    } else if up > 0 {
        Some(true)
    } else {
        None
    }
}

/// The rollup change of every group that counts a changed service: the checks added, and the
/// service moved from its old status count (up or down) to its new one.
pub(super) fn service_deltas(
    buckets: &[ServiceBucket],
    groups: &HashMap<String, Vec<Uuid>>,
) -> BTreeMap<GroupKey, RollupDelta> {
    let mut deltas: BTreeMap<GroupKey, RollupDelta> = BTreeMap::new();
    for b in buckets {
        let Some(service_groups) = groups.get(&b.service) else {
            continue;
        };
        let new = status(b.up, b.down);
        let old = status(b.old_up.unwrap_or(0), b.old_down.unwrap_or(0));
        for &group in service_groups {
            let d = deltas.entry((group, b.size, b.start)).or_default();
            d.checks += i64::from(b.added);
            match old {
                Some(true) => d.up -= 1,
                Some(false) => d.down -= 1,
                None => {}
            }
            match new {
                Some(true) => d.up += 1,
                Some(false) => d.down += 1,
                None => {}
            }
        }
    }
    deltas
}

#[cfg(test)]
mod tests;
