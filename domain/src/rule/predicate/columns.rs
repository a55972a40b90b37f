//! The columns a condition reads, per kind of entity.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::super::fields::{Name, Scope};
use super::super::plan::MapKind;
use crate::inventory::{Device, Service};

/// What the entity offers a condition: the device (the entity, or a service's host, which
/// may be absent), the service, and the id `group:` looks up. One implementation per entity
/// kind, so that a device rule's predicate is compiled for devices alone (no test of which
/// record is there).
pub(super) trait Subject<'a>: Copy {
    fn device(self) -> Option<&'a Device>;
    fn service(self) -> Option<&'a Service>;
    fn id(self) -> &'a str;
}

#[derive(Clone, Copy)]
pub(super) struct OfDevice<'a>(pub(super) &'a Device);

impl<'a> Subject<'a> for OfDevice<'a> {
    #[inline(always)]
    fn device(self) -> Option<&'a Device> {
        Some(self.0)
    }
    #[inline(always)]
    fn service(self) -> Option<&'a Service> {
        None
    }
    #[inline(always)]
    fn id(self) -> &'a str {
        &self.0.id
    }
}

#[derive(Clone, Copy)]
pub(super) struct OfService<'a> {
    pub(super) service: &'a Service,
    pub(super) host: Option<&'a Device>,
}

impl<'a> Subject<'a> for OfService<'a> {
    #[inline(always)]
    fn device(self) -> Option<&'a Device> {
        self.host
    }
    #[inline(always)]
    fn service(self) -> Option<&'a Service> {
        Some(self.service)
    }
    #[inline(always)]
    fn id(self) -> &'a str {
        &self.service.id
    }
}

/// A text column of the subject.
#[derive(Clone, Copy)]
pub(super) enum TextField {
    DevId,
    Hostname,
    Ip,
    Mac,
    Vendor,
    Model,
    Os,
    OsVersion,
    Partition,
    Site,
    DevType,
    AgentId,
    PollerId,
    SvcId,
    SvcDeviceId,
    SvcType,
    SvcName,
    SvcStatus,
    /// A column the record does not have.
    Absent,
}

impl TextField {
    pub(super) fn of(scope: Scope, name: &Name) -> Self {
        use TextField as T;
        match scope {
            Scope::Device | Scope::Host => match name {
                Name::Id => T::DevId,
                Name::Hostname => T::Hostname,
                Name::Ip => T::Ip,
                Name::Mac => T::Mac,
                Name::Vendor => T::Vendor,
                Name::Model => T::Model,
                Name::Os => T::Os,
                Name::OsVersion => T::OsVersion,
                Name::Partition => T::Partition,
                Name::Site => T::Site,
                Name::Type => T::DevType,
                Name::AgentId => T::AgentId,
                Name::PollerId => T::PollerId,
                _ => T::Absent,
            },
            Scope::Service => match name {
                Name::Id => T::SvcId,
                Name::DeviceId => T::SvcDeviceId,
                Name::Type => T::SvcType,
                Name::Label => T::SvcName,
                Name::Status => T::SvcStatus,
                _ => T::Absent,
            },
        }
    }

    #[inline(always)]
    pub(super) fn read<'a>(self, s: impl Subject<'a>) -> Option<&'a str> {
        use TextField as T;
        let d = || s.device();
        let v = || s.service();
        match self {
            T::DevId => d().map(|d| d.id.as_str()),
            T::Hostname => d()?.hostname.as_deref(),
            T::Ip => d()?.ip.as_deref(),
            T::Mac => d()?.mac.as_deref(),
            T::Vendor => d()?.vendor.as_deref(),
            T::Model => d()?.model.as_deref(),
            T::Os => d()?.os.as_deref(),
            T::OsVersion => d()?.os_version.as_deref(),
            T::Partition => d()?.partition.as_deref(),
            T::Site => d()?.site.as_deref(),
            T::DevType => d()?.device_type.as_deref(),
            T::AgentId => d()?.agent_id.as_deref(),
            T::PollerId => d()?.poller_id.as_deref(),
            T::SvcId => v().map(|s| s.id.as_str()),
            T::SvcDeviceId => v().map(|s| s.device_id.as_str()),
            T::SvcType => v().map(|s| s.service_type.as_str()),
            T::SvcName => v().map(|s| s.name.as_str()),
            T::SvcStatus => v()?.status.as_deref(),
            T::Absent => None,
        }
    }
}

/// `tags` or `metadata` of the device or of the service.
#[derive(Clone, Copy)]
pub(super) enum MapField {
    DevTags,
    DevMetadata,
    SvcTags,
    SvcMetadata,
}

impl MapField {
    pub(super) fn of(scope: Scope, map: MapKind) -> Self {
        match (scope, map) {
            (Scope::Service, MapKind::Tags) => MapField::SvcTags,
            (Scope::Service, MapKind::Metadata) => MapField::SvcMetadata,
            (_, MapKind::Tags) => MapField::DevTags,
            (_, MapKind::Metadata) => MapField::DevMetadata,
        }
    }

    #[inline(always)]
    pub(super) fn read<'a>(self, s: impl Subject<'a>) -> Option<&'a BTreeMap<String, String>> {
        match self {
            MapField::DevTags => s.device().map(|d| &d.tags),
            MapField::DevMetadata => s.device().map(|d| &d.metadata),
            MapField::SvcTags => s.service().map(|s| &s.tags),
            MapField::SvcMetadata => s.service().map(|s| &s.metadata),
        }
    }
}

/// A time column of the subject.
#[derive(Clone, Copy)]
pub(super) enum TimeField {
    FirstSeen,
    LastSeen,
    SvcLastSeen,
    Absent,
}

impl TimeField {
    pub(super) fn read<'a>(self, s: impl Subject<'a>) -> Option<DateTime<Utc>> {
        match self {
            TimeField::FirstSeen => s.device()?.first_seen,
            TimeField::LastSeen => s.device()?.last_seen,
            TimeField::SvcLastSeen => s.service()?.last_seen,
            TimeField::Absent => None,
        }
    }
}
