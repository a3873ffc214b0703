//! Events are anyone's to forge: whatever one holds, reading its findings, matching triggers,
//! evaluating conditions and planning steps answer (a plan, a bounded problem), never panic, and
//! never take the target from anywhere but the event the playbook names.

use chrono::Utc;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::definition::Playbook;
use crate::fixtures;
use crate::simulate::simulate;
use crate::Node;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("CRITICAL".to_owned()),
        Just("ACTIVE".to_owned()),
        Just("${{ finding.id }}".to_owned()),
        "[a-zA-Z0-9:/._ -]{0,24}",
        "\\PC{0,16}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(
                    &[
                        "type",
                        "severity",
                        "resource",
                        "resourceType",
                        "instanceDetails",
                        "instanceId",
                        "service",
                        "additionalInfo",
                        "sample",
                        "resources",
                        "id",
                        "findingArn",
                        "fixAvailable",
                        "status",
                        "findings",
                        "Workflow",
                        "Status",
                        "RecordState",
                        "Severity",
                        "Normalized",
                        "ProductName",
                        "accessKeyDetails",
                        "userName",
                        "userType",
                        "principalId",
                        "resourceRole",
                        "inspectorScore",
                    ][..],
                )
                .prop_map(str::to_owned),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["aws.guardduty", "aws.inspector2", "aws.securityhub", "aws.ec2", ""][..]),
        prop::sample::select(
            &["GuardDuty Finding", "Inspector2 Finding", "Security Hub Findings - Imported", "x"][..],
        ),
        value(),
    )
        .prop_map(|(source, detail_type, detail)| {
            json!({"source": source, "detail-type": detail_type, "account": "111122223333", "detail": detail})
        })
}

/// A shipped fixture with one field replaced by anything: events that nearly match.
fn near_miss() -> impl Strategy<Value = Value> {
    const FIXTURES: &[&str] = &[
        "guardduty-ec2-cryptocurrency.json",
        "guardduty-iam-instance-credential-exfiltration.json",
        "inspector2-package-vulnerability.json",
        "securityhub-imported-inspector.json",
    ];
    const FIELDS: &[&str] = &[
        "/detail/type",
        "/detail/severity",
        "/detail/resource",
        "/detail/resource/instanceDetails/instanceId",
        "/detail/resource/accessKeyDetails",
        "/detail/resource/accessKeyDetails/principalId",
        "/detail/service/additionalInfo/sample",
        "/detail/service/resourceRole",
        "/detail/resources",
        "/detail/resources/0/id",
        "/detail/findingArn",
        "/detail/fixAvailable",
        "/detail/status",
        "/detail/findings",
        "/detail/findings/0/Resources/0/Id",
        "/detail/findings/0/Workflow",
        "/detail",
    ];
    (
        prop::sample::select(FIXTURES),
        prop::sample::select(FIELDS),
        value(),
    )
        .prop_map(|(fixture, field, v)| {
            let mut e = fixtures::event(fixture);
            if let Some(slot) = e.pointer_mut(field) {
                *slot = v;
            }
            e
        })
}

fn shipped() -> Vec<Playbook> {
    fixtures::playbook_files()
        .iter()
        .map(|f| fixtures::playbook(f))
        .collect()
}

proptest! {
    #[test]
    fn any_event_is_planned_or_left_alone_without_a_panic(e in prop_oneof![event(), near_miss()], resource in value()) {
        for p in shipped() {
            let plan = simulate(&p, &e, &resource, &json!({}), Utc::now());
            if let Some(problem) = &plan.problem {
                prop_assert!(problem.len() < 4096, "{problem}");
            }
            if plan.matched {
                // The target is a name the event gave, filled in whole: never text the playbook
                // did not ask for.
                let target = plan.target.clone().unwrap_or_default();
                let from_event = [
                    e.pointer("/detail/resources/0/id"),
                    e.pointer("/detail/resource/instanceDetails/instanceId"),
                    e.pointer("/detail/resource/accessKeyDetails/userName"),
                    e.pointer("/detail/findings/0/Resources/0/Id"),
                ];
                prop_assert!(
                    from_event.iter().flatten().any(|v| v.as_str() == Some(target.as_str())),
                    "{} targets {target}, which the event does not name", p.id
                );
            }
        }
    }

    #[test]
    fn any_condition_document_is_read_or_refused_without_a_panic(v in value()) {
        let _ = crate::condition::Condition::parse(Node::new(&v, "when"));
        let _ = crate::trigger::Trigger::parse(Node::new(&v, "trigger"));
        let _ = Playbook::parse(Node::new(&v, ""));
    }
}
