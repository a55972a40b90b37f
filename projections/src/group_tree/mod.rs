//! The group tree read model: one row per live group (with its path and depth) and a closure
//! table (ancestor, descendant, depth), kept by a catch-up projector.

mod fold;
pub mod read;

use std::collections::HashSet;

use async_trait::async_trait;
use corral_domain::group::GroupEvent;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

pub use fold::{Node, Patch, TreeFold};

use crate::log::EventRecord;
use crate::projection::{schema_ident, Projection};
use crate::StoreError;

/// Projector and checkpoint name.
pub const GROUP_TREE: &str = "group_tree";
/// The schema that serves queries.
pub const LIVE_SCHEMA: &str = "rm_group_tree";
/// Events per catch-up batch ([`Projection::batch_size`]).
pub const GROUP_TREE_BATCH_SIZE: i64 = 20_000;

/// Builds `groups` and `group_closure`.
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupTreeProjection;

#[async_trait]
impl Projection for GroupTreeProjection {
    fn name(&self) -> &'static str {
        GROUP_TREE
    }

    fn aggregate_types(&self) -> Vec<String> {
        vec!["Group".to_string()]
    }

    fn needs_metadata(&self) -> bool {
        false
    }

    /// Group events are small, and a batch writes one row per group however many of its
    /// events it holds: larger batches coalesce more of a backlog (see docs/benchmarks.md,
    /// "Where catch-up time goes").
    fn batch_size(&self) -> i64 {
        GROUP_TREE_BATCH_SIZE
    }

    fn live_schema(&self) -> Option<&'static str> {
        Some(LIVE_SCHEMA)
    }

    async fn create_tables(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let ddl = format!(
            "CREATE TABLE {s}.groups (
                id uuid PRIMARY KEY, group_type text NOT NULL, parent_id uuid, name text NOT NULL,
                description text, metadata jsonb NOT NULL DEFAULT '{{}}', is_system boolean NOT NULL,
                depth int NOT NULL, path text NOT NULL, version bigint NOT NULL,
                created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                -- lower(name), lower(path): the same case folding as group_registry's sibling
                -- check, stored with byte order so that keyset cursors compare as they sort
                name_key text COLLATE \"C\" NOT NULL, path_key text COLLATE \"C\" NOT NULL)
                WITH (fillfactor = 70);
             CREATE INDEX ON {s}.groups (parent_id, name_key, id);
             CREATE INDEX ON {s}.groups (group_type, path_key, id);
             CREATE TABLE {s}.group_closure (
                ancestor_id uuid NOT NULL, descendant_id uuid NOT NULL, depth int NOT NULL,
                PRIMARY KEY (ancestor_id, descendant_id));
             CREATE INDEX ON {s}.group_closure (descendant_id, depth);"
        );
        // One statement at a time (prepared statements cannot hold several): keep `;` out of
        // the comments above.
        for statement in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(statement).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[EventRecord],
    ) -> Result<(), StoreError> {
        let s = schema_ident(schema)?;
        let decoded = events
            .iter()
            .map(EventRecord::decode::<GroupEvent>)
            .collect::<Result<Vec<_>, _>>()?;
        let mut fold = load(conn, s, events, &decoded).await?;
        for (event, decoded) in events.iter().zip(decoded) {
            fold.apply_decoded(event, decoded)?;
        }
        write(conn, s, &fold).await
    }
}

/// Loads the rows a batch needs: groups it renames or moves (with their whole subtrees and
/// their parents) and the parents that creates and moves name. Creates, updates and deletes
/// need no row of their own. Ancestor lists are loaded only for the nodes new positions are
/// computed from (parents named by creates and moves, parents of renamed groups).
async fn load(
    conn: &mut PgConnection,
    s: &str,
    events: &[EventRecord],
    decoded: &[GroupEvent],
) -> Result<TreeFold, StoreError> {
    let mut ids = HashSet::new();
    let mut subtree_roots = HashSet::new();
    let mut anchors = HashSet::new();
    for (e, decoded) in events.iter().zip(decoded) {
        let (anchor, moves_subtree) = fold::anchors(decoded);
        if let Ok(id) = e.aggregate_id.parse::<Uuid>() {
            if !fold::applies_without_row(decoded) {
                ids.insert(id);
            }
            if moves_subtree {
                subtree_roots.insert(id);
            }
        }
        if let Some(p) = anchor {
            ids.insert(p);
            anchors.insert(p);
        }
    }
    let ids: Vec<Uuid> = ids.into_iter().collect();
    let roots: Vec<Uuid> = subtree_roots.into_iter().collect();
    if ids.is_empty() && roots.is_empty() {
        return Ok(TreeFold::default());
    }
    let rows = sqlx::query(&format!(
        "SELECT id, group_type, parent_id, name, description, metadata, is_system, depth, path,
                version, created_at, updated_at, name_key, path_key
           FROM {s}.groups
          WHERE id IN (SELECT unnest($1::uuid[])
                       UNION SELECT parent_id FROM {s}.groups WHERE id = ANY($2)
                       UNION SELECT descendant_id FROM {s}.group_closure WHERE ancestor_id = ANY($2))"
    ))
    .bind(&ids)
    .bind(&roots)
    .fetch_all(&mut *conn)
    .await?;
    let mut fold = TreeFold::default();
    for r in &rows {
        let node = read::row_to_node(r)?;
        fold.nodes.insert(node.id, node);
    }
    for root in &roots {
        if let Some(parent) = fold.nodes.get(root).and_then(|n| n.parent_id) {
            anchors.insert(parent);
        }
    }
    let anchors: Vec<Uuid> = anchors
        .into_iter()
        .filter(|a| fold.nodes.contains_key(a))
        .collect();
    if !anchors.is_empty() {
        let closure = sqlx::query(&format!(
            "SELECT descendant_id, ancestor_id FROM {s}.group_closure
              WHERE descendant_id = ANY($1) AND depth > 0 ORDER BY descendant_id, depth DESC"
        ))
        .bind(&anchors)
        .fetch_all(&mut *conn)
        .await?;
        for r in &closure {
            let d: Uuid = r.try_get("descendant_id")?;
            let a: Uuid = r.try_get("ancestor_id")?;
            if let Some(n) = fold.nodes.get_mut(&d) {
                n.ancestors.push(a);
            }
        }
    }
    Ok(fold)
}

