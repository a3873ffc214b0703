//! The declared playbooks as the responder is given them: one JSON document, kept in the artifacts
//! bucket under the SHA-256 of its content (`quell_responder::runs::document`), and the EventBridge
//! patterns their triggers need.
//!
//! Member accounts forward every GuardDuty, Inspector and Security Hub finding to the central bus
//! whatever the playbooks (a few events a day per account, and a playbook change then never waits
//! for a rollout to every account); the central bus's rule picks what the triggers match. So a
//! change to a playbook's steps, or to a finding trigger, is an update of the security stack
//! alone. CloudTrail and Config triggers name calls and rules that member accounts must forward
//! specifically (forwarding every API call would be a flood): adding or changing one is a
//! StackSet update too. The plan shows each as the template it changes.

use quell_responder::playbooks::language::trigger::schedule_rule_suffix;
use quell_responder::runs::actions::runnable;
use quell_responder::runs::document::key_for;
use quell_responder::runs::webhook::Webhooks;
use serde_json::{json, Value};

use crate::declared::Declared;

/// EventBridge's default limit on an event pattern's length (adjustable to 4,096 through a quota
/// increase).
pub const PATTERN_LIMIT: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookDocument {
    pub key: String,
    pub body: Vec<u8>,
    /// `{"$or": [...]}` of every trigger that events bring, `None` when none does: the central
    /// bus's rule.
    pub forwarded: Option<Value>,
    /// The same for the triggers member accounts do not forward already: their regional rule.
    pub member_forwarded: Option<Value>,
    /// Steps this responder build does not carry out, each named: install and upgrade refuse
    /// to ship them (render, check, simulate and test still work on them).
    pub unrunnable: Vec<String>,
    /// The Security Hub custom actions the `securityhub_action` triggers are started from:
    /// (id, name, the first playbook's id), each once.
    pub custom_actions: Vec<(String, String, String)>,
    /// The EventBridge rules that fire the `schedule` triggers: one per playbook.
    pub schedules: Vec<Schedule>,
}

/// A `schedule` playbook's rule in the security stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    /// After the deployment's prefix: `quell_playbook`'s `schedule_rule_suffix`.
    pub suffix: String,
    pub logical_id: String,
    pub expression: String,
    pub playbook: String,
}

impl PlaybookDocument {
    /// The document for `declared`, `None` when there are none. Refuses patterns EventBridge
    /// would refuse.
    pub fn of(
        declared: &[Declared],
        ssm_documents: &[String],
        webhooks: &Webhooks,
    ) -> anyhow::Result<Option<PlaybookDocument>> {
        if declared.is_empty() {
            return Ok(None);
        }
        for d in declared {
            for step in &d.playbook.steps {
                let Some(name) = step.with.get("webhook").and_then(Value::as_str) else {
                    continue;
                };
                if !webhooks.contains_key(name) {
                    let known: Vec<&str> = webhooks.keys().map(String::as_str).collect();
                    anyhow::bail!(
                        "{}: playbook {} step {} names the webhook {name:?}, which the configuration's webhooks do not have ({}): add it under webhooks",
                        d.file.display(),
                        d.playbook.id,
                        step.id,
                        if known.is_empty() { "none is configured".to_owned() } else { format!("it has {}", known.join(", ")) }
                    );
                }
            }
        }
        for d in declared {
            for step in d
                .playbook
                .steps
                .iter()
                .filter(|s| s.action == "ssm.run_document")
            {
                let document = step
                    .with
                    .get("document")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let allowed = quell_responder::playbooks::language::catalogue::DEFAULT_DOCUMENTS
                    .contains(&document)
                    || ssm_documents.iter().any(|a| a == document);
                if !allowed {
                    anyhow::bail!(
                        "{}: playbook {} step {} runs the SSM document {document:?}, which is not allow-listed: add it to ssm_documents in the configuration (the patch baselines are allowed already)",
                        d.file.display(),
                        d.playbook.id,
                        step.id
                    );
                }
            }
        }
        let unrunnable = declared.iter().flat_map(|d| {
                d.playbook
                    .steps
                    .iter()
                    .filter(|s| !runnable(&s.action))
                    .map(move |s| {
                        format!(
                            "{}: playbook {} step {} uses `{}`, which this responder build does not carry out yet",
                            d.file.display(),
                            d.playbook.id,
                            s.id,
                            s.action
                        )
                    })
            })
            .collect();
        let schedules = declared
            .iter()
            .filter_map(|d| {
                let expression = d.playbook.trigger.schedule()?;
                let suffix = schedule_rule_suffix(&d.playbook.id);
                Some(Schedule {
                    logical_id: format!(
                        "PlaybookSchedule{}",
                        suffix.trim_start_matches("playbook-")
                    ),
                    suffix,
                    expression: expression.to_owned(),
                    playbook: d.playbook.id.clone(),
                })
            })
            .collect();
        let sources: Vec<&Value> = declared.iter().map(|d| &d.source).collect();
        let body = serde_json::to_vec(&sources)?;
        let patterns: Vec<Value> = declared
            .iter()
            .filter_map(|d| d.playbook.trigger.forwarding_pattern())
            .collect();
        let member: Vec<Value> = patterns
            .iter()
            .filter(|p| !forwarded_by_members(p))
            .cloned()
            .collect();
        let mut custom_actions: Vec<(String, String, String)> = Vec::new();
        for d in declared {
            let Some((id, name)) = d.playbook.trigger.custom_action() else {
                continue;
            };
            if !custom_actions.iter().any(|(known, _, _)| *known == id) {
                custom_actions.push((id, name, d.playbook.id.clone()));
            }
        }
        let forwarded = one_pattern(patterns)?;
        let member_forwarded = one_pattern(member)?;
        Ok(Some(PlaybookDocument {
            key: key_for(&body),
            body,
            forwarded,
            member_forwarded,
            unrunnable,
            custom_actions,
            schedules,
        }))
    }

