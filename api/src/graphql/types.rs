//! The `Group` type and its connection.

use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, Json, Result, SimpleObject, ID,
};
use chrono::{DateTime, Utc};
use corral_domain::codes::Code;
use corral_domain::group::GroupType as DomainGroupType;
use corral_projections::group_tree::{read::After, Node};
use corral_projections::walk::Mark;
use uuid::Uuid;

use super::errors::coded;
use super::loaders::{Ancestors, Capabilities, ChildCounts, Children, ChildrenKey, Groups};
use crate::error_codes::ErrorCode;

/// Largest page a client may ask for.
pub const MAX_PAGE: i32 = 1000;
/// Page size when `first` is omitted.
pub const DEFAULT_PAGE: i32 = 50;

/// What a group holds.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum GroupType {
    /// Devices.
    Device,
    /// Services.
    Service,
}

impl From<GroupType> for DomainGroupType {
    fn from(t: GroupType) -> Self {
        match t {
            GroupType::Device => DomainGroupType::Device,
            GroupType::Service => DomainGroupType::Service,
        }
    }
}

impl GroupType {
    fn from_stored(s: &str) -> Self {
        if s == "SERVICE" {
            GroupType::Service
        } else {
            GroupType::Device
        }
    }
}

/// What a group's effective members (its own and every descendant's) offer, as the
/// capabilities worker last computed it (`docs/capabilities.md`). All false until it finds
/// otherwise.
#[derive(SimpleObject, Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCapabilities {
    /// Some effective member device sent sysmon telemetry in the recent window (24 h by
    /// default). Always false for service groups.
    pub has_sysmon: bool,
    /// Some effective member device (not removed) lists `snmp` among its discovery sources.
    /// Always false for service groups.
    pub has_snmp: bool,
    /// Service groups: some effective member service was checked in the recent window.
    /// Device groups: some service of an effective member device was.
    pub has_services: bool,
}

impl From<corral_domain::group::GroupCapabilities> for GroupCapabilities {
    fn from(c: corral_domain::group::GroupCapabilities) -> Self {
        Self {
            has_sysmon: c.has_sysmon,
            has_snmp: c.has_snmp,
            has_services: c.has_services,
        }
    }
}

/// A group of devices or services in the hierarchy.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Group {
    /// The group's id (its aggregate id).
    pub id: ID,
    /// Name, unique among its siblings ignoring case.
    pub name: String,
    /// Device or service group.
    #[graphql(name = "type")]
    pub group_type: GroupType,
    /// Free text.
    pub description: Option<String>,
    /// A JSON object (at most 16 KiB).
    pub metadata: Json<serde_json::Value>,
    /// Names from the root down, joined by `/`.
    pub path: String,
    /// Levels below the root (the root is 0).
    pub depth: i32,
    /// System root groups cannot be renamed, moved or deleted.
    pub is_system: bool,
    /// The aggregate version; pass it as `expectedVersion` for optimistic concurrency.
    pub version: i64,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// When the group was deleted. Always null for a live group; a group read as of a past
    /// position (`group(asOf | atPosition)`) reports its deletion, whether it happened at or
    /// before that position (it no longer existed then) or since.
    pub deleted_at: Option<DateTime<Utc>>,
    #[graphql(skip)]
    pub uuid: Uuid,
    #[graphql(skip)]
    pub parent_id: Option<Uuid>,
    /// The log position a historical group reflects (`None`: the live group).
    #[graphql(skip)]
    pub at_position: Option<i64>,
    /// The historical state behind a historical group (rule, ancestors).
    #[graphql(skip)]
    pub past: Option<std::sync::Arc<corral_projections::history::HistoricalGroup>>,
}

impl From<Node> for Group {
    fn from(n: Node) -> Self {
        Self {
            id: ID(n.id.to_string()),
            name: n.name,
            group_type: GroupType::from_stored(&n.group_type),
            description: n.description,
            metadata: Json(n.metadata),
            path: n.path,
            depth: n.depth,
            is_system: n.is_system,
            version: n.version,
            created_at: n.created_at,
            updated_at: n.updated_at,
            deleted_at: None,
            uuid: n.id,
            parent_id: n.parent_id,
            at_position: None,
            past: None,
        }
    }
}

