//! Members of a group at a position, direct or effective, folded with the domain's one
//! membership fold ([`GroupEntries`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use corral_domain::membership::{GroupEntries, MemberSource, Membership, MembershipEvent};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::tree::tree_at;
use crate::log::decode_stored;
use crate::StoreError;

/// One member of a group at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricalMember {
    /// The device or service id.
    pub member_id: String,
    /// How it was a direct member of `via_group` (static wins over rule).
    pub source: MemberSource,
    /// Since when it was (the entry of that source was added then).
    pub since: DateTime<Utc>,
    /// The group whose direct member it was: the group itself, or for effective membership
    /// the nearest descendant holding it (then the smallest group id), as the live query.
    pub via_group: Uuid,
}

/// Resolves members from folded groups: each group's direct members, merged over the groups
/// (each with its distance from the group asked about) so that every member appears once,
/// through the nearest group holding it (then the smallest group id). Sorted by member id
/// (bytewise).
pub fn resolve_members(
    groups: &[(Uuid, i32)],
    folds: &HashMap<Uuid, GroupEntries>,
    source: Option<MemberSource>,
) -> Vec<HistoricalMember> {
    let mut best: BTreeMap<&str, (i32, Uuid, MemberSource, DateTime<Utc>)> = BTreeMap::new();
    for (group, depth) in groups {
        let Some(fold) = folds.get(group) else {
            continue;
        };
        for (id, s, since) in fold.direct(source) {
            let candidate = (*depth, *group, s, since);
            match best.get_mut(id) {
                Some(current) if (current.0, current.1) <= (candidate.0, candidate.1) => {}
                Some(current) => *current = candidate,
                None => {
                    best.insert(id, candidate);
                }
            }
        }
    }
    best.into_iter()
        .map(|(id, (_, via, source, since))| HistoricalMember {
            member_id: id.to_string(),
            source,
            since,
            via_group: via,
        })
        .collect()
}

/// Folds the Membership events of `groups` up to `position` (one query).
pub async fn membership_folds(
    conn: &mut PgConnection,
    groups: &[(Uuid, i32)],
    position: i64,
) -> Result<HashMap<Uuid, GroupEntries>, StoreError> {
    let ids: Vec<String> = groups.iter().map(|g| g.0.to_string()).collect();
    let rows = sqlx::query(
        "SELECT e.aggregate_id, e.event_type, e.event_version, e.recorded_at, e.payload
           FROM unnest($1::text[]) AS g(id)
           JOIN events e ON e.aggregate_type = $3 AND e.aggregate_id = g.id
           JOIN event_log l ON l.global_position = e.global_position
          WHERE l.log_position <= $2
          ORDER BY e.aggregate_id, e.sequence",
    )
    .bind(&ids)
    .bind(position)
    .bind(Membership::TYPE)
    .fetch_all(&mut *conn)
    .await?;
    let mut folds: HashMap<Uuid, GroupEntries> = HashMap::new();
    for r in &rows {
        let aggregate_id: String = r.try_get("aggregate_id")?;
        let id: Uuid = aggregate_id
            .parse()
            .map_err(|_| StoreError::Data(format!("group id {aggregate_id:?}")))?;
        let event_type: String = r.try_get("event_type")?;
        let event_version: String = r.try_get("event_version")?;
        let payload: Value = r.try_get("payload")?;
        let event: MembershipEvent = decode_stored(
            Membership::TYPE,
            &aggregate_id,
            &event_type,
            &event_version,
            &payload,
        )?;
        folds
            .entry(id)
            .or_default()
            .apply(&event, r.try_get("recorded_at")?);
    }
    Ok(folds)
}

