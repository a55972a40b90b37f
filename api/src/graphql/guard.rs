//! The query guard: limits that hold before async-graphql validates a query, and a code on
//! every error that leaves the server.
//!
//! async-graphql's validation and its complexity and depth walks visit every fragment each
//! time it is spread, so a 1 KB query of nested fragments (`fragment F2 on Group { ...F1
//! a: parent { ...F1 } b: parent { ...F1 } }`, fifteen levels) costs seconds of CPU before it
//! is refused. The guard measures the document first, in time proportional to its length:
//! each fragment's expanded size is computed once (its own fields plus, for each spread, the
//! spread fragment's size), so a query that would expand to more than the limit is refused
//! before any walk that expands it.
//!
//! It also refuses a NUL character in any string of the query or its variables
//! (`BAD_USER_INPUT`, naming where): PostgreSQL cannot store one, and no field takes one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextRequest, NextSubscribe, NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{
    ErrorExtensionValues, Name, Pos, Positioned, Response, ServerError, ServerResult,
    ValidationResult, Value, Variables,
};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::budget::DbBudget;
use crate::error_codes::ErrorCode;

/// The guard's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest query text, in bytes (`CORRAL_MAX_QUERY_BYTES`).
    pub max_query_bytes: usize,
    /// Most fields once fragments are expanded, over every operation of the document
    /// (`CORRAL_MAX_QUERY_FIELDS`).
    pub max_fields: u64,
    /// Longest string in a request's variables, in bytes: no input takes more, and a longer
    /// one would cost CPU in every layer it passed.
    pub max_string_bytes: usize,
    /// The database time of one request (`CORRAL_REQUEST_DB_BUDGET_MS`, see
    /// [`DbBudget`](super::budget::DbBudget)).
    pub db_budget: Duration,
    /// Longest statement (`CORRAL_STATEMENT_TIMEOUT_MS`).
    pub statement_timeout: Duration,
    /// Most root fields of one mutation operation, fragments expanded
    /// (`CORRAL_MAX_MUTATIONS_PER_REQUEST`).
    pub max_mutations: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_query_bytes: 64 * 1024,
            max_fields: 2_000,
            max_string_bytes: 256 * 1024,
            db_budget: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(5),
            max_mutations: 20,
        }
    }
}

/// The extension factory.
pub struct QueryGuard(pub QueryLimits);

impl ExtensionFactory for QueryGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExtension(self.0))
    }
}

struct GuardExtension(QueryLimits);

/// Most validation errors one answer carries.
const MAX_VALIDATION_ERRORS: usize = 20;

/// A parse error for a client: what was expected and where, without the parser's drawing
/// of the query (`locations` carries the position too).
fn parse_message(e: &ServerError) -> String {
    let expected = e
        .message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("= "))
        .unwrap_or(e.message.lines().next().unwrap_or("syntax error"))
        .trim();
    match e.locations.first() {
        Some(p) => format!(
            "the query does not parse at line {}, column {}: {expected}",
            p.line, p.column
        ),
        None => format!("the query does not parse: {expected}"),
    }
}

fn set_code(e: &mut ServerError, code: ErrorCode) {
    e.extensions
        .get_or_insert_with(ErrorExtensionValues::default)
        .set("code", code.as_str());
}

