//! Group rules: setting and clearing them, previewing a rule, explaining a membership.

use corral_domain::codes::Code;
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::group::{GroupCommand, GroupType as DomainGroupType, RuleRef};
use corral_domain::membership::{MemberSource, MembershipCommand};
use corral_domain::rule::{self, Entity, EvalContext, GroupTarget, Parsed, Rule};
use corral_projections::group_tree::read as tree;
use corral_projections::history;
use corral_projections::inventory as inv;
use corral_projections::membership::read::{self as members, Mode};
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::errors::{coded, internal, UserError};
use super::membership::MembershipPayload;
use super::mutation::{expected, group_payload, run as run_group, GroupPayload};
use super::scope;
use super::types::{parse_id, Group, GroupType};
use crate::error_codes::ErrorCode;
use crate::metrics::Metrics;
use crate::permissions::Permission;

/// Most sample entities `previewRule` returns.
pub const MAX_PREVIEW: i32 = 100;

/// A group's rule and what its last evaluation did.
#[derive(SimpleObject, Clone, Debug)]
pub struct GroupRule {
    /// The normalized text form.
    pub text: String,
    /// The canonical, versioned JSON form.
    pub json: Json<Value>,
    /// Whether workers evaluate it.
    pub enabled: bool,
    /// The rule's version (1, 2, ... per group).
    pub version: i64,
    /// When it was last evaluated over the inventory.
    pub last_run_at: Option<DateTime<Utc>>,
    /// `OK`, `FAILED`, `DISABLED` or `CLEARED`.
    pub last_run_status: Option<String>,
    /// Entities the last successful run matched.
    pub last_match_count: Option<i64>,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// The rule version the last run evaluated.
    pub rule_version: Option<i64>,
    /// What started the last run: `rule_changed`, `schedule`, `repair`, ...
    pub last_cause: Option<String>,
}

/// Rules by group id, per request.
pub type Rules =
    async_graphql::dataloader::DataLoader<RuleLoader, async_graphql::dataloader::HashMapCache>;

/// Rules by group id (the write-side registry holds the current rule; `rule_runs` the runs).
pub struct RuleLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<Uuid> for RuleLoader {
    type Value = GroupRule;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, GroupRule>, Self::Error> {
        self.1.loader_batch("rule");
        let rows = sqlx::query(
            "SELECT g.id, g.rule, g.rule_text, g.rule_enabled, g.rule_version,
                    r.last_run_at, r.last_run_status, r.last_match_count, r.last_error,
                    r.rule_version AS run_version, r.last_cause
               FROM group_registry g LEFT JOIN rule_runs r ON r.group_id = g.id
              WHERE g.id = ANY($1) AND g.rule IS NOT NULL AND NOT g.deleted",
        )
        .bind(keys)
        .fetch_all(&self.0)
        .await
        .map_err(internal)?;
        let mut out = HashMap::new();
        for r in &rows {
            let id: Uuid = r.try_get("id").map_err(internal)?;
            out.insert(
                id,
                GroupRule {
                    text: r.try_get("rule_text").map_err(internal)?,
                    json: Json(r.try_get("rule").map_err(internal)?),
                    enabled: r.try_get("rule_enabled").map_err(internal)?,
                    version: r.try_get("rule_version").map_err(internal)?,
                    last_run_at: r.try_get("last_run_at").map_err(internal)?,
                    last_run_status: r.try_get("last_run_status").map_err(internal)?,
                    last_match_count: r.try_get("last_match_count").map_err(internal)?,
                    last_error: r.try_get("last_error").map_err(internal)?,
                    rule_version: r.try_get("run_version").map_err(internal)?,
                    last_cause: r.try_get("last_cause").map_err(internal)?,
                },
            );
        }
        Ok(out)
    }
}

