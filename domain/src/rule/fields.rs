//! The fields a rule can read: names, SRQL aliases, value types and what `!` does with
//! missing values.

use super::GroupType;

/// Whose field: the device of a device rule (`d`), the service of a service rule (`s`), or
/// the host device of a service rule (`sd`, written `device.<field>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scope {
    Device,
    Service,
    Host,
}

impl Scope {
    /// The table alias the SQL uses.
    pub(crate) fn alias(self) -> &'static str {
        match self {
            Scope::Device => "d",
            Scope::Service => "s",
            Scope::Host => "sd",
        }
    }
}

/// A field, by its canonical name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Name {
    Id,
    /// A service's `device_id` (on devices, `device_id` is SRQL's alias of `id`).
    DeviceId,
    /// A service's `name`.
    Label,
    Port,
    Status,
    Hostname,
    Ip,
    Mac,
    Vendor,
    Model,
    Os,
    OsVersion,
    Partition,
    Site,
    Type,
    AgentId,
    PollerId,
    /// The tag keys (`tags:k`).
    Tags,
    /// One tag's value (`tags.k`).
    Tag(String),
    /// The metadata object as a whole (only `missing:metadata`).
    Metadata,
    /// One metadata value (`metadata.k`).
    Meta(String),
    DiscoverySources,
    IsAvailable,
    FirstSeen,
    LastSeen,
}

/// What kind of value a field holds, which decides the operators it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueKind {
    Text,
    /// Text that also compares as a dotted version (`os_version`).
    Version,
    Ip,
    Mac,
    /// A set of keys (`tags`).
    Keys,
    /// The whole metadata object (only `missing:`).
    Object,
    /// A text array that must contain all values (`discovery_sources`).
    Sources,
    Bool,
    Int,
    Time,
}

/// A resolved field reference. `skip_nulls` is what `!` does with a missing value: SRQL's
/// own fields (`hostname`, `vendor_name`, ...) skip it, Corral's fields select it. It is part
/// of the AST because the alias chosen changes the meaning (`!vendor_name:x` vs `!vendor:x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Field {
    pub scope: Scope,
    pub name: Name,
    pub skip_nulls: bool,
}

/// SRQL tokens that shape results rather than select rows.
const SHAPE_TOKENS: &[&str] = &[
    "limit",
    "sort",
    "order",
    "stats",
    "time",
    "timeframe",
    "bucket",
    "downsample",
    "agg",
    "series",
    "value_field",
    "value-field",
    "rollup_stats",
    "window",
    "bounded",
    "mode",
];

/// SRQL device fields that Corral's inventory does not have.
const SRQL_ONLY: &[&str] = &[
    "gateway_id",
    "risk_level",
    "type_id",
    "os.type",
    "deleted",
    "include_deleted",
];

impl Field {
    /// Resolves a field name as written (any case) for a rule of `kind`.
    pub(crate) fn resolve(written: &str, kind: GroupType) -> Result<Field, String> {
        let lower = written.to_lowercase();
        if SHAPE_TOKENS.contains(&lower.as_str()) {
            let hint = if lower == "time" || lower == "timeframe" {
                " (for recently seen devices write `last_seen:>=now-7d`)"
            } else {
                ""
            };
            return Err(format!(
                "`{written}:` shapes SRQL query results; it cannot be part of a membership rule{hint}"
            ));
        }
        match kind {
            GroupType::Device => {
                if lower.starts_with("device.") {
                    return Err(format!(
                        "`{written}` names a service's host device; this is a device rule"
                    ));
                }
                let (name, skip_nulls) = device_name(&lower, written)?;
                Ok(Field {
                    scope: Scope::Device,
                    name,
                    skip_nulls,
                })
            }
            GroupType::Service => {
                if let Some(rest) = lower.strip_prefix("device.") {
                    let (name, skip_nulls) = device_name(rest, written)?;
                    return Ok(Field {
                        scope: Scope::Host,
                        name,
                        skip_nulls,
                    });
                }
                let name = match lower.as_str() {
                    "id" => Name::Id,
                    "device_id" => Name::DeviceId,
                    "type" => Name::Type,
                    "name" => Name::Label,
                    "port" => Name::Port,
                    "status" => Name::Status,
                    "tags" => Name::Tags,
                    "metadata" => Name::Metadata,
                    "last_seen" => Name::LastSeen,
                    other => match keyed(other)? {
                        Some(name) => name,
                        None => {
                            return Err(format!(
                                "unknown service field `{written}` (services have id, device_id, type, name, port, status, tags, metadata.<key>, last_seen and device.<field>)"
                            ))
                        }
                    },
                };
                Ok(Field {
                    scope: Scope::Service,
                    name,
                    skip_nulls: false,
                })
            }
        }
    }

    /// Sets `skip_nulls` to what the canonical name means; used where `!` plays no part,
    /// so that equal conditions have equal ASTs.
    pub(crate) fn canonical(mut self) -> Field {
        self.skip_nulls = default_skip_nulls(self.scope, &self.name);
        self
    }

