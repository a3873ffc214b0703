//! Conditions: a tree of `all`, `any` and `not` over leaves `{path, <operator>: value}`. The
//! operators are a closed set; regular expressions use a linear-time engine with a size limit, so
//! no condition can stall the responder however it is written.
//!
//! A path that names nothing makes its leaf false (`exists: false` aside), unless the leaf gives a
//! `default`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use wildmatch::WildMatch;

use super::path::Path;
use super::{kind, parse_duration, Node, Problem};

pub const MAX_DEPTH: usize = 8;
pub const MAX_NODES: usize = 256;
pub const MAX_LIST: usize = 500;
pub const MAX_REGEX: usize = 1024;

pub const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "prefix",
    "suffix",
    "contains",
    "glob",
    "matches",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "older_than",
    "newer_than",
    "cidr",
];

#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf(Leaf),
}

#[derive(Debug, Clone)]
pub struct Leaf {
    pub path: Path,
    pub op: Op,
    pub default: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Prefix(String),
    Suffix(String),
    Contains(Value),
    Glob(String, WildMatch),
    Matches(regex::Regex),
    Exists(bool),
    Compare(Comparison, Value),
    OlderThan(Duration),
    NewerThan(Duration),
    Cidr(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Equals(_) => "equals",
            Op::NotEquals(_) => "not_equals",
            Op::In(_) => "in",
            Op::NotIn(_) => "not_in",
            Op::Prefix(_) => "prefix",
            Op::Suffix(_) => "suffix",
            Op::Contains(_) => "contains",
            Op::Glob(..) => "glob",
            Op::Matches(_) => "matches",
            Op::Exists(_) => "exists",
            Op::Compare(Comparison::Gt, _) => "gt",
            Op::Compare(Comparison::Gte, _) => "gte",
            Op::Compare(Comparison::Lt, _) => "lt",
            Op::Compare(Comparison::Lte, _) => "lte",
            Op::OlderThan(_) => "older_than",
            Op::NewerThan(_) => "newer_than",
            Op::Cidr(_) => "cidr",
        }
    }

    /// The operand as written, for the trace.
    fn operand(&self) -> Value {
        match self {
            Op::Equals(v) | Op::NotEquals(v) | Op::Contains(v) | Op::Compare(_, v) => v.clone(),
            Op::In(v) | Op::NotIn(v) => Value::Array(v.clone()),
            Op::Prefix(s) | Op::Suffix(s) | Op::Glob(s, _) => Value::String(s.clone()),
            Op::Matches(r) => Value::String(r.as_str().to_owned()),
            Op::Exists(b) => Value::Bool(*b),
            Op::OlderThan(d) | Op::NewerThan(d) => Value::String(format!("{}s", d.as_secs())),
            Op::Cidr(n) => Value::String(n.to_string()),
        }
    }
}

impl Condition {
    /// Reads a condition tree, checking its operators, paths and size.
    pub fn parse(node: Node<'_>) -> Result<Condition, Problem> {
        let mut nodes = 0;
        let c = parse_at(node, 1, &mut nodes)?;
        Ok(c)
    }

    /// Every path the tree reads.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().flat_map(Condition::paths).collect()
            }
            Condition::Not(c) => c.paths(),
            Condition::Leaf(l) => vec![&l.path],
        }
    }

    /// Evaluates against `context` (an object keyed by root), noting what each leaf saw.
    pub fn evaluate(&self, context: &Value, now: DateTime<Utc>) -> Evaluation {
        let mut leaves = Vec::new();
        let matched = self.eval(context, now, &mut leaves);
        Evaluation { matched, leaves }
    }

    fn eval(&self, context: &Value, now: DateTime<Utc>, trace: &mut Vec<LeafTrace>) -> bool {
        match self {
            // Every branch is evaluated so that the trace shows each leaf's value.
            Condition::All(cs) => {
                let results: Vec<bool> = cs.iter().map(|c| c.eval(context, now, trace)).collect();
                results.into_iter().all(|r| r)
            }
            Condition::Any(cs) => {
                let results: Vec<bool> = cs.iter().map(|c| c.eval(context, now, trace)).collect();
                results.into_iter().any(|r| r)
            }
            Condition::Not(c) => !c.eval(context, now, trace),
            Condition::Leaf(leaf) => {
                let seen = leaf.path.resolve(context).or(leaf.default.as_ref());
                let result = leaf.test(seen, now);
                trace.push(LeafTrace {
                    path: leaf.path.to_string(),
                    operator: leaf.op.name(),
                    operand: leaf.op.operand(),
                    seen: seen.cloned(),
                    result,
                });
                result
            }
        }
    }
}

