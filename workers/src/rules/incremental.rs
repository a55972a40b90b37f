//! Incremental evaluation: a batch of the inventory change feed, evaluated in memory against
//! only the rules that read a changed field.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chrono::Utc;
use corral_domain::group::GroupType;
use corral_domain::inventory::{Device, Service};
use corral_domain::membership::MembershipCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_domain::rule::Entity;
use corral_projections::membership::read::{group_sets, GroupSets};
use uuid::Uuid;

use super::plan::{self, Active, Changed};
use super::queries::{self, Change};
use super::{RuleWorker, RuleWorkerError};

/// A changed entity with its changed fields (`None`: unknown) and whether it was removed.
type Entry<T> = (T, Option<Vec<String>>, bool);

impl RuleWorker {
    /// One batch of the inventory change feed of `kind`.
    pub(super) async fn inventory(&mut self, kind: GroupType) -> Result<bool, RuleWorkerError> {
        let batch = queries::read_feed(&self.pool, kind, self.config.batch).await?;
        let read = batch.changes.len();
        let full = read as i64 == self.config.batch;
        if read > 0 {
            self.apply_changes(kind, batch.changes).await?;
        }
        // Everything below the horizon has been read when the batch was not full.
        if let Some(cursor) = plan::next_cursor(batch.last, full, batch.horizon) {
            queries::advance_feed(&self.pool, kind, cursor).await?;
        }
        Ok(read > 0)
    }

    /// Evaluates changed entities against the rules that read a changed field.
    async fn apply_changes(
        &mut self,
        kind: GroupType,
        changes: Vec<Entry<Change>>,
    ) -> Result<(), RuleWorkerError> {
        let rules: Vec<Active> = self
            .active_rules()
            .await?
            .into_iter()
            .filter(|r| r.healthy)
            .collect();
        let mut services: Vec<Entry<Service>> = vec![];
        let mut devices: Vec<Entry<Device>> = vec![];
        for (change, fields, removed) in changes {
            match change {
                Change::Device(d) => devices.push((*d, fields, removed)),
                Change::Service(s) => services.push((*s, fields, removed)),
            }
        }
        let cause_ids: Vec<String> = match kind {
            GroupType::Device => devices.iter().map(|(d, _, _)| d.id.clone()).collect(),
            GroupType::Service => services.iter().map(|(s, _, _)| s.id.clone()).collect(),
        };
        // A device's change also reaches its services through `device.<field>`.
        if kind == GroupType::Device
            && plan::service_rules_read_devices(&rules)
            && !devices.is_empty()
        {
            let ids: Vec<String> = devices.iter().map(|(d, _, _)| d.id.clone()).collect();
            let hosts: HashMap<&str, (Option<&Vec<String>>, bool)> = devices
                .iter()
                .map(|(d, f, removed)| (d.id.as_str(), (f.as_ref(), *removed)))
                .collect();
            for s in queries::services_on(&self.pool, &ids).await? {
                let fields = match hosts.get(s.device_id.as_str()) {
                    Some(&(f, removed)) => plan::host_fields(f, removed),
                    None => plan::host_fields(None, false),
                };
                services.push((s, Some(fields), false));
            }
        }
        let cause = plan::cause_text(kind, &cause_ids);
        if !devices.is_empty() {
            let device_rules: Vec<&Active> = rules
                .iter()
                .filter(|r| r.kind == GroupType::Device)
                .collect();
            let entities: Vec<Changed<'_>> = devices
                .iter()
                .map(|(d, f, removed)| Changed {
                    entity: Entity::Device(d),
                    id: d.id.as_str(),
                    fields: f.as_ref(),
                    removed: *removed,
                })
                .collect();
            self.converge_entities(&device_rules, &entities, &cause)
                .await?;
        }
        if !services.is_empty() {
            let hosts: Vec<String> = services
                .iter()
                .map(|(s, _, _)| s.device_id.clone())
                .collect();
            let hosts = queries::devices_by_id(&self.pool, &hosts).await?;
            let service_rules: Vec<&Active> = rules
                .iter()
                .filter(|r| r.kind == GroupType::Service)
                .collect();
            let entities: Vec<Changed<'_>> = services
                .iter()
                .map(|(s, f, removed)| Changed {
                    entity: Entity::Service(s, hosts.get(&s.device_id)),
                    id: s.id.as_str(),
                    fields: f.as_ref(),
                    removed: *removed,
                })
                .collect();
            self.converge_entities(&service_rules, &entities, &cause)
                .await?;
        }
        Ok(())
    }

    async fn converge_entities(
        &self,
        rules: &[&Active],
        entities: &[Changed<'_>],
        cause: &str,
    ) -> Result<(), RuleWorkerError> {
        let ids: Vec<String> = entities.iter().map(|e| e.id.to_string()).collect();
        let needs_groups = rules.iter().any(|r| r.cached.moves);
        let preloaded = if needs_groups {
            group_sets(&self.pool, &ids).await?
        } else {
            GroupSets::default()
        };
        // Current rule entries of these entities, in every group (removed entities leave
        // groups whose rules are disabled too).
        let (current, statics) = queries::entries_of(&self.pool, &ids).await?;
        let (mut add, mut remove) = plan::decide(rules, entities, &current, &preloaded, Utc::now());
        let versions: HashMap<Uuid, u64> =
            rules.iter().map(|r| (r.group, r.cached.version)).collect();
        // Removed entities leave every group, static entries too (the source removed them).
        // Decided under each group's lock: an entity revived meanwhile keeps its entries.
        let removed: HashSet<&str> = entities
            .iter()
            .filter(|e| e.removed)
            .map(|e| e.id)
            .collect();
        if !removed.is_empty() {
            let metadata = EventMetadata::system(Source::Worker, cause.to_string());
            for (group, members) in plan::gone_by_group(&statics, &current, &removed) {
                let command = MembershipCommand::RemoveGone {
                    member_ids: members,
                    cause: Some(cause.to_string()),
                };
                self.send(group, command, &metadata).await?;
            }
        }
        let groups: BTreeSet<Uuid> = add.keys().chain(remove.keys()).copied().collect();
        for group in groups {
            // A group without an active rule (disabled since) keeps the version it had.
            let version = versions.get(&group).copied().unwrap_or(0);
            let adds = add.get(&group).map_or(0, Vec::len) as i64;
            if adds > 0 && versions.contains_key(&group) {
                let removes = remove.get(&group).map_or(0, Vec::len) as i64;
                let limit = self.config.max_matches;
                let now = queries::rule_entry_count(&self.pool, group).await?;
                if plan::exceeds_limit(now, removes, adds, limit) {
                    let outcome = plan::over_limit(limit);
                    self.record(group, version, &outcome, Instant::now(), cause)
                        .await?;
                    continue;
                }
            }
            self.apply(
                group,
                version,
                add.remove(&group).unwrap_or_default(),
                remove.remove(&group).unwrap_or_default(),
                cause,
            )
            .await?;
        }
        Ok(())
    }
}
