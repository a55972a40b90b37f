//! One compiled condition of the plan lowered to a [`Check`], or to a constant when its
//! test cannot apply to its column.

use super::super::fields::{Name, Scope};
use super::super::plan::{CLeaf, Col, Test};
use super::columns::{MapField, TextField, TimeField};
use super::text::TextTest;
use super::{BoolTest, Check, IntTest, Outcome, PNode, TimeTest};

/// A leaf whose test cannot apply to its column: the reference evaluator's NULL.
enum Lowered {
    Check(Check),
    Value(Option<bool>),
}

pub(super) fn lower_leaf(leaf: &CLeaf) -> PNode {
    let on = Outcome::of(leaf.neg);
    let lowered = match &leaf.col {
        Col::Text(name) => Lowered::Check(match &leaf.test {
            Test::Eq(value) => Check::TextEq {
                field: TextField::of(leaf.scope, name),
                value: value.as_str().into(),
                on,
            },
            test => Check::Text {
                field: TextField::of(leaf.scope, name),
                test: TextTest::of(test),
                on,
            },
        }),
        Col::Key(map, key) => Lowered::Check(Check::Key {
            map: MapField::of(leaf.scope, *map),
            key: key.as_str().into(),
            test: TextTest::of(&leaf.test),
            on,
        }),
        Col::Map(map) => {
            let map = MapField::of(leaf.scope, *map);
            Lowered::Check(match &leaf.test {
                Test::HasKey(keys) => Check::HasKey {
                    map,
                    keys: keys.clone().into(),
                    on,
                },
                _ => Check::MapEmpty { map, on },
            })
        }
        // A service has no sources (an empty list) and no availability (NULL); service
        // rules reach these columns only through `device.`, so these arms are for exactness.
        Col::Sources => match (&leaf.test, leaf.scope) {
            (Test::ContainsAll(all), Scope::Service) => Lowered::Value(Some(all.is_empty())),
            (_, Scope::Service) => Lowered::Value(Some(true)),
            (Test::ContainsAll(all), _) => Lowered::Check(Check::Sources {
                all: all.clone().into(),
                on,
            }),
            _ => Lowered::Check(Check::SourcesEmpty { on }),
        },
        Col::Available => match (&leaf.test, leaf.scope) {
            (Test::Missing, Scope::Service) => Lowered::Value(Some(true)),
            (_, Scope::Service) => Lowered::Value(None),
            (Test::Missing, _) => Lowered::Check(Check::Available {
                test: BoolTest::Missing,
                on,
            }),
            (Test::Bools(values), _) => Lowered::Check(Check::Available {
                test: BoolTest::Accept {
                    on_true: values.contains(&true),
                    on_false: values.contains(&false),
                },
                on,
            }),
            _ => Lowered::Value(None),
        },
        Col::Port => match leaf.scope {
            Scope::Service => Lowered::Check(Check::Port {
                test: match &leaf.test {
                    Test::Missing => IntTest::Missing,
                    Test::Ints(v) => IntTest::In(v.clone().into()),
                    Test::IntCmp(op, n) => IntTest::Cmp(*op, *n),
                    _ => IntTest::Null,
                },
                on,
            }),
            // A device has no port: missing, so NULL for every test but `missing:`.
            _ => Lowered::Value(matches!(leaf.test, Test::Missing).then_some(true)),
        },
        Col::Time(name) => Lowered::Check(Check::Time {
            field: match (leaf.scope, name) {
                (Scope::Device | Scope::Host, Name::FirstSeen) => TimeField::FirstSeen,
                (Scope::Device | Scope::Host, Name::LastSeen) => TimeField::LastSeen,
                (Scope::Service, Name::LastSeen) => TimeField::SvcLastSeen,
                _ => TimeField::Absent,
            },
            test: match &leaf.test {
                Test::Missing => TimeTest::Missing,
                Test::TimeCmp(op, value) => TimeTest::Cmp(*op, *value),
                _ => TimeTest::Null,
            },
            on,
        }),
        Col::Membership => match &leaf.test {
            Test::Member {
                group: Some(group),
                direct,
            } => Lowered::Check(Check::Member {
                group: *group,
                direct: *direct,
                on,
            }),
            // An unresolved path matches nothing.
            Test::Member { group: None, .. } => Lowered::Value(Some(false)),
            _ => Lowered::Value(None),
        },
    };
    match lowered {
        Lowered::Check(check) => PNode::Check(check),
        Lowered::Value(value) => PNode::Const(on.apply(value)),
    }
}