    /// The name that prints this field with its `!` meaning.
    pub(crate) fn display_name(&self) -> String {
        let alias = self.skip_nulls != default_skip_nulls(self.scope, &self.name);
        let base: String = match (&self.name, alias) {
            (Name::Id, true) => "uid".into(),
            (Name::Vendor, true) => "vendor_name".into(),
            (Name::Tag(k), _) => format!("tags.{k}"),
            (Name::Meta(k), _) => format!("metadata.{k}"),
            (Name::Label, _) => "name".into(),
            (name, _) => name.column().into(),
        };
        match self.scope {
            Scope::Host => format!("device.{base}"),
            _ => base,
        }
    }

    /// The inventory column it reads, as [`Rule::fields`](super::Rule::fields) reports it.
    pub(crate) fn column_name(&self) -> String {
        let column = self.name.column();
        match self.scope {
            Scope::Host => format!("device.{column}"),
            _ => column.to_string(),
        }
    }

    pub(crate) fn value_kind(&self) -> ValueKind {
        match self.name {
            Name::Ip => ValueKind::Ip,
            Name::Mac => ValueKind::Mac,
            Name::OsVersion => ValueKind::Version,
            Name::Tags => ValueKind::Keys,
            Name::Metadata => ValueKind::Object,
            Name::DiscoverySources => ValueKind::Sources,
            Name::IsAvailable => ValueKind::Bool,
            Name::Port => ValueKind::Int,
            Name::FirstSeen | Name::LastSeen => ValueKind::Time,
            _ => ValueKind::Text,
        }
    }
}

impl Name {
    /// The column of the `devices` or `services` table.
    pub(crate) fn column(&self) -> &'static str {
        match self {
            Name::Id => "id",
            Name::DeviceId => "device_id",
            Name::Label => "name",
            Name::Port => "port",
            Name::Status => "status",
            Name::Hostname => "hostname",
            Name::Ip => "ip",
            Name::Mac => "mac",
            Name::Vendor => "vendor",
            Name::Model => "model",
            Name::Os => "os",
            Name::OsVersion => "os_version",
            Name::Partition => "partition",
            Name::Site => "site",
            Name::Type => "type",
            Name::AgentId => "agent_id",
            Name::PollerId => "poller_id",
            Name::Tags | Name::Tag(_) => "tags",
            Name::Metadata | Name::Meta(_) => "metadata",
            Name::DiscoverySources => "discovery_sources",
            Name::IsAvailable => "is_available",
            Name::FirstSeen => "first_seen",
            Name::LastSeen => "last_seen",
        }
    }
}

/// What `!` does with a missing value under the field's canonical name: SRQL's fields keep
/// SRQL's meaning (`<>` skips NULL for hostname, ip, model, type, agent_id, is_available and
/// `uid`), everything else selects missing values.
fn default_skip_nulls(scope: Scope, name: &Name) -> bool {
    scope != Scope::Service
        && matches!(
            name,
            Name::Hostname
                | Name::Ip
                | Name::Model
                | Name::Type
                | Name::AgentId
                | Name::IsAvailable
        )
}

fn device_name(lower: &str, written: &str) -> Result<(Name, bool), String> {
    let name = match lower {
        "id" => Name::Id,
        "uid" | "device_id" => return Ok((Name::Id, true)),
        "hostname" => Name::Hostname,
        "ip" => Name::Ip,
        "mac" => Name::Mac,
        "vendor" => Name::Vendor,
        "vendor_name" => return Ok((Name::Vendor, true)),
        "model" => Name::Model,
        "os" | "os.name" => Name::Os,
        "os_version" | "os.version" => Name::OsVersion,
        "partition" => Name::Partition,
        "site" => Name::Site,
        "type" | "device_type" => Name::Type,
        "agent_id" => Name::AgentId,
        "poller_id" => Name::PollerId,
        "tags" => Name::Tags,
        "metadata" => Name::Metadata,
        "discovery_sources" => Name::DiscoverySources,
        "is_available" => Name::IsAvailable,
        "first_seen" => Name::FirstSeen,
        "last_seen" => Name::LastSeen,
        other if SRQL_ONLY.contains(&other) || other.starts_with("hw_info.") => {
            return Err(format!(
                "SRQL field `{written}` is not part of Corral's inventory"
            ))
        }
        other => match keyed(other)? {
            Some(name) => name,
            None => return Err(format!("unknown field `{written}`")),
        },
    };
    let skip = default_skip_nulls(Scope::Device, &name);
    Ok((name, skip))
}

/// `tags.<key>` and `metadata.<key>`, with SRQL's key rule (`[A-Za-z0-9_-]{1,64}`, lower-cased).
fn keyed(lower: &str) -> Result<Option<Name>, String> {
    let (map, key) = if let Some(key) = lower.strip_prefix("tags.") {
        ("tags", key)
    } else if let Some(key) = lower.strip_prefix("metadata.") {
        ("metadata", key)
    } else {
        return Ok(None);
    };
    let valid = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "invalid {map} key `{key}`: keys are 1 to 64 letters, digits, `_` or `-`"
        ));
    }
    Ok(Some(if map == "tags" {
        Name::Tag(key.to_string())
    } else {
        Name::Meta(key.to_string())
    }))
}
