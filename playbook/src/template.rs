//! `${{ path }}` in a step's parameters: the value the path names, nothing computed. A parameter
//! that is one template takes the value with its type (a list stays a list); text around a
//! template makes the result text. Templates fill typed parameters only, which the catalogue
//! checks; no action takes a policy document or a command line from a template.

use serde_json::Value;

use super::path::Path;
use super::{kind, Problem};

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Value(Path),
}

/// A parameter value with its templates read.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, Problem> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 3..];
            let end = after.find("}}").ok_or_else(|| {
                Problem::new(format!("`{text}` opens `${{{{` without closing it"))
                    .expected("`${{ path }}`")
            })?;
            parts.push(Part::Value(Path::parse(&after[..end])?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().filter_map(|p| match p {
            Part::Value(path) => Some(path),
            Part::Text(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.paths().next().is_none()
    }

    /// The value, read from `context`. A path naming nothing is an error naming the path.
    pub fn fill(&self, context: &Value) -> Result<Value, Problem> {
        let value_of = |path: &Path| {
            path.resolve(context).cloned().ok_or_else(|| {
                Problem::new(format!("`${{{{ {path} }}}}` names nothing here"))
                    .expected("a path with a value for this event; give the leaf a `default`, or guard the step with `if`")
            })
        };
        if let [Part::Value(path)] = &self.parts[..] {
            return value_of(path);
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(path) => {
                    match value_of(path)? {
                        Value::String(s) => out.push_str(&s),
                        v @ (Value::Number(_) | Value::Bool(_)) => out.push_str(&v.to_string()),
                        other => return Err(Problem::new(format!(
                            "`${{{{ {path} }}}}` is {} inside text",
                            kind(&other)
                        ))
                        .expected(
                            "a string, number or boolean; or the template alone as the whole value",
                        )),
                    }
                }
            }
        }
        Ok(Value::String(out))
    }
}

/// Fills every template in a parameter tree (strings at any depth).
pub fn fill_all(params: &Value, context: &Value) -> Result<Value, Problem> {
    Ok(match params {
        Value::String(s) => Template::parse(s)?.fill(context)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| fill_all(i, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_all(v, context)?)))
                .collect::<Result<_, Problem>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_template_keeps_its_type_and_text_around_it_makes_text() {
        let ctx = json!({"finding": {"severity": 9.8, "id": "f-1"}, "steps": {"snap": {"outputs": {"ids": ["snap-1", "snap-2"]}}}});
        assert_eq!(
            Template::parse("${{ steps.snap.outputs.ids }}")
                .unwrap()
                .fill(&ctx)
                .unwrap(),
            json!(["snap-1", "snap-2"])
        );
        assert_eq!(
            Template::parse("Finding ${{finding.id}} at ${{ finding.severity }}")
                .unwrap()
                .fill(&ctx)
                .unwrap(),
            json!("Finding f-1 at 9.8")
        );
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn a_missing_value_or_a_list_inside_text_is_an_error_naming_the_path() {
        let ctx = json!({"finding": {}, "steps": {"s": {"outputs": {"ids": ["a"]}}}});
        let e = Template::parse("${{ finding.title }}")
            .unwrap()
            .fill(&ctx)
            .unwrap_err();
        assert!(e.found.contains("finding.title"), "{e}");
        let e = Template::parse("ids: ${{ steps.s.outputs.ids }}")
            .unwrap()
            .fill(&ctx)
            .unwrap_err();
        assert!(e.found.contains("a list inside text"), "{e}");
        assert!(Template::parse("${{ finding.id").is_err());
        assert!(Template::parse("${{ fnding.id }}").is_err());
    }
}