#[ComplexObject]
impl Group {
    /// The global id (for `node`/`nodes`); `id` stays the group's UUID.
    pub(crate) async fn node_id(&self) -> ID {
        super::node::global_id("Group", &self.id)
    }

    /// The log position this group reflects when read as of the past (`group(asOf |
    /// atPosition)`); null for the live group. Every field of a historical group answers as
    /// of this position.
    async fn as_of_position(&self) -> Option<super::scalars::Position> {
        self.at_position.map(super::scalars::Position)
    }

    /// The parent group (`null` for a root, and for a parent beyond the caller's scope).
    async fn parent(&self, ctx: &Context<'_>) -> Result<Option<Group>> {
        if let Some(position) = self.at_position {
            return super::history::parent(ctx, self, position).await;
        }
        let Some(parent) = self.parent_id else {
            return Ok(None);
        };
        if !super::loaders::may_read(ctx, parent).await? {
            return Ok(None);
        }
        Ok(ctx
            .data_unchecked::<Groups>()
            .load_one(parent)
            .await?
            .map(Group::from))
    }

    /// Ancestors from the root down to the parent; only those within the caller's scope.
    async fn ancestors(&self, ctx: &Context<'_>) -> Result<Vec<Group>> {
        if let Some(position) = self.at_position {
            return super::history::ancestors(ctx, self, position).await;
        }
        let loaded = ctx
            .data_unchecked::<Ancestors>()
            .load_one(self.uuid)
            .await?
            .unwrap_or_default();
        let ids: Vec<Uuid> = loaded.iter().map(|n| n.id).collect();
        let readable = super::loaders::readable(ctx, &ids).await?;
        Ok(loaded
            .into_iter()
            .filter(|n| readable.contains(&n.id))
            .map(Group::from)
            .collect())
    }

    /// The group's rule (dynamic membership), with its last evaluation. For a historical
    /// group, the rule it had then, without run statistics (the `last*` fields are null).
    async fn rule(&self, ctx: &Context<'_>) -> Result<Option<super::rules::GroupRule>> {
        if self.at_position.is_some() {
            return Ok(super::history::rule(self));
        }
        ctx.data_unchecked::<super::rules::Rules>()
            .load_one(self.uuid)
            .await
    }

    /// The group's capability flags, kept by the capabilities worker from recent telemetry
    /// and the inventory. For a historical group, the flags it had then.
    async fn capabilities(&self, ctx: &Context<'_>) -> Result<GroupCapabilities> {
        if let Some(past) = &self.past {
            return Ok(past.capabilities.into());
        }
        Ok(ctx
            .data_unchecked::<Capabilities>()
            .load_one(self.uuid)
            .await?
            .unwrap_or_default()
            .into())
    }