impl GuardExtension {
    /// Parses and measures the request's document, in time proportional to its length, and
    /// looks for NUL characters in it and its variables. Returns whether it holds only
    /// queries.
    fn check(&self, request: &mut async_graphql::Request) -> ServerResult<bool> {
        let limits = self.0;
        let query_len = request.query.len();
        if query_len > limits.max_query_bytes {
            return Err(error(
                ErrorCode::QueryTooLarge,
                format!(
                    "the query is {query_len} bytes long; this server accepts at most {} (CORRAL_MAX_QUERY_BYTES)",
                    limits.max_query_bytes
                ),
                None,
            ));
        }
        for (name, value) in request.variables.iter() {
            match bad_in_const(value, &format!("${name}"), limits.max_string_bytes) {
                Some(BadString::Nul(path)) => {
                    return Err(error(
                        ErrorCode::BadUserInput,
                        format!("variable {path} contains a NUL character (\\u0000), which no field accepts"),
                        None,
                    ))
                }
                Some(BadString::Long(path, len)) => {
                    return Err(error(
                        ErrorCode::BadUserInput,
                        format!(
                            "variable {path} is {len} bytes long; no input takes a string of more than {} bytes",
                            limits.max_string_bytes
                        ),
                        None,
                    ))
                }
                None => {}
            }
        }
        let max_string = limits.max_string_bytes;
        let document = request.parsed_query().map_err(|mut e| {
            if e.message.contains("recursion limit exceeded") {
                e.message = "the query nests deeper than this server parses (64 levels of \
                             selections)"
                    .into();
                set_code(&mut e, ErrorCode::QueryTooDeep);
            } else {
                e.message = parse_message(&e);
                set_code(&mut e, ErrorCode::GraphqlParseFailed);
            }
            e
        })?;
        let size = expanded_size(document, limits.max_fields).map_err(|e| match e {
            SizeError::Cycle(name, pos) => error(
                ErrorCode::GraphqlValidationFailed,
                format!("fragment {name} spreads itself (directly or through other fragments)"),
                Some(pos),
            ),
            SizeError::Unknown(name, pos) => error(
                ErrorCode::GraphqlValidationFailed,
                format!("unknown fragment {name}"),
                Some(pos),
            ),
            SizeError::Unused(name, pos) => error(
                ErrorCode::GraphqlValidationFailed,
                format!("fragment {name} is never used"),
                Some(pos),
            ),
        })?;
        if size > limits.max_fields {
            return Err(error(
                ErrorCode::QueryTooLarge,
                format!(
                    "the query names more than {} fields once its fragments are expanded (each spread counts its fragment again); ask for less (CORRAL_MAX_QUERY_FIELDS)",
                    limits.max_fields
                ),
                None,
            ));
        }
        for op in document.operations.iter().map(|(_, op)| op) {
            for var in &op.node.variable_definitions {
                let Some(default) = &var.node.default_value else {
                    continue;
                };
                let path = format!("${} (its default value)", var.node.name.node);
                if let Some(bad) = bad_in_const(&default.node, &path, max_string) {
                    let message = match bad {
                        BadString::Nul(at) => format!(
                            "{at} contains a NUL character (\\u0000), which no field accepts"
                        ),
                        BadString::Long(at, len) => format!(
                            "{at} is {len} bytes long; no input takes a string of more than {max_string} bytes"
                        ),
                    };
                    return Err(error(ErrorCode::BadUserInput, message, Some(default.pos)));
                }
            }
        }
        for (_, op) in document.operations.iter() {
            if op.node.ty != OperationType::Mutation {
                continue;
            }
            let n = root_fields(document, &op.node.selection_set.node, limits.max_mutations);
            if n > limits.max_mutations {
                return Err(error(
                    ErrorCode::TooManyMutations,
                    format!(
                        "the mutation names more than {} root fields; this server runs at most {} mutations in one request (CORRAL_MAX_MUTATIONS_PER_REQUEST); send the rest in another request",
                        limits.max_mutations, limits.max_mutations
                    ),
                    Some(op.pos),
                ));
            }
        }
        if let Some((at, pos)) = nul_in_document(document) {
            return Err(error(
                ErrorCode::BadUserInput,
                format!("{at} contains a NUL character (\\u0000), which no field accepts"),
                Some(pos),
            ));
        }
        Ok(match &document.operations {
            DocumentOperations::Single(op) => op.node.ty == OperationType::Query,
            DocumentOperations::Multiple(map) => {
                map.values().all(|op| op.node.ty == OperationType::Query)
            }
        })
    }
}

