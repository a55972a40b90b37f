//! The large log the audit figures read: a measured group with a history, its members,
//! and padding up to the requested size, sequenced by the sequencer.

use std::time::Instant;

use corral_api::runtime::BoxError;
use corral_projections::group_tree::GroupTreeProjection;
use corral_projections::public_log;
use corral_projections::sequencer::Sequencer;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The device whose memberships the as-of figures ask for (a member of `child-0`).
pub(super) const MEASURED_DEVICE: &str = "m00042";

/// The large log: a measured group with 10 children of 1,000 members each and a history of
/// renames by one actor, 5,000 other groups and Membership events of theirs up to `events`,
/// sequenced with real hashes by the sequencer. Returns (measured group, head).
pub(super) async fn large_log(pool: &PgPool, events: usize) -> Result<(Uuid, i64), BoxError> {
    let mut conn = pool.acquire().await?;
    let root = corral_domain::group::GroupType::Device.root_id();
    let measured = Uuid::new_v4();
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                  event_version, payload, metadata) VALUES ($1, $2, $3, $4, '1', $5, $6)";
    let created = |parent: Uuid, name: &str| {
        json!({"GroupCreated": {"group_type": "DEVICE", "name": name, "parent_id": parent,
               "description": null, "metadata": {}, "is_system": false}})
    };
    let meta = |actor: &str, i: usize| {
        json!({"actor_subject": actor, "actor_role": "admin", "source": "api",
               "correlation_id": format!("bench-{i}"), "causation_id": format!("bench-{i}")})
    };
    let started = Instant::now();
    for (id, body) in [
        (root, created(root, "Inventory")),
        (measured, created(root, "Measured")),
    ] {
        let mut body = body;
        if id == root {
            body["GroupCreated"]["parent_id"] = Value::Null;
            body["GroupCreated"]["is_system"] = Value::Bool(true);
        }
        sqlx::query(insert)
            .bind("Group")
            .bind(id.to_string())
            .bind(1_i64)
            .bind("GroupCreated")
            .bind(body)
            .bind(meta("auditee", 0))
            .execute(&mut *conn)
            .await?;
    }
    for i in 0..100 {
        sqlx::query(insert)
            .bind("Group")
            .bind(measured.to_string())
            .bind(2 + i as i64)
            .bind("GroupRenamed")
            .bind(json!({"GroupRenamed": {"name": format!("Measured-{}", i + 1),
                         "previous_name": if i == 0 { "Measured".to_string() } else { format!("Measured-{i}") }}}))
            .bind(meta("auditee", i + 1))
            .execute(&mut *conn)
            .await?;
    }
    let ids: Vec<String> = (0..10_000).map(|i| format!("m{i:05}")).collect();
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT x, 'host-' || x, true FROM unnest($1::text[]) x",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    for c in 0..10 {
        let child = Uuid::new_v4();
        sqlx::query(insert)
            .bind("Group")
            .bind(child.to_string())
            .bind(1_i64)
            .bind("GroupCreated")
            .bind(created(measured, &format!("child-{c}")))
            .bind(meta("auditee", 200 + c))
            .execute(&mut *conn)
            .await?;
        sqlx::query(insert)
            .bind("Membership")
            .bind(child.to_string())
            .bind(1_i64)
            .bind("MembersAdded")
            .bind(
                json!({"MembersAdded": {"member_type": "DEVICE", "source": "STATIC",
                         "member_ids": ids[c * 1000..(c + 1) * 1000]}}),
            )
            .bind(meta("auditee", 300 + c))
            .execute(&mut *conn)
            .await?;
    }
    // The device whose history the as-of figures read: in child-0 from its MembersAdded
    // above, then removed and added back 40 times by hand.
    let child0: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'Group'
            AND payload -> 'GroupCreated' ->> 'name' = 'child-0'",
    )
    .fetch_one(&mut *conn)
    .await?;
    for round in 0..40usize {
        let (event_type, body) = if round % 2 == 0 {
            ("MembersRemoved", "MembersRemoved")
        } else {
            ("MembersAdded", "MembersAdded")
        };
        sqlx::query(insert)
            .bind("Membership")
            .bind(&child0)
            .bind(2 + round as i64)
            .bind(event_type)
            .bind(json!({ body: {"member_type": "DEVICE", "source": "STATIC",
                                 "member_ids": [MEASURED_DEVICE]}}))
            .bind(meta("auditee", 400 + round))
            .execute(&mut *conn)
            .await?;
    }
    // Padding, with the write-side triggers off (they only keep registries).
    let pad_groups = 5_000usize;
    let per_group = events.saturating_sub(pad_groups + 122) / pad_groups;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'Group', gen_random_uuid()::text, 1, 'GroupCreated', '1',
                jsonb_build_object('GroupCreated', jsonb_build_object('group_type', 'DEVICE',
                  'name', 'pad-' || i, 'parent_id', $1::text, 'description', null,
                  'metadata', '{}'::jsonb, 'is_system', false)),
                jsonb_build_object('actor_subject', 'pad', 'actor_role', 'admin',
                  'source', 'api', 'correlation_id', 'pad-' || i, 'causation_id', 'pad-' || i)
           FROM generate_series(1, $2) i",
    )
    .bind(root.to_string())
    .bind(pad_groups as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'Membership', g.aggregate_id, s, 'MembersAdded', '1',
                jsonb_build_object('MembersAdded', jsonb_build_object('member_type', 'DEVICE',
                  'source', 'STATIC', 'member_ids',
                  (SELECT jsonb_agg('pad-' || s || '-' || k) FROM generate_series(1, 10) k))),
                jsonb_build_object('actor_subject', 'pad', 'actor_role', 'operator',
                  'source', 'api', 'correlation_id', 'p', 'causation_id', 'p')
           FROM (SELECT aggregate_id FROM events WHERE aggregate_type = 'Group'
                    AND payload -> 'GroupCreated' ->> 'name' LIKE 'pad-%') g,
                generate_series(1, $1) s",
    )
    .bind(per_group as i32)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await?;
    drop(conn);
    eprintln!(
        "bench: audit: log written in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (n, secs) =
        crate::catch_up::catch_up(pool, &Sequencer, crate::catch_up::Driver::Projector).await?;
    eprintln!("bench: audit: sequenced {n} events in {secs:.1}s");
    let (n, secs) = crate::catch_up::catch_up(
        pool,
        &GroupTreeProjection,
        crate::catch_up::Driver::Projector,
    )
    .await?;
    eprintln!("bench: audit: group tree over {n} events in {secs:.1}s");
    // The membership read model, for the as-of figures' current-state baselines.
    let (n, secs) = crate::catch_up::catch_up(
        pool,
        &corral_projections::membership::MembershipProjection,
        crate::catch_up::Driver::Projector,
    )
    .await?;
    eprintln!("bench: audit: memberships over {n} events in {secs:.1}s");
    for table in ["events", "event_log", "devices", "member_events"] {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    let mut conn = pool.acquire().await?;
    let (head, _) = public_log::head(&mut conn).await?;
    Ok((measured, head))
}