/// Input of `setGroupRule`.
#[derive(InputObject)]
pub struct SetGroupRuleInput {
    /// The group.
    pub group_id: ID,
    /// The rule as text (`hostname:web% OR tags.env:prod`) or as its JSON form (a string
    /// holding a JSON object). Give this or `ruleJson`.
    pub rule: Option<String>,
    /// The rule's JSON form as a JSON object.
    pub rule_json: Option<Json<Value>>,
    /// Whether workers evaluate it (default true).
    #[graphql(default = true)]
    pub enabled: bool,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why (kept in the audit trail).
    pub reason: Option<String>,
}

/// Input of `clearGroupRule`.
#[derive(InputObject)]
pub struct ClearGroupRuleInput {
    /// The group.
    pub group_id: ID,
    /// Refuse unless the group is at this version.
    pub expected_version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// Input of `addGroupMembersByRule`.
#[derive(InputObject)]
pub struct AddGroupMembersByRuleInput {
    /// The group.
    pub group_id: ID,
    /// A rule (text or JSON); its current matches become static members.
    pub rule: String,
    /// Why.
    pub reason: Option<String>,
}

/// The result of `setGroupRule`.
#[derive(SimpleObject, Default)]
pub struct SetGroupRulePayload {
    /// The group with its rule (`null` on error).
    pub group: Option<Group>,
    /// Things worth knowing about an accepted rule (e.g. it matches everything).
    pub warnings: Vec<String>,
    /// Log position of the change.
    pub position: Option<super::scalars::Position>,
    /// True when the read models did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures (`RULE_INVALID` carries the column in its message).
    pub user_errors: Vec<UserError>,
}

fn rule_invalid(e: rule::RuleError) -> UserError {
    UserError::new(Some("rule"), Code::RuleInvalid, e.to_string())
}

/// Parses a rule given as text or as JSON (an object, or a string holding one).
pub(crate) fn parse_rule(
    text: Option<&str>,
    json: Option<&Value>,
    kind: DomainGroupType,
) -> std::result::Result<Parsed, UserError> {
    match (text, json) {
        (Some(_), Some(_)) | (None, None) => Err(UserError::new(
            Some("rule"),
            Code::Invalid,
            "give exactly one of rule and ruleJson",
        )),
        (None, Some(json)) => rule::from_json(json).map_err(rule_invalid),
        (Some(text), None) => {
            if text.trim_start().starts_with('{') {
                if let Ok(json) = serde_json::from_str::<Value>(text) {
                    return rule::from_json(&json).map_err(rule_invalid);
                }
            }
            rule::parse(text, kind).map_err(rule_invalid)
        }
    }
}

/// Turns the rule's `group:<path>` references into ids (paths are resolved once, at save,
/// so renaming a group never changes what a rule means). An unknown path is a `RuleError`
/// with its column.
pub(crate) async fn resolve_group_paths(
    pool: &PgPool,
    rule: &mut Rule,
) -> Result<std::result::Result<(), rule::RuleError>> {
    resolve_readable_paths(pool, rule, None).await
}

/// [`resolve_group_paths`] for a caller who may read only the groups `roots` (its scope,
/// expanded and sorted, as `scope::read_roots` gives it; `None`: every group): a reference, by path or by id, to a group beyond them is
/// an unknown group, as a missing group's would be, so that a rule can neither name nor
/// probe a group the caller may not see.
pub(crate) async fn resolve_readable_paths(
    pool: &PgPool,
    rule: &mut Rule,
    roots: Option<&[Uuid]>,
) -> Result<std::result::Result<(), rule::RuleError>> {
    let mut paths = HashMap::new();
    for r in rule.group_refs() {
        let (id, shown) = match &r.target {
            GroupTarget::Id(id) => (Some(*id), id.to_string()),
            GroupTarget::Path(p) => (
                tree::by_path(pool, rule.kind().as_str(), p)
                    .await
                    .map_err(internal)?
                    .map(|n| n.id),
                p.clone(),
            ),
        };
        if let (Some(roots), Some(found)) = (roots, id) {
            if !super::scope::within(roots, found) {
                return Ok(Err(rule::RuleError {
                    column: r.column,
                    message: format!("unknown group `{shown}`"),
                }));
            }
        }
        if let GroupTarget::Path(p) = r.target {
            paths.insert(p, id);
        }
    }
    Ok(rule.resolve_groups(&mut |p| paths.get(p).copied().flatten()))
}

/// [`resolve_readable_paths`], then the references as stored in `GroupRuleSet`.
pub(crate) async fn resolve_paths(
    pool: &PgPool,
    rule: &mut Rule,
    roots: Option<&[Uuid]>,
) -> Result<std::result::Result<Vec<RuleRef>, UserError>> {
    if let Err(e) = resolve_readable_paths(pool, rule, roots).await? {
        return Ok(Err(rule_invalid(e)));
    }
    Ok(Ok(rule
        .group_refs()
        .into_iter()
        .filter_map(|r| match r.target {
            GroupTarget::Id(id) => Some(RuleRef {
                group_id: id,
                direct: r.direct,
            }),
            GroupTarget::Path(_) => None,
        })
        .collect()))
}

/// A group's type from the write-side registry (`None`: no such live group).
async fn group_type(pool: &PgPool, id: Uuid) -> Result<Option<DomainGroupType>> {
    let t: Option<String> =
        sqlx::query_scalar("SELECT group_type FROM group_registry WHERE id = $1 AND NOT deleted")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(internal)?;
    Ok(t.as_deref().and_then(DomainGroupType::parse))
}

/// Whether the caller, who may read the subtrees of `roots` (`None`: every group), may see
/// the device or service `member_id` (static membership in its scope). Says nothing of
/// whether it exists.
async fn visible(pool: &PgPool, member_id: &str, roots: Option<&[Uuid]>) -> Result<bool> {
    let Some(roots) = roots else {
        return Ok(true);
    };
    Ok(
        !tree::visible_members(pool, &[member_id.to_string()], roots)
            .await
            .map_err(internal)?
            .is_empty(),
    )
}

fn not_found(id: Uuid) -> UserError {
    UserError::new(
        Some("groupId"),
        Code::NotFound,
        format!("group {id} does not exist"),
    )
}

/// Rule mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct RuleMutation;

#[Object]
impl RuleMutation {
    /// Gives a group a rule (`rule.edit` on it; `group:` paths beyond the caller's read
    /// scope are unknown). Its matches become members with source `RULE` as soon
    /// as the rule evaluator has run it (see `group.rule.lastRunAt`).
    async fn set_group_rule(
        &self,
        ctx: &Context<'_>,
        input: SetGroupRuleInput,
    ) -> Result<SetGroupRulePayload> {
        let fail = |e| {
            Ok(SetGroupRulePayload {
                user_errors: vec![e],
                ..Default::default()
            })
        };
        let id = match parse_id(&input.group_id, "groupId") {
            Ok(id) => id,
            Err(e) => return fail(e),
        };
        scope::require(ctx, Permission::RuleEdit, id).await?;
        let roots = scope::read_roots(ctx).await?;
        let expected_version = match expected(input.expected_version) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let Some(kind) = group_type(pool, id).await? else {
            return fail(not_found(id));
        };
        let parsed = match parse_rule(
            input.rule.as_deref(),
            input.rule_json.as_ref().map(|j| &j.0),
            kind,
        ) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let mut rule = parsed.rule;
        let refs = match resolve_paths(pool, &mut rule, roots.as_deref()).await? {
            Ok(refs) => refs,
            Err(e) => return fail(e),
        };
        let command = GroupCommand::SetRule {
            id,
            rule: rule.to_json(),
            text: rule.to_text(),
            kind: rule.kind(),
            refs,
            enabled: input.enabled,
        };
        let outcome = run_group(ctx, command, expected_version, input.reason).await?;
        let payload: GroupPayload = group_payload(ctx, outcome).await?;
        Ok(SetGroupRulePayload {
            warnings: if payload.user_errors.is_empty() {
                parsed.warnings
            } else {
                vec![]
            },
            group: payload.group,
            position: payload.position,
            wait_timed_out: payload.wait_timed_out,
            user_errors: payload.user_errors,
        })
    }

