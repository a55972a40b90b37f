//! Every code of an expected failure ("userError") Corral answers with, declared once: the
//! aggregates' refusals, the checks of inputs, the rejections of ingested samples. The API
//! exposes them as the GraphQL enum `UserErrorCode`, and `docs/errors.md` lists them, both
//! generated from this table.

macro_rules! codes {
    ($($variant:ident => $text:literal, $meaning:literal;)*) => {
        /// A userError code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $meaning] $variant,)*
        }

        impl Code {
            /// Every code, in the order `docs/errors.md` lists them.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// What it means, for the documentation.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning,)*
                }
            }
        }
    };
}

/// Calls macro `$callback` with the table of codes (`Variant => "TEXT", "meaning";`...), so that
/// the GraphQL enum of the API is generated from the same rows.
#[macro_export]
macro_rules! code_table {
    ($callback:ident) => {
        $callback! {
        Invalid => "INVALID", "An input is malformed or out of its limits (the message says which and why).";
        NotFound => "NOT_FOUND", "The thing named does not exist (or is not the caller's).";
        NameTaken => "NAME_TAKEN", "A sibling group already has this name (ignoring case).";
        TypeMismatch => "TYPE_MISMATCH", "Device and service groups, members or rules do not mix.";
        DepthLimit => "DEPTH_LIMIT", "The group would be deeper than the hierarchy allows.";
        Cycle => "CYCLE", "The move (or a rule's `group:` reference) would make a group its own ancestor.";
        SystemGroup => "SYSTEM_GROUP", "The roots cannot be changed or deleted.";
        HasChildren => "HAS_CHILDREN", "A group with children cannot be deleted.";
        AlreadyExists => "ALREADY_EXISTS", "The thing to create exists already.";
        RuleInvalid => "RULE_INVALID", "A rule does not parse or type-check.";
        Referenced => "REFERENCED", "Another group's rule refers to this one.";
        UnknownMember => "UNKNOWN_MEMBER", "A member id the inventory does not know.";
        VersionConflict => "VERSION_CONFLICT", "`expectedVersion` (or `expectedLayoutVersion`) is not the current version, or a concurrent change won the race every time it was retried.";
        LayoutConflict => "LAYOUT_CONFLICT", "The dashboard's layout changed since `expectedLayoutVersion`.";
        AlreadyEnded => "ALREADY_ENDED", "The sweep run has ended already.";
        IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED", "The idempotency key was used for another request within its window.";
        WidgetNotFound => "WIDGET_NOT_FOUND", "No widget of that id on the dashboard.";
        WidgetExists => "WIDGET_EXISTS", "A widget of that id is on the dashboard already.";
        TooManyWidgets => "TOO_MANY_WIDGETS", "The dashboard holds the most widgets it may.";
        Overlap => "OVERLAP", "The widget would overlap another.";
        TooMany => "TOO_MANY", "More items than one call takes.";
        SweepsUnavailable => "SWEEPS_UNAVAILABLE", "Sweeps need NATS, which this server does not use.";
        OutOfRange => "OUT_OF_RANGE", "A number outside its range.";
        NotAllowed => "NOT_ALLOWED", "A target outside the poller's allow-list.";
        TooManyHosts => "TOO_MANY_HOSTS", "A run would sweep more hosts than allowed.";
        PrefixTooShort => "PREFIX_TOO_SHORT", "A CIDR prefix shorter than allowed.";
        TooManyRanges => "TOO_MANY_RANGES", "More ranges than one run may hold.";
        TooManyPorts => "TOO_MANY_PORTS", "More ports than one run may probe.";
        NoHosts => "NO_HOSTS", "The targets name no host.";
        TooOld => "TOO_OLD", "A sample older than the telemetry retention.";
        InFuture => "IN_FUTURE", "A sample too far in the future.";
        }
    };
}

code_table!(codes);

impl Code {
    /// The code named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for &code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert!(!code.meaning().is_empty());
        }
        assert_eq!(seen.len(), 31);
    }
}
