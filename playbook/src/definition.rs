//! A declared playbook, read and checked as a whole: every key known, every path rooted, every
//! reference to a step's output pointing at an earlier step that declares it, every wait and
//! approval bounded, every jump forward, nothing released that cannot be undone, and no patch
//! step behind a quarantine that would block it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::catalogue::{self, Type, BOUNDED, CONTROL_OUTPUTS, CONTROL_PARAMS};
use super::condition::Condition;
use super::path::{Path, Segment};
use super::template::Template;
use super::trigger::Trigger;
use super::{child_path, parse_duration, Node, Problem};

const PLAYBOOK_KEYS: &[&str] = &[
    "id",
    "version",
    "description",
    "mode",
    "scope",
    "trigger",
    "dedup",
    "concurrency",
    "limits",
    "target",
    "when",
    "steps",
    "tests",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "action",
    "target",
    "with",
    "if",
    "retry",
    "on_error",
    "timeout",
    "on_timeout",
    "outputs",
];
pub const MODES: &[&str] = &["auto", "approve", "notify", "simulate"];
const ENDINGS: &[&str] = &["fail", "rollback", "continue", "end"];
/// The longest a run may wait at one step.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 86_400);
const MAX_STEPS: usize = 50;
pub const TARGET_TYPES: &[&str] = &[
    "AWS::EC2::Instance",
    "AWS::IAM::User",
    "AWS::IAM::Role",
    "AWS::Lambda::Function",
    "AWS::EC2::SecurityGroup",
    "AWS::S3::Bucket",
    "AWS::EC2::Snapshot",
];

#[derive(Debug, Clone, Serialize)]
pub struct Playbook {
    pub id: String,
    pub version: u64,
    pub description: String,
    pub mode: String,
    pub scope: Scope,
    #[serde(skip)]
    pub trigger: Trigger,
    pub dedup: Option<Keyed>,
    pub concurrency: Option<Keyed>,
    pub limits: Limits,
    pub target: Target,
    #[serde(skip)]
    pub when: Option<Condition>,
    #[serde(skip)]
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub tests: Vec<Value>,
}

/// What the playbook leaves alone, as Quell's exemptions do: accounts, OUs (any account under
/// them), and resources carrying a tag whose value is the reason (an empty value exempts nothing).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    pub exempt_accounts: Vec<String>,
    pub exempt_organizational_units: Vec<String>,
    pub exempt_tag: Option<String>,
}