    /// Install and upgrade ship only what the responder carries out.
    pub fn refuse_unrunnable(&self) -> anyhow::Result<()> {
        if self.unrunnable.is_empty() {
            return Ok(());
        }
        anyhow::bail!(
            "{}\nnothing was changed: take those playbooks out of declared_playbooks for now (`quell playbook simulate` and `test` still show what they would do)",
            self.unrunnable.join("\n")
        )
    }
}

/// What the member-regional template forwards whatever the playbooks: GuardDuty's, Inspector's
/// and Security Hub's findings.
const FINDINGS: &[(&str, &str)] = &[
    ("aws.guardduty", "GuardDuty Finding"),
    ("aws.inspector2", "Inspector2 Finding"),
    ("aws.securityhub", "Security Hub Findings - Imported"),
];

fn forwarded_by_members(pattern: &Value) -> bool {
    FINDINGS.iter().any(|(source, kind)| {
        pattern["source"] == json!([source]) && pattern["detail-type"] == json!([kind])
    })
}

/// One pattern for several, each once; refused when EventBridge would refuse it.
fn one_pattern(mut patterns: Vec<Value>) -> anyhow::Result<Option<Value>> {
    let mut unique: Vec<Value> = Vec::new();
    for p in patterns.drain(..) {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    let pattern = match unique.len() {
        0 => return Ok(None),
        1 => unique.pop().unwrap_or_default(),
        _ => json!({ "$or": unique }),
    };
    let length = pattern.to_string().len();
    if length > PATTERN_LIMIT {
        anyhow::bail!(
            "the declared playbooks' triggers make an event pattern of {length} characters; EventBridge takes {PATTERN_LIMIT} by default: merge triggers (one playbook per finding family), or raise the quota and the limit together"
        );
    }
    Ok(Some(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quell_responder::playbooks::language::definition::Playbook;
    use quell_responder::playbooks::language::Node;
    use quell_responder::runs::document::Library;

    fn declared(source: &Value) -> Declared {
        Declared {
            playbook: Playbook::parse(Node::new(source, "")).unwrap(),
            source: source.clone(),
            file: "quell.yaml".into(),
        }
    }

    fn playbook(id: &str, trigger: &Value, action: &str) -> Value {
        json!({
            "id": id, "version": 1, "description": "d", "mode": "auto", "trigger": trigger,
            "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
            "steps": [{"id": "s", "action": action, "with": if action == "tag" { json!({"tags": {"a": "b"}}) } else { json!({}) }}]
        })
    }

    fn guardduty(prefix: &str) -> Value {
        json!({"guardduty": {"types": [prefix], "min_severity": 5}})
    }

    #[test]
    fn the_document_is_what_the_responder_parses_and_its_key_is_its_hash() {
        let d = PlaybookDocument::of(
            &[declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag"))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        let library = Library::parse(&d.key, &d.body).unwrap();
        assert_eq!(library.playbooks[0].id, "a");
        assert_eq!(
            d.forwarded.as_ref().unwrap()["source"],
            json!(["aws.guardduty"])
        );
    }

    #[test]
    fn a_step_change_changes_the_key_and_not_the_pattern_a_trigger_change_changes_both() {
        let base = PlaybookDocument::of(
            &[declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag"))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        let steps = PlaybookDocument::of(
            &[declared(&playbook(
                "a",
                &guardduty("Backdoor:EC2/"),
                "ec2.snapshot_volumes",
            ))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        let trigger = PlaybookDocument::of(
            &[declared(&playbook("a", &guardduty("Trojan:EC2/"), "tag"))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        assert_ne!(base.key, steps.key);
        assert_eq!(base.forwarded, steps.forwarded);
        assert_ne!(base.forwarded, trigger.forwarded);
    }

    #[test]
    fn finding_triggers_need_nothing_more_from_members_and_cloudtrail_triggers_do() {
        let findings = PlaybookDocument::of(
            &[declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag"))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        assert!(findings.forwarded.is_some());
        assert_eq!(findings.member_forwarded, None);
        let calls =
            json!({"cloudtrail": {"source": "ec2.amazonaws.com", "names": ["RunInstances"]}});
        let both = PlaybookDocument::of(
            &[
                declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag")),
                declared(&playbook("b", &calls, "tag")),
            ],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        let member = both.member_forwarded.unwrap();
        assert_eq!(member["source"], json!(["aws.ec2"]), "{member}");
        assert_eq!(both.forwarded.unwrap()["$or"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn several_triggers_are_one_pattern_and_the_same_trigger_twice_is_one() {
        let d = PlaybookDocument::of(
            &[
                declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag")),
                declared(&playbook("b", &guardduty("Backdoor:EC2/"), "tag")),
                declared(&playbook("c", &json!({"manual": {}}), "tag")),
                declared(&playbook("d", &guardduty("Trojan:EC2/"), "tag")),
            ],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.forwarded.unwrap()["$or"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn each_custom_action_is_made_once_and_the_security_stack_routes_it() {
        let action = json!({"securityhub_action": {"name": "Quell: patch"}});
        let d = PlaybookDocument::of(
            &[
                declared(&playbook("a", &action, "tag")),
                declared(&playbook("b", &action, "tag")),
                declared(&playbook("c", &guardduty("Trojan:EC2/"), "tag")),
            ],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        let id = quell_responder::playbooks::language::trigger::custom_action_id("Quell: patch");
        assert_eq!(
            d.custom_actions,
            [(id.clone(), "Quell: patch".to_owned(), "a".to_owned())]
        );
        // The security account's own events: nothing for members to forward.
        assert_eq!(
            d.forwarded.as_ref().unwrap()["source"],
            json!(["aws.guardduty"])
        );
        let wanted = crate::converge::custom_actions::wanted(Some(&d));
        assert_eq!(
            wanted.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["QuellContain", "QuellRemediate", id.as_str()]
        );
    }

    #[test]
    fn a_schedule_gets_a_rule_of_its_own() {
        let nightly = json!({"schedule": "cron(0 2 * * ? *)"});
        let mut on_instances = playbook("nightly", &nightly, "tag");
        on_instances["target"]["id"] = json!("${{ event.detail.target.id }}");
        let d = PlaybookDocument::of(&[declared(&on_instances)], &[], &Webhooks::new())
            .unwrap()
            .unwrap();
        assert_eq!(d.schedules.len(), 1);
        let rule = &d.schedules[0];
        assert_eq!(rule.expression, "cron(0 2 * * ? *)");
        assert_eq!(rule.suffix, schedule_rule_suffix("nightly"));
        assert!(rule.logical_id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(d.forwarded, None, "nothing to forward for a schedule");
        d.refuse_unrunnable().unwrap();
    }

    #[test]
    fn a_step_this_build_cannot_carry_out_is_refused_before_anything_ships() {
        // A release as a step of its own: this build runs it only as a containment's inverse.
        let mut release = playbook("a", &guardduty("Backdoor:EC2/"), "iam.release_user");
        release["target"] = json!({"type": "AWS::IAM::User", "id": "${{ finding.resource_id }}"});
        let d = PlaybookDocument::of(&[declared(&release)], &[], &Webhooks::new())
            .unwrap()
            .unwrap();
        let e = d.refuse_unrunnable().unwrap_err().to_string();
        assert!(e.contains("step s uses `iam.release_user`"), "{e}");
        assert!(e.contains("nothing was changed"), "{e}");
        let fine = PlaybookDocument::of(
            &[declared(&playbook("a", &guardduty("Backdoor:EC2/"), "tag"))],
            &[],
            &Webhooks::new(),
        )
        .unwrap()
        .unwrap();
        fine.refuse_unrunnable().unwrap();
    }

    #[test]
    fn a_pattern_longer_than_eventbridge_takes_is_refused_with_the_way_out() {
        let many: Vec<Declared> = (0..40)
            .map(|i| {
                declared(&playbook(
                    &format!("p{i}"),
                    &guardduty(&format!("Backdoor:EC2/Variant{i:03}")),
                    "tag",
                ))
            })
            .collect();
        let e = PlaybookDocument::of(&many, &[], &Webhooks::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("EventBridge takes 2048"), "{e}");
    }
}

#[cfg(test)]
mod documents {
    use super::*;
    use quell_responder::playbooks::language::definition::Playbook;
    use quell_responder::playbooks::language::Node;

    fn runs(document: &str) -> Declared {
        let source = json!({
            "id": "custom", "version": 1, "description": "d", "mode": "auto",
            "trigger": {"manual": {}},
            "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
            "steps": [{"id": "fix", "action": "ssm.run_document", "with": {"document": document}}]
        });
        Declared {
            playbook: Playbook::parse(Node::new(&source, "")).unwrap(),
            source,
            file: "quell.yaml".into(),
        }
    }

    #[test]
    fn a_step_naming_a_webhook_the_configuration_lacks_is_refused_naming_those_it_has() {
        let source = json!({
            "id": "tickets", "version": 1, "description": "d", "mode": "auto",
            "trigger": {"manual": {}},
            "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
            "steps": [{"id": "open", "action": "ticket.open", "with": {"webhook": "jira", "title": "t"}}]
        });
        let declared = Declared {
            playbook: Playbook::parse(Node::new(&source, "")).unwrap(),
            source,
            file: "quell.yaml".into(),
        };
        let hooks: Webhooks = serde_json::from_value(
            json!({"servicenow": {"url": "https://x.service-now.com", "shape": "servicenow"}}),
        )
        .unwrap();
        let e = PlaybookDocument::of(std::slice::from_ref(&declared), &[], &hooks)
            .unwrap_err()
            .to_string();
        assert!(e.contains("names the webhook \"jira\""), "{e}");
        assert!(e.contains("it has servicenow"), "{e}");
        let with_jira: Webhooks = serde_json::from_value(json!({"jira": {"url": "https://x.atlassian.net", "shape": "jira", "project": "SEC", "close_transition": "31"}})).unwrap();
        PlaybookDocument::of(&[declared], &[], &with_jira).unwrap();
    }

    #[test]
    fn only_the_patch_baselines_and_allow_listed_documents_run() {
        PlaybookDocument::of(&[runs("AWS-RunPatchBaseline")], &[], &Webhooks::new()).unwrap();
        let e = PlaybookDocument::of(&[runs("Team-Harden")], &[], &Webhooks::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Team-Harden\", which is not allow-listed"),
            "{e}"
        );
        assert!(e.contains("ssm_documents"), "{e}");
        PlaybookDocument::of(
            &[runs("Team-Harden")],
            &["Team-Harden".into()],
            &Webhooks::new(),
        )
        .unwrap();
    }
}
