//! The audit trail outside GraphQL's types: filters, pages of entries with their changes, and
//! the NDJSON / CSV export shared by `corral audit export` and `GET /audit/export`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use corral_projections::audit::{group_changes, inventory_changes, FieldChange, ViewCache};
use corral_projections::group_tree::read;
use corral_projections::public_log::{self, format_time, LogEntry, LogFilter};
use corral_projections::StoreError;
use futures::Stream;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Most aggregate or event types one filter may name.
pub const MAX_FILTER_TYPES: usize = 50;
/// Longest string a filter may carry.
pub const MAX_FILTER_CHARS: usize = 256;
/// Most groups a `groupId` + `includeDescendants` filter expands to.
pub const MAX_FILTER_GROUPS: i64 = 20_000;
/// Entries read per query while exporting.
const EXPORT_PAGE: i64 = 1_000;

/// An audit filter as clients give it (GraphQL input, HTTP query, command line).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only changes made by this subject.
    pub actor: Option<String>,
    /// Only this group's events (its Group and Membership aggregates).
    pub group_id: Option<Uuid>,
    /// With `group_id`: also its current descendants.
    pub include_descendants: bool,
    /// Only these aggregate types.
    pub aggregate_types: Vec<String>,
    /// Only these event types.
    pub event_types: Vec<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Only events of one request.
    pub correlation_id: Option<String>,
    /// Only the events naming this device or service: Membership events listing it (static,
    /// rule and exclude alike) and its own Device / Service events.
    pub member_id: Option<String>,
}

/// A filter a client got wrong.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FilterError {
    FilterError {
        field,
        message: message.into(),
    }
}

/// A filter no entry passes (through the primary key: an aggregate id no aggregate has).
fn nothing() -> LogFilter {
    LogFilter {
        aggregate_types: vec!["Group".into()],
        aggregate_ids: vec![String::new()],
        ..LogFilter::default()
    }
}