impl Scope {
    /// Why the run would leave this account or resource alone, if it would.
    pub fn exemption(&self, account: &str, ou_path: &[&str], resource: &Value) -> Option<String> {
        if self.exempt_accounts.iter().any(|a| a == account) {
            return Some(format!("account {account} is exempt"));
        }
        if let Some(ou) = self
            .exempt_organizational_units
            .iter()
            .find(|ou| ou_path.contains(&ou.as_str()))
        {
            return Some(format!("account {account} is under exempt OU {ou}"));
        }
        let tag = self.exempt_tag.as_deref()?;
        let reason = resource["tags"][tag]
            .as_str()
            .filter(|r| !r.trim().is_empty())?;
        Some(format!("tagged {tag}: {reason}"))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Keyed {
    pub key: String,
    pub window: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_runs_per_hour: u64,
    pub max_targets: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: String,
    /// A template naming the resource's id or ARN.
    pub id: String,
}

impl Target {
    fn parse(node: Node<'_>) -> Result<Target, Problem> {
        let at = node.at().to_owned();
        let t = node.object("a target", &["type", "id"], &["type", "id"])?;
        let type_at = child_path(&at, "type");
        let kind = Node::new(&t["type"], &type_at).string("a resource type")?;
        if !TARGET_TYPES.contains(&kind) {
            return Err(Problem::new(format!("the resource type `{kind}`"))
                .expected(format!("one of {}", TARGET_TYPES.join(", ")))
                .suggest(kind, TARGET_TYPES)
                .at(&type_at));
        }
        let id_at = child_path(&at, "id");
        let id = Node::new(&t["id"], &id_at).string("the target's id")?;
        Template::parse(id).map_err(|p| p.at(&id_at))?;
        Ok(Target {
            kind: kind.to_owned(),
            id: id.to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub action: String,
    pub with: Map<String, Value>,
    pub condition: Option<Condition>,
    pub retry: u32,
    pub on_error: String,
    pub timeout: Option<Duration>,
    pub on_timeout: Option<String>,
    pub outputs: Vec<String>,
    /// Another resource than the playbook's target, named by the event or an earlier step
    /// (the instance whose credentials leaked, say).
    pub target: Option<Target>,
}

impl Step {
    pub fn writes(&self) -> bool {
        catalogue::action(&self.action).is_some_and(|a| a.writes)
    }
}

fn kebab(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn snake(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn field<'a>(map: &'a Map<String, Value>, key: &str, at: &str) -> Option<(Node<'a>, String)> {
    map.get(key)
        .map(|v| (Node::new(v, ""), child_path(at, key)))
}

/// The templates in a parameter tree, with their key paths.
fn templates_in(value: &Value, at: &str, out: &mut Vec<(String, Template)>) -> Result<(), Problem> {
    match value {
        Value::String(s) => out.push((at.to_owned(), Template::parse(s).map_err(|p| p.at(at))?)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                templates_in(item, &format!("{at}[{i}]"), out)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                templates_in(v, &child_path(at, k), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

impl Playbook {
    #[allow(clippy::too_many_lines)]
    pub fn parse(node: Node<'_>) -> Result<Playbook, Problem> {
        let at = node.at().to_owned();
        let map = node.object(
            "a playbook",
            PLAYBOOK_KEYS,
            &["id", "version", "trigger", "target", "steps"],
        )?;
        let get = |key: &str| field(map, key, &at);

        let (field_node, id_at) = get("id").expect("required");
        let id = Node::new(field_node.value, &id_at).string("the playbook's id")?;
        if !kebab(id) {
            return Err(Problem::new(format!("the id `{id}`"))
                .expected("1-64 lowercase letters, digits and `-`, starting with a letter")
                .at(&id_at));
        }
        let (field_node, version_at) = get("version").expect("required");
        let version = field_node
            .value
            .as_u64()
            .filter(|v| *v >= 1)
            .ok_or_else(|| {
                Problem::new(format!("`{}` as the version", field_node.value))
                    .expected("a whole number from 1; raise it with each change")
                    .at(&version_at)
            })?;
        let description = match get("description") {
            Some((field_node, key_at)) => Node::new(field_node.value, &key_at)
                .string("a description")?
                .to_owned(),
            None => String::new(),
        };
        let mode = match get("mode") {
            Some((field_node, key_at)) => {
                let m = Node::new(field_node.value, &key_at).string("a mode")?;
                if !MODES.contains(&m) {
                    return Err(Problem::new(format!("the mode `{m}`"))
                        .expected(format!("one of {}", MODES.join(", ")))
                        .suggest(m, MODES)
                        .at(&key_at));
                }
                m.to_owned()
            }
            None => "auto".to_owned(),
        };
        let scope = match get("scope") {
            Some((field_node, key_at)) => {
                let s = Node::new(field_node.value, &key_at).object(
                    "a scope",
                    &[
                        "exempt_accounts",
                        "exempt_organizational_units",
                        "exempt_tag",
                    ],
                    &[],
                )?;
                let list = |k: &str| match s.get(k) {
                    Some(v) => Node::new(v, &child_path(&key_at, k)).strings(&format!("`{k}`")),
                    None => Ok(Vec::new()),
                };
                Scope {
                    exempt_accounts: list("exempt_accounts")?,
                    exempt_organizational_units: list("exempt_organizational_units")?,
                    exempt_tag: s
                        .get("exempt_tag")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }
            }
            None => Scope::default(),
        };
        let (field_node, trigger_at) = get("trigger").expect("required");
        let trigger = Trigger::parse(Node::new(field_node.value, &trigger_at))?;
        let keyed = |key: &str| -> Result<Option<Keyed>, Problem> {
            let Some((field_node, key_at)) = get(key) else {
                return Ok(None);
            };
            let m = Node::new(field_node.value, &key_at).object(
                &format!("`{key}`"),
                &["key", "window"],
                &["key"],
            )?;
            let k_at = child_path(&key_at, "key");
            let k = Node::new(&m["key"], &k_at).string("a key template")?;
            Template::parse(k).map_err(|p| p.at(&k_at))?;
            let window = match m.get("window") {
                Some(w) => {
                    let w_at = child_path(&key_at, "window");
                    Some(
                        parse_duration(Node::new(w, &w_at).string("a duration")?)
                            .map_err(|p| p.at(&w_at))?
                            .as_secs(),
                    )
                }
                None => None,
            };
            Ok(Some(Keyed {
                key: k.to_owned(),
                window,
            }))
        };
        let dedup = keyed("dedup")?;
        let concurrency = keyed("concurrency")?;
        let limits = match get("limits") {
            Some((field_node, key_at)) => {
                let m = Node::new(field_node.value, &key_at).object(
                    "`limits`",
                    &["max_runs_per_hour", "max_targets"],
                    &[],
                )?;
                let number = |k: &str, default: u64| -> Result<u64, Problem> {
                    match m.get(k) {
                        None => Ok(default),
                        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                            Problem::new(format!("`{v}` as `{k}`"))
                                .expected("a whole number from 1")
                                .at(&child_path(&key_at, k))
                        }),
                    }
                };
                Limits {
                    max_runs_per_hour: number("max_runs_per_hour", 60)?,
                    max_targets: number("max_targets", 10)?,
                }
            }
            None => Limits {
                max_runs_per_hour: 60,
                max_targets: 10,
            },
        };
        let (field_node, target_at) = get("target").expect("required");
        let target = Target::parse(Node::new(field_node.value, &target_at))?;
        let target_template = Template::parse(&target.id).expect("checked by Target::parse");
        for p in target_template.paths() {
            if p.root() == "steps" || p.root() == "resource" {
                return Err(Problem::new(format!("`{p}` in the target"))
                    .expected("a path into the event, the finding, the account or vars: the target is known before any step runs")
                    .at(&child_path(&target_at, "id")));
            }
        }
        let when = match get("when") {
            Some((field_node, key_at)) => {
                Some(Condition::parse(Node::new(field_node.value, &key_at))?)
            }
            None => None,
        };
        if let Some(w) = &when {
            if let Some(p) = w.paths().into_iter().find(|p| p.root() == "steps") {
                return Err(Problem::new(format!("`{p}` in `when`"))
                    .expected("paths known before the first step: event, finding, resource, account, run, vars")
                    .at(&child_path(&at, "when")));
            }
        }

        let (field_node, steps_at) = get("steps").expect("required");
        let items = Node::new(field_node.value, &steps_at).list("`steps`")?;
        if items.is_empty() || items.len() > MAX_STEPS {
            return Err(Problem::new(format!("{} steps", items.len()))
                .expected(format!("1 to {MAX_STEPS}"))
                .at(&steps_at));
        }
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            steps.push(parse_step(Node::new(item, &format!("{steps_at}[{i}]")))?);
        }
        check_steps(&steps, &steps_at, &target.kind)?;

        let tests = match get("tests") {
            Some((field_node, key_at)) => {
                let items = Node::new(field_node.value, &key_at).list("`tests`")?;
                for (i, t) in items.iter().enumerate() {
                    super::simulate::Case::parse(Node::new(t, &format!("{key_at}[{i}]")))?;
                }
                items.to_vec()
            }
            None => Vec::new(),
        };
        Ok(Playbook {
            id: id.to_owned(),
            version,
            description,
            mode,
            scope,
            trigger,
            dedup,
            concurrency,
            limits,
            target,
            when,
            steps,
            tests,
        })
    }

    /// IAM actions its steps need in member accounts.
    pub fn iam_actions(&self) -> BTreeSet<&'static str> {
        self.steps
            .iter()
            .filter_map(|s| catalogue::action(&s.action))
            .flat_map(|a| a.iam.iter().copied())
            .collect()
    }
}

fn parse_step(node: Node<'_>) -> Result<Step, Problem> {
    let at = node.at().to_owned();
    let map = node.object("a step", STEP_KEYS, &["id", "action"])?;
    let id_at = child_path(&at, "id");
    let id = Node::new(&map["id"], &id_at).string("the step's id")?;
    if !snake(id) {
        return Err(Problem::new(format!("the step id `{id}`"))
            .expected("1-64 lowercase letters, digits and `_`, starting with a letter")
            .at(&id_at));
    }
    let action_at = child_path(&at, "action");
    let action = Node::new(&map["action"], &action_at).string("an action")?;
    let names = catalogue::names();
    if !names.contains(&action) {
        return Err(Problem::new(format!("unknown action `{action}`"))
            .expected("an action from Quell's catalogue (`quell playbook actions` lists them)")
            .suggest(action, &names)
            .at(&action_at));
    }
    let with_at = child_path(&at, "with");
    let empty = Map::new();
    let with = match map.get("with") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(
                Problem::new(format!("{} as the step's parameters", super::kind(other)))
                    .expected("a mapping of parameter names to values")
                    .at(&with_at),
            )
        }
        None => &empty,
    };
    check_params(action, with, &with_at)?;
    let condition = match map.get("if") {
        Some(v) => Some(Condition::parse(Node::new(v, &child_path(&at, "if")))?),
        None => None,
    };
    let retry = match map.get("retry") {
        Some(v) => {
            let r_at = child_path(&at, "retry");
            let r = Node::new(v, &r_at).object("`retry`", &["max_attempts"], &["max_attempts"])?;
            u32::try_from(r["max_attempts"].as_u64().unwrap_or(0))
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    Problem::new(format!("`{}` attempts", r["max_attempts"]))
                        .expected("1 to 10")
                        .at(&child_path(&r_at, "max_attempts"))
                })?
        }
        None => 1,
    };
    let text = |key: &str| -> Result<Option<String>, Problem> {
        map.get(key)
            .map(|v| {
                Node::new(v, &child_path(&at, key))
                    .string(&format!("`{key}`"))
                    .map(str::to_owned)
            })
            .transpose()
    };
    let on_error = text("on_error")?.unwrap_or_else(|| "fail".to_owned());
    let timeout = match map.get("timeout") {
        Some(v) => {
            let t_at = child_path(&at, "timeout");
            let d = parse_duration(Node::new(v, &t_at).string("a duration")?)
                .map_err(|p| p.at(&t_at))?;
            if d > MAX_WAIT || d.is_zero() {
                return Err(Problem::new(format!("a timeout of {} s", d.as_secs()))
                    .expected("more than 0 and at most 30d")
                    .at(&t_at));
            }
            Some(d)
        }
        None => None,
    };
    let on_timeout = text("on_timeout")?;
    if BOUNDED.contains(&action) && (timeout.is_none() || on_timeout.is_none()) {
        return Err(Problem::new(format!(
            "`{action}` step `{id}` has no {}",
            if timeout.is_none() { "`timeout`" } else { "`on_timeout`" }
        ))
        .expected("waits and approvals bounded: `timeout: 72h` and `on_timeout: <later step id>|end|fail|rollback|continue`")
        .at(&at));
    }
    let outputs = match map.get("outputs") {
        Some(v) => Node::new(v, &child_path(&at, "outputs")).strings("`outputs`")?,
        None => Vec::new(),
    };
    let declared: &[&str] = catalogue::action(action).map_or_else(
        || {
            CONTROL_OUTPUTS
                .iter()
                .find(|(n, _)| *n == action)
                .map_or(&[][..], |(_, o)| *o)
        },
        |a| a.outputs,
    );
    for (i, o) in outputs.iter().enumerate() {
        if !declared.contains(&o.as_str()) {
            return Err(Problem::new(format!("`{action}` has no output `{o}`"))
                .expected(if declared.is_empty() {
                    "no outputs".to_owned()
                } else {
                    format!("one of {}", declared.join(", "))
                })
                .suggest(o, declared)
                .at(&format!("{}[{i}]", child_path(&at, "outputs"))));
        }
    }
    let target = match map.get("target") {
        Some(v) => {
            let t_at = child_path(&at, "target");
            let t = Target::parse(Node::new(v, &t_at))?;
            if let Some(p) = Template::parse(&t.id)
                .expect("checked by Target::parse")
                .paths()
                .find(|p| p.root() == "resource")
            {
                return Err(Problem::new(format!("`{p}` in a step's target"))
                    .expected("a path into the event, the finding or an earlier step's outputs")
                    .at(&child_path(&t_at, "id")));
            }
            Some(t)
        }
        None => None,
    };
    Ok(Step {
        target,
        id: id.to_owned(),
        action: action.to_owned(),
        with: with.clone(),
        condition,
        retry,
        on_error,
        timeout,
        on_timeout,
        outputs,
    })
}

fn params_of(action: &str) -> &'static [catalogue::Param] {
    catalogue::action(action).map_or_else(
        || {
            CONTROL_PARAMS
                .iter()
                .find(|(n, _)| *n == action)
                .map_or(&[][..], |(_, p)| *p)
        },
        |a| a.params,
    )
}

fn check_params(action: &str, with: &Map<String, Value>, at: &str) -> Result<(), Problem> {
    let params = params_of(action);
    let names: Vec<&str> = params.iter().map(|p| p.name).collect();
    for (key, value) in with {
        let p_at = child_path(at, key);
        let Some(param) = params.iter().find(|p| p.name == key) else {
            return Err(
                Problem::new(format!("`{action}` takes no parameter `{key}`"))
                    .expected(if names.is_empty() {
                        "no parameters".to_owned()
                    } else {
                        format!("one of {}", names.join(", "))
                    })
                    .suggest(key, &names)
                    .at(&p_at),
            );
        };
        let mut found = Vec::new();
        if param.kind != Type::Condition {
            templates_in(value, &p_at, &mut found)?;
        }
        let templated = found.iter().any(|(_, t)| !t.is_literal());
        if templated && !param.templated {
            return Err(Problem::new(format!("a template in `{key}`"))
                .expected(format!("a literal value: `{action}.{key}` is fixed in the playbook, never taken from an event"))
                .at(&p_at));
        }
        if !templated {
            check_type(param.kind, value, &p_at)?;
        }
        if action == "ssm.run_document" && key == "document" {
            // The configuration may allow more; the defaults are the patch documents.
            if let Some(doc) = value.as_str() {
                if doc == "AWS-RunShellScript" || doc == "AWS-RunPowerShellScript" {
                    return Err(Problem::new(format!("the document `{doc}`"))
                        .expected("a document that takes no command line; run shell commands through a reviewed SSM document of your own, allow-listed in the configuration")
                        .at(&p_at));
                }
            }
        }
    }
    for p in params.iter().filter(|p| p.required) {
        if !with.contains_key(p.name) {
            return Err(Problem::new(format!("`{action}` needs `{}`", p.name))
                .expected(format!("`with: {{{}: ...}}`", p.name))
                .at(at));
        }
    }
    Ok(())
}

fn check_type(kind: Type, value: &Value, at: &str) -> Result<(), Problem> {
    let ok = match kind {
        Type::Text => value.is_string(),
        Type::Texts => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        Type::Boolean => value.is_boolean(),
        Type::Number => value.is_number(),
        Type::Duration => {
            if let Some(s) = value.as_str() {
                let d = parse_duration(s).map_err(|p| p.at(at))?;
                if d > MAX_WAIT {
                    return Err(Problem::new(format!("a wait of {} s", d.as_secs()))
                        .expected("at most 30d")
                        .at(at));
                }
                true
            } else {
                false
            }
        }
        Type::TextMap => value
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
        Type::OneOf(values) => {
            let v = value.as_str().unwrap_or_default();
            if !values.contains(&v) {
                return Err(Problem::new(format!("`{value}`"))
                    .expected(format!("one of {}", values.join(", ")))
                    .suggest(v, values)
                    .at(at));
            }
            true
        }
        Type::Principals => value.as_array().is_some_and(|a| {
            !a.is_empty()
                && a.iter().all(|p| {
                    p.as_str()
                        .is_some_and(|s| s.starts_with("arn:") && s.contains(":iam::"))
                })
        }),
        Type::Condition => {
            Condition::parse(Node::new(value, at))?;
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::new(format!("{} here", super::kind(value)))
            .expected(match kind {
                Type::Text => "text".to_owned(),
                Type::Texts => "a list of text".to_owned(),
                Type::Boolean => "true or false".to_owned(),
                Type::Number => "a number".to_owned(),
                Type::Duration => "a duration such as 15m or 72h".to_owned(),
                Type::TextMap => "a mapping of text to text".to_owned(),
                Type::Principals => "a list of IAM principal ARN patterns".to_owned(),
                Type::OneOf(_) | Type::Condition => unreachable!("checked above"),
            })
            .at(at))
    }
}

/// References between steps: each must point forward (jumps) or backward (outputs), and to what
/// exists.
fn check_steps(steps: &[Step], at: &str, target_type: &str) -> Result<(), Problem> {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        if index.insert(&s.id, i).is_some() {
            return Err(Problem::new(format!("a second step `{}`", s.id))
                .expected("step ids unique within the playbook")
                .at(&format!("{at}[{i}].id")));
        }
    }
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let mut quarantine: Option<(&str, String)> = None;
    for (i, s) in steps.iter().enumerate() {
        let step_at = format!("{at}[{i}]");
        let target_type = s.target.as_ref().map_or(target_type, |t| t.kind.as_str());
        if let Some(a) = catalogue::action(&s.action) {
            if !a.targets.contains(&"any") && !a.targets.contains(&target_type) {
                return Err(Problem::new(format!("`{}` on a {target_type}", s.action))
                    .expected(format!(
                        "an action for {target_type}; `{}` acts on {}",
                        s.action,
                        a.targets.join(", ")
                    ))
                    .at(&child_path(&step_at, "action")));
            }
        }
        // Jumps go forward only: a run always ends.
        for (key, target) in [
            ("on_error", Some(&s.on_error)),
            ("on_timeout", s.on_timeout.as_ref()),
        ] {
            let Some(target) = target else { continue };
            if ENDINGS.contains(&target.as_str()) {
                continue;
            }
            match index.get(target.as_str()) {
                Some(j) if *j > i => {}
                Some(_) => {
                    return Err(Problem::new(format!("`{key}: {target}` jumps back"))
                        .expected("a later step, or end, fail, rollback, continue")
                        .at(&child_path(&step_at, key)))
                }
                None => {
                    let mut known: Vec<&str> = ids.clone();
                    known.extend_from_slice(ENDINGS);
                    return Err(Problem::new(format!("`{key}: {target}` names no step"))
                        .expected("a later step, or end, fail, rollback, continue")
                        .suggest(target, &known)
                        .at(&child_path(&step_at, key)));
                }
            }
        }
        // Outputs of earlier steps only, and only those they declare.
        let mut paths: Vec<(String, Path)> = Vec::new();
        let mut templates = Vec::new();
        templates_in(
            &Value::Object(s.with.clone()),
            &child_path(&step_at, "with"),
            &mut templates,
        )?;
        for (a, t) in &templates {
            paths.extend(t.paths().map(|p| (a.clone(), p.clone())));
        }
        if let Some(c) = &s.condition {
            paths.extend(
                c.paths()
                    .into_iter()
                    .map(|p| (child_path(&step_at, "if"), p.clone())),
            );
        }
        if let Some(t) = &s.target {
            let t_at = child_path(&child_path(&step_at, "target"), "id");
            let template = Template::parse(&t.id).expect("checked by Target::parse");
            paths.extend(template.paths().map(|p| (t_at.clone(), p.clone())));
        }
        for (a, p) in paths {
            if p.root() != "steps" {
                continue;
            }
            let (Some(Segment::Key(other)), Some(Segment::Key(outputs)), Some(Segment::Key(name))) = (
                p.segments().get(1),
                p.segments().get(2),
                p.segments().get(3),
            ) else {
                return Err(Problem::new(format!("`{p}`"))
                    .expected("`steps.<step id>.outputs.<name>`")
                    .at(&a));
            };
            let Some(&j) = index.get(other.as_str()) else {
                return Err(Problem::new(format!("`{p}` names no step `{other}`"))
                    .expected("an earlier step's id")
                    .suggest(other, &ids)
                    .at(&a));
            };
            if j >= i {
                return Err(
                    Problem::new(format!("`{p}` reads step `{other}`, which runs later"))
                        .expected("outputs of earlier steps only")
                        .at(&a),
                );
            }
            if outputs != "outputs" || !steps[j].outputs.contains(name) {
                return Err(Problem::new(format!(
                    "`{p}`: step `{other}` declares no output `{name}`"
                ))
                .expected(format!(
                    "one of its `outputs:` ({})",
                    steps[j].outputs.join(", ")
                ))
                .at(&a));
            }
        }
        // A deny_all quarantine blocks the traffic a patch needs.
        if s.action == "ec2.quarantine" {
            let profile = s
                .with
                .get("profile")
                .and_then(Value::as_str)
                .unwrap_or_default();
            quarantine = Some((&s.id, profile.to_owned()));
        }
        if s.action == "ec2.release_quarantine" {
            quarantine = None;
        }
        let patches = s.action.starts_with("patch.") || s.action == "ssm.run_document";
        if let (true, Some((q, profile))) = (patches, &quarantine) {
            if profile == "deny_all" {
                return Err(Problem::new(format!(
                    "`{}` runs while step `{q}` holds the instance in a deny_all quarantine, which blocks SSM and the package repositories",
                    s.id
                ))
                .expected("`profile: patch_egress` for that quarantine, or the patch before it")
                .at(&child_path(&step_at, "action")));
            }
        }
        // Release undoes named steps: each must be earlier and undoable.
        if s.action == "release" {
            let named = s
                .with
                .get("steps")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (k, n) in named.iter().enumerate() {
                let n = n.as_str().unwrap_or_default();
                let n_at = format!(
                    "{}[{k}]",
                    child_path(&child_path(&step_at, "with"), "steps")
                );
                let Some(&j) = index.get(n) else {
                    return Err(Problem::new(format!("release names no step `{n}`"))
                        .expected("earlier steps' ids")
                        .suggest(n, &ids)
                        .at(&n_at));
                };
                if j >= i {
                    return Err(Problem::new(format!("release of `{n}`, which runs later"))
                        .expected("earlier steps only")
                        .at(&n_at));
                }
                let undoable =
                    catalogue::action(&steps[j].action).is_some_and(|a| a.inverse.is_some());
                if !undoable {
                    return Err(Problem::new(format!(
                        "release of `{n}` (`{}`), which nothing undoes",
                        steps[j].action
                    ))
                    .expected("steps whose action has an inverse (quarantine, containment, tag)")
                    .at(&n_at));
                }
            }
        }
    }
    // Every step that writes and can be undone must be undone by a release step when the playbook
    // declares one: a release that forgets a quarantine leaves the instance cut off.
    if let Some((r, release)) = steps
        .iter()
        .enumerate()
        .find(|(_, s)| s.action == "release")
    {
        let named: BTreeSet<&str> = release
            .with
            .get("steps")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for s in &steps[..r] {
            let undoable =
                catalogue::action(&s.action).is_some_and(|a| a.inverse.is_some() && a.writes);
            if undoable && !named.contains(s.id.as_str()) {
                return Err(Problem::new(format!(
                    "release step `{}` leaves step `{}` (`{}`) in place",
                    release.id, s.id, s.action
                ))
                .expected(format!("`{}` among the released steps, or a reason to keep it: move it after the release", s.id))
                .at(&format!("{at}[{r}].with.steps")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
