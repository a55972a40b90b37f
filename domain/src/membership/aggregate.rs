use crate::codes::Code;
use std::collections::HashSet;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MAX_IDS_PER_COMMAND, MAX_IDS_PER_EVENT, MAX_LISTED, MAX_MEMBER_ID_CHARS};
use crate::group::GroupType;

/// Where a membership entry comes from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberSource {
    /// Added by a person or a feed.
    Static,
    /// Matched by the group's rule.
    Rule,
}

impl MemberSource {
    /// `STATIC` or `RULE`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberSource::Static => "STATIC",
            MemberSource::Rule => "RULE",
        }
    }
}

/// The three kinds of entries a group keeps per member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A static member.
    Static,
    /// A rule match.
    Rule,
    /// Blocked from the group whatever the rule says (and over static entries).
    Excluded,
}

impl EntryKind {
    /// The registry's one-letter code.
    pub fn code(self) -> char {
        match self {
            EntryKind::Static => 'S',
            EntryKind::Rule => 'R',
            EntryKind::Excluded => 'X',
        }
    }
}

impl From<MemberSource> for EntryKind {
    fn from(s: MemberSource) -> Self {
        match s {
            MemberSource::Static => EntryKind::Static,
            MemberSource::Rule => EntryKind::Rule,
        }
    }
}

/// What happened to a group's membership. Each event carries at most
/// [`MAX_IDS_PER_EVENT`] ids; the field names are part of the stored contract (the
/// `membership_registry` trigger reads `member_ids` and `source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum MembershipEvent {
    /// Entries were added (ids that had no entry of this source).
    MembersAdded {
        /// `DEVICE` or `SERVICE` (the group's type).
        member_type: GroupType,
        /// The device or service ids (at most 1,000 per event).
        member_ids: Vec<String>,
        /// `STATIC` or `RULE`: which kind of entry was added.
        source: MemberSource,
        /// The rule version that matched them (rule entries only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_version: Option<u64>,
        /// Why: `rule_changed`, `schedule`, `repair`, `inventory:devices:<ids>`, ... (rule and
        /// worker changes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// Entries were removed (ids that had an entry of this source).
    MembersRemoved {
        /// `DEVICE` or `SERVICE` (the group's type).
        member_type: GroupType,
        /// The device or service ids (at most 1,000 per event).
        member_ids: Vec<String>,
        /// `STATIC` or `RULE`: which kind of entry was removed.
        source: MemberSource,
        /// The rule version that stopped matching them (rule entries only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_version: Option<u64>,
        /// Why: `rule_changed`, `rule_disabled`, `rule_cleared`, `group_deleted`,
        /// `inventory:devices:<ids>`, ... (rule and worker changes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// Members were blocked from the group.
    MembersExcluded {
        /// `DEVICE` or `SERVICE` (the group's type).
        member_type: GroupType,
        /// The blocked ids (at most 1,000 per event).
        member_ids: Vec<String>,
    },
    /// Blocks were lifted.
    MembersUnexcluded {
        /// `DEVICE` or `SERVICE` (the group's type).
        member_type: GroupType,
        /// The unblocked ids (at most 1,000 per event).
        member_ids: Vec<String>,
    },
    /// Test-only (the `probe-variant` feature, never enabled in a build that ships): a
    /// variant no reader handles, so that a build with it shows every reader that must.
    #[cfg(feature = "probe-variant")]
    Probe {},
}

impl MembershipEvent {
    /// `MembersAdded`: the stored `event_type` of [`MembershipEvent::MembersAdded`].
    pub const ADDED: &'static str = "MembersAdded";
    /// `MembersRemoved`.
    pub const REMOVED: &'static str = "MembersRemoved";
    /// `MembersExcluded`.
    pub const EXCLUDED: &'static str = "MembersExcluded";
    /// `MembersUnexcluded`.
    pub const UNEXCLUDED: &'static str = "MembersUnexcluded";
    /// `Probe`: the test-only variant of the `probe-variant` feature.
    #[cfg(feature = "probe-variant")]
    pub const PROBE: &'static str = "Probe";

    /// Every event type, in declaration order.
    pub const TYPES: &'static [&'static str] = &[
        Self::ADDED,
        Self::REMOVED,
        Self::EXCLUDED,
        Self::UNEXCLUDED,
        #[cfg(feature = "probe-variant")]
        Self::PROBE,
    ];

    /// The stored `event_type` of this event (the variant name), without allocating.
    pub fn name(&self) -> &'static str {
        match self {
            MembershipEvent::MembersAdded { .. } => Self::ADDED,
            MembershipEvent::MembersRemoved { .. } => Self::REMOVED,
            MembershipEvent::MembersExcluded { .. } => Self::EXCLUDED,
            MembershipEvent::MembersUnexcluded { .. } => Self::UNEXCLUDED,
            #[cfg(feature = "probe-variant")]
            MembershipEvent::Probe {} => Self::PROBE,
        }
    }

    /// The ids the event is about.
    pub fn member_ids(&self) -> &[String] {
        match self {
            MembershipEvent::MembersAdded { member_ids, .. }
            | MembershipEvent::MembersRemoved { member_ids, .. }
            | MembershipEvent::MembersExcluded { member_ids, .. }
            | MembershipEvent::MembersUnexcluded { member_ids, .. } => member_ids,
            #[cfg(feature = "probe-variant")]
            MembershipEvent::Probe {} => &[],
        }
    }
}