/// The root fields of an operation's selection set, counting those of the fragments it
/// spreads (each time spread, at any depth of root-level spreads and inline fragments).
/// Stops counting once over `max`; a document whose fragments cycle was refused before.
fn root_fields(document: &ExecutableDocument, set: &SelectionSet, max: u64) -> u64 {
    let mut n: u64 = 0;
    // (selection set, depth) to visit; the depth bounds a cycle that slipped through.
    let mut stack: Vec<(&SelectionSet, usize)> = vec![(set, 0)];
    while let Some((set, depth)) = stack.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(_) => n = n.saturating_add(1),
                Selection::InlineFragment(i) if depth < 64 => {
                    stack.push((&i.node.selection_set.node, depth + 1));
                }
                Selection::FragmentSpread(s) if depth < 64 => {
                    if let Some(f) = document.fragments.get(&s.node.fragment_name.node) {
                        stack.push((&f.node.selection_set.node, depth + 1));
                    }
                }
                _ => {}
            }
            if n > max {
                return n;
            }
        }
    }
    n
}

fn error(code: ErrorCode, message: impl Into<String>, pos: Option<Pos>) -> ServerError {
    let mut e = ServerError::new(message, pos);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code.as_str());
    e.extensions = Some(ext);
    e
}

fn code_of(e: &ServerError) -> Option<&Value> {
    e.extensions.as_ref().and_then(|x| x.get("code"))
}

/// Gives `e` a code when it has none: errors that async-graphql raises itself.
fn classify(e: &mut ServerError) {
    if code_of(e).is_some() {
        return;
    }
    let m = e.message.as_str();
    let code = if m.starts_with("Unknown operation named")
        || m.starts_with("Operation name required")
        || m.starts_with("Missing operation")
    {
        ErrorCode::BadRequest
    } else if !e.path.is_empty() {
        // Raised while resolving: async-graphql coerces arguments there ("Failed to parse
        // \"UUID\": ..."); every error of Corral's own resolvers has a code already.
        if m.starts_with("Failed to parse") || m.starts_with("Invalid value") {
            ErrorCode::BadUserInput
        } else {
            ErrorCode::Internal
        }
    } else {
        ErrorCode::GraphqlValidationFailed
    };
    e.extensions
        .get_or_insert_with(ErrorExtensionValues::default)
        .set("code", code.as_str());
}

fn classify_response(mut response: Response) -> Response {
    for e in &mut response.errors {
        classify(e);
    }
    response
}

#[async_trait::async_trait]
impl Extension for GuardExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        classify_response(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(classify_response).boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        // Everything here runs before async-graphql looks at the document: its recursion
        // check and its validation both expand fragments at every spread.
        let budget = DbBudget::new(self.0.db_budget, self.0.statement_timeout);
        budget.set_query_only(self.check(&mut request)?);
        next.run(ctx, request.data(budget)).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        // Only a query is cut off at the budget: a mutation's commit must never be.
        let Some(budget) = ctx.data_opt::<DbBudget>().filter(|b| b.query_only()) else {
            return next.run(ctx, operation_name).await;
        };
        match tokio::time::timeout(budget.remaining(), next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                let mut e = budget.exceeded().into_server_error(Pos::default());
                e.locations.clear();
                Response::from_errors(vec![e])
            }
        }
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // The document was parsed and measured in `prepare_request`; what fails here is
        // async-graphql's own recursion check, or a parse a subscription runs again.
        next.run(ctx, query, variables).await.map_err(|mut e| {
            if code_of(&e).is_none() {
                let deep = e.message.starts_with("The recursion depth of the query");
                if deep {
                    e.message = format!(
                        "the query nests deeper than this server accepts: {}",
                        e.message
                    );
                    set_code(&mut e, ErrorCode::QueryTooDeep);
                } else {
                    e.message = parse_message(&e);
                    set_code(&mut e, ErrorCode::GraphqlParseFailed);
                }
            }
            e
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            // A document can break one rule in many places: the first few say enough.
            errors.truncate(MAX_VALIDATION_ERRORS);
            for e in &mut errors {
                if code_of(e).is_some() {
                    continue;
                }
                let (code, message) = match e.message.as_str() {
                    "Query is too complex." => (
                        ErrorCode::QueryTooComplex,
                        format!(
                            "the query is too complex: its cost is over {} (each connection counts `first` times its fields, each rule filter its compiled cost); ask for fewer items, fields or filters",
                            super::MAX_COMPLEXITY
                        ),
                    ),
                    "Query is nested too deep." => (
                        ErrorCode::QueryTooDeep,
                        format!("the query nests fields deeper than {} levels", super::MAX_DEPTH),
                    ),
                    other => (ErrorCode::GraphqlValidationFailed, other.to_string()),
                };
                e.message = message;
                e.extensions
                    .get_or_insert_with(ErrorExtensionValues::default)
                    .set("code", code.as_str());
            }
            errors
        })
    }
}