/// The members of `group` at `position`: direct (its own) or effective (its subtree's then,
/// each once, through the nearest group), sorted by member id (bytewise). `source` keeps
/// only memberships of that source (for effective: through the nearest group holding it with
/// that source, as the live query). Empty if the group was not alive at the position.
pub async fn members_at(
    conn: &mut PgConnection,
    group: Uuid,
    position: i64,
    effective: bool,
    source: Option<MemberSource>,
) -> Result<Vec<HistoricalMember>, StoreError> {
    let groups: Vec<(Uuid, i32)> = if effective {
        tree_at(conn, position).await?.subtree(group)
    } else {
        vec![(group, 0)]
    };
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let folds = membership_folds(conn, &groups, position).await?;
    Ok(resolve_members(&groups, &folds, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::group_fold::tests::{id, t};
    use corral_domain::group::GroupType;

    fn added(source: MemberSource, v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersAdded {
            member_type: GroupType::Device,
            member_ids: ids(v),
            source,
            rule_version: None,
            cause: None,
        }
    }

    fn removed(source: MemberSource, v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersRemoved {
            member_type: GroupType::Device,
            member_ids: ids(v),
            source,
            rule_version: None,
            cause: None,
        }
    }

    fn excluded(v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersExcluded {
            member_type: GroupType::Device,
            member_ids: ids(v),
        }
    }

    fn unexcluded(v: &[&str]) -> MembershipEvent {
        MembershipEvent::MembersUnexcluded {
            member_type: GroupType::Device,
            member_ids: ids(v),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn direct_members_follow_exclude_over_static_over_rule() {
        let mut f = GroupEntries::default();
        f.apply(&added(MemberSource::Rule, &["a", "b", "c"]), t(1));
        f.apply(&added(MemberSource::Static, &["b", "d"]), t(2));
        f.apply(&excluded(&["c", "x"]), t(3));
        let mut direct: Vec<_> = f
            .direct(None)
            .map(|(i, s, t)| (i.to_string(), s, t))
            .collect();
        direct.sort();
        assert_eq!(
            direct,
            vec![
                ("a".into(), MemberSource::Rule, t(1)),
                ("b".into(), MemberSource::Static, t(2)),
                ("d".into(), MemberSource::Static, t(2)),
            ]
        );
        f.apply(&unexcluded(&["c"]), t(4));
        f.apply(&removed(MemberSource::Static, &["b"]), t(5));
        f.apply(&removed(MemberSource::Rule, &["a"]), t(5));
        let mut direct: Vec<_> = f
            .direct(None)
            .map(|(i, s, t)| (i.to_string(), s, t))
            .collect();
        direct.sort();
        assert_eq!(
            direct,
            vec![
                ("b".into(), MemberSource::Rule, t(1)),
                ("c".into(), MemberSource::Rule, t(1)),
                ("d".into(), MemberSource::Static, t(2)),
            ]
        );
        let statics: Vec<_> = f
            .direct(Some(MemberSource::Static))
            .map(|(i, ..)| i.to_string())
            .collect();
        assert_eq!(statics, vec!["d".to_string()]);
    }

    #[test]
    fn effective_members_come_through_the_nearest_group() {
        let (top, near, far) = (id(9), id(5), id(2));
        let mut folds: HashMap<Uuid, GroupEntries> = HashMap::new();
        folds
            .entry(top)
            .or_default()
            .apply(&added(MemberSource::Rule, &["m1"]), t(1));
        folds
            .entry(near)
            .or_default()
            .apply(&added(MemberSource::Static, &["m1", "m2", "m3"]), t(2));
        folds
            .entry(far)
            .or_default()
            .apply(&added(MemberSource::Rule, &["m2", "m3", "M4"]), t(3));
        // `near` and `far` at the same depth: the smaller id wins.
        let groups = [(top, 0), (near, 1), (far, 1)];
        let members = resolve_members(&groups, &folds, None);
        let got: Vec<_> = members
            .iter()
            .map(|m| (m.member_id.as_str(), m.via_group, m.source))
            .collect();
        assert_eq!(
            got,
            vec![
                ("M4", far, MemberSource::Rule),
                ("m1", top, MemberSource::Rule),
                ("m2", far, MemberSource::Rule),
                ("m3", far, MemberSource::Rule),
            ]
        );
        // With a source, the nearest group holding it with that source.
        let statics = resolve_members(&groups, &folds, Some(MemberSource::Static));
        let got: Vec<_> = statics
            .iter()
            .map(|m| (m.member_id.as_str(), m.via_group))
            .collect();
        assert_eq!(got, vec![("m1", near), ("m2", near), ("m3", near)]);
    }
}