/// Whether a scoped auditor whose roots are `roots` may read `entry`: a Group or Membership
/// event of a group in their subtrees, as the tree stands now (`events` decides each event
/// with it when delivering).
pub async fn readable_entries(
    pool: &PgPool,
    entries: &[LogEntry],
    roots: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, StoreError> {
    let groups: Vec<Uuid> = entries
        .iter()
        .filter(|e| e.event.aggregate_type == "Group" || e.event.aggregate_type == "Membership")
        .filter_map(|e| e.event.aggregate_id.parse().ok())
        .collect::<std::collections::BTreeSet<Uuid>>()
        .into_iter()
        .collect();
    Ok(read::in_subtrees(pool, &groups, roots)
        .await?
        .into_iter()
        .collect())
}

/// Whether `entry` is in `readable` (from [`readable_entries`]).
pub fn entry_in(entry: &LogEntry, readable: &std::collections::HashSet<Uuid>) -> bool {
    (entry.event.aggregate_type == "Group" || entry.event.aggregate_type == "Membership")
        && entry
            .event
            .aggregate_id
            .parse::<Uuid>()
            .is_ok_and(|g| readable.contains(&g))
}

impl AuditFilter {
    /// Checks the limits and resolves the group (and its descendants) into aggregate ids,
    /// for a caller who reads everything.
    pub async fn resolve(
        &self,
        pool: &PgPool,
    ) -> Result<Result<LogFilter, FilterError>, StoreError> {
        self.resolve_within(pool, None).await
    }

    /// [`AuditFilter::resolve`] for a caller whose `audit.read` reaches `scope`.
    ///
    /// `scope`: the roots of the caller's `audit.read` reach (`None`: everything). A scoped
    /// auditor reads only the Group and Membership events of the groups in the subtrees of its
    /// roots (never Device or Service events: the inventory's history is global), as the live tree stands now (a group moved out of the scope leaves it at once,
    /// with its whole history; a deleted group is in no subtree). The scope becomes a list of
    /// aggregate ids, so the log's SQL filters it and counts, pages and cursors stay right; a
    /// `groupId` outside the scope lists nothing, as a missing group does.
    pub async fn resolve_within(
        &self,
        pool: &PgPool,
        scope: Option<&[Uuid]>,
    ) -> Result<Result<LogFilter, FilterError>, StoreError> {
        if let Err(e) = self.check() {
            return Ok(Err(e));
        }
        let mut ids = Vec::new();
        if let (Some(roots), Some(group)) = (scope, self.group_id) {
            if read::in_subtrees(pool, &[group], roots).await?.is_empty() {
                return Ok(Ok(nothing()));
            }
        }
        if let Some(group) = self.group_id {
            ids.push(group.to_string());
            if self.include_descendants {
                let below: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT descendant_id FROM rm_group_tree.group_closure
                      WHERE ancestor_id = $1 AND descendant_id <> $1 LIMIT $2",
                )
                .bind(group)
                .bind(MAX_FILTER_GROUPS + 1)
                .fetch_all(pool)
                .await?;
                if below.len() as i64 > MAX_FILTER_GROUPS {
                    return Ok(Err(bad(
                        "includeDescendants",
                        format!("the group has more than {MAX_FILTER_GROUPS} descendants; filter on a smaller subtree"),
                    )));
                }
                ids.extend(below.into_iter().map(|id| id.to_string()));
            }
        }
        if let (Some(roots), None) = (scope, self.group_id) {
            if roots.is_empty() {
                return Ok(Ok(nothing()));
            }
            let groups: Vec<Uuid> = sqlx::query_scalar(
                "SELECT DISTINCT descendant_id FROM rm_group_tree.group_closure
                  WHERE ancestor_id = ANY($1) LIMIT $2",
            )
            .bind(roots)
            .bind(MAX_FILTER_GROUPS + 1)
            .fetch_all(pool)
            .await?;
            if groups.len() as i64 > MAX_FILTER_GROUPS {
                return Ok(Err(bad(
                    "groupId",
                    format!("your scope holds more than {MAX_FILTER_GROUPS} groups; filter on a group of it"),
                )));
            }
            if groups.is_empty() {
                return Ok(Ok(nothing()));
            }
            ids.extend(groups.into_iter().map(|id| id.to_string()));
        }
        // A group's events are those of its Group and Membership aggregates (same id). Naming
        // the types lets the primary key (aggregate_type, aggregate_id, ...) serve the filter.
        let mut aggregate_types = self.aggregate_types.clone();
        if self.group_id.is_some() || scope.is_some() {
            if aggregate_types.is_empty() {
                aggregate_types = vec!["Group".into(), "Membership".into()];
            } else {
                aggregate_types.retain(|t| t == "Group" || t == "Membership");
                if aggregate_types.is_empty() {
                    // Only other aggregate types were asked for: nothing of a group's passes.
                    aggregate_types.push(String::new());
                }
            }
        }
        Ok(Ok(LogFilter {
            aggregate_types,
            aggregate_ids: ids,
            event_types: self.event_types.clone(),
            actor: self.actor.clone(),
            correlation_id: self.correlation_id.clone(),
            member_id: self.member_id.clone(),
            from: self.from,
            to: self.to,
        }))
    }

    fn check(&self) -> Result<(), FilterError> {
        for (field, list) in [
            ("aggregateTypes", &self.aggregate_types),
            ("eventTypes", &self.event_types),
        ] {
            if list.len() > MAX_FILTER_TYPES {
                return Err(bad(field, format!("at most {MAX_FILTER_TYPES} values")));
            }
            if list
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_FILTER_CHARS)
            {
                return Err(bad(
                    field,
                    format!("values must be 1-{MAX_FILTER_CHARS} characters"),
                ));
            }
        }
        for (field, value) in [
            ("actor", &self.actor),
            ("correlationId", &self.correlation_id),
            ("memberId", &self.member_id),
        ] {
            if value
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.len() > MAX_FILTER_CHARS)
            {
                return Err(bad(
                    field,
                    format!("must be 1-{MAX_FILTER_CHARS} characters"),
                ));
            }
        }
        if self.include_descendants && self.group_id.is_none() {
            return Err(bad("includeDescendants", "needs groupId"));
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(bad("from", "from is after to"));
            }
        }
        Ok(())
    }
}

