use crate::codes::Code;
use uuid::Uuid;

/// Why a group command was refused. Each variant has a stable `code` that the API returns as a
/// userError.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupError {
    /// An input field is malformed.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A sibling already has this name (ignoring case).
    #[error("a sibling group is already named {name:?}")]
    NameTaken { name: String },
    /// The group or a referenced group does not exist (or was deleted).
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: Uuid },
    /// Parent and child must be of the same group type.
    #[error("a {child} group cannot be placed under a {parent} group")]
    TypeMismatch {
        child: &'static str,
        parent: &'static str,
    },
    /// The move or create would put a group deeper than allowed.
    #[error("groups may be at most {max} levels below the root")]
    DepthLimit { max: u32 },
    /// The move would make a group its own ancestor.
    #[error("cannot move a group under itself or one of its descendants")]
    Cycle,
    /// System root groups cannot be renamed, moved or deleted.
    #[error("system groups cannot be renamed, moved or deleted")]
    SystemGroup,
    /// Only leaf groups can be deleted.
    #[error("the group still has child groups; move or delete them first")]
    HasChildren,
    /// Create was sent to an id that already exists.
    #[error("group {0} already exists")]
    AlreadyExists(Uuid),
    /// Other groups' rules refer to this group (`group:`); change those rules first.
    #[error("the rules of these groups refer to it (group:); change them first: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Referenced(Vec<Uuid>),
    /// The rule is malformed, refers to groups it may not, or would depend on itself.
    #[error("{0}")]
    RuleInvalid(String),
    /// The hierarchy directory could not be read; not the caller's fault.
    #[error("group directory unavailable: {0}")]
    Directory(String),
}

impl GroupError {
    /// The stable userError code.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            GroupError::Invalid { .. } => Code::Invalid,
            GroupError::NameTaken { .. } => Code::NameTaken,
            GroupError::NotFound { .. } => Code::NotFound,
            GroupError::TypeMismatch { .. } => Code::TypeMismatch,
            GroupError::DepthLimit { .. } => Code::DepthLimit,
            GroupError::Cycle => Code::Cycle,
            GroupError::SystemGroup => Code::SystemGroup,
            GroupError::HasChildren => Code::HasChildren,
            GroupError::AlreadyExists(_) => Code::AlreadyExists,
            GroupError::RuleInvalid(_) => Code::RuleInvalid,
            GroupError::Referenced(_) => Code::Referenced,
            GroupError::Directory(_) => return None,
        })
    }

    /// The input field the error is about, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            GroupError::Invalid { field, .. } => Some(field),
            GroupError::NameTaken { .. } => Some("name"),
            GroupError::RuleInvalid(_) => Some("rule"),
            GroupError::TypeMismatch { .. } | GroupError::Cycle | GroupError::DepthLimit { .. } => {
                Some("parentId")
            }
            _ => None,
        }
    }
}
