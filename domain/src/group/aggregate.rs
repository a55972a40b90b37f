use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    GroupCapabilities, GroupCommand, GroupDirectory, GroupError, GroupEvent, GroupType, MAX_DEPTH,
    MAX_DESCRIPTION_CHARS, MAX_METADATA_BYTES, MAX_NAME_CHARS, ROOT_NAME,
};
use crate::text::{check_free_text, normalize_name};

/// A group's state, folded from its events. Cross-group invariants (sibling names, cycles,
/// depth) are checked against the [`GroupDirectory`] service.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    created: bool,
    deleted: bool,
    group_type: Option<GroupType>,
    name: String,
    parent_id: Option<Uuid>,
    description: Option<String>,
    metadata: Map<String, Value>,
    is_system: bool,
    #[serde(default)]
    rule: Option<Value>,
    #[serde(default)]
    rule_enabled: bool,
    #[serde(default)]
    rule_version: u64,
    /// Absent from snapshots taken before `GroupCapabilitiesChanged` existed, which folded
    /// none (code that could not read the event could not snapshot past it): all false is
    /// right for them, so the snapshot shape needs no new version.
    #[serde(default)]
    capabilities: GroupCapabilities,
}

impl Group {
    /// Whether the group exists and was not deleted.
    pub fn is_live(&self) -> bool {
        self.created && !self.deleted
    }
}

fn directory_err(e: super::DirectoryError) -> GroupError {
    GroupError::Directory(e.0)
}

/// Trims a group name, checks it ([`crate::text::normalize_name`]: no control, format or
/// separator characters) and returns its NFC form, so that names that look alike are equal
/// before the sibling check compares them.
pub(crate) fn valid_name(raw: &str) -> Result<String, GroupError> {
    let invalid = |message: String| GroupError::Invalid {
        field: "name",
        message,
    };
    let name = normalize_name(raw, MAX_NAME_CHARS).map_err(|e| invalid(e.to_string()))?;
    if name.contains('/') {
        return Err(invalid("must not contain '/'".into()));
    }
    Ok(name)
}

/// A description is free text: kept as sent, refused with control characters other than
/// tab and line breaks or with bidirectional overrides; blank means none.
fn valid_description(d: Option<String>) -> Result<Option<String>, GroupError> {
    match d {
        Some(d) => {
            check_free_text("description", &d, MAX_DESCRIPTION_CHARS).map_err(|e| {
                GroupError::Invalid {
                    field: "description",
                    message: e.error.to_string(),
                }
            })?;
            Ok(Some(d).filter(|d| !d.trim().is_empty()))
        }
        None => Ok(None),
    }
}

fn valid_metadata(m: &Map<String, Value>) -> Result<(), GroupError> {
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(GroupError::Invalid {
            field: "metadata",
            message: format!("must be at most {MAX_METADATA_BYTES} bytes of JSON, got {size}"),
        });
    }
    Ok(())
}

impl Group {
    fn require_live(&self, id: Uuid) -> Result<(), GroupError> {
        if self.is_live() {
            Ok(())
        } else {
            Err(GroupError::NotFound { what: "group", id })
        }
    }

    fn require_editable(&self, id: Uuid) -> Result<(), GroupError> {
        self.require_live(id)?;
        if self.is_system {
            return Err(GroupError::SystemGroup);
        }
        Ok(())
    }