/// One audit entry: the logged event and, for Group, Device and Service events, what it
/// changed.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// The event at its position.
    pub entry: LogEntry,
    /// Changed fields (Group, Device and Service events).
    pub changes: Option<Vec<FieldChange>>,
}

impl AuditRecord {
    fn meta(&self, key: &str) -> Option<&str> {
        self.entry.event.metadata.get(key).and_then(Value::as_str)
    }

    /// `metadata.actor_subject`.
    pub fn actor_subject(&self) -> &str {
        self.meta("actor_subject").unwrap_or("")
    }
    /// `metadata.actor_role`.
    pub fn actor_role(&self) -> &str {
        self.meta("actor_role").unwrap_or("")
    }
    /// `metadata.source`.
    pub fn source(&self) -> &str {
        self.meta("source").unwrap_or("")
    }
    /// `metadata.reason`.
    pub fn reason(&self) -> Option<&str> {
        self.meta("reason")
    }
    /// `metadata.correlation_id`.
    pub fn correlation_id(&self) -> Option<&str> {
        self.meta("correlation_id")
    }
    /// `metadata.causation_id`.
    pub fn causation_id(&self) -> Option<&str> {
        self.meta("causation_id")
    }
    /// `metadata.client_addr`.
    pub fn client_address(&self) -> Option<&str> {
        self.meta("client_addr")
    }

    fn changes_json(&self) -> Value {
        match &self.changes {
            None => Value::Null,
            Some(list) => Value::Array(
                list.iter()
                    .map(|c| json!({"field": c.field, "before": c.before, "after": c.after}))
                    .collect(),
            ),
        }
    }

    /// One NDJSON line (without the newline).
    pub fn to_json(&self) -> Value {
        let e = &self.entry.event;
        json!({
            "position": self.entry.position,
            "recordedAt": format_time(e.recorded_at),
            "actor": {"subject": self.actor_subject(), "role": self.actor_role()},
            "source": self.source(),
            "aggregateType": e.aggregate_type,
            "aggregateId": e.aggregate_id,
            "version": e.sequence,
            "eventId": e.event_id,
            "eventType": e.event_type,
            "eventVersion": e.event_version,
            "payload": e.payload,
            "reason": self.reason(),
            "correlationId": self.correlation_id(),
            "causationId": self.causation_id(),
            "clientAddress": self.client_address(),
            "changes": self.changes_json(),
            "hash": hex::encode(&self.entry.hash),
        })
    }

    /// One CSV line (with its newline), columns as [`CSV_HEADER`].
    pub fn to_csv(&self) -> String {
        let e = &self.entry.event;
        let cells = [
            self.entry.position.to_string(),
            format_time(e.recorded_at),
            self.actor_subject().to_string(),
            self.actor_role().to_string(),
            self.source().to_string(),
            e.aggregate_type.clone(),
            e.aggregate_id.clone(),
            e.sequence.to_string(),
            e.event_id.to_string(),
            e.event_type.clone(),
            e.event_version.clone(),
            self.reason().unwrap_or("").to_string(),
            self.correlation_id().unwrap_or("").to_string(),
            self.causation_id().unwrap_or("").to_string(),
            match &self.changes {
                None => String::new(),
                Some(_) => self.changes_json().to_string(),
            },
            e.payload.to_string(),
            hex::encode(&self.entry.hash),
        ];
        let mut line = cells
            .iter()
            .map(|c| csv_cell(c))
            .collect::<Vec<_>>()
            .join(",");
        line.push_str("\r\n");
        line
    }
}

/// The CSV header line (RFC 4180: CRLF line ends, quoted cells where needed).
pub const CSV_HEADER: &str = "position,recorded_at,actor_subject,actor_role,source,aggregate_type,aggregate_id,version,event_id,event_type,event_version,reason,correlation_id,causation_id,changes,payload,hash\r\n";