    /// Members in member id order. DIRECT (the default): the group's own (static and rule matches, minus
    /// exclusions). EFFECTIVE: its own and every descendant's, each once, with the nearest
    /// group that holds it as `viaGroup`. `source` keeps only members of that source.
    /// `asOf` (or a historical group) answers as the membership was then, tree included,
    /// folded from the event log: see `docs/membership.md`, "Time travel", for the cost.
    ///
    /// Live pages form a consistent walk: the cursors of the first page record the log
    /// position (the read model's checkpoint) it was read at, and a later page (`after` or
    /// `before` one of them) answers as of that state, or, when the walked members changed
    /// since, fails with `CURSOR_STALE` (restart the walk, or page `group(atPosition)`).
    /// `last`/`before` page backward (limits as for `first`; not with `first`/`after`);
    /// historical pages go forward only.
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + if mode == Some(super::members::MembershipMode::Effective) { super::members::EFFECTIVE_COST } else { 1 } + if as_of.is_some() { super::history::HISTORY_COST } else { 0 }"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn members(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
        source: Option<super::rules::MembershipSource>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<super::members::GroupMemberConnection> {
        let mode = mode.unwrap_or_default();
        let paging = paging(first, after, last, before)?;
        if let Some(p) = super::history::members_position(ctx, self, as_of).await? {
            if paging.backward {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    "last/before are not available for historical members: page with first/after",
                ));
            }
            return super::history::members(ctx, self, p, mode, source, first, paging.cursor).await;
        }
        super::members::page(ctx, self, mode, source, paging).await
    }

    /// How many members the group has (EFFECTIVE: distinct over its subtree; exact, and one
    /// stored row either way).
    #[graphql(
        complexity = "if mode == Some(super::members::MembershipMode::Effective) { super::members::EFFECTIVE_COST } else { 1 }"
    )]
    async fn member_count(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
        source: Option<super::rules::MembershipSource>,
    ) -> Result<i64> {
        if let Some(position) = super::history::state_position(self) {
            let mode = mode.unwrap_or_default();
            return super::history::member_count(ctx, self, position, mode, source).await;
        }
        super::members::count(ctx, self, mode.unwrap_or_default(), source).await
    }

    /// Child groups, ordered by name. `last`/`before` page backward (limits as for `first`;
    /// live groups only). Plain keyset cursors: a child added or renamed between pages shows
    /// up or not depending on where it sorts (see `docs/architecture.md`, GraphQL reads).
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn children(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<GroupConnection> {
        let paging = paging(first, after, last, before)?;
        if let Some(position) = self.at_position {
            if paging.backward {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    "last/before are not available for a historical group's children",
                ));
            }
            return super::history::children(ctx, self, position, first, paging.cursor).await;
        }
        let cursor = paging.cursor.as_deref().map(decode_cursor).transpose()?;
        let key = ChildrenKey {
            parent: self.uuid,
            limit: paging.size + 1,
            after: cursor,
            backward: paging.backward,
        };
        let rows = ctx
            .data_unchecked::<Children>()
            .load_one(key)
            .await?
            .unwrap_or_default();
        let total = ctx
            .data_unchecked::<ChildCounts>()
            .load_one(self.uuid)
            .await?
            .unwrap_or(0);
        Ok(GroupConnection::walk_page(
            rows,
            &paging,
            total,
            None,
            |n| n.name_key.clone(),
        ))
    }

    /// The group's audit trail (auditors and admins): its own events and its membership's,
    /// oldest first.
    #[graphql(
        complexity = "i64::from(first.unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<super::audit::AuditConnection> {
        let filter = crate::audit::AuditFilter {
            group_id: Some(self.uuid),
            ..Default::default()
        };
        super::audit::entries(ctx, filter, first, after).await
    }

    /// Health over `[from, to)` in buckets of `bucket`: from the group rollups, or, when the
    /// group has none yet, computed from raw samples for windows up to 24 hours (`source`
    /// says which; pass `source` to insist on one). Telemetry is not event-sourced: a group
    /// read as of the past reports the same series as the live group. `bucket` defaults to
    /// `FIVE_MINUTES`; at most 2016 buckets.
    #[graphql(complexity = 50)]
    async fn health(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Option<super::health::HealthBucketSize>,
        source: Option<super::health::HealthSource>,
    ) -> Result<super::health::GroupHealth> {
        if self.deleted_at.is_some() {
            return Err(coded(ErrorCode::NotFound, "the group is deleted"));
        }
        super::health::load_health(
            ctx.data_unchecked::<sqlx::PgPool>(),
            self.uuid,
            from,
            to,
            bucket
                .unwrap_or(super::health::HealthBucketSize::FiveMinutes)
                .into(),
            source,
        )
        .await
    }
}

/// One group in a page.
#[derive(SimpleObject, Clone, Debug)]
pub struct GroupEdge {
    /// Opaque position of this edge, for `after`.
    pub cursor: String,
    /// The group.
    pub node: Group,
}

