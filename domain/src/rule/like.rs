//! PostgreSQL's `LIKE` / `ILIKE` in memory: `%` any run, `_` one character, `\` escapes the
//! next character (PostgreSQL's default escape). `ILIKE` lower-cases both sides character by
//! character. Compiled once; matching does not allocate.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Many,
}

/// Where the literal of a simple pattern must occur in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// `lit`
    Whole,
    /// `lit%`
    Start,
    /// `%lit`
    End,
    /// `%lit%`
    Anywhere,
}

/// Fast paths for patterns made of ASCII literals and `%` at the ends only.
#[derive(Clone, Debug)]
enum Shape {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Suffix(Vec<u8>),
    Contains(Vec<u8>),
    General,
}

/// A compiled LIKE pattern.
#[derive(Clone, Debug)]
pub(crate) struct Like {
    toks: Vec<Tok>,
    ci: bool,
    ascii: bool,
    shape: Shape,
}

impl Like {
    /// Compiles `pattern`; `ci` for ILIKE.
    pub(crate) fn compile(pattern: &str, ci: bool) -> Result<Like, String> {
        let mut toks = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let literal = match c {
                '%' => {
                    if toks.last() != Some(&Tok::Many) {
                        toks.push(Tok::Many);
                    }
                    continue;
                }
                '_' => {
                    toks.push(Tok::One);
                    continue;
                }
                '\\' => chars.next().ok_or_else(|| {
                    format!("LIKE pattern `{pattern}` ends with the escape character `\\`")
                })?,
                c => c,
            };
            if ci {
                toks.extend(literal.to_lowercase().map(Tok::Lit));
            } else {
                toks.push(Tok::Lit(literal));
            }
        }
        let ascii = toks
            .iter()
            .all(|t| !matches!(t, Tok::Lit(c) if !c.is_ascii()));
        let shape = shape(&toks, ascii);
        Ok(Like {
            toks,
            ci,
            ascii,
            shape,
        })
    }

    /// Whether `text` matches (ILIKE when compiled case-insensitive).
    pub(crate) fn matches(&self, text: &str) -> bool {
        if self.ascii && text.is_ascii() {
            let t = text.as_bytes();
            let eq = |a: &[u8], b: &[u8]| {
                if self.ci {
                    a.eq_ignore_ascii_case(b)
                } else {
                    a == b
                }
            };
            return match &self.shape {
                Shape::Exact(p) => eq(t, p),
                Shape::Prefix(p) => t.len() >= p.len() && eq(&t[..p.len()], p),
                Shape::Suffix(p) => t.len() >= p.len() && eq(&t[t.len() - p.len()..], p),
                Shape::Contains(p) => p.is_empty() || t.windows(p.len()).any(|w| eq(w, p)),
                Shape::General if self.ci => glob(
                    &self.toks,
                    t.iter().map(|b| char::from(b.to_ascii_lowercase())),
                ),
                Shape::General => glob(&self.toks, t.iter().map(|b| char::from(*b))),
            };
        }
        if self.ci {
            glob(&self.toks, text.chars().flat_map(char::to_lowercase))
        } else {
            glob(&self.toks, text.chars())
        }
    }

    /// The literal of an ILIKE pattern made of ASCII literals with `%` at the ends only
    /// (lower-cased), with where it must occur; `None` for other patterns.
    pub(crate) fn ascii_ci_shape(&self) -> Option<(Anchor, &[u8])> {
        if !self.ci || !self.ascii {
            return None;
        }
        match &self.shape {
            Shape::Exact(p) => Some((Anchor::Whole, p)),
            Shape::Prefix(p) => Some((Anchor::Start, p)),
            Shape::Suffix(p) => Some((Anchor::End, p)),
            Shape::Contains(p) => Some((Anchor::Anywhere, p)),
            Shape::General => None,
        }
    }

    /// Case-sensitive match over characters produced by `text` (MAC digits).
    pub(crate) fn matches_chars<I: Iterator<Item = char> + Clone>(&self, text: I) -> bool {
        glob(&self.toks, text)
    }
}

fn shape(toks: &[Tok], ascii: bool) -> Shape {
    if !ascii || toks.contains(&Tok::One) {
        return Shape::General;
    }
    let lead = toks.first() == Some(&Tok::Many);
    let trail = toks.len() > 1 && toks.last() == Some(&Tok::Many);
    let middle = &toks[usize::from(lead)..toks.len() - usize::from(trail)];
    let mut bytes = Vec::with_capacity(middle.len());
    for t in middle {
        match t {
            Tok::Lit(c) => bytes.push(*c as u8),
            _ => return Shape::General,
        }
    }
    match (lead, trail) {
        (false, false) => Shape::Exact(bytes),
        (false, true) => Shape::Prefix(bytes),
        (true, false) => Shape::Suffix(bytes),
        (true, true) => Shape::Contains(bytes),
    }
}

/// Wildcard matching with one backtrack point (linear in practice, no allocation).
fn glob<I: Iterator<Item = char> + Clone>(toks: &[Tok], text: I) -> bool {
    let mut p = 0;
    let mut t = text;
    let mut star: Option<(usize, I)> = None;
    loop {
        let mut ahead = t.clone();
        let c = ahead.next();
        match toks.get(p) {
            Some(Tok::Many) => {
                p += 1;
                star = Some((p, t.clone()));
                continue;
            }
            Some(Tok::One) if c.is_some() => {
                p += 1;
                t = ahead;
                continue;
            }
            Some(Tok::Lit(l)) if c == Some(*l) => {
                p += 1;
                t = ahead;
                continue;
            }
            None if c.is_none() => return true,
            _ => {}
        }
        match star.as_mut() {
            Some((resume, from)) => {
                if from.next().is_none() {
                    return false;
                }
                p = *resume;
                t = from.clone();
            }
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Like;

    fn ilike(p: &str, t: &str) -> bool {
        Like::compile(p, true).expect("pattern").matches(t)
    }

    #[test]
    fn wildcards_escapes_and_case() {
        assert!(ilike("web%", "WEB-01"));
        assert!(ilike("%01", "web-01"));
        assert!(ilike("%eb%", "web"));
        assert!(ilike("%", ""));
        assert!(!ilike("_", ""));
        assert!(ilike("db_%", "db-01"));
        assert!(!ilike("db\\_%", "db-01"));
        assert!(ilike("db\\_%", "DB_01"));
        assert!(ilike("100\\%", "100%"));
        assert!(!ilike("100\\%", "1000"));
        assert!(ilike("caf_", "CAFÉ"));
        assert!(ilike("%É", "café"));
        assert!(ilike("a%b%c", "aXXbYYc"));
        assert!(!ilike("a%b%c", "aXXbYY"));
        assert!(ilike("%a%a%a%", "banana"));
        assert!(!ilike("%a%a%a%a%", "banana"));
        assert!(Like::compile("web\\", true).is_err());
        let exact = Like::compile("Ab", false).expect("pattern");
        assert!(exact.matches("Ab") && !exact.matches("ab"));
    }
}