/// A CSV cell: quoted when it holds a comma, a quote or a line break (quotes doubled). Cells
/// that a spreadsheet would run as a formula get a leading `'` inside the quotes.
fn csv_cell(value: &str) -> String {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || value.contains([',', '"', '\n', '\r']) {
        let prefix = if formula { "'" } else { "" };
        format!("\"{prefix}{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// Up to `limit` entries after position `after` (and at most `up_to`), with the changes of
/// their Group events.
pub async fn page(
    pool: &PgPool,
    filter: &LogFilter,
    after: i64,
    up_to: Option<i64>,
    limit: i64,
    views: &mut ViewCache,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut conn = pool.acquire().await?;
    let entries = public_log::read(&mut conn, after, up_to, filter, limit).await?;
    let wanted: Vec<(String, i64)> = entries
        .iter()
        .filter(|e| e.event.aggregate_type == "Group")
        .map(|e| (e.event.aggregate_id.clone(), e.event.sequence))
        .collect();
    let mut changes: HashMap<(String, i64), Vec<FieldChange>> =
        group_changes(&mut conn, &wanted, views).await?;
    entries
        .into_iter()
        .map(|entry| {
            let e = &entry.event;
            let key = (e.aggregate_id.clone(), e.sequence);
            let changes = if e.aggregate_type == "Group" {
                Some(changes.remove(&key).unwrap_or_default())
            } else {
                inventory_changes(
                    &e.aggregate_type,
                    &e.aggregate_id,
                    &e.event_type,
                    &e.event_version,
                    &e.payload,
                )?
            };
            Ok(AuditRecord { entry, changes })
        })
        .collect()
}

/// How many entries pass `filter` (for `totalCount`).
pub async fn count(pool: &PgPool, filter: &LogFilter) -> Result<i64, StoreError> {
    let mut conn = pool.acquire().await?;
    public_log::count(&mut conn, filter).await
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header line.
    Csv,
}

impl ExportFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Parses `ndjson` or `csv`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" => Some(ExportFormat::Ndjson),
            "csv" => Some(ExportFormat::Csv),
            _ => None,
        }
    }
}

/// A chunk of an export and how far it got.
#[derive(Debug)]
pub struct ExportChunk {
    /// Text to write.
    pub text: String,
    /// Entries written so far.
    pub entries: u64,
    /// The last position written.
    pub position: i64,
    /// The head when the export started (it stops there).
    pub head: i64,
}

/// Streams every entry passing `filter` up to the head as it is when the export starts, a
/// page per chunk (the CSV header first), each page its own short query.
pub fn export(
    pool: PgPool,
    filter: LogFilter,
    format: ExportFormat,
) -> impl Stream<Item = Result<ExportChunk, StoreError>> {
    futures::stream::try_unfold(
        (None::<i64>, 0i64, 0u64, false, ViewCache::new()),
        move |(head, after, written, done, mut views)| {
            let pool = pool.clone();
            let filter = filter.clone();
            async move {
                if done {
                    return Ok(None);
                }
                let head = match head {
                    Some(h) => h,
                    None => {
                        let mut conn = pool.acquire().await?;
                        let (h, _) = public_log::head(&mut conn).await?;
                        let header = match format {
                            ExportFormat::Csv => CSV_HEADER.to_string(),
                            ExportFormat::Ndjson => String::new(),
                        };
                        let chunk = ExportChunk {
                            text: header,
                            entries: 0,
                            position: 0,
                            head: h,
                        };
                        return Ok(Some((chunk, (Some(h), 0, 0, false, views))));
                    }
                };
                // The groups folded for `changes` carry over from page to page.
                let records =
                    page(&pool, &filter, after, Some(head), EXPORT_PAGE, &mut views).await?;
                let finished = (records.len() as i64) < EXPORT_PAGE;
                let last = records.last().map_or(head, |r| r.entry.position);
                let mut text = String::with_capacity(records.len() * 512);
                for r in &records {
                    match format {
                        ExportFormat::Ndjson => {
                            text.push_str(&r.to_json().to_string());
                            text.push('\n');
                        }
                        ExportFormat::Csv => text.push_str(&r.to_csv()),
                    }
                }
                let written = written + records.len() as u64;
                let chunk = ExportChunk {
                    text,
                    entries: written,
                    position: if finished { head } else { last },
                    head,
                };
                Ok(Some((chunk, (Some(head), last, written, finished, views))))
            }
        },
    )
}