/// Relay page information.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// More edges follow.
    pub has_next_page: bool,
    /// Edges precede this page.
    pub has_previous_page: bool,
    /// Cursor of the first edge.
    pub start_cursor: Option<String>,
    /// Cursor of the last edge.
    pub end_cursor: Option<String>,
}

/// A page of groups.
#[derive(SimpleObject, Clone, Debug)]
pub struct GroupConnection {
    /// The groups in this page.
    pub edges: Vec<GroupEdge>,
    /// Where this page stands.
    pub page_info: PageInfo,
    /// Matches in all pages.
    pub total_count: i64,
}

impl GroupConnection {
    /// Builds a page from `first + 1` fetched rows; `key` gives each row's sort key.
    pub fn page(
        mut rows: Vec<Node>,
        first: i64,
        total: i64,
        key: impl Fn(&Node) -> String,
    ) -> Self {
        let has_next_page = rows.len() as i64 > first;
        rows.truncate(first as usize);
        let edges: Vec<GroupEdge> = rows
            .into_iter()
            .map(|n| GroupEdge {
                cursor: encode_cursor(&After {
                    key: key(&n),
                    id: n.id,
                }),
                node: Group::from(n),
            })
            .collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page: false,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        };
        Self {
            edges,
            page_info,
            total_count: total,
        }
    }
}

impl GroupConnection {
    /// A keyset page from `size + 1` rows read `paging`'s way (nearest first when
    /// backward); with `marks`, a page of a consistent walk whose cursors carry them.
    pub fn walk_page(
        mut rows: Vec<Node>,
        paging: &Paging,
        total: i64,
        marks: Option<&Marks>,
        key: impl Fn(&Node) -> String,
    ) -> Self {
        let more = rows.len() as i64 > paging.size;
        rows.truncate(paging.size as usize);
        if paging.backward {
            rows.reverse();
        }
        let edges: Vec<GroupEdge> = rows
            .into_iter()
            .map(|n| {
                let after = After {
                    key: key(&n),
                    id: n.id,
                };
                GroupEdge {
                    cursor: match marks {
                        Some(m) => encode_walk(&after, m),
                        None => encode_cursor(&after),
                    },
                    node: Group::from(n),
                }
            })
            .collect();
        let page_info = page_info(
            paging,
            more,
            edges.first().map(|e| e.cursor.clone()),
            edges.last().map(|e| e.cursor.clone()),
        );
        Self {
            edges,
            page_info,
            total_count: total,
        }
    }
}

/// The children page a selection's arguments ask for, as the resolver will read it:
/// (rows to fetch minus one, cursor, backward); `None` when they are not plain literals or
/// are invalid (the resolver then loads, or refuses, on its own).
fn page_args(
    args: &[(async_graphql::Name, async_graphql::Value)],
) -> Option<(i64, Option<After>, bool)> {
    let (mut first, mut after, mut last, mut before) = (None, None, None, None);
    for (name, value) in args {
        match (name.as_str(), value) {
            ("first", async_graphql::Value::Number(n)) => first = Some(n.as_i64()?),
            ("last", async_graphql::Value::Number(n)) => last = Some(n.as_i64()?),
            ("after", async_graphql::Value::String(s)) => after = Some(s.clone()),
            ("before", async_graphql::Value::String(s)) => before = Some(s.clone()),
            ("first" | "after" | "last" | "before", async_graphql::Value::Null) => {}
            _ => return None,
        }
    }
    let p = paging(
        first.map(i32::try_from).transpose().ok()?,
        after,
        last.map(i32::try_from).transpose().ok()?,
        before,
    )
    .ok()?;
    let cursor = p.cursor.as_deref().map(decode_cursor).transpose().ok()?;
    Some((p.size, cursor, p.backward))
}

