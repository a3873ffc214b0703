//! Quell's playbook language: playbooks declared in the configuration, read from JSON (the CLI turns
//! the YAML into JSON and keeps each key's line and column for its messages). Nothing here runs
//! code a playbook brings: conditions are a closed set of operators over paths, templates only
//! substitute one value, and actions come from Quell's catalogue.

pub mod catalogue;
pub mod condition;
pub mod definition;
pub mod finding;
#[cfg(test)]
mod fixtures;
pub mod path;
#[cfg(test)]
mod properties;
pub mod run;
pub mod simulate;
pub mod template;
pub mod trigger;

use std::fmt;

use serde_json::{Map, Value};

/// Something wrong in a playbook, at a key path such as `playbooks[0].steps[2].timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key; filled in by the reader that found the problem.
    pub at: String,
    /// What was found.
    pub found: String,
    pub expected: Option<String>,
    /// The nearest known name, for a misspelt one.
    pub did_you_mean: Option<String>,
}

impl Problem {
    pub fn new(found: impl Into<String>) -> Problem {
        Problem {
            at: String::new(),
            found: found.into(),
            expected: None,
            did_you_mean: None,
        }
    }

    #[must_use]
    pub fn expected(mut self, expected: impl Into<String>) -> Problem {
        self.expected = Some(expected.into());
        self
    }

    /// Adds the known name nearest to `given`, when one is near enough to be a typo.
    #[must_use]
    pub fn suggest(mut self, given: &str, known: &[&str]) -> Problem {
        self.did_you_mean = nearest(given, known).map(str::to_owned);
        self
    }

    #[must_use]
    pub fn at(mut self, at: &str) -> Problem {
        if self.at.is_empty() {
            at.clone_into(&mut self.at);
        }
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.at.is_empty() {
            write!(f, "{}: ", self.at)?;
        }
        write!(f, "{}", self.found)?;
        if let Some(e) = &self.expected {
            write!(f, "; expected {e}")?;
        }
        if let Some(d) = &self.did_you_mean {
            write!(f, "; did you mean `{d}`?")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// The known name closest to `given`, if it is close enough to be a typo of it.
pub fn nearest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A value being read, and where it is: every problem names its key path.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: &'a Value,
    at: &'a str,
}

/// The key path of a child: `parent.key` or `parent[index]`.
pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'a> Node<'a> {
    pub fn new(value: &'a Value, at: &'a str) -> Node<'a> {
        Node { value, at }
    }

    pub fn at(&self) -> &str {
        self.at
    }

    pub fn problem(&self, found: impl Into<String>) -> Problem {
        Problem::new(found).at(self.at)
    }

    /// The object's entries, refusing keys outside `allowed` (with the nearest allowed one) and
    /// demanding those in `required`.
    pub fn object(
        &self,
        what: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Result<&'a Map<String, Value>, Problem> {
        let Value::Object(map) = self.value else {
            return Err(self
                .problem(format!("{} where {what} was", kind(self.value)))
                .expected(format!("{what}: a mapping")));
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(Problem::new(format!("unknown key `{key}` in {what}"))
                    .expected(format!("one of {}", allowed.join(", ")))
                    .suggest(key, allowed)
                    .at(&child_path(self.at, key)));
            }
        }
        for key in required {
            if !map.contains_key(*key) {
                return Err(self
                    .problem(format!("{what} has no `{key}`"))
                    .expected(format!("`{key}`")));
            }
        }
        Ok(map)
    }

    pub fn string(&self, what: &str) -> Result<&'a str, Problem> {
        self.value.as_str().ok_or_else(|| {
            self.problem(format!("{} where {what} was", kind(self.value)))
                .expected(format!("{what}: a string"))
        })
    }

    pub fn list(&self, what: &str) -> Result<&'a [Value], Problem> {
        match self.value {
            Value::Array(items) => Ok(items),
            other => Err(self
                .problem(format!("{} where {what} was", kind(other)))
                .expected(format!("{what}: a list"))),
        }
    }

    pub fn strings(&self, what: &str) -> Result<Vec<String>, Problem> {
        let items = self.list(what)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{}[{i}]", self.at);
            out.push(Node::new(item, &at).string(what)?.to_owned());
        }
        Ok(out)
    }
}

/// How a JSON value is named in messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A resource id or ARN as AWS writes them: never empty, no spaces or control characters, and
/// of a sane length. Anything else in an event is a forgery or a mistake, and names nothing.
pub fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 2048 && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A duration such as `90s`, `15m`, `72h` or `30d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, Problem> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        Problem::new(format!("`{text}`")).expected("a duration such as 90s, 15m, 72h or 30d")
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(Problem::new(format!("the unit `{unit}` in `{text}`"))
                .expected("s, m, h or d")
                .suggest(unit, &["s", "m", "h", "d"]))
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_named_with_where_they_are_and_the_nearest_known_one() {
        let v = json!({"fitler": 1});
        let e = Node::new(&v, "playbooks[0]")
            .object("a playbook", &["id", "filter", "when"], &[])
            .unwrap_err();
        assert_eq!(e.at, "playbooks[0].fitler");
        assert_eq!(e.did_you_mean.as_deref(), Some("filter"));
        let e = Node::new(&v, "p")
            .object("a playbook", &["steps"], &[])
            .unwrap_err();
        assert_eq!(e.did_you_mean, None, "nothing near enough: {e}");
    }

    #[test]
    fn durations_take_the_four_units_only() {
        assert_eq!(parse_duration("72h").unwrap().as_secs(), 72 * 3600);
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(
            parse_duration("10hr").unwrap_err().expected.as_deref(),
            Some("s, m, h or d")
        );
    }
}