impl DomainEvent for MembershipEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        Self::current_version(self.name())
            .unwrap_or("1")
            .to_string()
    }
}

impl MembershipEvent {
    /// The current version of an event type (the one [`DomainEvent::event_version`] writes),
    /// or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        Self::TYPES.contains(&event_type).then_some("1")
    }
}

/// What a caller may ask of a group's membership. The aggregate id is the group's id.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipCommand {
    /// Add entries of a source (ids already present with that source are skipped).
    Add {
        member_ids: Vec<String>,
        source: MemberSource,
        rule_version: Option<u64>,
        cause: Option<String>,
    },
    /// Remove entries of a source (ids without one are skipped).
    Remove {
        member_ids: Vec<String>,
        source: MemberSource,
        rule_version: Option<u64>,
        cause: Option<String>,
    },
    /// Block members.
    Exclude { member_ids: Vec<String> },
    /// Lift blocks.
    Unexclude { member_ids: Vec<String> },
    /// Remove the static and rule entries of ids that are no longer live inventory (checked
    /// under the group's lock, so an entity that came back meanwhile keeps its entries).
    RemoveGone {
        member_ids: Vec<String>,
        cause: Option<String>,
    },
    /// Remove every entry of a deleted group (ids supplied by the caller from the registry).
    Purge {
        static_ids: Vec<String>,
        rule_ids: Vec<String>,
        excluded_ids: Vec<String>,
    },
}

/// The facts about the group a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupFacts {
    /// The group's type (the kind of its members).
    pub group_type: GroupType,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// Why a membership command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MembershipError {
    /// Malformed input.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The group does not exist or was deleted.
    #[error("group {0} does not exist")]
    GroupNotFound(uuid::Uuid),
    /// Some ids are not in the inventory.
    #[error("{count} unknown member id(s): {}", listed.join(", "))]
    UnknownMember { count: usize, listed: Vec<String> },
    /// Some ids are inventory of the other kind.
    #[error("{group_type} groups hold {group_type} members; these are not: {}", listed.join(", "))]
    TypeMismatch {
        group_type: &'static str,
        listed: Vec<String>,
    },
    /// The registry could not be read; not the caller's fault.
    #[error("membership directory unavailable: {0}")]
    Directory(String),
}

impl MembershipError {
    /// The stable userError code.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            MembershipError::Invalid { .. } => Code::Invalid,
            MembershipError::GroupNotFound(_) => Code::NotFound,
            MembershipError::UnknownMember { .. } => Code::UnknownMember,
            MembershipError::TypeMismatch { .. } => Code::TypeMismatch,
            MembershipError::Directory(_) => return None,
        })
    }

    /// The input field at fault.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            MembershipError::Invalid { field, .. } => Some(field),
            MembershipError::UnknownMember { .. } | MembershipError::TypeMismatch { .. } => {
                Some("memberIds")
            }
            MembershipError::GroupNotFound(_) => Some("groupId"),
            MembershipError::Directory(_) => None,
        }
    }
}

