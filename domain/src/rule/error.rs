use std::fmt;

/// Why a rule was rejected. `column` is the 1-based column (in characters) of the offending
/// token in the rule text; it is `None` for rules given as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based column of the offending token, when the rule came as text.
    pub column: Option<usize>,
    /// What is wrong, for people.
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(column: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            column,
            message: message.into(),
        }
    }

    pub(crate) fn at(column: usize, message: impl Into<String>) -> Self {
        Self::new(Some(column), message)
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(f, "column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RuleError {}
