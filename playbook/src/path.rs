//! Paths into what a playbook can see: `finding.severity`, `resource.tags["Env"]`,
//! `event.detail.resources[0].id`, `steps.snapshot.outputs.snapshot_ids`. A path names a value; it
//! never computes one.

use std::fmt;

use serde_json::Value;

use super::Problem;

/// The roots a path may start from.
pub const ROOTS: &[&str] = &[
    "event", "finding", "resource", "account", "steps", "run", "vars",
];

/// The fields of the roots whose shape Quell makes, so that a misspelt one is caught before it
/// silently never matches. `event` is AWS's and free-form; `resource` is what the live read gives.
pub const FINDING_FIELDS: &[&str] = &[
    "arn",
    "id",
    "type",
    "title",
    "severity",
    "product",
    "account",
    "region",
    "resource_type",
    "resource_id",
    "sample",
    "fix_available",
    "status",
    "workflow",
];
pub const RUN_FIELDS: &[&str] = &["id", "started_at"];
pub const ACCOUNT_FIELDS: &[&str] = &["id", "name", "ou_path", "tags"];

/// Longest path accepted, in characters.
const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    text: String,
    segments: Vec<Segment>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, Problem> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Problem::new("an empty path")
                .expected(format!("a path starting with one of {}", ROOTS.join(", "))));
        }
        if text.len() > MAX_LEN {
            return Err(Problem::new(format!("a path of {} characters", text.len()))
                .expected(format!("at most {MAX_LEN}")));
        }
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('[') {
                let end = inner.find(']').ok_or_else(|| {
                    Problem::new(format!("`{text}` has an unclosed `[`"))
                        .expected("`[0]` or `[\"key\"]`")
                })?;
                let token = &inner[..end];
                let segment = if let Some(quoted) =
                    token.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
                {
                    Segment::Key(quoted.to_owned())
                } else {
                    Segment::Index(token.parse().map_err(|_| {
                        Problem::new(format!("`[{token}]` in `{text}`")).expected(
                            "a list index such as `[0]`, or a quoted key such as `[\"Env\"]`",
                        )
                    })?)
                };
                segments.push(segment);
                rest = &inner[end + 1..];
            } else {
                let rest_after_dot = if segments.is_empty() {
                    rest
                } else {
                    rest.strip_prefix('.').ok_or_else(|| {
                        Problem::new(format!("`{text}`"))
                            .expected("`.` or `[` between the parts of a path")
                    })?
                };
                let end = rest_after_dot
                    .find(['.', '['])
                    .unwrap_or(rest_after_dot.len());
                let key = &rest_after_dot[..end];
                let valid = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':');
                if !valid {
                    return Err(
                        Problem::new(format!("the part `{key}` of `{text}`")).expected(
                            "letters, digits, `_`, `-` or `:`; quote other keys: `tags[\"a b\"]`",
                        ),
                    );
                }
                segments.push(Segment::Key(key.to_owned()));
                rest = &rest_after_dot[end..];
            }
        }
        let Some(Segment::Key(root)) = segments.first() else {
            return Err(
                Problem::new(format!("`{text}`")).expected("a path starting with a root name")
            );
        };
        if !ROOTS.contains(&root.as_str()) {
            return Err(Problem::new(format!("the root `{root}` in `{text}`"))
                .expected(format!("one of {}", ROOTS.join(", ")))
                .suggest(root, ROOTS));
        }
        let fields = match root.as_str() {
            "finding" => FINDING_FIELDS,
            "run" => RUN_FIELDS,
            "account" => ACCOUNT_FIELDS,
            _ => &[],
        };
        if !fields.is_empty() {
            match segments.get(1) {
                Some(Segment::Key(field)) if fields.contains(&field.as_str()) => {}
                Some(Segment::Key(field)) => {
                    return Err(Problem::new(format!(
                        "`{root}` has no field `{field}` (in `{text}`)"
                    ))
                    .expected(format!("one of {}", fields.join(", ")))
                    .suggest(field, fields))
                }
                _ => {
                    return Err(Problem::new(format!("`{text}`"))
                        .expected(format!("a field of `{root}`: {}", fields.join(", "))))
                }
            }
        }
        Ok(Path {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn root(&self) -> &str {
        match self.segments.first() {
            Some(Segment::Key(k)) => k,
            _ => "",
        }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The value the path names in `context` (an object keyed by root), if there is one.
    /// JSON `null` counts as absent.
    pub fn resolve<'a>(&self, context: &'a Value) -> Option<&'a Value> {
        let mut at = context;
        for segment in &self.segments {
            at = match (segment, at) {
                (Segment::Key(k), Value::Object(map)) => map.get(k)?,
                (Segment::Index(i), Value::Array(list)) => list.get(*i)?,
                _ => return None,
            };
        }
        (!at.is_null()).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_indexed_and_quoted_parts_resolve() {
        let ctx = json!({
            "resource": {"tags": {"Env": "prod", "cost centre": "7"}},
            "event": {"detail": {"resources": [{"id": "i-1"}, {"id": "i-2"}]}}
        });
        let get = |p: &str| Path::parse(p).unwrap().resolve(&ctx).cloned();
        assert_eq!(get("resource.tags.Env"), Some(json!("prod")));
        assert_eq!(get("resource.tags[\"cost centre\"]"), Some(json!("7")));
        assert_eq!(get("event.detail.resources[1].id"), Some(json!("i-2")));
        assert_eq!(get("event.detail.resources[5].id"), None);
        assert_eq!(get("resource.tags.Owner"), None);
    }

    #[test]
    fn a_wrong_root_is_named_with_the_nearest_one() {
        let e = Path::parse("findng.severity").unwrap_err();
        assert!(e.to_string().contains("did you mean `finding`"), "{e}");
        let e = Path::parse("finding..severity").unwrap_err();
        assert!(e.to_string().contains("the part ``"), "{e}");
        assert!(Path::parse("resource.tags[Env]").is_err());
        let e = Path::parse("finding.severty").unwrap_err();
        assert_eq!(e.did_you_mean.as_deref(), Some("severity"), "{e}");
        assert!(
            Path::parse("finding").is_err(),
            "a root alone names no value"
        );
        assert!(Path::parse("account.tags.Team").is_ok());
        assert!(Path::parse("event.anything.AWS.sends").is_ok());
        assert!(Path::parse(&format!("event.{}", "a".repeat(300))).is_err());
    }
}