/// What membership commands check, answered for the ids a command carries only.
#[async_trait]
pub trait MembershipDirectory: Send + Sync {
    /// The group, or `None` when it never existed.
    async fn group(&self) -> Result<Option<GroupFacts>, String>;
    /// Of `ids`, those that are not live inventory of `kind`.
    async fn unknown(&self, kind: GroupType, ids: &[String]) -> Result<Vec<String>, String>;
    /// Of `ids`, those that have an entry of `kind` in this group.
    async fn present(&self, kind: EntryKind, ids: &[String]) -> Result<HashSet<String>, String>;
}

/// A group's membership. It holds no member set (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {}

fn dir(e: String) -> MembershipError {
    MembershipError::Directory(e)
}

/// Trims ids, drops duplicates (keeping the first), checks count and shape.
pub(crate) fn clean_ids(ids: Vec<String>) -> Result<Vec<String>, MembershipError> {
    let invalid = |message: String| MembershipError::Invalid {
        field: "memberIds",
        message,
    };
    if ids.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if ids.len() > MAX_IDS_PER_COMMAND {
        return Err(invalid(format!(
            "at most {MAX_IDS_PER_COMMAND} ids per call, got {}",
            ids.len()
        )));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let id = id.trim().to_string();
        if id.is_empty()
            || id.chars().count() > MAX_MEMBER_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "id #{i} must be 1-{MAX_MEMBER_ID_CHARS} characters without control characters"
            )));
        }
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    Ok(out)
}

fn chunks(ids: Vec<String>) -> Vec<Vec<String>> {
    ids.chunks(MAX_IDS_PER_EVENT)
        .map(<[String]>::to_vec)
        .collect()
}

impl Membership {
    async fn live_group(
        dir_: &dyn MembershipDirectory,
        id: uuid::Uuid,
    ) -> Result<GroupType, MembershipError> {
        match dir_.group().await.map_err(dir)? {
            Some(facts) if !facts.deleted => Ok(facts.group_type),
            _ => Err(MembershipError::GroupNotFound(id)),
        }
    }

    /// Refuses ids that are not live inventory of the group's kind.
    async fn require_known(
        dir_: &dyn MembershipDirectory,
        group_type: GroupType,
        ids: &[String],
    ) -> Result<(), MembershipError> {
        let unknown = dir_.unknown(group_type, ids).await.map_err(dir)?;
        if unknown.is_empty() {
            return Ok(());
        }
        let other = match group_type {
            GroupType::Device => GroupType::Service,
            GroupType::Service => GroupType::Device,
        };
        let still_unknown: HashSet<String> = dir_
            .unknown(other, &unknown)
            .await
            .map_err(dir)?
            .into_iter()
            .collect();
        let mismatched: Vec<String> = unknown
            .iter()
            .filter(|id| !still_unknown.contains(*id))
            .take(MAX_LISTED)
            .cloned()
            .collect();
        if !mismatched.is_empty() {
            return Err(MembershipError::TypeMismatch {
                group_type: group_type.as_str(),
                listed: mismatched,
            });
        }
        Err(MembershipError::UnknownMember {
            count: unknown.len(),
            listed: unknown.into_iter().take(MAX_LISTED).collect(),
        })
    }