/// What a condition came to, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub matched: bool,
    pub leaves: Vec<LeafTrace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeafTrace {
    pub path: String,
    pub operator: &'static str,
    pub operand: Value,
    /// The value the path named, or `None` when it named nothing.
    pub seen: Option<Value>,
    pub result: bool,
}

impl Leaf {
    fn test(&self, seen: Option<&Value>, now: DateTime<Utc>) -> bool {
        if let Op::Exists(want) = self.op {
            return seen.is_some() == want;
        }
        let Some(seen) = seen else { return false };
        match &self.op {
            Op::Equals(v) => same(seen, v),
            Op::NotEquals(v) => !same(seen, v),
            Op::In(vs) => vs.iter().any(|v| same(seen, v)),
            Op::NotIn(vs) => !vs.iter().any(|v| same(seen, v)),
            Op::Prefix(p) => seen.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Op::Suffix(p) => seen.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Op::Contains(v) => match (seen, v) {
                (Value::String(s), Value::String(part)) => s.contains(part.as_str()),
                (Value::Array(items), v) => items.iter().any(|i| same(i, v)),
                _ => false,
            },
            Op::Glob(_, m) => seen.as_str().is_some_and(|s| m.matches(s)),
            Op::Matches(r) => seen.as_str().is_some_and(|s| r.is_match(s)),
            Op::Exists(_) => unreachable!("handled above"),
            Op::Compare(c, v) => compare(seen, v).is_some_and(|o| match c {
                Comparison::Gt => o.is_gt(),
                Comparison::Gte => o.is_ge(),
                Comparison::Lt => o.is_lt(),
                Comparison::Lte => o.is_le(),
            }),
            Op::OlderThan(d) => age(seen, now).is_some_and(|a| a > *d),
            Op::NewerThan(d) => age(seen, now).is_some_and(|a| a < *d),
            Op::Cidr(net) => seen.as_str().is_some_and(|s| {
                s.parse::<std::net::IpAddr>()
                    .map(|ip| net.contains(&ip))
                    .or_else(|_| s.parse::<IpNet>().map(|n| net.contains(&n)))
                    .unwrap_or(false)
            }),
        }
    }
}

/// Equality where a number and its text are the same value (`severity: "8"` equals 8), since
/// findings carry numbers either way.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::String(y)) | (Value::String(y), Value::Number(x)) => {
            y.parse::<f64>().ok() == x.as_f64()
        }
        _ => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn compare(seen: &Value, operand: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (timestamp(seen), timestamp(operand)) {
        return Some(a.cmp(&b));
    }
    number(seen)?.partial_cmp(&number(operand)?)
}

fn age(seen: &Value, now: DateTime<Utc>) -> Option<Duration> {
    (now - timestamp(seen)?).to_std().ok()
}