/// Loads, one batch per field, what the selection will ask of every node of a page, so that
/// a page costs a fixed number of queries whatever its size; and caches the nodes themselves
/// (their children's `parent` is then free).
pub async fn prefetch(ctx: &Context<'_>, nodes: &[Node]) -> Result<()> {
    let node = ctx.look_ahead().field("edges").field("node");
    if nodes.is_empty() || !node.exists() {
        return Ok(());
    }
    let groups = ctx.data_unchecked::<Groups>();
    groups
        .feed_many(nodes.iter().map(|n| (n.id, n.clone())))
        .await;
    let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
    let parents: Vec<Uuid> = nodes.iter().filter_map(|n| n.parent_id).collect();
    let children = node.field("children");
    let mut page_keys = Vec::new();
    for selection in children.selection_fields() {
        if let Some((size, after, backward)) =
            selection.arguments().ok().as_deref().and_then(page_args)
        {
            page_keys.extend(ids.iter().map(|id| ChildrenKey {
                parent: *id,
                limit: size + 1,
                after: after.clone(),
                backward,
            }));
        }
    }
    let parent_load = async {
        if node.field("parent").exists() {
            groups.load_many(parents).await?;
        }
        Ok::<_, async_graphql::Error>(())
    };
    let ancestors_load = async {
        if node.field("ancestors").exists() {
            ctx.data_unchecked::<Ancestors>()
                .load_many(ids.clone())
                .await?;
        }
        Ok(())
    };
    let counts_load = async {
        if children.exists() {
            ctx.data_unchecked::<ChildCounts>()
                .load_many(ids.clone())
                .await?;
        }
        Ok(())
    };
    let pages_load = async {
        if !page_keys.is_empty() {
            ctx.data_unchecked::<Children>()
                .load_many(page_keys)
                .await?;
        }
        Ok(())
    };
    futures::try_join!(parent_load, ancestors_load, counts_load, pages_load)?;
    Ok(())
}

/// Validates `first`.
pub fn page_size(first: Option<i32>) -> Result<i64> {
    match first.unwrap_or(DEFAULT_PAGE) {
        n if (0..=MAX_PAGE).contains(&n) => Ok(i64::from(n)),
        n => Err(coded(
            ErrorCode::BadUserInput,
            format!("first must be between 0 and {MAX_PAGE}, got {n}"),
        )),
    }
}

/// An opaque cursor: hex of `key NUL id`.
pub fn encode_cursor(after: &After) -> String {
    hex::encode(format!("{}\0{}", after.key, after.id))
}

/// Decodes [`encode_cursor`]'s output.
pub fn decode_cursor(cursor: &str) -> Result<After> {
    let bad = || {
        coded(
            ErrorCode::BadUserInput,
            "after is not a cursor returned by this connection",
        )
    };
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (key, id) = text.rsplit_once('\0').ok_or_else(bad)?;
    Ok(After {
        key: key.to_string(),
        id: id.parse().map_err(|_| bad())?,
    })
}

/// The projector marks a walk began at (see `corral_projections::walk`): the membership
/// projector's (member pages) and the group tree projector's (effective member pages, group
/// listings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marks {
    /// The membership projector's mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<Mark>,
    /// The group tree projector's mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<Mark>,
}

/// A walk's cursor, version 1: the keyset position and the marks of the walk's first page.
#[derive(serde::Serialize, serde::Deserialize)]
struct WalkCursor {
    v: u8,
    k: String,
    i: Uuid,
    #[serde(flatten)]
    marks: Marks,
}

/// Prefix of a walk cursor (the rest is base64url of its JSON), so that it never reads as
/// the hex of a plain cursor.
const WALK_PREFIX: &str = "w1.";