    async fn decide(
        &self,
        group_id: uuid::Uuid,
        command: MembershipCommand,
        d: &dyn MembershipDirectory,
    ) -> Result<Vec<MembershipEvent>, MembershipError> {
        match command {
            MembershipCommand::Add {
                member_ids,
                source,
                rule_version,
                cause,
            } => {
                let ids = clean_ids(member_ids)?;
                let member_type = Self::live_group(d, group_id).await?;
                Self::require_known(d, member_type, &ids).await?;
                let present = d.present(source.into(), &ids).await.map_err(dir)?;
                let new: Vec<String> = ids.into_iter().filter(|i| !present.contains(i)).collect();
                Ok(chunks(new)
                    .into_iter()
                    .map(|member_ids| MembershipEvent::MembersAdded {
                        member_type,
                        member_ids,
                        source,
                        rule_version,
                        cause: cause.clone(),
                    })
                    .collect())
            }
            MembershipCommand::Remove {
                member_ids,
                source,
                rule_version,
                cause,
            } => {
                let ids = clean_ids(member_ids)?;
                let member_type = Self::live_group(d, group_id).await?;
                let present = d.present(source.into(), &ids).await.map_err(dir)?;
                let gone: Vec<String> = ids.into_iter().filter(|i| present.contains(i)).collect();
                Ok(chunks(gone)
                    .into_iter()
                    .map(|member_ids| MembershipEvent::MembersRemoved {
                        member_type,
                        member_ids,
                        source,
                        rule_version,
                        cause: cause.clone(),
                    })
                    .collect())
            }
            MembershipCommand::Exclude { member_ids } => {
                let ids = clean_ids(member_ids)?;
                let member_type = Self::live_group(d, group_id).await?;
                Self::require_known(d, member_type, &ids).await?;
                let present = d.present(EntryKind::Excluded, &ids).await.map_err(dir)?;
                let new: Vec<String> = ids.into_iter().filter(|i| !present.contains(i)).collect();
                Ok(chunks(new)
                    .into_iter()
                    .map(|member_ids| MembershipEvent::MembersExcluded {
                        member_type,
                        member_ids,
                    })
                    .collect())
            }
            MembershipCommand::Unexclude { member_ids } => {
                let ids = clean_ids(member_ids)?;
                let member_type = Self::live_group(d, group_id).await?;
                let present = d.present(EntryKind::Excluded, &ids).await.map_err(dir)?;
                let gone: Vec<String> = ids.into_iter().filter(|i| present.contains(i)).collect();
                Ok(chunks(gone)
                    .into_iter()
                    .map(|member_ids| MembershipEvent::MembersUnexcluded {
                        member_type,
                        member_ids,
                    })
                    .collect())
            }
            MembershipCommand::RemoveGone { member_ids, cause } => {
                let ids = clean_ids(member_ids)?;
                let member_type = Self::live_group(d, group_id).await?;
                let gone = d.unknown(member_type, &ids).await.map_err(dir)?;
                let mut events = Vec::new();
                for source in [MemberSource::Static, MemberSource::Rule] {
                    let present = d.present(source.into(), &gone).await.map_err(dir)?;
                    let ids: Vec<String> = gone
                        .iter()
                        .filter(|i| present.contains(*i))
                        .cloned()
                        .collect();
                    events.extend(chunks(ids).into_iter().map(|member_ids| {
                        MembershipEvent::MembersRemoved {
                            member_type,
                            member_ids,
                            source,
                            rule_version: None,
                            cause: cause.clone(),
                        }
                    }));
                }
                Ok(events)
            }
            MembershipCommand::Purge {
                static_ids,
                rule_ids,
                excluded_ids,
            } => {
                let Some(facts) = d.group().await.map_err(dir)? else {
                    return Err(MembershipError::GroupNotFound(group_id));
                };
                let member_type = facts.group_type;
                let mut events = Vec::new();
                for (ids, source) in [
                    (static_ids, MemberSource::Static),
                    (rule_ids, MemberSource::Rule),
                ] {
                    let present = d.present(source.into(), &ids).await.map_err(dir)?;
                    let gone: Vec<String> =
                        ids.into_iter().filter(|i| present.contains(i)).collect();
                    events.extend(chunks(gone).into_iter().map(|member_ids| {
                        MembershipEvent::MembersRemoved {
                            member_type,
                            member_ids,
                            source,
                            rule_version: None,
                            cause: Some("group_deleted".into()),
                        }
                    }));
                }
                let present = d
                    .present(EntryKind::Excluded, &excluded_ids)
                    .await
                    .map_err(dir)?;
                let gone: Vec<String> = excluded_ids
                    .into_iter()
                    .filter(|i| present.contains(i))
                    .collect();
                events.extend(chunks(gone).into_iter().map(|member_ids| {
                    MembershipEvent::MembersUnexcluded {
                        member_type,
                        member_ids,
                    }
                }));
                Ok(events)
            }
        }
    }
}

/// The services a membership command runs with: the group's id and its directory.
pub struct MembershipServices {
    /// The group (the aggregate id).
    pub group_id: uuid::Uuid,
    /// Answers the command's checks.
    pub directory: Box<dyn MembershipDirectory>,
}

impl Aggregate for Membership {
    const TYPE: &'static str = "Membership";
    type Command = MembershipCommand;
    type Event = MembershipEvent;
    type Error = MembershipError;
    type Services = MembershipServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self
            .decide(services.group_id, command, services.directory.as_ref())
            .await?
        {
            sink.write(event, self).await;
        }
        Ok(())
    }

    /// Nothing to fold: the state that checks need lives in the registry.
    fn apply(&mut self, _event: Self::Event) {}
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