fn parse_at(node: Node<'_>, depth: usize, nodes: &mut usize) -> Result<Condition, Problem> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(node
            .problem(format!("a condition of more than {MAX_NODES} parts"))
            .expected("a smaller condition: split the playbook"));
    }
    if depth > MAX_DEPTH {
        return Err(node
            .problem(format!("a condition nested deeper than {MAX_DEPTH}"))
            .expected("a flatter condition"));
    }
    let Value::Object(map) = node.value else {
        return Err(node
            .problem(format!("{} where a condition was", kind(node.value)))
            .expected("`all`, `any`, `not`, or `{path, <operator>: value}`"));
    };
    for combinator in ["all", "any"] {
        if let Some(list) = map.get(combinator) {
            node.object("a condition", &[combinator], &[])?;
            let at = super::child_path(node.at(), combinator);
            let items = Node::new(list, &at).list(&format!("`{combinator}`"))?;
            if items.is_empty() {
                return Err(Node::new(list, &at)
                    .problem(format!("an empty `{combinator}`"))
                    .expected("at least one condition"));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("{at}[{i}]");
                out.push(parse_at(Node::new(item, &at), depth + 1, nodes)?);
            }
            return Ok(if combinator == "all" {
                Condition::All(out)
            } else {
                Condition::Any(out)
            });
        }
    }
    if let Some(inner) = map.get("not") {
        node.object("a condition", &["not"], &[])?;
        let at = super::child_path(node.at(), "not");
        return Ok(Condition::Not(Box::new(parse_at(
            Node::new(inner, &at),
            depth + 1,
            nodes,
        )?)));
    }
    let mut allowed = vec!["path", "default"];
    allowed.extend_from_slice(OPERATORS);
    allowed.extend_from_slice(&["all", "any", "not"]);
    let map = node.object("a condition", &allowed, &["path"])?;
    let path_at = super::child_path(node.at(), "path");
    let path = Path::parse(Node::new(&map["path"], &path_at).string("`path`")?)
        .map_err(|p| p.at(&path_at))?;
    let ops: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| OPERATORS.contains(k))
        .collect();
    let [op_name] = ops[..] else {
        return Err(node
            .problem(format!(
                "a leaf with {} operators{}",
                ops.len(),
                if ops.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", ops.join(", "))
                }
            ))
            .expected(format!("exactly one of {}", OPERATORS.join(", "))));
    };
    let op_at = super::child_path(node.at(), op_name);
    let operand = Node::new(&map[op_name], &op_at);
    let op = operator(op_name, operand)?;
    Ok(Condition::Leaf(Leaf {
        path,
        op,
        default: map.get("default").cloned(),
    }))
}

fn scalar(node: Node<'_>, op: &str) -> Result<Value, Problem> {
    match node.value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(node.value.clone()),
        other => Err(node
            .problem(format!("{} as the value of `{op}`", kind(other)))
            .expected("a string, number or boolean")),
    }
}

