//! What starts a playbook. Each trigger compiles to the EventBridge pattern the member accounts'
//! forwarding rule uses (coarse, so that a change of thresholds needs no StackSet update when the
//! pattern stays the same), and matches events precisely in the responder.
//!
//! Findings a person suppressed or archived are not acted on unless a trigger asks for them, and
//! GuardDuty's sample findings (generated on request, describing nothing real) never are unless
//! asked.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::finding::{findings, Finding};
use super::{child_path, Node, Problem};

pub const KINDS: &[&str] = &[
    "guardduty",
    "securityhub",
    "securityhub_action",
    "inspector",
    "config",
    "cloudtrail",
    "schedule",
    "manual",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    Guardduty {
        /// Finding type prefixes; empty: every type.
        type_prefixes: Vec<String>,
        min_severity: f64,
        resource_types: Vec<String>,
        include_samples: bool,
    },
    Securityhub {
        control_ids: Vec<String>,
        product_names: Vec<String>,
        min_severity: f64,
        workflow: Vec<String>,
        record_state: Vec<String>,
    },
    SecurityhubAction {
        name: String,
    },
    Inspector {
        types: Vec<String>,
        min_severity: f64,
        fix_available: Vec<String>,
        statuses: Vec<String>,
    },
    Config {
        rules: Vec<String>,
        compliance: Vec<String>,
    },
    Cloudtrail {
        source: String,
        names: Vec<String>,
    },
    Schedule {
        expression: String,
    },
    Manual,
}

/// The event a `quell run` request becomes, as the playbook's templates see it under `event`:
/// `detail.target` (`arn`, `id`, `type`), `detail.requester`, `detail.reason`.
pub const MANUAL_SOURCE: &str = "quell";
pub const MANUAL_DETAIL_TYPE: &str = "Quell Manual Run";

/// The id of the Security Hub custom action a `securityhub_action` trigger named `name` is
/// started from: install creates it under this id and the responder accepts its events only. An
/// id is at most 20 letters and digits; FNV-1a keeps it the same across builds and releases
/// (it names an AWS resource) without a dependency.
pub fn custom_action_id(name: &str) -> String {
    format!("QuellPb{}", stable_hex(name))
}

/// The name, after the deployment's prefix, of the EventBridge rule that fires a `schedule`
/// playbook: the security stack makes it, and the responder takes scheduled events from it only.
pub fn schedule_rule_suffix(playbook_id: &str) -> String {
    format!("playbook-{}", stable_hex(playbook_id))
}

/// 13 hex digits of FNV-1a over `text`.
fn stable_hex(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:013x}", hash >> 12)
}

/// What a trigger matched in an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matched {
    /// The finding, for finding triggers.
    pub finding: Option<Finding>,
}

fn strings_or(
    map: &Map<String, Value>,
    key: &str,
    at: &str,
    default: &[&str],
) -> Result<Vec<String>, Problem> {
    match map.get(key) {
        None => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        Some(v) => {
            let at = child_path(at, key);
            Node::new(v, &at).strings(&format!("`{key}`"))
        }
    }
}

fn number_or(
    map: &Map<String, Value>,
    key: &str,
    at: &str,
    default: f64,
    max: f64,
) -> Result<f64, Problem> {
    let Some(v) = map.get(key) else {
        return Ok(default);
    };
    let at = child_path(at, key);
    let n = v
        .as_f64()
        .or_else(|| v.as_str().and_then(severity_label))
        .ok_or_else(|| {
            Node::new(v, &at)
                .problem(format!("`{v}` as `{key}`"))
                .expected("a number, or a label: LOW, MEDIUM, HIGH, CRITICAL")
        })?;
    if !(0.0..=max).contains(&n) {
        return Err(Node::new(v, &at)
            .problem(format!("{n} as `{key}`"))
            .expected(format!("0 to {max}")));
    }
    Ok(n)
}

/// The lowest score of each label, as Inspector and Security Hub assign them (0-10).
fn severity_label(label: &str) -> Option<f64> {
    Some(match label {
        "INFORMATIONAL" => 0.0,
        "LOW" => 0.1,
        "MEDIUM" => 4.0,
        "HIGH" => 7.0,
        "CRITICAL" => 9.0,
        _ => return None,
    })
}

