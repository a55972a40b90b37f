//! The MembershipWatch aggregate: a durable watch of a group's direct or effective membership,
//! registered by an admin or an integrator, whose ENTERED/LEFT changes the NATS membership feed
//! publishes (`docs/integrators.md`). Registering and removing one are events, so who asked
//! for a feed, when and why is in the audit trail; the feed's worker learns its watches from
//! the log itself (no read model).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codes::Code;

/// Longest description of a watch, in characters.
pub const MAX_WATCH_DESCRIPTION_CHARS: usize = 500;

/// What happened to a membership watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum MembershipWatchEvent {
    /// The watch was registered: the feed publishes the changes of `groupId`'s membership
    /// (its subtree's with `includeDescendants`) caused by every event after this one.
    MembershipWatchRegistered {
        /// The group watched.
        group_id: Uuid,
        /// Whether its descendants' members count (effective membership).
        include_descendants: bool,
        /// What the watch is for.
        description: Option<String>,
    },
    /// The watch was removed: the feed publishes nothing for it after this event.
    MembershipWatchRemoved {},
}

impl MembershipWatchEvent {
    /// `MembershipWatchRegistered`.
    pub const REGISTERED: &'static str = "MembershipWatchRegistered";
    /// `MembershipWatchRemoved`.
    pub const REMOVED: &'static str = "MembershipWatchRemoved";
    /// Every event type.
    pub const TYPES: [&'static str; 2] = [Self::REGISTERED, Self::REMOVED];

    /// The event type's name.
    pub fn name(&self) -> &'static str {
        match self {
            MembershipWatchEvent::MembershipWatchRegistered { .. } => Self::REGISTERED,
            MembershipWatchEvent::MembershipWatchRemoved {} => Self::REMOVED,
        }
    }

    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        Self::TYPES.contains(&event_type).then_some("1")
    }
}

impl DomainEvent for MembershipWatchEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// What may be asked of a membership watch.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipWatchCommand {
    /// Register the watch (under a new id).
    Register {
        /// The group (the caller checked it exists).
        group_id: Uuid,
        /// Effective membership.
        include_descendants: bool,
        /// What it is for.
        description: Option<String>,
    },
    /// Remove it (a no-op when removed already).
    Remove,
}

/// Why a watch command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WatchError {
    /// An input is malformed (`field` names it).
    #[error("{field}: {message}")]
    Invalid {
        /// The input field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No watch of this id.
    #[error("no membership watch of this id")]
    NotFound,
    /// A watch of this id exists already.
    #[error("a membership watch of this id exists already")]
    AlreadyExists,
}

impl WatchError {
    /// The stable userError code.
    pub fn code(&self) -> Code {
        match self {
            WatchError::Invalid { .. } => Code::Invalid,
            WatchError::NotFound => Code::NotFound,
            WatchError::AlreadyExists => Code::AlreadyExists,
        }
    }

    /// The input field the error is about, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            WatchError::Invalid { field, .. } => Some(field),
            WatchError::NotFound | WatchError::AlreadyExists => Some("id"),
        }
    }
}

/// A membership watch's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipWatch {
    registered: bool,
    removed: bool,
}

impl MembershipWatch {
    /// What `command` records, or why it is refused.
    pub fn decide(
        &self,
        command: MembershipWatchCommand,
    ) -> Result<Vec<MembershipWatchEvent>, WatchError> {
        match command {
            MembershipWatchCommand::Register {
                group_id,
                include_descendants,
                description,
            } => {
                if self.registered {
                    return Err(WatchError::AlreadyExists);
                }
                let description = description
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty());
                if let Some(d) = &description {
                    crate::text::check_free_text("description", d, MAX_WATCH_DESCRIPTION_CHARS)
                        .map_err(|e| WatchError::Invalid {
                            field: "description",
                            message: e.error.to_string(),
                        })?;
                }
                Ok(vec![MembershipWatchEvent::MembershipWatchRegistered {
                    group_id,
                    include_descendants,
                    description,
                }])
            }
            MembershipWatchCommand::Remove => {
                if !self.registered {
                    return Err(WatchError::NotFound);
                }
                if self.removed {
                    return Ok(vec![]);
                }
                Ok(vec![MembershipWatchEvent::MembershipWatchRemoved {}])
            }
        }
    }
}

impl Aggregate for MembershipWatch {
    const TYPE: &'static str = "MembershipWatch";
    type Command = MembershipWatchCommand;
    type Event = MembershipWatchEvent;
    type Error = WatchError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            MembershipWatchEvent::MembershipWatchRegistered { .. } => self.registered = true,
            MembershipWatchEvent::MembershipWatchRemoved {} => self.removed = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register() -> MembershipWatchCommand {
        MembershipWatchCommand::Register {
            group_id: Uuid::nil(),
            include_descendants: true,
            description: Some("  crm sync ".into()),
        }
    }

    fn registered() -> MembershipWatch {
        let mut w = MembershipWatch::default();
        for e in w.decide(register()).expect("registered") {
            w.apply(e);
        }
        w
    }

    #[test]
    fn a_watch_is_registered_once_and_removed_once() {
        let events = MembershipWatch::default()
            .decide(register())
            .expect("registered");
        assert_eq!(
            events,
            vec![MembershipWatchEvent::MembershipWatchRegistered {
                group_id: Uuid::nil(),
                include_descendants: true,
                description: Some("crm sync".into()),
            }]
        );
        let mut w = registered();
        assert_eq!(w.decide(register()), Err(WatchError::AlreadyExists));
        let removed = w.decide(MembershipWatchCommand::Remove).expect("removed");
        assert_eq!(
            removed,
            vec![MembershipWatchEvent::MembershipWatchRemoved {}]
        );
        w.apply(removed[0].clone());
        assert_eq!(w.decide(MembershipWatchCommand::Remove), Ok(vec![]));
        assert_eq!(
            MembershipWatch::default().decide(MembershipWatchCommand::Remove),
            Err(WatchError::NotFound)
        );
    }

    #[test]
    fn descriptions_are_bounded_free_text() {
        let long = MembershipWatchCommand::Register {
            group_id: Uuid::nil(),
            include_descendants: false,
            description: Some("x".repeat(MAX_WATCH_DESCRIPTION_CHARS + 1)),
        };
        let err = MembershipWatch::default()
            .decide(long)
            .expect_err("too long");
        assert_eq!(err.code(), Code::Invalid);
        assert_eq!(err.field(), Some("description"));
    }
}