/// A cursor of a consistent walk: opaque, `w1.` and base64url of a versioned structure
/// holding the keyset position and the marks of the walk's first page.
pub fn encode_walk(after: &After, marks: &Marks) -> String {
    use base64::Engine as _;
    let cursor = WalkCursor {
        v: 1,
        k: after.key.clone(),
        i: after.id,
        marks: *marks,
    };
    let json = serde_json::to_vec(&cursor).unwrap_or_default();
    format!(
        "{WALK_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    )
}

/// Decodes a cursor of a consistent walk; a plain cursor (as issued before walks recorded
/// their marks) decodes with no marks, so a walk begun then goes on as plain keyset paging.
pub fn decode_walk(cursor: &str, arg: &str) -> Result<(After, Option<Marks>)> {
    use base64::Engine as _;
    let Some(body) = cursor.strip_prefix(WALK_PREFIX) else {
        return decode_cursor(cursor).map(|a| (a, None));
    };
    let bad = || {
        coded(
            ErrorCode::BadUserInput,
            format!("{arg} is not a cursor returned by this connection"),
        )
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad())?;
    let c: WalkCursor = serde_json::from_slice(&json).map_err(|_| bad())?;
    if c.v != 1 {
        return Err(bad());
    }
    Ok((After { key: c.k, id: c.i }, Some(c.marks)))
}

/// Which way a page goes, from Relay's `first`/`after` and `last`/`before`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paging {
    /// Rows wanted.
    pub size: i64,
    /// `last`/`before`: the rows before `cursor`, the nearest first when read (pages are
    /// returned in the connection's order all the same).
    pub backward: bool,
    /// The `after` or `before` cursor.
    pub cursor: Option<String>,
}

/// Validates Relay's paging arguments: `first` and `last` may not both be given (nor `after`
/// with `before`, nor `before` with `first`, nor `after` with `last`); `last` has the limits
/// of `first`.
pub fn paging(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<Paging> {
    let bad = |m: &str| coded(ErrorCode::BadUserInput, m.to_string());
    if first.is_some() && last.is_some() {
        return Err(bad("give first or last, not both"));
    }
    if after.is_some() && before.is_some() {
        return Err(bad("give after or before, not both"));
    }
    if first.is_some() && before.is_some() {
        return Err(bad("before goes with last, not first"));
    }
    if last.is_some() && after.is_some() {
        return Err(bad("after goes with first, not last"));
    }
    if last.is_none() && before.is_none() {
        return Ok(Paging {
            size: page_size(first)?,
            backward: false,
            cursor: after,
        });
    }
    let size = match last.unwrap_or(DEFAULT_PAGE) {
        n if (0..=MAX_PAGE).contains(&n) => i64::from(n),
        n => {
            return Err(bad(&format!(
                "last must be between 0 and {MAX_PAGE}, got {n}"
            )))
        }
    };
    Ok(Paging {
        size,
        backward: true,
        cursor: before,
    })
}

/// Page information of a keyset page read `paging`'s way: `more` says whether rows lay
/// beyond the page in the direction read. The other side holds edges exactly when a cursor
/// was given (it names an edge of the walk; a consistent walk still holds it).
pub fn page_info(
    paging: &Paging,
    more: bool,
    start_cursor: Option<String>,
    end_cursor: Option<String>,
) -> PageInfo {
    let behind = paging.cursor.is_some();
    PageInfo {
        has_next_page: if paging.backward { behind } else { more },
        has_previous_page: if paging.backward { more } else { behind },
        start_cursor,
        end_cursor,
    }
}

/// The error of a walk whose set changed since its first page: `CURSOR_STALE`, with the
/// log position the first page reflected (when the sequencer has numbered it) in
/// `extensions.position`.
pub fn stale(what: &str, position: Option<i64>) -> async_graphql::Error {
    let advice = match position {
        Some(p) => format!(
            "restart the walk from its first page, or page the state of its first page with \
             atPosition: {p}"
        ),
        None => "restart the walk from its first page".to_string(),
    };
    async_graphql::Error::new(format!(
        "{what} changed since this walk's first page; {advice}"
    ))
    .extend_with(|_, e| {
        e.set("code", ErrorCode::CursorStale.as_str());
        if let Some(p) = position {
            e.set("position", p.to_string());
        }
    })
}

/// Parses a GraphQL ID as a group id.
pub fn parse_id(id: &ID, field: &str) -> std::result::Result<Uuid, super::errors::UserError> {
    id.parse().map_err(|_| {
        super::errors::UserError::new(
            Some(field),
            Code::Invalid,
            format!("{field} is not a group id"),
        )
    })
}