fn check_values(values: &[String], known: &[&str], key: &str, at: &str) -> Result<(), Problem> {
    for (i, v) in values.iter().enumerate() {
        if !known.contains(&v.as_str()) {
            return Err(Problem::new(format!("`{v}` in `{key}`"))
                .expected(format!("one of {}", known.join(", ")))
                .suggest(v, known)
                .at(&format!("{}[{i}]", child_path(at, key))));
        }
    }
    Ok(())
}

impl Trigger {
    pub fn parse(node: Node<'_>) -> Result<Trigger, Problem> {
        let map = node.object("a trigger", KINDS, &[])?;
        let [(kind, body)] = map.iter().collect::<Vec<_>>()[..] else {
            return Err(node
                .problem(format!("a trigger with {} kinds", map.len()))
                .expected(format!("exactly one of {}", KINDS.join(", "))));
        };
        let at = child_path(node.at(), kind);
        let body_node = Node::new(body, &at);
        let empty = Map::new();
        let fields =
            |allowed: &[&str], required: &[&str]| -> Result<&Map<String, Value>, Problem> {
                if body.is_null() && required.is_empty() {
                    Ok(&empty)
                } else {
                    body_node.object(&format!("a `{kind}` trigger"), allowed, required)
                }
            };
        Ok(match kind.as_str() {
            "guardduty" => {
                let m = fields(
                    &["types", "min_severity", "resource_types", "include_samples"],
                    &[],
                )?;
                let resource_types = strings_or(m, "resource_types", &at, &[])?;
                check_values(
                    &resource_types,
                    &[
                        "Instance",
                        "AccessKey",
                        "S3Bucket",
                        "Lambda",
                        "EKSCluster",
                        "ECSCluster",
                        "Container",
                        "RDSDBInstance",
                    ],
                    "resource_types",
                    &at,
                )?;
                Trigger::Guardduty {
                    type_prefixes: strings_or(m, "types", &at, &[])?,
                    min_severity: number_or(m, "min_severity", &at, 0.0, 10.0)?,
                    resource_types,
                    include_samples: m
                        .get("include_samples")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }
            }
            "securityhub" => {
                let m = fields(
                    &[
                        "control_ids",
                        "product_names",
                        "min_severity",
                        "workflow",
                        "record_state",
                    ],
                    &[],
                )?;
                let workflow = strings_or(m, "workflow", &at, &["NEW", "NOTIFIED"])?;
                check_values(
                    &workflow,
                    &["NEW", "NOTIFIED", "SUPPRESSED", "RESOLVED"],
                    "workflow",
                    &at,
                )?;
                let record_state = strings_or(m, "record_state", &at, &["ACTIVE"])?;
                check_values(&record_state, &["ACTIVE", "ARCHIVED"], "record_state", &at)?;
                Trigger::Securityhub {
                    control_ids: strings_or(m, "control_ids", &at, &[])?,
                    product_names: strings_or(m, "product_names", &at, &[])?,
                    min_severity: number_or(m, "min_severity", &at, 0.0, 10.0)?,
                    workflow,
                    record_state,
                }
            }
            "securityhub_action" => {
                let m = fields(&["name"], &["name"])?;
                let name_at = child_path(&at, "name");
                let name = Node::new(&m["name"], &name_at).string("the custom action's name")?;
                if name.is_empty() || name.len() > 20 {
                    return Err(Node::new(&m["name"], &name_at)
                        .problem(format!("`{name}`"))
                        .expected(
                            "1 to 20 characters, Security Hub's limit for a custom action's name",
                        ));
                }
                Trigger::SecurityhubAction {
                    name: name.to_owned(),
                }
            }
            "inspector" => {
                let m = fields(&["types", "min_severity", "fix_available", "statuses"], &[])?;
                let types = strings_or(m, "types", &at, &["PACKAGE_VULNERABILITY"])?;
                check_values(
                    &types,
                    &[
                        "PACKAGE_VULNERABILITY",
                        "NETWORK_REACHABILITY",
                        "CODE_VULNERABILITY",
                    ],
                    "types",
                    &at,
                )?;
                let fix_available = strings_or(m, "fix_available", &at, &[])?;
                check_values(
                    &fix_available,
                    &["YES", "NO", "PARTIAL"],
                    "fix_available",
                    &at,
                )?;
                let statuses = strings_or(m, "statuses", &at, &["ACTIVE"])?;
                check_values(
                    &statuses,
                    &["ACTIVE", "SUPPRESSED", "CLOSED"],
                    "statuses",
                    &at,
                )?;
                Trigger::Inspector {
                    types,
                    min_severity: number_or(m, "min_severity", &at, 0.0, 10.0)?,
                    fix_available,
                    statuses,
                }
            }
            "config" => {
                let m = fields(&["rules", "compliance"], &["rules"])?;
                let compliance = strings_or(m, "compliance", &at, &["NON_COMPLIANT"])?;
                check_values(
                    &compliance,
                    &[
                        "COMPLIANT",
                        "NON_COMPLIANT",
                        "NOT_APPLICABLE",
                        "INSUFFICIENT_DATA",
                    ],
                    "compliance",
                    &at,
                )?;
                Trigger::Config {
                    rules: strings_or(m, "rules", &at, &[])?,
                    compliance,
                }
            }
            "cloudtrail" => {
                let m = fields(&["source", "names"], &["source", "names"])?;
                let source_at = child_path(&at, "source");
                let source = Node::new(&m["source"], &source_at).string("an event source")?;
                if !source.ends_with(".amazonaws.com") {
                    return Err(Node::new(&m["source"], &source_at)
                        .problem(format!("`{source}`"))
                        .expected("a CloudTrail event source such as ec2.amazonaws.com"));
                }
                let names = strings_or(m, "names", &at, &[])?;
                if names.is_empty() {
                    return Err(Node::new(&m["names"], &child_path(&at, "names"))
                        .problem("no event names")
                        .expected(
                            "the API calls to act on, such as AuthorizeSecurityGroupIngress",
                        ));
                }
                Trigger::Cloudtrail {
                    source: source.to_owned(),
                    names,
                }
            }
            "schedule" => {
                let expression = body_node.string("a schedule: rate(...) or cron(...)")?;
                // What rate and cron expressions are made of, and nothing that could end a
                // quoted scalar in the template the expression is rendered into.
                let plain = expression
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || " ()*?,/#-".contains(c));
                if !(expression.starts_with("rate(") || expression.starts_with("cron("))
                    || !expression.ends_with(')')
                    || !plain
                    || expression.len() > 256
                {
                    return Err(body_node
                        .problem(format!("`{expression}`"))
                        .expected("an EventBridge schedule: rate(12 hours) or cron(0 6 * * ? *)"));
                }
                Trigger::Schedule {
                    expression: expression.to_owned(),
                }
            }
            "manual" => {
                fields(&[], &[])?;
                Trigger::Manual
            }
            other => unreachable!("{other} is not in KINDS"),
        })
    }

    /// The EventBridge pattern that forwards this trigger's events from member accounts, or
    /// `None` for triggers that come from nowhere else (the schedule, manual runs, custom actions,
    /// which the security account's own rules deliver).
    pub fn forwarding_pattern(&self) -> Option<Value> {
        Some(match self {
            Trigger::Guardduty {
                type_prefixes,
                resource_types,
                ..
            } => {
                let mut detail = Map::new();
                if !type_prefixes.is_empty() {
                    detail.insert(
                        "type".into(),
                        type_prefixes.iter().map(|p| json!({"prefix": p})).collect(),
                    );
                }
                if !resource_types.is_empty() {
                    detail.insert("resource".into(), json!({"resourceType": resource_types}));
                }
                let mut p =
                    json!({"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]});
                if !detail.is_empty() {
                    p["detail"] = Value::Object(detail);
                }
                p
            }
            Trigger::Inspector { types, .. } => json!({
                "source": ["aws.inspector2"],
                "detail-type": ["Inspector2 Finding"],
                "detail": {"type": types}
            }),
            Trigger::Securityhub { .. } => json!({
                "source": ["aws.securityhub"],
                "detail-type": ["Security Hub Findings - Imported"]
            }),
            Trigger::Config { rules, .. } => json!({
                "source": ["aws.config"],
                "detail-type": ["Config Rules Compliance Change"],
                "detail": {"configRuleName": rules}
            }),
            Trigger::Cloudtrail { source, names } => json!({
                // CloudTrail's events reach EventBridge as from `aws.<service>`.
                "source": [format!("aws.{}", source.trim_end_matches(".amazonaws.com"))],
                "detail-type": ["AWS API Call via CloudTrail"],
                "detail": {"eventSource": [source], "eventName": names}
            }),
            Trigger::SecurityhubAction { .. } | Trigger::Schedule { .. } | Trigger::Manual => {
                return None
            }
        })
    }

    /// The custom action a `securityhub_action` trigger is started from: (id, name).
    pub fn custom_action(&self) -> Option<(String, String)> {
        match self {
            Trigger::SecurityhubAction { name } => Some((custom_action_id(name), name.clone())),
            _ => None,
        }
    }

    /// A `schedule` trigger's expression.
    pub fn schedule(&self) -> Option<&str> {
        match self {
            Trigger::Schedule { expression } => Some(expression),
            _ => None,
        }
    }

    /// Whether `event` starts this trigger, and with what.
    pub fn matches(&self, event: &Value) -> Option<Matched> {
        let finding = |f: &dyn Fn(&Finding, &Value) -> bool| -> Option<Matched> {
            // Security Hub events carry findings in a list; the raw one is read alongside.
            let raws: Vec<&Value> = match event["detail"]["findings"].as_array() {
                Some(list) => list.iter().collect(),
                None => vec![&event["detail"]],
            };
            findings(event)
                .into_iter()
                .zip(raws)
                .find(|(n, raw)| f(n, raw))
                .map(|(n, _)| Matched { finding: Some(n) })
        };
        let detail_type = event["detail-type"].as_str().unwrap_or_default();
        let source = event["source"].as_str().unwrap_or_default();
        // The envelope first: most events are not this trigger's kind, and reading the finding
        // costs more than looking at two fields.
        match self {
            Trigger::Guardduty { .. } if source != "aws.guardduty" => return None,
            Trigger::Inspector { .. } if source != "aws.inspector2" => return None,
            _ => {}
        }
        match self {
            Trigger::Guardduty {
                type_prefixes,
                min_severity,
                resource_types,
                include_samples,
            } => finding(&|f, _| {
                f.product == "GuardDuty"
                    && (type_prefixes.is_empty()
                        || type_prefixes.iter().any(|p| f.kind.starts_with(p.as_str())))
                    && f.severity >= *min_severity
                    && (resource_types.is_empty() || resource_types.contains(&f.resource_type))
                    && (*include_samples || !f.sample)
                    && f.status.as_deref() != Some("ARCHIVED")
            }),
            Trigger::Inspector {
                types,
                min_severity,
                fix_available,
                statuses,
            } => finding(&|f, _| {
                types.contains(&f.kind)
                    && f.severity >= *min_severity
                    && (fix_available.is_empty()
                        || f.fix_available
                            .as_ref()
                            .is_some_and(|x| fix_available.contains(x)))
                    && f.status.as_ref().is_some_and(|s| statuses.contains(s))
            }),
            Trigger::Securityhub {
                control_ids,
                product_names,
                min_severity,
                workflow,
                record_state,
            } => {
                if detail_type != "Security Hub Findings - Imported" {
                    return None;
                }
                finding(&|f, raw| {
                    let control = raw
                        .pointer("/Compliance/SecurityControlId")
                        .or_else(|| raw.pointer("/ProductFields/ControlId"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    (control_ids.is_empty() || control_ids.iter().any(|c| c == control))
                        && (product_names.is_empty() || product_names.contains(&f.product))
                        && f.severity >= *min_severity
                        && f.workflow.as_ref().is_some_and(|w| workflow.contains(w))
                        && f.status.as_ref().is_some_and(|s| record_state.contains(s))
                        && !f.sample
                })
            }
            Trigger::SecurityhubAction { name } => (detail_type
                == "Security Hub Findings - Custom Action"
                && event["detail"]["actionName"].as_str() == Some(name.as_str()))
            .then(|| finding(&|_, _| true).unwrap_or(Matched { finding: None })),
            Trigger::Config { rules, compliance } => {
                let d = &event["detail"];
                (detail_type == "Config Rules Compliance Change"
                    && d["configRuleName"]
                        .as_str()
                        .is_some_and(|r| rules.iter().any(|x| x == r))
                    && d.pointer("/newEvaluationResult/complianceType")
                        .and_then(Value::as_str)
                        .is_some_and(|c| compliance.iter().any(|x| x == c)))
                .then_some(Matched { finding: None })
            }
            Trigger::Cloudtrail { source, names } => {
                let d = &event["detail"];
                (detail_type == "AWS API Call via CloudTrail"
                    && d["eventSource"].as_str() == Some(source.as_str())
                    && d["eventName"].as_str().is_some_and(|n| names.iter().any(|x| x == n))
                    // A call that failed changed nothing.
                    && d.get("errorCode").is_none_or(Value::is_null))
                .then_some(Matched { finding: None })
            }
            Trigger::Schedule { .. } => {
                (detail_type == "Scheduled Event").then_some(Matched { finding: None })
            }
            // What the responder makes of a checked `quell run` request; it never takes this
            // from an event, so a forged one starts nothing there.
            Trigger::Manual => (source == MANUAL_SOURCE && detail_type == MANUAL_DETAIL_TYPE)
                .then_some(Matched { finding: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::event as fixture;

    fn trigger(v: &Value) -> Result<Trigger, Problem> {
        Trigger::parse(Node::new(v, "trigger"))
    }

    #[test]
    fn every_trigger_kind_ships_with_a_fixture_it_matches() {
        let cases = [
            (
                "guardduty",
                json!({"guardduty": {"types": ["CryptoCurrency:EC2/"]}}),
                "guardduty-ec2-cryptocurrency.json",
            ),
            (
                "securityhub",
                json!({"securityhub": {"product_names": ["Inspector"]}}),
                "securityhub-imported-inspector.json",
            ),
            (
                "securityhub_action",
                json!({"securityhub_action": {"name": "Quell: evidence"}}),
                "securityhub-custom-action.json",
            ),
            (
                "inspector",
                json!({"inspector": {"min_severity": 7}}),
                "inspector2-package-vulnerability.json",
            ),
            (
                "config",
                json!({"config": {"rules": ["ec2-imdsv2-check"]}}),
                "config-compliance-change.json",
            ),
            (
                "cloudtrail",
                json!({"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["RunInstances"]}}),
                "cloudtrail-run-instances.json",
            ),
            (
                "schedule",
                json!({"schedule": "rate(1 day)"}),
                "eventbridge-scheduled-event.json",
            ),
            ("manual", json!({"manual": {}}), "quell-manual-run.json"),
        ];
        assert_eq!(
            cases.iter().map(|c| c.0).collect::<Vec<_>>(),
            KINDS,
            "one case per kind"
        );
        for (kind, t, file) in &cases {
            let t = trigger(t).unwrap();
            assert!(t.matches(&fixture(file)).is_some(), "{kind}: {file}");
            // And no other kind's fixture starts it.
            for (_, _, other) in cases.iter().filter(|c| c.2 != *file) {
                assert!(t.matches(&fixture(other)).is_none(), "{kind} on {other}");
            }
        }
    }

    #[test]
    fn custom_action_ids_are_security_hubs_shape_stable_and_distinct() {
        let a = custom_action_id("Quell: patch now");
        assert_eq!(a.len(), 20, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert!(a.starts_with("QuellPb"));
        // The id names a resource install made: the same name gives it again, in any build.
        assert_eq!(a, custom_action_id("Quell: patch now"));
        assert_eq!(custom_action_id(""), "QuellPbcbf29ce484222");
        assert_ne!(a, custom_action_id("Quell: patch now "));
    }

    #[test]
    fn guardduty_triggers_match_by_type_prefix_severity_and_resource() {
        let event = fixture("guardduty-ec2-ssh-brute-force.json");
        let t = trigger(&json!({"guardduty": {"types": ["UnauthorizedAccess:EC2/"], "min_severity": 7, "resource_types": ["Instance"]}})).unwrap();
        let m = t.matches(&event).expect("matches");
        assert_eq!(m.finding.unwrap().resource_id, "i-99999999");
        for other in [
            json!({"guardduty": {"types": ["Recon:"]}}),
            json!({"guardduty": {"min_severity": "CRITICAL"}}),
            json!({"guardduty": {"resource_types": ["AccessKey"]}}),
        ] {
            assert!(
                trigger(&other).unwrap().matches(&event).is_none(),
                "{other}"
            );
        }
        let mut sample = event.clone();
        sample["detail"]["service"]["additionalInfo"]["sample"] = json!(true);
        assert!(t.matches(&sample).is_none(), "sample findings are ignored");
        let samples = trigger(&json!({"guardduty": {"include_samples": true}})).unwrap();
        assert!(samples.matches(&sample).is_some(), "unless asked");
        assert_eq!(
            t.forwarding_pattern().unwrap()["detail"]["type"],
            json!([{"prefix": "UnauthorizedAccess:EC2/"}])
        );
    }

    #[test]
    fn inspector_and_its_security_hub_copy_match_their_own_triggers() {
        let inspector = fixture("inspector2-package-vulnerability.json");
        let hub = fixture("securityhub-imported-inspector.json");
        let t = trigger(&json!({"inspector": {"min_severity": "CRITICAL", "fix_available": ["YES", "PARTIAL"]}})).unwrap();
        assert!(t.matches(&inspector).is_some());
        assert!(
            t.matches(&hub).is_none(),
            "Security Hub's copy is not Inspector's event"
        );
        let mut closed = inspector.clone();
        closed["detail"]["status"] = json!("CLOSED");
        assert!(
            t.matches(&closed).is_none(),
            "closed findings wait for a trigger that asks"
        );
        let by_product =
            trigger(&json!({"securityhub": {"product_names": ["Inspector"], "min_severity": 9}}))
                .unwrap();
        assert!(by_product.matches(&hub).is_some());
        let mut suppressed = hub.clone();
        suppressed["detail"]["findings"][0]["Workflow"]["Status"] = json!("SUPPRESSED");
        assert!(
            by_product.matches(&suppressed).is_none(),
            "suppressed findings are left alone"
        );
    }

    #[test]
    fn cloudtrail_triggers_skip_failed_calls_and_forward_from_the_service() {
        let t = trigger(&json!({"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["AuthorizeSecurityGroupIngress"]}})).unwrap();
        let mut event = json!({"detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
            "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "AuthorizeSecurityGroupIngress"}});
        assert!(t.matches(&event).is_some());
        event["detail"]["errorCode"] = json!("Client.UnauthorizedOperation");
        assert!(t.matches(&event).is_none());
        assert_eq!(
            t.forwarding_pattern().unwrap()["source"],
            json!(["aws.ec2"])
        );
    }

    #[test]
    fn bad_triggers_are_refused_with_where_and_what() {
        let e = trigger(&json!({"gaurdduty": {}})).unwrap_err();
        assert_eq!(e.did_you_mean.as_deref(), Some("guardduty"));
        let e = trigger(&json!({"guardduty": {}, "inspector": {}})).unwrap_err();
        assert!(e.found.contains("2 kinds"), "{e}");
        let e = trigger(&json!({"guardduty": {"resource_types": ["Instnace"]}})).unwrap_err();
        assert_eq!(e.at, "trigger.guardduty.resource_types[0]");
        assert_eq!(e.did_you_mean.as_deref(), Some("Instance"));
        let e = trigger(&json!({"inspector": {"min_severity": 11}})).unwrap_err();
        assert!(e.to_string().contains("0 to 10"), "{e}");
        let e =
            trigger(&json!({"securityhub_action": {"name": "Quell: contain this instance now"}}))
                .unwrap_err();
        assert!(e.to_string().contains("20 characters"), "{e}");
        for smuggled in [
            "rate(1 day)\"\n      State: DISABLED #)",
            "cron(0 6 * * ? *)'; )",
        ] {
            let e = trigger(&json!({ "schedule": smuggled })).unwrap_err();
            assert!(e.to_string().contains("EventBridge schedule"), "{e}");
        }
        let e = trigger(&json!({"schedule": "every day"})).unwrap_err();
        assert!(e.to_string().contains("rate(12 hours)"), "{e}");
        let e = trigger(&json!({"cloudtrail": {"source": "ec2", "names": ["RunInstances"]}}))
            .unwrap_err();
        assert_eq!(e.at, "trigger.cloudtrail.source");
    }
}