    /// Removes a group's rule (`rule.edit` on it); its rule-driven members leave once the evaluator has
    /// run. Static members and exclusions stay.
    async fn clear_group_rule(
        &self,
        ctx: &Context<'_>,
        input: ClearGroupRuleInput,
    ) -> Result<GroupPayload> {
        let id = match parse_id(&input.group_id, "groupId") {
            Ok(id) => id,
            Err(e) => return Ok(GroupPayload::from_error(e)),
        };
        scope::require(ctx, Permission::RuleEdit, id).await?;
        let expected_version = match expected(input.expected_version) {
            Ok(v) => v,
            Err(e) => return Ok(GroupPayload::from_error(e)),
        };
        let outcome = run_group(
            ctx,
            GroupCommand::ClearRule { id },
            expected_version,
            input.reason,
        )
        .await?;
        group_payload(ctx, outcome).await
    }

    /// Adds the current matches of a rule as static members (`membership.edit` on the group). At most 10,000
    /// matches; a bigger set is refused (`TOO_MANY`) so nothing is half-added.
    async fn add_group_members_by_rule(
        &self,
        ctx: &Context<'_>,
        input: AddGroupMembersByRuleInput,
    ) -> Result<MembershipPayload> {
        let fail = |e| {
            Ok(MembershipPayload {
                user_errors: vec![e],
                ..Default::default()
            })
        };
        let id = match parse_id(&input.group_id, "groupId") {
            Ok(id) => id,
            Err(e) => return fail(e),
        };
        scope::require(ctx, Permission::MembershipEdit, id).await?;
        let roots = scope::read_roots(ctx).await?;
        let pool = ctx.data_unchecked::<PgPool>();
        let Some(kind) = group_type(pool, id).await? else {
            return fail(not_found(id));
        };
        let mut rule = match parse_rule(Some(&input.rule), None, kind) {
            Ok(p) => p.rule,
            Err(e) => return fail(e),
        };
        if rule.kind() != kind {
            return fail(UserError::new(
                Some("rule"),
                Code::TypeMismatch,
                format!(
                    "the rule selects {} entities but the group holds {}",
                    rule.kind().as_str(),
                    kind.as_str()
                ),
            ));
        }
        if let Err(e) = resolve_paths(pool, &mut rule, roots.as_deref()).await? {
            return fail(e);
        }
        let max = corral_domain::membership::MAX_IDS_PER_COMMAND as i64;
        let ids = match corral_workers::rules::matching_ids(
            pool,
            kind,
            &rule,
            max,
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(internal)?
        {
            Ok(ids) => ids,
            Err(message) => return fail(UserError::new(Some("rule"), Code::TooMany, message)),
        };
        if ids.is_empty() {
            return Ok(MembershipPayload {
                group: tree::by_ids(pool, &[id])
                    .await
                    .map_err(internal)?
                    .pop()
                    .map(Group::from),
                ..Default::default()
            });
        }
        let mut ids: Vec<String> = ids.into_iter().collect();
        if let Some(roots) = &roots {
            // A scoped caller adds only the matches it may see: static membership in its
            // scope is what makes a device visible, so adding others would widen its access.
            ids = tree::visible_members(pool, &ids, roots)
                .await
                .map_err(internal)?;
            if ids.is_empty() {
                return Ok(MembershipPayload {
                    group: tree::by_ids(pool, &[id])
                        .await
                        .map_err(internal)?
                        .pop()
                        .map(Group::from),
                    ..Default::default()
                });
            }
        }
        ids.sort();
        super::membership::run(
            ctx,
            &input.group_id,
            || MembershipCommand::Add {
                member_ids: ids,
                source: MemberSource::Static,
                rule_version: None,
                cause: None,
            },
            input.reason,
        )
        .await
    }
}

/// One condition of a rule and whether it held.
#[derive(SimpleObject, Clone, Debug)]
pub struct ClauseMatch {
    /// The condition, as normalized text.
    pub clause: String,
    /// Whether it held for the entity.
    pub matched: bool,
}

/// A rule error with its column.
#[derive(SimpleObject, Clone, Debug)]
pub struct RuleProblem {
    /// 1-based column of the offending token, when there is one.
    pub column: Option<i32>,
    /// What is wrong.
    pub message: String,
}

/// What `previewRule` found.
#[derive(SimpleObject, Default)]
pub struct RulePreview {
    /// Whether the rule is valid.
    pub valid: bool,
    /// The normalized text (valid rules).
    pub normalized: Option<String>,
    /// The JSON form (valid rules).
    pub json: Option<Json<Value>>,
    /// Live entities it matches now (exact up to 100,000).
    pub count: i64,
    /// False when more than 100,000 match.
    pub count_exact: bool,
    /// The first matches, in id order (at most `first`).
    pub sample: Vec<super::members::Member>,
    /// Why the rule is invalid.
    pub errors: Vec<RuleProblem>,
    /// Warnings about a valid rule.
    pub warnings: Vec<String>,
}

/// One reason a member is in a group.
#[derive(SimpleObject, Clone, Debug)]
pub struct MembershipReason {
    /// The group whose direct member it is (the group itself or a descendant).
    pub via_group_id: ID,
    /// `STATIC` or `RULE`.
    pub source: MembershipSource,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// Where a membership comes from.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MembershipSource {
    /// Added by a person, a feed or `addGroupMembersByRule`.
    Static,
    /// Matched by the group's rule.
    Rule,
}

impl MembershipSource {
    /// From the read model's one-letter code.
    pub fn from_code(c: char) -> Self {
        if c == 'R' {
            MembershipSource::Rule
        } else {
            MembershipSource::Static
        }
    }
}

/// The answer of `explainMembership`.
#[derive(SimpleObject, Default)]
pub struct MembershipExplanation {
    /// Member of the group's effective membership (itself or a descendant).
    pub member: bool,
    /// Member of the group itself.
    pub direct_member: bool,
    /// Every direct membership that puts it in the group (empty when not a member).
    pub reasons: Vec<MembershipReason>,
    /// The group holds a static entry for it.
    pub static_entry: bool,
    /// The group holds a rule entry for it.
    pub rule_entry: bool,
    /// It is excluded from the group (exclusion beats static and rule entries).
    pub excluded: bool,
    /// Whether the entity exists in the live inventory.
    pub known: bool,
    /// The group's rule, when it has one.
    pub rule: Option<String>,
    /// Whether the group's rule matches the entity now (`null` without a rule).
    pub rule_matches: Option<bool>,
    /// Each condition of the rule and whether it held.
    pub clauses: Vec<ClauseMatch>,
    /// The rule's version (1, 2, ... per group: each `GroupRuleSet` is one), when it has one.
    pub rule_version: Option<i64>,
    /// The position the answer is as of (`null`: now).
    pub as_of_position: Option<super::scalars::Position>,
    /// The device's values the rule was evaluated on (then, as of a position), when the
    /// entity is a device the caller may see.
    pub device: Option<super::inventory::Device>,
    /// The service's values the rule was evaluated on, when the entity is a service.
    pub service: Option<super::inventory::Service>,
}

/// Rule queries (part of the `Query` root).
#[derive(Default)]
pub struct RuleQuery;

#[Object]
impl RuleQuery {
    /// Checks a rule and shows what it matches now: count, a sample, errors and warnings.
    /// (It runs the rule over the inventory: charged like a hundred-row page plus the rule's
    /// compiled cost, as a `devices(filter:)` is.) A scoped caller counts and samples only the
    /// entities it may see (static members of groups in its scope), and `group:` paths
    /// beyond its scope are unknown.
    #[graphql(
        complexity = "500 + usize::try_from(first).unwrap_or(0) * child_complexity + super::inventory::query::filter_complexity(Some(rule.as_str()), kind.into())"
    )]
    async fn preview_rule(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] kind: GroupType,
        rule: String,
        #[graphql(default = 10)] first: i32,
    ) -> Result<RulePreview> {
        if !(0..=MAX_PREVIEW).contains(&first) {
            return Err(coded(
                ErrorCode::BadUserInput,
                format!("first must be between 0 and {MAX_PREVIEW}"),
            ));
        }
        let kind = DomainGroupType::from(kind);
        let pool = ctx.data_unchecked::<PgPool>();
        let problem = |e: rule::RuleError| RulePreview {
            errors: vec![RuleProblem {
                column: e.column.map(|c| c as i32),
                message: e.message,
            }],
            ..Default::default()
        };
        let parsed = if rule.trim_start().starts_with('{') {
            match serde_json::from_str::<Value>(&rule) {
                Ok(json) => rule::from_json(&json),
                Err(_) => rule::parse(&rule, kind),
            }
        } else {
            rule::parse(&rule, kind)
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => return Ok(problem(e)),
        };
        let mut r = parsed.rule;
        let roots = scope::read_roots(ctx).await?;
        if let Err(e) = resolve_readable_paths(pool, &mut r, roots.as_deref()).await? {
            return Ok(problem(e));
        }
        let r_kind = r.kind();
        let mut fragment = r.to_sql(&inv::sql_context(Utc::now()));
        if let Some(roots) = roots {
            // A scoped caller counts and sees only the entities it may read.
            let param = format!("${}::text[]", fragment.params.len() + 1);
            let column = match r_kind {
                DomainGroupType::Device => "d.id",
                DomainGroupType::Service => "s.id",
            };
            fragment.sql = format!(
                "({}) AND {}",
                fragment.sql,
                tree::visible_members_filter(column, &param)
            );
            fragment.params.push(rule::SqlParam::TextArray(
                roots.iter().map(Uuid::to_string).collect(),
            ));
        }
        // The rule is the caller's: it runs within the request's database budget.
        let limit = i64::from(first);
        let (count, sample) = ctx
            .data::<crate::graphql::budget::DbBudget>()?
            .run(pool, move |c| {
                Box::pin(async move {
                    Ok(match r_kind {
                        DomainGroupType::Device => (
                            inv::count_devices(&mut *c, Some(&fragment)).await?,
                            inv::device_page(&mut *c, Some(&fragment), None, limit)
                                .await?
                                .into_iter()
                                .map(|d| super::members::Member::Device(d.into()))
                                .collect::<Vec<_>>(),
                        ),
                        DomainGroupType::Service => (
                            inv::count_services(&mut *c, Some(&fragment)).await?,
                            inv::service_page(&mut *c, Some(&fragment), None, limit)
                                .await?
                                .into_iter()
                                .map(|s| super::members::Member::Service(s.into()))
                                .collect::<Vec<_>>(),
                        ),
                    })
                })
            })
            .await?;
        Ok(RulePreview {
            valid: true,
            normalized: Some(r.to_text()),
            json: Some(Json(r.to_json())),
            count: count.total,
            count_exact: count.exact,
            sample,
            errors: vec![],
            warnings: parsed.warnings,
        })
    }

    /// Why a device or service is (or is not) in a group: every reason, its entries, and each
    /// condition of the group's rule with whether it held. A group beyond the caller's scope
    /// answers as a group that does not exist; an entity the caller may not see (not visible
    /// in its scope, not a member of the group) is not `known` and no rule is run on it.
    ///
    /// With `asOf` or `atPosition`, the answer of then: the member's entries and reasons
    /// folded from the log, the rule the group had then (`ruleVersion`), the device's or
    /// service's values then (`device`, `service`), and each clause evaluated on them at that
    /// instant, `group:` conditions on the memberships of then; `tree` picks the tree that
    /// turns direct memberships into effective ones (then, the default, or now). Scope is
    /// decided by today's tree, as for every historical answer.
    #[graphql(complexity = "20 + child_complexity")]
    async fn explain_membership(
        &self,
        ctx: &Context<'_>,
        group_id: ID,
        member_id: String,
        as_of: Option<DateTime<Utc>>,
        at_position: Option<super::scalars::Position>,
        tree: Option<super::history::MembershipTree>,
    ) -> Result<MembershipExplanation> {
        let group = group_id
            .parse::<Uuid>()
            .map_err(|_| coded(ErrorCode::BadUserInput, "groupId is not a group id"))?;
        if member_id.len() > 256 {
            return Err(coded(ErrorCode::BadUserInput, "memberId is too long"));
        }
        let position = super::history::requested_position(ctx, as_of, at_position).await?;
        let tree = super::history::tree_needs_position(position, tree)?;
        let pool = ctx.data_unchecked::<PgPool>();
        let roots = scope::read_roots(ctx).await?;
        // A group beyond the scope is answered as a group that does not exist.
        let hidden = roots.is_some() && !super::loaders::may_read(ctx, group).await?;
        let facts = match position {
            None => Facts::now(pool, group, &member_id, hidden).await?,
            Some(p) => Facts::at(pool, group, &member_id, hidden, p, tree).await?,
        };
        let reasons: Vec<MembershipReason> = facts
            .belongings
            .iter()
            .filter(|b| b.group_id == group)
            .flat_map(|b| b.reasons.iter())
            .map(|r| MembershipReason {
                via_group_id: ID(r.via_group.to_string()),
                source: MembershipSource::from_code(r.source),
                since: r.since,
            })
            .collect();
        let (static_entry, rule_entry, excluded) = facts.entries;
        let mut out = MembershipExplanation {
            member: !reasons.is_empty(),
            direct_member: reasons
                .iter()
                .any(|r| r.via_group_id.0 == group.to_string()),
            reasons,
            static_entry,
            rule_entry,
            excluded,
            as_of_position: position.map(super::scalars::Position),
            ..Default::default()
        };
        // An entity the caller may not see (neither visible in its scope nor a member of this
        // readable group, whose members are its data) is unknown, and no rule is run on it.
        let seen = out.member || visible(pool, &member_id, roots.as_deref()).await?;
        let (device_row, service_row) = if seen {
            facts.entity(pool, &member_id).await?
        } else {
            (None, None)
        };
        out.known = device_row.is_some() || service_row.is_some();
        out.device = device_row.clone().map(super::inventory::Device::from);
        out.service = service_row.clone().map(super::inventory::Service::from);
        let device = device_row.map(|r| r.device);
        let service = service_row.map(|r| r.service);
        let Some((json, version)) = facts.rule.clone() else {
            return Ok(out);
        };
        let rule = rule::from_json(&json).map_err(internal)?.rule;
        out.rule = Some(rule.to_text());
        out.rule_version = Some(version);
        let host = match &service {
            Some(s) => facts.entity(pool, &s.device_id).await?.0.map(|r| r.device),
            None => None,
        };
        let entity = match (rule.kind(), &device, &service) {
            (DomainGroupType::Device, Some(d), _) => Entity::Device(d),
            (DomainGroupType::Service, _, Some(s)) => Entity::Service(s, host.as_ref()),
            _ => return Ok(out),
        };
        let loaded = facts.group_sets(pool, &member_id).await?;
        let ctx = EvalContext {
            now: facts.now,
            groups: &loaded,
        };
        out.rule_matches = Some(rule.matches(entity, &ctx));
        out.clauses = rule
            .explain(entity, &ctx)
            .into_iter()
            .map(|c| ClauseMatch {
                clause: c.clause,
                matched: c.matched,
            })
            .collect();
        Ok(out)
    }
}