/// Why a document's size could not be computed.
#[derive(Debug, PartialEq)]
enum SizeError {
    /// A fragment spreads itself.
    Cycle(Name, Pos),
    /// A spread names no fragment.
    Unknown(Name, Pos),
    /// No operation uses the fragment (the spec forbids it; async-graphql would still
    /// validate it, expanding its spreads).
    Unused(Name, Pos),
}

/// Fields of a selection set (recursing into fields and inline fragments, not spreads) and
/// the fragments it spreads, with their multiplicity.
fn own_size(set: &SelectionSet, spreads: &mut Vec<(Name, Pos)>) -> u64 {
    let mut n: u64 = 0;
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                n = n
                    .saturating_add(1)
                    .saturating_add(own_size(&f.node.selection_set.node, spreads));
            }
            Selection::InlineFragment(i) => {
                n = n.saturating_add(own_size(&i.node.selection_set.node, spreads));
            }
            Selection::FragmentSpread(s) => {
                spreads.push((s.node.fragment_name.node.clone(), s.pos));
            }
        }
    }
    n
}

/// A fragment being measured, or measured.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Open,
    Done(u64),
}

/// Each fragment's own size and the fragments it spreads.
type Parts<'a> = HashMap<&'a Name, (u64, Vec<(Name, Pos)>)>;

/// The expanded size of fragment `root`, by depth-first post-order without recursion (a
/// chain of fragments may be long), remembering every size in `state`.
fn fragment_size<'a>(
    root: &Name,
    state: &mut HashMap<&'a Name, State>,
    parts: &Parts<'a>,
) -> Result<u64, SizeError> {
    let Some((&key, _)) = parts.get_key_value(root) else {
        return Err(SizeError::Unknown(root.clone(), Pos::default()));
    };
    let mut stack: Vec<&'a Name> = vec![key];
    while let Some(&name) = stack.last() {
        if let Some(State::Done(_)) = state.get(name) {
            stack.pop();
            continue;
        }
        state.insert(name, State::Open);
        let (own, spreads) = &parts[name];
        let mut total = *own;
        let mut pending = None;
        for (child, pos) in spreads {
            let Some((&child_key, _)) = parts.get_key_value(child) else {
                return Err(SizeError::Unknown(child.clone(), *pos));
            };
            match state.get(child_key) {
                Some(State::Done(n)) => total = total.saturating_add(*n),
                Some(State::Open) => return Err(SizeError::Cycle(child.clone(), *pos)),
                None => {
                    pending = Some(child_key);
                    break;
                }
            }
        }
        match pending {
            Some(child) => stack.push(child),
            None => {
                state.insert(name, State::Done(total));
                stack.pop();
            }
        }
    }
    match state.get(key) {
        Some(State::Done(n)) => Ok(*n),
        _ => Err(SizeError::Unknown(root.clone(), Pos::default())),
    }
}

/// The number of fields of every operation of `document` with each fragment counted every
/// time it is spread: linear in the document's length (each fragment is measured once),
/// saturating, and stopping early past `cap`.
fn expanded_size(document: &ExecutableDocument, cap: u64) -> Result<u64, SizeError> {
    let mut parts: Parts<'_> = HashMap::new();
    for (name, fragment) in &document.fragments {
        let mut spreads = Vec::new();
        let own = own_size(&fragment.node.selection_set.node, &mut spreads);
        parts.insert(name, (own, spreads));
    }
    let mut state = HashMap::new();
    let operations: Vec<&SelectionSet> = match &document.operations {
        DocumentOperations::Single(op) => vec![&op.node.selection_set.node],
        DocumentOperations::Multiple(map) => {
            map.values().map(|op| &op.node.selection_set.node).collect()
        }
    };
    let mut total: u64 = 0;
    for set in operations {
        let mut spreads = Vec::new();
        total = total.saturating_add(own_size(set, &mut spreads));
        for (name, pos) in spreads {
            if !parts.contains_key(&name) {
                return Err(SizeError::Unknown(name, pos));
            }
            total = total.saturating_add(fragment_size(&name, &mut state, &parts)?);
            if total > cap {
                return Ok(total);
            }
        }
        if total > cap {
            return Ok(total);
        }
    }
    if let Some((name, fragment)) = document
        .fragments
        .iter()
        .find(|(name, _)| !state.contains_key(name))
    {
        return Err(SizeError::Unused(name.clone(), fragment.pos));
    }
    Ok(total)
}