fn scalars(node: Node<'_>, op: &str) -> Result<Vec<Value>, Problem> {
    let items = node.list(&format!("`{op}`"))?;
    if items.len() > MAX_LIST {
        return Err(node
            .problem(format!("a list of {} values", items.len()))
            .expected(format!("at most {MAX_LIST}")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{}[{i}]", node.at());
            scalar(Node::new(v, &at), op)
        })
        .collect()
}

fn operator(name: &str, node: Node<'_>) -> Result<Op, Problem> {
    let text = |what: &str| node.string(what).map(str::to_owned);
    Ok(match name {
        "equals" => Op::Equals(scalar(node, name)?),
        "not_equals" => Op::NotEquals(scalar(node, name)?),
        "in" => Op::In(scalars(node, name)?),
        "not_in" => Op::NotIn(scalars(node, name)?),
        "prefix" => Op::Prefix(text("`prefix`")?),
        "suffix" => Op::Suffix(text("`suffix`")?),
        "contains" => Op::Contains(scalar(node, name)?),
        "glob" => {
            let pattern = text("`glob`")?;
            let m = WildMatch::new(&pattern);
            Op::Glob(pattern, m)
        }
        "matches" => {
            let pattern = text("`matches`")?;
            if pattern.len() > MAX_REGEX {
                return Err(node
                    .problem(format!("a pattern of {} bytes", pattern.len()))
                    .expected(format!("at most {MAX_REGEX}")));
            }
            let compiled = regex::RegexBuilder::new(&pattern)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    node.problem(format!("the pattern `{pattern}` ({e})"))
                        .expected("a regular expression (Rust regex syntax: no look-around, no back-references)")
                })?;
            Op::Matches(compiled)
        }
        "exists" => Op::Exists(node.value.as_bool().ok_or_else(|| {
            node.problem(format!("{} as the value of `exists`", kind(node.value)))
                .expected("true or false")
        })?),
        "gt" | "gte" | "lt" | "lte" => {
            let v = scalar(node, name)?;
            if number(&v).is_none() && timestamp(&v).is_none() {
                return Err(node
                    .problem(format!("`{v}` to compare with"))
                    .expected("a number or an RFC 3339 timestamp"));
            }
            let c = match name {
                "gt" => Comparison::Gt,
                "gte" => Comparison::Gte,
                "lt" => Comparison::Lt,
                _ => Comparison::Lte,
            };
            Op::Compare(c, v)
        }
        "older_than" | "newer_than" => {
            let d = parse_duration(node.string("a duration")?).map_err(|p| p.at(node.at()))?;
            if name == "older_than" {
                Op::OlderThan(d)
            } else {
                Op::NewerThan(d)
            }
        }
        "cidr" => {
            let t = node.string("`cidr`")?;
            Op::Cidr(t.parse().map_err(|_| {
                node.problem(format!("`{t}`"))
                    .expected("a network such as 10.0.0.0/8 or 2001:db8::/32")
            })?)
        }
        other => unreachable!("{other} is not in OPERATORS"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: &Value) -> Result<Condition, Problem> {
        Condition::parse(Node::new(v, "when"))
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(cond: &Value, ctx: &Value) -> bool {
        parse(cond).unwrap().evaluate(ctx, now()).matched
    }

    #[test]
    fn each_operator_decides_as_documented() {
        let ctx = json!({
            "finding": {"severity": 8.2, "type": "UnauthorizedAccess:EC2/SSHBruteForce", "product": "GuardDuty"},
            "event": {"updated_at": "2026-11-01T00:00:00Z", "ip": "10.1.2.3", "count": "12"},
            "resource": {"tags": {"Env": "prod"}, "roles": ["web", "ssh"]}
        });
        let cases = [
            (
                json!({"path": "finding.product", "equals": "GuardDuty"}),
                true,
            ),
            (
                json!({"path": "finding.product", "not_equals": "GuardDuty"}),
                false,
            ),
            (json!({"path": "event.count", "equals": 12}), true),
            (
                json!({"path": "resource.tags.Env", "in": ["prod", "staging"]}),
                true,
            ),
            (
                json!({"path": "resource.tags.Env", "not_in": ["prod"]}),
                false,
            ),
            (
                json!({"path": "finding.type", "prefix": "UnauthorizedAccess:EC2/"}),
                true,
            ),
            (
                json!({"path": "finding.type", "suffix": "BruteForce"}),
                true,
            ),
            (json!({"path": "finding.type", "contains": "EC2"}), true),
            (json!({"path": "resource.roles", "contains": "ssh"}), true),
            (json!({"path": "finding.type", "glob": "*:EC2/*"}), true),
            (
                json!({"path": "finding.type", "matches": "^Unauthorized\\w+:EC2/"}),
                true,
            ),
            (
                json!({"path": "resource.tags.Owner", "exists": false}),
                true,
            ),
            (
                json!({"path": "resource.tags.Owner", "exists": true}),
                false,
            ),
            (json!({"path": "finding.severity", "gte": 7}), true),
            (json!({"path": "finding.severity", "lt": 7}), false),
            (
                json!({"path": "event.updated_at", "lt": "2026-11-02T00:00:00Z"}),
                true,
            ),
            (
                json!({"path": "event.updated_at", "older_than": "7d"}),
                true,
            ),
            (
                json!({"path": "event.updated_at", "newer_than": "7d"}),
                false,
            ),
            (json!({"path": "event.ip", "cidr": "10.0.0.0/8"}), true),
            (json!({"path": "event.ip", "cidr": "192.168.0.0/16"}), false),
        ];
        for (cond, want) in cases {
            assert_eq!(check(&cond, &ctx), want, "{cond}");
        }
    }

    #[test]
    fn a_missing_value_is_false_unless_a_default_says_otherwise() {
        let ctx = json!({"resource": {}});
        assert!(!check(
            &json!({"path": "resource.tags.Env", "not_equals": "prod"}),
            &ctx
        ));
        assert!(check(
            &json!({"path": "resource.tags.Env", "not_equals": "prod", "default": "dev"}),
            &ctx
        ));
    }

    #[test]
    fn combinators_nest_and_the_trace_shows_every_leaf() {
        let ctx = json!({"finding": {"severity": 5, "product": "Inspector"}});
        let cond = json!({"all": [
            {"path": "finding.product", "equals": "Inspector"},
            {"not": {"path": "finding.severity", "lt": 4}},
            {"any": [{"path": "finding.severity", "gte": 9}, {"path": "resource.tags.Env", "equals": "prod"}]}
        ]});
        let e = parse(&cond).unwrap().evaluate(&ctx, now());
        assert!(!e.matched);
        assert_eq!(e.leaves.len(), 4, "every leaf is shown: {:?}", e.leaves);
        assert_eq!(e.leaves[3].seen, None);
        assert_eq!(e.leaves[1].seen, Some(json!(5)));
    }

    #[test]
    fn bad_conditions_are_refused_with_where_and_what() {
        let e = parse(&json!({"path": "finding.severity", "greater": 7})).unwrap_err();
        assert_eq!(e.at, "when.greater");
        let e = parse(&json!({"path": "finding.severity", "gte": 7, "lte": 9})).unwrap_err();
        assert!(e.found.contains("2 operators"), "{e}");
        let e = parse(&json!({"path": "finding.type", "matches": "(a"})).unwrap_err();
        assert_eq!(e.at, "when.matches");
        let e = parse(&json!({"path": "finding.type", "matches": "(?=x)"})).unwrap_err();
        assert!(e.to_string().contains("no look-around"), "{e}");
        let e = parse(&json!({"all": []})).unwrap_err();
        assert!(e.found.contains("empty"), "{e}");
        let e = parse(&json!({"any": [{"path": "findng.x", "exists": true}]})).unwrap_err();
        assert_eq!(e.at, "when.any[0].path");
        assert_eq!(e.did_you_mean.as_deref(), Some("finding"));
        let e = parse(&json!({"path": "event.ip", "cidr": "10.0.0.0/33"})).unwrap_err();
        assert_eq!(e.at, "when.cidr");
        let e = parse(&json!({"path": "event.t", "older_than": "3 weeks"})).unwrap_err();
        assert_eq!(e.at, "when.older_than");
        let e = parse(&json!({"path": "event.t", "gt": "soon"})).unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn size_limits_bound_what_the_responder_evaluates() {
        let mut deep = json!({"path": "finding.id", "exists": true});
        for _ in 0..MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(parse(&deep).unwrap_err().found.contains("deeper"));
        let wide = json!({"any": (0..MAX_NODES).map(|i| json!({"path": "finding.id", "equals": i})).collect::<Vec<_>>()});
        assert!(parse(&wide).unwrap_err().found.contains("parts"));
        let long = json!({"path": "finding.id", "in": (0..=MAX_LIST).collect::<Vec<_>>()});
        assert!(parse(&long).unwrap_err().found.contains("values"));
        let pattern = json!({"path": "finding.id", "matches": "a".repeat(MAX_REGEX + 1)});
        assert!(parse(&pattern).unwrap_err().found.contains("bytes"));
    }

    #[test]
    fn a_pattern_that_backtracks_elsewhere_stays_linear_here() {
        // Exponential for a backtracking engine; the linear-time one answers at once.
        let cond = json!({"path": "event.s", "matches": "^(a+)+$"});
        let ctx = json!({"event": {"s": format!("{}!", "a".repeat(5000))}});
        assert!(!check(&cond, &ctx));
    }
}