    /// Checks that `parent` can hold a group of `group_type` named `name` whose subtree is
    /// `height` deep (one directory call).
    async fn check_placement(
        dir: &dyn GroupDirectory,
        parent: Uuid,
        group_type: GroupType,
        height: u32,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(), GroupError> {
        let (entry, taken) = dir
            .placement(parent, name, except)
            .await
            .map_err(directory_err)?;
        let entry = entry.ok_or(GroupError::NotFound {
            what: "parent group",
            id: parent,
        })?;
        if entry.group_type != group_type {
            return Err(GroupError::TypeMismatch {
                child: group_type.as_str(),
                parent: entry.group_type.as_str(),
            });
        }
        if entry.depth + 1 + height > MAX_DEPTH {
            return Err(GroupError::DepthLimit { max: MAX_DEPTH });
        }
        if taken {
            return Err(GroupError::NameTaken {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    async fn check_name_free(
        dir: &dyn GroupDirectory,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(), GroupError> {
        if dir
            .name_taken(parent, name, except)
            .await
            .map_err(directory_err)?
        {
            return Err(GroupError::NameTaken {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Referenced groups must exist, hold the same kind, and not depend on this group.
    async fn check_refs(
        dir: &dyn GroupDirectory,
        id: Uuid,
        group_type: GroupType,
        refs: &[super::RuleRef],
    ) -> Result<(), GroupError> {
        for r in refs {
            let entry = dir.get(r.group_id).await.map_err(directory_err)?;
            match entry {
                None => {
                    return Err(GroupError::RuleInvalid(format!(
                        "group:{} does not exist",
                        r.group_id
                    )))
                }
                Some(e) if e.group_type != group_type => {
                    return Err(GroupError::RuleInvalid(format!(
                        "group:{} is a {} group; a {} rule can only refer to {} groups",
                        r.group_id,
                        e.group_type.as_str(),
                        group_type.as_str(),
                        group_type.as_str()
                    )))
                }
                Some(_) => {}
            }
        }
        if super::rule_reaches(dir, refs, id)
            .await
            .map_err(directory_err)?
        {
            return Err(GroupError::RuleInvalid(
                "the rule's group: references lead back to this group's own membership (a cycle)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Under its new parent, the moved subtree's members become effective members of the new
    /// ancestors: refuse the move if a rule in the subtree reads (through any chain of rules)
    /// the effective membership of one of them, which would then include its own.
    async fn check_move_keeps_rules_acyclic(
        dir: &dyn GroupDirectory,
        id: Uuid,
        new_parent_id: Uuid,
    ) -> Result<(), GroupError> {
        let moved = dir.subtrees(&[id]).await.map_err(directory_err)?;
        let refs = dir.rule_refs(&moved).await.map_err(directory_err)?;
        if refs.is_empty() {
            return Ok(());
        }
        let mut ancestors = std::collections::HashSet::new();
        let mut cursor = Some(new_parent_id);
        while let Some(g) = cursor {
            if !ancestors.insert(g) {
                break;
            }
            cursor = dir
                .get(g)
                .await
                .map_err(directory_err)?
                .and_then(|e| e.parent_id);
        }
        if super::rules_read_effective(dir, &refs, &ancestors)
            .await
            .map_err(directory_err)?
        {
            return Err(GroupError::RuleInvalid(
                "moving the group there would make a rule in its subtree read its own membership (a group: cycle)"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn decide(
        &self,
        command: GroupCommand,
        dir: &dyn GroupDirectory,
    ) -> Result<Vec<GroupEvent>, GroupError> {
        match command {
            GroupCommand::EnsureRoot { group_type } => {
                if self.created {
                    return Ok(vec![]);
                }
                Ok(vec![GroupEvent::GroupCreated {
                    group_type,
                    name: ROOT_NAME.to_string(),
                    parent_id: None,
                    description: Some(format!("All {} groups", group_type.as_str())),
                    metadata: Map::new(),
                    is_system: true,
                }])
            }
            GroupCommand::Create {
                id,
                name,
                group_type,
                parent_id,
                description,
                metadata,
            } => {
                if self.created {
                    return Err(GroupError::AlreadyExists(id));
                }
                let name = valid_name(&name)?;
                let description = valid_description(description)?;
                let metadata = metadata.unwrap_or_default();
                valid_metadata(&metadata)?;
                Self::check_placement(dir, parent_id, group_type, 0, &name, None).await?;
                Ok(vec![GroupEvent::GroupCreated {
                    group_type,
                    name,
                    parent_id: Some(parent_id),
                    description,
                    metadata,
                    is_system: false,
                }])
            }
            GroupCommand::Rename { id, name } => {
                self.require_editable(id)?;
                let name = valid_name(&name)?;
                if name == self.name {
                    return Ok(vec![]);
                }
                if let Some(parent) = self.parent_id {
                    Self::check_name_free(dir, parent, &name, Some(id)).await?;
                }
                Ok(vec![GroupEvent::GroupRenamed {
                    name,
                    previous_name: self.name.clone(),
                }])
            }
            GroupCommand::Update {
                id,
                description,
                metadata,
            } => {
                self.require_live(id)?;
                let description = match description {
                    Some(d) => valid_description(Some(d))?,
                    None => self.description.clone(),
                };
                let metadata = metadata.unwrap_or_else(|| self.metadata.clone());
                valid_metadata(&metadata)?;
                if description == self.description && metadata == self.metadata {
                    return Ok(vec![]);
                }
                Ok(vec![GroupEvent::GroupUpdated {
                    description,
                    metadata,
                    previous: Some(super::GroupDetails {
                        description: self.description.clone(),
                        metadata: self.metadata.clone(),
                    }),
                }])
            }
            GroupCommand::Move { id, new_parent_id } => {
                self.require_editable(id)?;
                let (Some(group_type), Some(current_parent)) = (self.group_type, self.parent_id)
                else {
                    return Err(GroupError::SystemGroup);
                };
                if current_parent == new_parent_id {
                    return Ok(vec![]);
                }
                if dir
                    .in_subtree(id, new_parent_id)
                    .await
                    .map_err(directory_err)?
                {
                    return Err(GroupError::Cycle);
                }
                let height = dir.subtree_height(id).await.map_err(directory_err)?;
                Self::check_placement(dir, new_parent_id, group_type, height, &self.name, Some(id))
                    .await?;
                Self::check_move_keeps_rules_acyclic(dir, id, new_parent_id).await?;
                Ok(vec![GroupEvent::GroupMoved {
                    previous_parent_id: current_parent,
                    new_parent_id,
                }])
            }
            GroupCommand::Delete { id } => {
                self.require_editable(id)?;
                if dir.has_children(id).await.map_err(directory_err)? {
                    return Err(GroupError::HasChildren);
                }
                let referrers = dir.rule_referrers(id).await.map_err(directory_err)?;
                if !referrers.is_empty() {
                    return Err(GroupError::Referenced(referrers));
                }
                Ok(vec![GroupEvent::GroupDeleted {}])
            }
            GroupCommand::SetRule {
                id,
                rule,
                text,
                kind,
                refs,
                enabled,
            } => {
                self.require_editable(id)?;
                let group_type = self.group_type.ok_or(GroupError::SystemGroup)?;
                if kind != group_type {
                    return Err(GroupError::TypeMismatch {
                        child: kind.as_str(),
                        parent: group_type.as_str(),
                    });
                }
                if self.rule.as_ref() == Some(&rule) && self.rule_enabled == enabled {
                    return Ok(vec![]);
                }
                Self::check_refs(dir, id, group_type, &refs).await?;
                Ok(vec![GroupEvent::GroupRuleSet {
                    rule,
                    text,
                    enabled,
                    rule_version: self.rule_version + 1,
                    refs,
                }])
            }
            GroupCommand::ClearRule { id } => {
                self.require_editable(id)?;
                if self.rule.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![GroupEvent::GroupRuleCleared {
                    rule_version: self.rule_version + 1,
                }])
            }
            GroupCommand::SetCapabilities { id, capabilities } => {
                // Live groups only, system roots included: the flags are computed, not edited.
                self.require_live(id)?;
                if capabilities == self.capabilities {
                    return Ok(vec![]);
                }
                Ok(vec![GroupEvent::GroupCapabilitiesChanged {
                    has_sysmon: capabilities.has_sysmon,
                    has_snmp: capabilities.has_snmp,
                    has_services: capabilities.has_services,
                    previous: self.capabilities,
                }])
            }
        }
    }
}

impl Aggregate for Group {
    const TYPE: &'static str = "Group";
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;
    type Services = Box<dyn GroupDirectory>;

    async fn handle(
        &mut self,
        command: Self::Command,
        service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, service.as_ref()).await? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            GroupEvent::GroupCreated {
                group_type,
                name,
                parent_id,
                description,
                metadata,
                is_system,
            } => {
                self.created = true;
                self.group_type = Some(group_type);
                self.name = name;
                self.parent_id = parent_id;
                self.description = description;
                self.metadata = metadata;
                self.is_system = is_system;
            }
            GroupEvent::GroupRenamed { name, .. } => self.name = name,
            GroupEvent::GroupUpdated {
                description,
                metadata,
                ..
            } => {
                self.description = description;
                self.metadata = metadata;
            }
            GroupEvent::GroupMoved { new_parent_id, .. } => self.parent_id = Some(new_parent_id),
            GroupEvent::GroupDeleted {} => self.deleted = true,
            GroupEvent::GroupRuleSet {
                rule,
                enabled,
                rule_version,
                ..
            } => {
                self.rule = Some(rule);
                self.rule_enabled = enabled;
                self.rule_version = rule_version;
            }
            GroupEvent::GroupRuleCleared { rule_version } => {
                self.rule = None;
                self.rule_enabled = false;
                self.rule_version = rule_version;
            }
            GroupEvent::GroupCapabilitiesChanged {
                has_sysmon,
                has_snmp,
                has_services,
                ..
            } => {
                self.capabilities = GroupCapabilities {
                    has_sysmon,
                    has_snmp,
                    has_services,
                };
            }
            #[cfg(feature = "probe-variant")]
            GroupEvent::Probe {} => {}
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