/// What is wrong with a string of a variable.
#[derive(Debug, PartialEq)]
enum BadString {
    /// It holds a NUL.
    Nul(String),
    /// It is longer than any input takes.
    Long(String, usize),
}

/// One step of a path into a value, innermost first while it is being built.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
    /// The object key itself (not its value) is at fault.
    TheKey,
}

/// What is wrong where: the kind (`None` for a NUL, `Some(len)` for a long string) and the
/// steps from the innermost out. Paths are only built for the one string at fault.
type Fault<'a> = (Option<usize>, Vec<Step<'a>>);

fn fault_in<'a>(value: &'a async_graphql::Value, max: usize) -> Option<Fault<'a>> {
    use async_graphql::Value as V;
    let text = |s: &str| {
        if s.len() > max {
            Some((Some(s.len()), Vec::new()))
        } else if s.contains('\0') {
            Some((None, Vec::new()))
        } else {
            None
        }
    };
    match value {
        V::String(s) => text(s),
        V::List(items) => items.iter().enumerate().find_map(|(i, v)| {
            let (kind, mut steps) = fault_in(v, max)?;
            steps.push(Step::Index(i));
            Some((kind, steps))
        }),
        V::Object(map) => map.iter().find_map(|(k, v)| {
            if let Some((kind, _)) = text(k) {
                return Some((kind, vec![Step::TheKey, Step::Key(k.as_str())]));
            }
            let (kind, mut steps) = fault_in(v, max)?;
            steps.push(Step::Key(k.as_str()));
            Some((kind, steps))
        }),
        _ => None,
    }
}

/// The first string of a constant value (`$input.description`) that holds a NUL or is
/// longer than `max` bytes, if one does.
fn bad_in_const(value: &async_graphql::Value, path: &str, max: usize) -> Option<BadString> {
    let (kind, steps) = fault_in(value, max)?;
    let mut at = path.to_string();
    for step in steps.iter().rev() {
        match step {
            Step::Key(k) => {
                at.push('.');
                at.push_str(k);
            }
            Step::Index(i) => at.push_str(&format!("[{i}]")),
            Step::TheKey => at.push_str(" (a key)"),
        }
    }
    Some(match kind {
        None => BadString::Nul(at),
        Some(len) => BadString::Long(at, len),
    })
}