/// An export as `GET /audit/export` takes it (and `corral audit export`, through the same
/// names): `from` and `to` are required, RFC 3339.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The entries to export.
    pub filter: AuditFilter,
    /// NDJSON or CSV.
    pub format: ExportFormat,
}

fn time_param(params: &HashMap<String, String>, name: &str) -> Result<DateTime<Utc>, String> {
    let raw = params
        .get(name)
        .ok_or_else(|| format!("{name} is required (RFC 3339, e.g. 2026-01-31T00:00:00Z)"))?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{name}: not an RFC 3339 time ({e})"))
}

fn list_param(params: &HashMap<String, String>, name: &str) -> Vec<String> {
    params
        .get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl ExportRequest {
    /// Reads the query parameters; the error says which one is wrong.
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, String> {
        const KNOWN: [&str; 10] = [
            "from",
            "to",
            "group",
            "member",
            "includeDescendants",
            "actor",
            "correlationId",
            "eventTypes",
            "aggregateTypes",
            "format",
        ];
        if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown parameter {unknown:?}; expected one of {}",
                KNOWN.join(", ")
            ));
        }
        let format = match params.get("format") {
            None => ExportFormat::Ndjson,
            Some(f) => ExportFormat::parse(f)
                .ok_or_else(|| format!("format {f:?}: expected ndjson or csv"))?,
        };
        let group_id = match params.get("group") {
            None => None,
            Some(g) => Some(
                g.parse::<Uuid>()
                    .map_err(|_| format!("group {g:?} is not a group id"))?,
            ),
        };
        let include_descendants = match params.get("includeDescendants").map(String::as_str) {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(format!(
                    "includeDescendants {other:?}: expected true or false"
                ))
            }
        };
        Ok(Self {
            filter: AuditFilter {
                actor: params.get("actor").cloned(),
                group_id,
                include_descendants,
                aggregate_types: list_param(params, "aggregateTypes"),
                event_types: list_param(params, "eventTypes"),
                from: Some(time_param(params, "from")?),
                to: Some(time_param(params, "to")?),
                correlation_id: params.get("correlationId").cloned(),
                member_id: params.get("member").cloned(),
            },
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_needed_and_formulas_are_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=SUM(A1)"), "\"'=SUM(A1)\"");
        assert_eq!(CSV_HEADER.split(',').count(), 17);
    }

    #[test]
    fn filters_are_bounded() {
        let too_many = AuditFilter {
            event_types: vec!["x".into(); MAX_FILTER_TYPES + 1],
            ..Default::default()
        };
        assert_eq!(too_many.check().err().map(|e| e.field), Some("eventTypes"));
        let orphan = AuditFilter {
            include_descendants: true,
            ..Default::default()
        };
        assert_eq!(
            orphan.check().err().map(|e| e.field),
            Some("includeDescendants")
        );
        let backwards = AuditFilter {
            from: DateTime::from_timestamp(10, 0),
            to: DateTime::from_timestamp(5, 0),
            ..Default::default()
        };
        assert_eq!(backwards.check().err().map(|e| e.field), Some("from"));
        assert!(AuditFilter::default().check().is_ok());
    }

    #[test]
    fn export_parameters_are_checked() {
        let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = ExportRequest::from_params(&params(&[
            ("from", "2026-01-01T00:00:00Z"),
            ("to", "2026-02-01T00:00:00+01:00"),
            ("format", "csv"),
            ("eventTypes", "GroupRenamed, GroupMoved"),
        ]))
        .expect("valid");
        assert_eq!(ok.format, ExportFormat::Csv);
        assert_eq!(ok.filter.event_types, ["GroupRenamed", "GroupMoved"]);
        let missing = ExportRequest::from_params(&params(&[("from", "2026-01-01T00:00:00Z")]));
        assert!(missing.is_err_and(|e| e.starts_with("to is required")));
        let typo = ExportRequest::from_params(&params(&[("form", "x")]));
        assert!(typo.is_err_and(|e| e.contains("unknown parameter")));
        let bad_format = ExportRequest::from_params(&params(&[
            ("from", "2026-01-01T00:00:00Z"),
            ("to", "2026-01-02T00:00:00Z"),
            ("format", "xml"),
        ]));
        assert!(bad_format.is_err());
    }
}