/// What `explainMembership` decides on, now or as of a position: the member's groups with
/// their reasons, its entries in the group, the group's rule (canonical JSON and version),
/// and where the entity and the memberships of its `group:` conditions are read.
struct Facts {
    belongings: Vec<members::Belonging>,
    entries: (bool, bool, bool),
    rule: Option<(Value, i64)>,
    /// The instant the rule is evaluated at (the position's time as of a position).
    now: DateTime<Utc>,
    /// `None`: now; else the position and the tree.
    at: Option<(i64, history::TreeAt)>,
}

impl Facts {
    async fn now(pool: &PgPool, group: Uuid, member: &str, hidden: bool) -> Result<Self> {
        if hidden {
            return Ok(Self::hidden(Utc::now(), None));
        }
        let belongings = members::groups_of(pool, &[member.to_string()], Mode::Effective)
            .await
            .map_err(internal)?
            .remove(member)
            .unwrap_or_default();
        let entries = members::entries(pool, group, member)
            .await
            .map_err(internal)?;
        let rule: Option<(Value, i64)> = sqlx::query_as(
            "SELECT rule, rule_version FROM group_registry
              WHERE id = $1 AND NOT deleted AND rule IS NOT NULL",
        )
        .bind(group)
        .fetch_optional(pool)
        .await
        .map_err(internal)?;
        Ok(Self {
            belongings,
            entries,
            rule,
            now: Utc::now(),
            at: None,
        })
    }