/// Where a NUL hides in a query-text value, if it does.
fn nul_in_value(value: &async_graphql_value::Value, path: &str) -> Option<String> {
    use async_graphql_value::Value as V;
    match value {
        V::String(s) if s.contains('\0') => Some(path.to_string()),
        V::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in_value(v, &format!("{path}[{i}]"))),
        V::Object(map) => map
            .iter()
            .find_map(|(k, v)| nul_in_value(v, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// The first argument of the document whose value holds a NUL (`argument input.name of
/// field createGroup`).
fn nul_in_document(document: &ExecutableDocument) -> Option<(String, Pos)> {
    fn walk(set: &SelectionSet) -> Option<(String, Pos)> {
        for item in &set.items {
            match &item.node {
                Selection::Field(f) => {
                    for (name, value) in &f.node.arguments {
                        if let Some(at) = nul_in_value(&value.node, &name.node) {
                            return Some((
                                format!("argument {at} of field {}", f.node.name.node),
                                value.pos,
                            ));
                        }
                    }
                    if let Some(found) = walk(&f.node.selection_set.node) {
                        return Some(found);
                    }
                }
                Selection::InlineFragment(i) => {
                    if let Some(found) = walk(&i.node.selection_set.node) {
                        return Some(found);
                    }
                }
                Selection::FragmentSpread(_) => {}
            }
        }
        None
    }
    let mut sets: Vec<&Positioned<SelectionSet>> = document
        .fragments
        .values()
        .map(|f| &f.node.selection_set)
        .collect();
    match &document.operations {
        DocumentOperations::Single(op) => sets.push(&op.node.selection_set),
        DocumentOperations::Multiple(map) => {
            sets.extend(map.values().map(|op| &op.node.selection_set))
        }
    }
    sets.into_iter().find_map(|s| walk(&s.node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn size(q: &str) -> Result<u64, SizeError> {
        expanded_size(&parse_query(q).expect("parses"), u64::MAX)
    }

    /// The fragment bomb of issue 13: `levels` fragments, each spreading the one below three
    /// times.
    pub(crate) fn bomb(levels: usize) -> String {
        let mut q = format!(
            "query {{ group(id: \"x\") {{ ...F{} }} }}\nfragment F0 on Group {{ id }}\n",
            levels - 1
        );
        for i in 1..levels {
            q.push_str(&format!(
                "fragment F{i} on Group {{ ...F{p} a: parent {{ ...F{p} }} b: parent {{ ...F{p} }} }}\n",
                p = i - 1
            ));
        }
        q
    }

    #[test]
    fn fragments_count_each_time_they_are_spread() {
        assert_eq!(size("{ a b { c } }"), Ok(3));
        assert_eq!(size("{ a ...F ...F } fragment F on Q { b c }"), Ok(5));
        assert_eq!(
            size("{ ...G } fragment G on Q { x: a ...F y: b { ...F } } fragment F on Q { c }"),
            Ok(4)
        );
        assert_eq!(size("{ ... on Q { a b } }"), Ok(2));
    }

    #[test]
    fn a_fragment_bomb_is_measured_without_expanding_it() {
        let q = bomb(40);
        assert!(q.len() < 4096);
        let started = std::time::Instant::now();
        let n = size(&q).expect("size");
        assert!(
            n > u64::from(u32::MAX),
            "{n}: 3^39 saturates the count, it does not expand"
        );
        // Expanding 3^39 selections would take years; measuring it takes microseconds (the
        // bound is loose for loaded debug builds).
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn cycles_and_unknown_fragments_are_reported() {
        assert!(matches!(
            size("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }"),
            Err(SizeError::Cycle(..))
        ));
        assert!(matches!(size("{ ...Nope }"), Err(SizeError::Unknown(..))));
        assert!(matches!(
            size("{ a } fragment Lost on Q { b }"),
            Err(SizeError::Unused(..))
        ));
    }

    #[test]
    fn a_long_chain_of_fragments_does_not_overflow_the_stack() {
        let mut q = String::from("{ ...F0 }\n");
        for i in 0..20_000 {
            q.push_str(&format!("fragment F{i} on Q {{ a{i} ...F{} }}\n", i + 1));
        }
        q.push_str("fragment F20000 on Q { end }\n");
        assert_eq!(size(&q), Ok(20_001));
    }

    #[test]
    fn nul_characters_are_found_in_arguments_and_variables() {
        let doc = parse_query("{ a(input: {x: \"ok\", y: [\"\\u0000\"]}) }").expect("parses");
        let (at, _) = nul_in_document(&doc).expect("found");
        assert_eq!(at, "argument input.y[0] of field a");
        let v =
            async_graphql::Value::from_json(serde_json::json!({ "d": "a\u{0}b" })).expect("value");
        assert_eq!(
            bad_in_const(&v, "$input", 100),
            Some(BadString::Nul("$input.d".into()))
        );
        let v =
            async_graphql::Value::from_json(serde_json::json!({ "l": ["ok", "x".repeat(101)] }))
                .expect("value");
        assert_eq!(
            bad_in_const(&v, "$input", 100),
            Some(BadString::Long("$input.l[1]".into(), 101))
        );
        let clean = parse_query("{ a(x: \"fine\") }").expect("parses");
        assert!(nul_in_document(&clean).is_none());
    }
}
