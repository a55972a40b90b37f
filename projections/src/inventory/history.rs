//! Inventory time travel: a device or service as it was at a log position, folded from its
//! `Device` / `Service` events ([`RecordHistory`]) up to that position.

use chrono::{DateTime, Utc};
use corral_domain::inventory::events::{
    DeviceEvent, DeviceRecord, RecordHistory, ServiceEvent, ServiceRecord, DEVICE, SERVICE,
};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::{DeviceRow, ServiceRow};
use crate::log::decode_stored;
use crate::StoreError;

/// The events of one record up to `position`, in sequence order, folded; with the time of
/// the last one.
async fn fold(
    conn: &mut PgConnection,
    aggregate: &str,
    id: &str,
    position: i64,
) -> Result<Option<(RecordHistory, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.event_type, e.event_version, e.payload, e.recorded_at
           FROM events e JOIN event_log l USING (global_position)
          WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND l.log_position <= $3
          ORDER BY e.sequence",
    )
    .bind(aggregate)
    .bind(id)
    .bind(position)
    .fetch_all(&mut *conn)
    .await?;
    let mut history = RecordHistory::default();
    let mut last = None;
    for row in &rows {
        let event_type: String = row.try_get("event_type")?;
        let event_version: String = row.try_get("event_version")?;
        let payload: Value = row.try_get("payload")?;
        if aggregate == DEVICE {
            let event: DeviceEvent =
                decode_stored(aggregate, id, &event_type, &event_version, &payload)?;
            history.apply_device(&event);
        } else {
            let event: ServiceEvent =
                decode_stored(aggregate, id, &event_type, &event_version, &payload)?;
            history.apply_service(&event);
        }
        last = Some(row.try_get("recorded_at")?);
    }
    Ok(last.map(|t| (history, t)))
}

/// The device `id` as it was at `position` (`None` when it did not exist then or was
/// removed). `updated_at` is the time of its last event at or before the position.
pub async fn device_at(
    conn: &mut PgConnection,
    id: &str,
    position: i64,
) -> Result<Option<DeviceRow>, StoreError> {
    let Some((history, at)) = fold(conn, DEVICE, id, position).await? else {
        return Ok(None);
    };
    if history.removed {
        return Ok(None);
    }
    Ok(history.decode::<DeviceRecord>().map(|r| DeviceRow {
        device: r.into_device(id.to_string()),
        updated_at: at,
    }))
}

/// The service `id` as it was at `position`, like [`device_at`].
pub async fn service_at(
    conn: &mut PgConnection,
    id: &str,
    position: i64,
) -> Result<Option<ServiceRow>, StoreError> {
    let Some((history, at)) = fold(conn, SERVICE, id, position).await? else {
        return Ok(None);
    };
    if history.removed {
        return Ok(None);
    }
    Ok(history.decode::<ServiceRecord>().map(|r| ServiceRow {
        service: r.into_service(id.to_string()),
        updated_at: at,
    }))
}