    async fn at(
        pool: &PgPool,
        group: Uuid,
        member: &str,
        hidden: bool,
        position: i64,
        tree: super::history::MembershipTree,
    ) -> Result<Self> {
        let mut conn = pool.acquire().await.map_err(internal)?;
        let now = public_log_time(&mut conn, position).await?;
        let tree = history::TreeAt::from(tree);
        if hidden {
            return Ok(Self::hidden(now, Some((position, tree))));
        }
        let belongings = history::groups_of_at(&mut conn, member, position, Mode::Effective, tree)
            .await
            .map_err(internal)?;
        let entry = history::member_entries_at(&mut conn, member, position)
            .await
            .map_err(internal)?
            .remove(&group)
            .unwrap_or_default();
        let rule = history::group_at(&mut conn, group, position)
            .await
            .map_err(internal)?
            .filter(|g| g.deleted_at.is_none())
            .and_then(|g| g.rule)
            .map(|r| (r.json, r.version));
        Ok(Self {
            belongings,
            entries: (
                entry.static_since.is_some(),
                entry.rule_since.is_some(),
                entry.excluded,
            ),
            rule,
            now,
            at: Some((position, tree)),
        })
    }

    fn hidden(now: DateTime<Utc>, at: Option<(i64, history::TreeAt)>) -> Self {
        Self {
            belongings: vec![],
            entries: (false, false, false),
            rule: None,
            now,
            at,
        }
    }

