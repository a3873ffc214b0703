//! What a playbook would do with an event, worked out without a single AWS call: whether the
//! trigger matches, what each condition leaf saw, each step's parameters as they would be sent,
//! the IAM actions each needs, and what would undo it. `quell simulate` prints it and `quell test`
//! compares it with a playbook's `tests:`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::catalogue;
use super::condition::Evaluation;
use super::definition::{Playbook, Step};
use super::finding::Finding;
use super::path::Path;
use super::template::{fill_all, Template};
use super::{child_path, Node, Problem};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub playbook: String,
    pub version: u64,
    pub trigger_matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Evaluation>,
    /// Why the playbook's scope leaves this alone, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempt: Option<String>,
    /// The trigger matched, the scope admits it and the conditions held: a run would start.
    pub matched: bool,
    pub mode: String,
    pub steps: Vec<PlannedStep>,
    /// Why the plan stops short, when it does (a value an event lacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub action: String,
    /// `run`, `skip` (its `if` is false) or `decided during the run` (its `if` reads a step's
    /// outputs).
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Evaluation>,
    pub parameters: Value,
    /// The resource the step acts on, when it is not the playbook's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub writes: bool,
    pub iam: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undone_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

/// A value as it appears in a message, cut short: events are anyone's to write.
fn shorten(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 80 {
        format!("{}...", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Step outputs are not known before the run; in the plan each shows where it will come from.
fn with_output_placeholders(context: &mut Value, steps: &[Step]) {
    let mut outputs = Map::new();
    for s in steps {
        let named: Map<String, Value> = s
            .outputs
            .iter()
            .map(|o| (o.clone(), json!(format!("<{o} of step {}>", s.id))))
            .collect();
        outputs.insert(s.id.clone(), json!({ "outputs": named }));
    }
    context["steps"] = Value::Object(outputs);
}

/// The plan for `event`, with `resource` standing for what the run would read live.
pub fn simulate(
    playbook: &Playbook,
    event: &Value,
    resource: &Value,
    account: &Value,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan {
        playbook: playbook.id.clone(),
        version: playbook.version,
        trigger_matched: false,
        finding: None,
        target: None,
        when: None,
        exempt: None,
        matched: false,
        mode: playbook.mode.clone(),
        steps: Vec::new(),
        problem: None,
    };
    let Some(matched) = playbook.trigger.matches(event) else {
        return plan;
    };
    plan.trigger_matched = true;
    plan.finding.clone_from(&matched.finding);
    let mut context = json!({
        "event": event,
        "finding": matched.finding.as_ref().map_or(Value::Null, |f| serde_json::to_value(f).unwrap_or_default()),
        "resource": resource,
        "account": account,
        "run": {"id": "simulated", "started_at": now.to_rfc3339()},
        "vars": {},
    });
    match Template::parse(&playbook.target.id).and_then(|t| t.fill(&context)) {
        Ok(Value::String(id)) if crate::usable_id(&id) => plan.target = Some(id),
        Ok(other) => {
            plan.problem = Some(format!(
                "the event names no usable target ({}): an id or ARN, without spaces",
                shorten(&other)
            ));
            return plan;
        }
        Err(e) => {
            plan.problem = Some(format!("target: {e}"));
            return plan;
        }
    }
    let account_id = account["id"]
        .as_str()
        .or(context["finding"]["account"].as_str())
        .or(event["account"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ou_path: Vec<&str> = account["ou_path"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(why) = playbook.scope.exemption(&account_id, &ou_path, resource) {
        plan.exempt = Some(why);
        return plan;
    }
    let holds = match &playbook.when {
        Some(w) => {
            let e = w.evaluate(&context, now);
            let holds = e.matched;
            plan.when = Some(e);
            holds
        }
        None => true,
    };
    if !holds {
        return plan;
    }
    plan.matched = true;
    with_output_placeholders(&mut context, &playbook.steps);
    let mut approved = playbook.mode != "approve";
    for step in &playbook.steps {
        let reads_outputs = step
            .condition
            .as_ref()
            .is_some_and(|c| c.paths().iter().any(|p| p.root() == "steps"));
        let condition = step.condition.as_ref().map(|c| c.evaluate(&context, now));
        let decision = match (&condition, reads_outputs) {
            (_, true) => "decided during the run",
            (Some(e), false) if !e.matched => "skip",
            _ if step.writes() => match playbook.mode.as_str() {
                "notify" => "told, not done (mode notify)",
                "simulate" => "would run (mode simulate: no writes)",
                "approve" if !approved => {
                    approved = true;
                    "run once approved (mode approve)"
                }
                _ => "run",
            },
            _ => "run",
        };
        // Conditions given as parameters (verify, wait_for) are evaluated later, on what the run
        // reads then; they are shown as written.
        let parameters = if matches!(step.action.as_str(), "verify" | "wait_for") {
            Value::Object(step.with.clone())
        } else {
            match fill_all(&Value::Object(step.with.clone()), &context) {
                Ok(p) => p,
                Err(e) => {
                    plan.problem = Some(format!("step {}: {e}", step.id));
                    return plan;
                }
            }
        };
        let target = match &step.target {
            Some(t) => match Template::parse(&t.id).and_then(|t| t.fill(&context)) {
                // A step's output is known only during the run, which checks it then.
                Ok(Value::String(id))
                    if crate::usable_id(&id) || t.id.contains("steps.") && id.starts_with('<') =>
                {
                    Some(id)
                }
                Ok(other) => {
                    plan.problem = Some(format!(
                        "step {}: the event names no usable target ({})",
                        step.id,
                        shorten(&other)
                    ));
                    return plan;
                }
                Err(e) => {
                    plan.problem = Some(format!("step {} target: {e}", step.id));
                    return plan;
                }
            },
            None => None,
        };
        let action = catalogue::action(&step.action);
        plan.steps.push(PlannedStep {
            target,
            id: step.id.clone(),
            action: step.action.clone(),
            decision,
            condition,
            parameters,
            writes: step.writes(),
            iam: action.map(|a| a.iam.to_vec()).unwrap_or_default(),
            undone_by: action.and_then(|a| a.inverse),
            timeout_seconds: step.timeout.map(|d| d.as_secs()),
            on_timeout: step.on_timeout.clone(),
        });
    }
    plan
}

/// One of a playbook's `tests:`, read: the event comes from the caller (it may be a file).
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// A path to an event file, relative to the playbook, or the event itself.
    pub event: Value,
    pub resource: Value,
    pub account: Value,
    pub expect_matched: bool,
    pub expect_steps: Option<Vec<String>>,
}

impl Case {
    pub fn parse(node: Node<'_>) -> Result<Case, Problem> {
        let at = node.at().to_owned();
        let m = node.object(
            "a test",
            &["name", "event", "resource", "account", "expect"],
            &["name", "event", "expect"],
        )?;
        let name = Node::new(&m["name"], &child_path(&at, "name"))
            .string("the test's name")?
            .to_owned();
        let expect_at = child_path(&at, "expect");
        let expect = Node::new(&m["expect"], &expect_at).object(
            "what the test expects",
            &["matched", "steps"],
            &["matched"],
        )?;
        let expect_matched = expect["matched"].as_bool().ok_or_else(|| {
            Problem::new(format!("`{}` as `matched`", expect["matched"]))
                .expected("true or false")
                .at(&child_path(&expect_at, "matched"))
        })?;
        let expect_steps = match expect.get("steps") {
            Some(v) => Some(Node::new(v, &child_path(&expect_at, "steps")).strings("step ids")?),
            None => None,
        };
        Ok(Case {
            name,
            event: m["event"].clone(),
            resource: m.get("resource").cloned().unwrap_or_else(|| json!({})),
            account: m.get("account").cloned().unwrap_or_else(|| json!({})),
            expect_matched,
            expect_steps,
        })
    }

    /// What differs between the plan and what the test expects; empty when it passes.
    pub fn differences(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &plan.problem {
            out.push(format!("the plan stops: {p}"));
        }
        if plan.matched != self.expect_matched {
            let why = if let Some(exempt) = &plan.exempt {
                format!("exempt: {exempt}")
            } else if plan.trigger_matched {
                let failed: Vec<String> = plan
                    .when
                    .iter()
                    .flat_map(|w| &w.leaves)
                    .filter(|l| !l.result)
                    .map(|l| {
                        format!(
                            "{} {} {} (saw {})",
                            l.path,
                            l.operator,
                            l.operand,
                            l.seen
                                .as_ref()
                                .map_or("nothing".to_owned(), Value::to_string)
                        )
                    })
                    .collect();
                if failed.is_empty() {
                    "the conditions held".to_owned()
                } else {
                    format!("the conditions did not hold: {}", failed.join("; "))
                }
            } else {
                "the trigger did not match the event".to_owned()
            };
            out.push(format!(
                "expected matched: {}, got {} ({why})",
                self.expect_matched, plan.matched
            ));
        }
        if let Some(want) = &self.expect_steps {
            let got: Vec<&str> = plan
                .steps
                .iter()
                .filter(|s| s.decision != "skip")
                .map(|s| s.id.as_str())
                .collect();
            if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
                out.push(format!("expected steps {want:?}, got {got:?}"));
            }
        }
        out
    }
}

/// Paths a plan reads that name nothing in its context, for `simulate` to point out.
pub fn unresolved<'a>(paths: impl Iterator<Item = &'a Path>, context: &Value) -> Vec<String> {
    paths
        .filter(|p| p.resolve(context).is_none())
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{playbook_files, shipped as load};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_shipped_playbook_passes_its_own_tests() {
        let files = playbook_files();
        assert!(files.len() >= 2, "{files:?}");
        for file in files {
            let playbook = crate::fixtures::playbook(&file);
            assert!(!playbook.tests.is_empty(), "{file} ships with tests");
            for (i, t) in playbook.tests.iter().enumerate() {
                let case = Case::parse(Node::new(t, &format!("tests[{i}]"))).unwrap();
                let event = load(case.event.as_str().unwrap());
                let plan = simulate(&playbook, &event, &case.resource, &case.account, now());
                let d = case.differences(&plan);
                assert!(d.is_empty(), "{file}: {}: {d:?}", case.name);
            }
        }
    }

    #[test]
    fn the_plan_shows_resolved_parameters_and_what_undoes_each_step() {
        let v = load("critical-cve.yaml");
        let playbook = Playbook::parse(Node::new(&v, "")).unwrap();
        let event = load("fixtures/events/inspector2-package-vulnerability.json");
        let plan = simulate(
            &playbook,
            &event,
            &json!({"state": "running"}),
            &json!({}),
            now(),
        );
        assert!(plan.matched);
        assert_eq!(plan.target.as_deref(), Some("i-0123456789abcdef0"));
        let ticket = plan.steps.iter().find(|s| s.id == "ticket").unwrap();
        assert_eq!(
            ticket.parameters["title"],
            json!("Critical CVE on i-0123456789abcdef0: CVE-2026-40001 - openssh-server")
        );
        let close = plan.steps.iter().find(|s| s.id == "close_ticket").unwrap();
        assert_eq!(
            close.parameters["ticket_id"],
            json!("<ticket_id of step ticket>")
        );
        let quarantine = plan.steps.iter().find(|s| s.id == "quarantine").unwrap();
        assert_eq!(quarantine.undone_by, Some("ec2.release_quarantine"));
        assert!(quarantine
            .iam
            .contains(&"ec2:ModifyNetworkInterfaceAttribute"));
        assert_eq!(
            plan.steps
                .iter()
                .find(|s| s.id == "approve_patch")
                .unwrap()
                .timeout_seconds,
            Some(72 * 3600)
        );
    }

    #[test]
    fn a_failing_test_says_which_leaf_saw_what() {
        let v = load("critical-cve.yaml");
        let playbook = Playbook::parse(Node::new(&v, "")).unwrap();
        let event = load("fixtures/events/inspector2-package-vulnerability.json");
        let case = Case {
            name: "stopped instance".into(),
            event: Value::Null,
            resource: json!({"state": "stopped"}),
            account: json!({}),
            expect_matched: true,
            expect_steps: None,
        };
        let plan = simulate(&playbook, &event, &case.resource, &case.account, now());
        let d = case.differences(&plan);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].contains("resource.state equals \"running\" (saw \"stopped\")"),
            "{d:?}"
        );
        let other = load("fixtures/events/guardduty-ec2-ssh-brute-force.json");
        let plan = simulate(&playbook, &other, &case.resource, &case.account, now());
        assert!(case.differences(&plan)[0].contains("the trigger did not match"));
    }
}

#[cfg(test)]
mod second_resource {
    use super::*;
    use crate::fixtures;

    #[test]
    fn a_step_on_another_resource_shows_which() {
        let p = fixtures::playbook("guardduty-credential-exfiltration.yaml");
        let event = fixtures::event("guardduty-iam-instance-credential-exfiltration.json");
        let plan = simulate(&p, &event, &json!({}), &json!({}), Utc::now());
        assert_eq!(plan.target.as_deref(), Some("web-instance-role"));
        let isolate = plan.steps.iter().find(|s| s.id == "isolate").unwrap();
        assert_eq!(
            isolate.target.as_deref(),
            Some("<instance_id of step source>")
        );
        let source = plan.steps.iter().find(|s| s.id == "source").unwrap();
        assert_eq!(
            source.parameters["principal_id"],
            json!("AROAEXAMPLEROLEID001:i-0abc1234def567890")
        );
        assert!(plan
            .steps
            .iter()
            .find(|s| s.id == "revoke")
            .unwrap()
            .target
            .is_none());
    }
}

#[cfg(test)]
mod modes_and_scope {
    use super::*;
    use crate::fixtures;

    fn playbook(edit: impl FnOnce(&mut Value)) -> Playbook {
        let mut v = fixtures::shipped("critical-cve.yaml");
        edit(&mut v);
        Playbook::parse(Node::new(&v, "")).unwrap()
    }

    fn plan(p: &Playbook, resource: &Value, account: &Value) -> Plan {
        let event = fixtures::event("inspector2-package-vulnerability.json");
        simulate(p, &event, resource, account, Utc::now())
    }

    fn decisions(plan: &Plan) -> Vec<(&str, &str)> {
        plan.steps
            .iter()
            .map(|s| (s.id.as_str(), s.decision))
            .collect()
    }

    #[test]
    fn approve_mode_holds_the_first_write_and_notify_mode_writes_nothing() {
        let running = json!({"state": "running"});
        let approve = plan(
            &playbook(|v| v["mode"] = json!("approve")),
            &running,
            &json!({}),
        );
        let d = decisions(&approve);
        assert_eq!(d[0], ("mark", "run once approved (mode approve)"));
        assert_eq!(d[1], ("evidence", "run"), "one approval covers the run");
        let notify = plan(
            &playbook(|v| v["mode"] = json!("notify")),
            &running,
            &json!({}),
        );
        assert!(notify
            .steps
            .iter()
            .filter(|s| s.writes)
            .all(|s| s.decision == "told, not done (mode notify)"));
        assert!(notify
            .steps
            .iter()
            .any(|s| !s.writes && s.decision == "run"));
    }

    #[test]
    fn exempt_accounts_ous_and_tags_start_nothing_and_say_why() {
        let p = playbook(|v| {
            v["scope"] = json!({
                "exempt_accounts": ["111122223333"],
                "exempt_organizational_units": ["ou-ab12-frozen00"],
                "exempt_tag": "quell:exempt"
            });
        });
        let running = json!({"state": "running"});
        let by_account = plan(&p, &running, &json!({}));
        assert!(!by_account.matched);
        assert_eq!(
            by_account.exempt.as_deref(),
            Some("account 111122223333 is exempt")
        );
        let p = playbook(|v| {
            v["scope"] = json!({"exempt_organizational_units": ["ou-ab12-frozen00"], "exempt_tag": "quell:exempt"});
        });
        let under_ou = plan(
            &p,
            &running,
            &json!({"ou_path": ["r-ab12", "ou-ab12-frozen00"]}),
        );
        assert!(under_ou.exempt.unwrap().contains("ou-ab12-frozen00"));
        let tagged = plan(
            &p,
            &json!({"state": "running", "tags": {"quell:exempt": "change freeze"}}),
            &json!({}),
        );
        assert_eq!(
            tagged.exempt.as_deref(),
            Some("tagged quell:exempt: change freeze")
        );
        let empty_reason = plan(
            &p,
            &json!({"state": "running", "tags": {"quell:exempt": " "}}),
            &json!({}),
        );
        assert!(empty_reason.matched, "an empty reason exempts nothing");
    }
}

#[cfg(test)]
mod forged_targets {
    use super::*;
    use crate::fixtures;

    #[test]
    fn an_event_that_names_no_usable_target_starts_nothing() {
        let p = fixtures::playbook("guardduty-instance-compromise.yaml");
        let event = fixtures::event("guardduty-ec2-cryptocurrency.json");
        for forged in [
            json!(""),
            json!("i-1 i-2"),
            json!(42),
            json!(null),
            json!("i-1\n"),
        ] {
            let mut e = event.clone();
            e["detail"]["resource"]["instanceDetails"]["instanceId"] = forged.clone();
            let plan = simulate(&p, &e, &json!({}), &json!({}), Utc::now());
            assert!(!plan.matched, "{forged}: {plan:?}");
            assert!(
                plan.problem.unwrap().contains("no usable target"),
                "{forged}"
            );
        }
    }
}
