use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use super::{GroupType, RuleRef};

/// What a command may know about another group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The group's id.
    pub id: Uuid,
    /// Its type.
    pub group_type: GroupType,
    /// Its parent (`None` for a root).
    pub parent_id: Option<Uuid>,
    /// Levels below its root (a root is 0).
    pub depth: u32,
}

/// The directory could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryError(pub String);

/// The cross-group facts a group command checks. The production implementation reads the
/// write-side `group_registry` under advisory locks, so the answers stay true until the
/// command's events commit.
#[async_trait]
pub trait GroupDirectory: Send + Sync {
    /// A live (not deleted) group.
    async fn get(&self, id: Uuid) -> Result<Option<DirectoryEntry>, DirectoryError>;
    /// Whether a live child of `parent` other than `except` has this name, ignoring case.
    async fn name_taken(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool, DirectoryError>;
    /// Whether `candidate` is `root` or one of its live descendants.
    async fn in_subtree(&self, root: Uuid, candidate: Uuid) -> Result<bool, DirectoryError>;
    /// Levels below `id` in its subtree (0 for a leaf).
    async fn subtree_height(&self, id: Uuid) -> Result<u32, DirectoryError>;
    /// Whether `id` has live children.
    async fn has_children(&self, id: Uuid) -> Result<bool, DirectoryError>;

    /// Every live group in the subtrees of `roots` (the roots included).
    async fn subtrees(&self, roots: &[Uuid]) -> Result<Vec<Uuid>, DirectoryError>;
    /// The `group:` references of the current rules of `groups` (disabled rules included:
    /// enabling one must not need another check).
    async fn rule_refs(&self, groups: &[Uuid]) -> Result<Vec<RuleRef>, DirectoryError>;
    /// Live groups whose rule references `id`.
    async fn rule_referrers(&self, id: Uuid) -> Result<Vec<Uuid>, DirectoryError>;

    /// [`get`](Self::get) of `parent` and [`name_taken`](Self::name_taken) under it, which
    /// placing a group needs together; implementations may answer both in one round trip.
    async fn placement(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(Option<DirectoryEntry>, bool), DirectoryError> {
        Ok((
            self.get(parent).await?,
            self.name_taken(parent, name, except).await?,
        ))
    }
}

#[async_trait]
impl<T: GroupDirectory + ?Sized> GroupDirectory for std::sync::Arc<T> {
    async fn get(&self, id: Uuid) -> Result<Option<DirectoryEntry>, DirectoryError> {
        self.as_ref().get(id).await
    }
    async fn name_taken(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool, DirectoryError> {
        self.as_ref().name_taken(parent, name, except).await
    }
    async fn in_subtree(&self, root: Uuid, candidate: Uuid) -> Result<bool, DirectoryError> {
        self.as_ref().in_subtree(root, candidate).await
    }
    async fn subtree_height(&self, id: Uuid) -> Result<u32, DirectoryError> {
        self.as_ref().subtree_height(id).await
    }
    async fn has_children(&self, id: Uuid) -> Result<bool, DirectoryError> {
        self.as_ref().has_children(id).await
    }
    async fn subtrees(&self, roots: &[Uuid]) -> Result<Vec<Uuid>, DirectoryError> {
        self.as_ref().subtrees(roots).await
    }
    async fn rule_refs(&self, groups: &[Uuid]) -> Result<Vec<RuleRef>, DirectoryError> {
        self.as_ref().rule_refs(groups).await
    }
    async fn rule_referrers(&self, id: Uuid) -> Result<Vec<Uuid>, DirectoryError> {
        self.as_ref().rule_referrers(id).await
    }
    async fn placement(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(Option<DirectoryEntry>, bool), DirectoryError> {
        self.as_ref().placement(parent, name, except).await
    }
}

/// id -> (type, parent, name).
type Nodes = HashMap<Uuid, (GroupType, Option<Uuid>, String)>;

/// A directory held in memory, for aggregate tests and tools.
#[derive(Debug, Default)]
pub struct InMemoryDirectory {
    nodes: Mutex<Nodes>,
    rules: Mutex<HashMap<Uuid, Vec<RuleRef>>>,
}

impl InMemoryDirectory {
    /// Adds (or replaces) a live group.
    pub fn insert(&self, id: Uuid, group_type: GroupType, parent: Option<Uuid>, name: &str) {
        self.lock()
            .insert(id, (group_type, parent, name.to_string()));
    }

    /// Records the `group:` references of a group's rule.
    pub fn set_rule_refs(&self, id: Uuid, refs: Vec<RuleRef>) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, refs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parent_of(&self, id: Uuid) -> Option<Uuid> {
        self.lock().get(&id).and_then(|n| n.1)
    }
}

#[async_trait]
impl GroupDirectory for InMemoryDirectory {
    async fn get(&self, id: Uuid) -> Result<Option<DirectoryEntry>, DirectoryError> {
        let Some((group_type, parent_id, _)) = self.lock().get(&id).cloned() else {
            return Ok(None);
        };
        let mut depth = 0;
        let mut cursor = parent_id;
        while let Some(p) = cursor {
            depth += 1;
            cursor = self.parent_of(p);
        }
        Ok(Some(DirectoryEntry {
            id,
            group_type,
            parent_id,
            depth,
        }))
    }

    async fn name_taken(
        &self,
        parent: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<bool, DirectoryError> {
        let lower = name.to_lowercase();
        Ok(self.lock().iter().any(|(id, (_, p, n))| {
            *p == Some(parent) && Some(*id) != except && n.to_lowercase() == lower
        }))
    }

    async fn in_subtree(&self, root: Uuid, candidate: Uuid) -> Result<bool, DirectoryError> {
        let mut cursor = Some(candidate);
        while let Some(c) = cursor {
            if c == root {
                return Ok(true);
            }
            cursor = self.parent_of(c);
        }
        Ok(false)
    }

    async fn subtree_height(&self, id: Uuid) -> Result<u32, DirectoryError> {
        let nodes = self.lock().clone();
        fn height(nodes: &Nodes, id: Uuid) -> u32 {
            nodes
                .iter()
                .filter(|(_, n)| n.1 == Some(id))
                .map(|(c, _)| 1 + height(nodes, *c))
                .max()
                .unwrap_or(0)
        }
        Ok(height(&nodes, id))
    }

    async fn has_children(&self, id: Uuid) -> Result<bool, DirectoryError> {
        Ok(self.lock().values().any(|n| n.1 == Some(id)))
    }

    async fn subtrees(&self, roots: &[Uuid]) -> Result<Vec<Uuid>, DirectoryError> {
        let ids: Vec<Uuid> = self.lock().keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            for root in roots {
                if self.in_subtree(*root, id).await? {
                    out.push(id);
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn rule_refs(&self, groups: &[Uuid]) -> Result<Vec<RuleRef>, DirectoryError> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        Ok(groups
            .iter()
            .filter_map(|g| rules.get(g))
            .flatten()
            .copied()
            .collect())
    }

    async fn rule_referrers(&self, id: Uuid) -> Result<Vec<Uuid>, DirectoryError> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Uuid> = rules
            .iter()
            .filter(|(_, refs)| refs.iter().any(|r| r.group_id == id))
            .map(|(g, _)| *g)
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Whether rules with references `start`, directly or through other groups' rules, read the
/// effective membership of a group in `targets` (a `group:X` reference with X in `targets`).
/// Moving a subtree under such a group would make these rules read their own groups.
pub async fn rules_read_effective(
    dir: &dyn GroupDirectory,
    start: &[RuleRef],
    targets: &std::collections::HashSet<Uuid>,
) -> Result<bool, DirectoryError> {
    let mut seen = std::collections::HashSet::new();
    let mut refs = start.to_vec();
    for _ in 0..=10_000 {
        if refs
            .iter()
            .any(|r| !r.direct && targets.contains(&r.group_id))
        {
            return Ok(true);
        }
        let direct: Vec<Uuid> = refs
            .iter()
            .filter(|r| r.direct)
            .map(|r| r.group_id)
            .collect();
        let roots: Vec<Uuid> = refs
            .iter()
            .filter(|r| !r.direct)
            .map(|r| r.group_id)
            .collect();
        let mut read = direct;
        if !roots.is_empty() {
            read.extend(dir.subtrees(&roots).await?);
        }
        let fresh: Vec<Uuid> = read.into_iter().filter(|g| seen.insert(*g)).collect();
        if fresh.is_empty() {
            return Ok(false);
        }
        refs = dir.rule_refs(&fresh).await?;
    }
    Ok(false)
}

/// Whether a rule with references `start` reads, directly or through other groups' rules,
/// the direct membership of `target`: a `group:X:direct` reference reads X's, a `group:X`
/// reference reads that of every group in X's subtree, and each group read may itself be
/// filled by a rule with references of its own.
pub async fn rule_reaches(
    dir: &dyn GroupDirectory,
    start: &[RuleRef],
    target: Uuid,
) -> Result<bool, DirectoryError> {
    let mut seen = std::collections::HashSet::new();
    let mut refs = start.to_vec();
    // Each round follows one more rule; more rounds than groups would revisit.
    for _ in 0..=10_000 {
        if refs.is_empty() {
            return Ok(false);
        }
        let direct: Vec<Uuid> = refs
            .iter()
            .filter(|r| r.direct)
            .map(|r| r.group_id)
            .collect();
        let roots: Vec<Uuid> = refs
            .iter()
            .filter(|r| !r.direct)
            .map(|r| r.group_id)
            .collect();
        let mut read = direct;
        if !roots.is_empty() {
            read.extend(dir.subtrees(&roots).await?);
        }
        let fresh: Vec<Uuid> = read.into_iter().filter(|g| seen.insert(*g)).collect();
        if fresh.contains(&target) {
            return Ok(true);
        }
        refs = if fresh.is_empty() {
            vec![]
        } else {
            dir.rule_refs(&fresh).await?
        };
    }
    Ok(false)
}