    /// The device and the service of that id, then or now.
    async fn entity(
        &self,
        pool: &PgPool,
        id: &str,
    ) -> Result<(Option<inv::DeviceRow>, Option<inv::ServiceRow>)> {
        let ids = std::slice::from_ref(&id.to_string()).to_vec();
        Ok(match self.at {
            None => (
                inv::devices_by_ids(pool, &ids)
                    .await
                    .map_err(internal)?
                    .pop(),
                inv::services_by_ids(pool, &ids)
                    .await
                    .map_err(internal)?
                    .pop(),
            ),
            Some((position, _)) => {
                let mut conn = pool.acquire().await.map_err(internal)?;
                (
                    inv::device_at(&mut conn, id, position)
                        .await
                        .map_err(internal)?,
                    inv::service_at(&mut conn, id, position)
                        .await
                        .map_err(internal)?,
                )
            }
        })
    }

    /// The memberships `group:` conditions test, then or now.
    async fn group_sets(&self, pool: &PgPool, member: &str) -> Result<members::GroupSets> {
        match self.at {
            None => members::group_sets(pool, &[member.to_string()])
                .await
                .map_err(internal),
            Some((position, tree)) => {
                let mut conn = pool.acquire().await.map_err(internal)?;
                history::group_sets_at(&mut conn, member, position, tree)
                    .await
                    .map_err(internal)
            }
        }
    }
}

/// When the event at `position` was recorded (the instant a rule is evaluated at, as of it).
async fn public_log_time(conn: &mut sqlx::PgConnection, position: i64) -> Result<DateTime<Utc>> {
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT e.recorded_at FROM event_log l JOIN events e USING (global_position)
          WHERE l.log_position = $1",
    )
    .bind(position)
    .fetch_optional(conn)
    .await
    .map_err(internal)?;
    Ok(at.unwrap_or_else(Utc::now))
}
