//! What a compiled rule costs to evaluate over one entity, in units of one equality test.
//!
//! The API charges a rule filter by this figure in a query's complexity, so a request cannot
//! ask the database to run dozens of regular expressions over the whole inventory: the
//! figure grows with what each condition does, not only with how many there are.

use super::plan::{Plan, Test};

/// Cost of a regular expression before its length counts.
const REGEX_BASE: u64 = 12;
/// Pattern characters per extra unit of a regex's cost.
const REGEX_CHARS_PER_UNIT: u64 = 4;
/// Cost of a LIKE pattern (ILIKE over every row).
const LIKE: u64 = 3;
/// Cost of a `group:` condition (a membership lookup per row).
const MEMBER: u64 = 8;

impl Plan {
    /// Sum of the conditions' costs (at least 1).
    pub(crate) fn cost(&self) -> u64 {
        let total: u64 = self
            .leaves
            .iter()
            .map(|leaf| match &leaf.test {
                Test::Eq(_) | Test::MacEq(_) | Test::Missing => 1,
                Test::Bools(_) | Test::IntCmp(..) | Test::TimeCmp(..) => 1,
                Test::In(v) | Test::MacIn(v) | Test::HasKey(v) | Test::ContainsAll(v) => {
                    1 + v.len() as u64 / 16
                }
                Test::Ints(v) => 1 + v.len() as u64 / 16,
                Test::Version(_, v) => 2 + v.len() as u64 / 8,
                Test::Ip(v) => 2 + v.len() as u64 / 8,
                Test::Like(_, p) | Test::MacLike(_, p) => LIKE + p.len() as u64 / 32,
                Test::Regex(r) => {
                    REGEX_BASE + r.pg_pattern.chars().count() as u64 / REGEX_CHARS_PER_UNIT
                }
                Test::Member { .. } => MEMBER,
            })
            .sum();
        total.max(1)
    }
}

#[cfg(test)]
mod tests {
    use crate::group::GroupType;
    use crate::rule::parse;

    fn cost(text: &str) -> u64 {
        parse(text, GroupType::Device).expect("valid").rule.cost()
    }

    #[test]
    fn conditions_cost_by_what_they_do() {
        assert_eq!(cost(""), 1);
        assert_eq!(cost("hostname:web-01"), 1);
        assert_eq!(cost("hostname:web-%"), 3);
        assert!(cost(r#"hostname~"^(a+)+b$""#) >= 12);
        assert!(cost("hostname:web-% site:ams1") < 10);
    }

    #[test]
    fn sixty_four_ored_regexes_cost_hundreds_of_equalities() {
        let regexes: Vec<String> = (0..64)
            .map(|i| format!(r#"hostname~"^(a|aa|aaa){{1,30}}x{i}$""#))
            .collect();
        let text = regexes.join(" OR ");
        assert!(cost(&text) > 64 * 12, "{}", cost(&text));
    }
}