async fn write(conn: &mut PgConnection, s: &str, fold: &TreeFold) -> Result<(), StoreError> {
    if !fold.patches.is_empty() {
        let patches: Vec<(&Uuid, &Patch)> = fold.patches.iter().collect();
        sqlx::query(&format!(
            "UPDATE {s}.groups g SET description = u.d, metadata = u.m, version = u.v, updated_at = u.t
               FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::bigint[], $5::timestamptz[])
                    AS u(id, d, m, v, t)
              WHERE g.id = u.id"
        ))
        .bind(patches.iter().map(|(id, _)| **id).collect::<Vec<_>>())
        .bind(patches.iter().map(|(_, p)| p.description.clone()).collect::<Vec<_>>())
        .bind(patches.iter().map(|(_, p)| p.metadata.clone()).collect::<Vec<_>>())
        .bind(patches.iter().map(|(_, p)| p.version).collect::<Vec<_>>())
        .bind(patches.iter().map(|(_, p)| p.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !fold.deleted.is_empty() {
        let deleted: Vec<Uuid> = fold.deleted.iter().copied().collect();
        sqlx::query(&format!(
            "DELETE FROM {s}.group_closure WHERE descendant_id = ANY($1)"
        ))
        .bind(&deleted)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!("DELETE FROM {s}.groups WHERE id = ANY($1)"))
            .bind(&deleted)
            .execute(&mut *conn)
            .await?;
    }
    let dirty: Vec<&Node> = fold
        .dirty
        .iter()
        .filter_map(|id| fold.nodes.get(id))
        .collect();
    if !dirty.is_empty() {
        sqlx::query(&format!(
            "INSERT INTO {s}.groups (id, group_type, parent_id, name, description, metadata,
                    is_system, depth, path, version, created_at, updated_at, name_key, path_key)
             SELECT u.*, lower(u.name), lower(u.path)
               FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
                    $6::jsonb[], $7::bool[], $8::int[], $9::text[], $10::bigint[],
                    $11::timestamptz[], $12::timestamptz[])
                    AS u(id, group_type, parent_id, name, description, metadata, is_system,
                         depth, path, version, created_at, updated_at)
             ON CONFLICT (id) DO UPDATE SET group_type = EXCLUDED.group_type,
                parent_id = EXCLUDED.parent_id, name = EXCLUDED.name,
                description = EXCLUDED.description, metadata = EXCLUDED.metadata,
                is_system = EXCLUDED.is_system, depth = EXCLUDED.depth, path = EXCLUDED.path,
                version = EXCLUDED.version, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, name_key = EXCLUDED.name_key,
                path_key = EXCLUDED.path_key"
        ))
        .bind(dirty.iter().map(|n| n.id).collect::<Vec<_>>())
        .bind(
            dirty
                .iter()
                .map(|n| n.group_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind(dirty.iter().map(|n| n.parent_id).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
        .bind(
            dirty
                .iter()
                .map(|n| n.description.clone())
                .collect::<Vec<_>>(),
        )
        .bind(dirty.iter().map(|n| n.metadata.clone()).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.is_system).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.depth).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.path.clone()).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.version).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.created_at).collect::<Vec<_>>())
        .bind(dirty.iter().map(|n| n.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    let rewired: Vec<&Node> = fold
        .closure_dirty
        .iter()
        .filter_map(|id| fold.nodes.get(id))
        .collect();
    if !rewired.is_empty() {
        let ids: Vec<Uuid> = rewired.iter().map(|n| n.id).collect();
        sqlx::query(&format!(
            "DELETE FROM {s}.group_closure WHERE descendant_id = ANY($1)"
        ))
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        let (mut anc, mut desc, mut depth) = (Vec::new(), Vec::new(), Vec::new());
        for n in rewired {
            let len = n.ancestors.len() as i32;
            for (i, a) in n.ancestors.iter().enumerate() {
                anc.push(*a);
                desc.push(n.id);
                depth.push(len - i as i32);
            }
            anc.push(n.id);
            desc.push(n.id);
            depth.push(0);
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.group_closure (ancestor_id, descendant_id, depth)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[])"
        ))
        .bind(&anc)
        .bind(&desc)
        .bind(&depth)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
