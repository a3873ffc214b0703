use chrono::{DateTime, Duration as Span, Utc};
use serde_json::{json, Map, Value};

use super::*;
use crate::finding::findings;
use crate::fixtures::shipped as load;
use crate::Node;

/// The incident leads' role, as IAM confirms a sender, and three people in it.
const LEAD: &str =
    "arn:aws:iam::222233334444:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_IncidentLead_abc";
const PAT: &str = "AROAEXAMPLELEADROLE:pat";
const SAM: &str = "AROAEXAMPLELEADROLE:sam";
const KIM: &str = "AROAEXAMPLELEADROLE:kim";

fn decide(principal: &str, person: &str, approve: bool) -> Input {
    Input::Decision {
        step: "approve_patch".into(),
        principal: principal.into(),
        person: person.into(),
        approve,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The shipped critical-CVE playbook, with one change.
fn playbook(edit: impl FnOnce(&mut Value)) -> Playbook {
    let mut v = load("critical-cve.yaml");
    edit(&mut v);
    Playbook::parse(Node::new(&v, "")).unwrap()
}

fn run(p: &Playbook, requester: Option<&str>) -> (Run, Vec<Effect>) {
    let event = load("fixtures/events/inspector2-package-vulnerability.json");
    let finding = serde_json::to_value(&findings(&event)[0]).unwrap();
    let context = json!({"event": event, "finding": finding, "resource": {"state": "running"}, "account": {}});
    let mut r = Run::new(
        "run-1",
        p,
        "i-0123456789abcdef0",
        context,
        requester.map(str::to_owned),
        now(),
    );
    let effects = r.start(p, now());
    (r, effects)
}

fn done(step: &str, attempt: u32, outputs: Value) -> Input {
    Input::StepDone {
        step: step.into(),
        attempt,
        outputs: match outputs {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

fn acted(effects: &[Effect]) -> Option<(&str, u32, &Value, &str)> {
    effects.iter().find_map(|e| match e {
        Effect::Act {
            step,
            attempt,
            parameters,
            target,
            ..
        } => Some((step.as_str(), *attempt, parameters, target.as_str())),
        _ => None,
    })
}

/// Runs the steps up to the approval, each answered as done.
fn to_approval(p: &Playbook, r: &mut Run, first: &[Effect]) {
    assert_eq!(acted(first).unwrap().0, "mark");
    let e = r.advance(p, done("mark", 1, json!({})), now()).unwrap();
    assert_eq!(acted(&e).unwrap().0, "evidence");
    let e = r
        .advance(
            p,
            done(
                "evidence",
                1,
                json!({"snapshot_ids": ["snap-1"], "stray": 1}),
            ),
            now(),
        )
        .unwrap();
    assert_eq!(
        r.steps[1].outputs,
        json!({"snapshot_ids": ["snap-1"]})
            .as_object()
            .cloned()
            .unwrap(),
        "only declared outputs are kept"
    );
    assert_eq!(acted(&e).unwrap().0, "quarantine");
    let e = r
        .advance(p, done("quarantine", 1, json!({})), now())
        .unwrap();
    let (step, _, parameters, _) = acted(&e).unwrap();
    assert_eq!(step, "ticket");
    assert_eq!(
        parameters["title"],
        json!("Critical CVE on i-0123456789abcdef0: CVE-2026-40001 - openssh-server")
    );
    let e = r
        .advance(p, done("ticket", 1, json!({"ticket_id": "SEC-42"})), now())
        .unwrap();
    assert!(
        matches!(&e[0], Effect::AskApproval { step, .. } if step == "approve_patch"),
        "{e:?}"
    );
    assert_eq!(
        e[1],
        Effect::Timer {
            step: "approve_patch".into(),
            at: now() + Span::hours(72)
        }
    );
}

#[test]
fn a_run_goes_through_every_step_and_releases_what_it_holds() {
    let p = playbook(|_| {});
    let (mut r, first) = run(&p, None);
    assert_eq!(acted(&first).unwrap().3, "i-0123456789abcdef0");
    to_approval(&p, &mut r, &first);

    let e = r.advance(&p, decide(LEAD, PAT, true), now()).unwrap();
    assert_eq!(acted(&e).unwrap().0, "patch");
    // A late answer for an earlier step changes nothing.
    assert!(r
        .advance(&p, done("quarantine", 1, json!({})), now())
        .unwrap()
        .is_empty());
    let e = r.advance(&p, done("patch", 1, json!({})), now()).unwrap();
    assert_eq!(
        e,
        vec![Effect::Timer {
            step: "fixed".into(),
            at: now() + Span::hours(24)
        }]
    );

    let mine = r.context["finding"]["arn"].clone();
    let other = json!({"arn": "arn:aws:inspector2:us-east-1:111122223333:finding/other", "status": "CLOSED"});
    assert!(
        r.advance(&p, Input::Event { finding: other }, now())
            .unwrap()
            .is_empty(),
        "another finding"
    );
    let still_open = json!({"arn": mine, "status": "ACTIVE"});
    assert!(r
        .advance(
            &p,
            Input::Event {
                finding: still_open
            },
            now()
        )
        .unwrap()
        .is_empty());
    let closed = json!({"arn": r.context["finding"]["arn"], "status": "CLOSED"});
    let e = r
        .advance(&p, Input::Event { finding: closed }, now())
        .unwrap();
    assert_eq!(
        e[0],
        Effect::Release {
            steps: vec![
                ("quarantine".into(), "ec2.release_quarantine".into()),
                ("mark".into(), "untag".into())
            ]
        },
        "newest first"
    );
    let (step, _, parameters, _) = acted(&e).unwrap();
    assert_eq!(step, "close_ticket");
    assert_eq!(
        parameters["ticket_id"],
        json!("SEC-42"),
        "an earlier step's output, recorded"
    );
    let e = r
        .advance(&p, done("close_ticket", 1, json!({})), now())
        .unwrap();
    assert_eq!(
        e,
        vec![Effect::Finished {
            status: Status::Succeeded
        }]
    );
    assert!(
        r.advance(&p, done("close_ticket", 1, json!({})), now())
            .unwrap()
            .is_empty(),
        "a finished run takes nothing"
    );
}

#[test]
fn approvals_admit_only_the_named_approvers_never_the_requester_and_count_distinct_people() {
    let p = playbook(|v| v["steps"][4]["with"]["min"] = json!(2));
    let (mut r, first) = run(&p, Some(PAT));
    to_approval(&p, &mut r, &first);
    let developer = "arn:aws:iam::222233334444:role/Developer";
    let e = r
        .advance(&p, decide(developer, "AROADEV:dev", true), now())
        .unwrap_err();
    assert!(e.0.contains("not among the approvers"), "{e:?}");
    let e = r.advance(&p, decide(LEAD, PAT, true), now()).unwrap_err();
    assert!(e.0.contains("may not approve it"), "{e:?}");
    assert!(
        r.advance(&p, decide(LEAD, SAM, true), now())
            .unwrap()
            .is_empty(),
        "one of two"
    );
    assert!(
        r.advance(&p, decide(LEAD, SAM, true), now())
            .unwrap()
            .is_empty(),
        "the same person twice is one"
    );
    let e = r.advance(&p, decide(LEAD, KIM, true), now()).unwrap();
    assert_eq!(acted(&e).unwrap().0, "patch");
    assert_eq!(r.steps[4].outputs["approvers"], json!([SAM, KIM]));
    let e = r.advance(&p, decide(LEAD, KIM, true), now()).unwrap_err();
    assert!(
        e.0.contains("not waiting"),
        "a decision after the fact is refused: {e:?}"
    );
}

#[test]
fn a_rejection_ends_the_run_and_a_timed_out_approval_follows_on_timeout() {
    let p = playbook(|_| {});
    let (mut r, first) = run(&p, None);
    to_approval(&p, &mut r, &first);
    let e = r.advance(&p, decide(LEAD, PAT, false), now()).unwrap();
    assert!(
        matches!(
            &e[..],
            [Effect::Finished {
                status: Status::Ended { .. }
            }]
        ),
        "{e:?}"
    );

    let (mut r, first) = run(&p, None);
    to_approval(&p, &mut r, &first);
    let timer = || Input::TimerFired {
        step: "approve_patch".into(),
    };
    assert!(
        r.advance(&p, timer(), now() + Span::hours(71))
            .unwrap()
            .is_empty(),
        "an early timer does nothing"
    );
    assert!(r
        .advance(
            &p,
            Input::TimerFired {
                step: "patch".into()
            },
            now() + Span::hours(80)
        )
        .unwrap()
        .is_empty());
    let e = r.advance(&p, timer(), now() + Span::hours(72)).unwrap();
    assert!(
        matches!(&e[..], [Effect::Finished { status: Status::Failed { reason } }] if reason.contains("timed out")),
        "{e:?}"
    );
    assert_eq!(r.steps[4].outputs["decision"], json!("timed_out"));
    assert!(
        r.advance(&p, timer(), now() + Span::hours(73))
            .unwrap()
            .is_empty(),
        "delivered twice"
    );
}

#[test]
fn failures_retry_when_transient_then_follow_on_error() {
    let p = playbook(|v| {
        v["steps"][2]["retry"] = json!({"max_attempts": 2});
        v["steps"][2]["on_error"] = json!("rollback");
    });
    let (mut r, first) = run(&p, None);
    r.advance(&p, done("mark", 1, json!({})), now()).unwrap();
    let e = r
        .advance(&p, done("evidence", 1, json!({"snapshot_ids": []})), now())
        .unwrap();
    assert_eq!(acted(&e).unwrap().0, "quarantine");
    let _ = first;
    let failed = |attempt, transient| Input::StepFailed {
        step: "quarantine".into(),
        attempt,
        error: "Throttling".into(),
        transient,
    };
    let e = r.advance(&p, failed(1, true), now()).unwrap();
    assert_eq!(acted(&e).unwrap().1, 2, "a second attempt");
    assert!(
        r.advance(&p, failed(1, true), now()).unwrap().is_empty(),
        "the first attempt's late answer"
    );
    let e = r.advance(&p, failed(2, true), now()).unwrap();
    assert_eq!(
        e[0],
        Effect::Release {
            steps: vec![("mark".into(), "untag".into())]
        },
        "rollback undoes what was done"
    );
    assert!(matches!(
        &e[1],
        Effect::Finished {
            status: Status::RolledBack { .. }
        }
    ));
    assert_eq!(r.steps[0].outcome, "released");
}

#[test]
fn a_run_serialises_for_the_ledger_and_reads_back_the_same() {
    let p = playbook(|_| {});
    let (r, _) = run(&p, None);
    let text = serde_json::to_string(&r).unwrap();
    let back: Run = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let _: Map<String, Value> = serde_json::from_str(&text).unwrap();
}

#[test]
fn notify_and_simulate_modes_go_through_the_run_without_a_write() {
    for mode in ["notify", "simulate"] {
        let p = playbook(|v| v["mode"] = json!(mode));
        let (r, first) = run(&p, None);
        let (step, ..) = acted(&first).expect("the first step that does not write");
        assert_eq!(
            step, "ticket",
            "{mode}: tag, snapshot and quarantine are not done"
        );
        assert_eq!(
            r.steps[..3]
                .iter()
                .map(|s| s.outcome.as_str())
                .collect::<Vec<_>>(),
            ["not_done"; 3]
        );
    }
}

#[test]
fn approve_mode_asks_the_deciders_once_before_the_first_write() {
    let p = playbook(|v| v["mode"] = json!("approve"));
    let decider = "arn:aws:iam::222233334444:role/SecurityAutomation";
    let start = |p: &Playbook| {
        let (mut r, _) = run(p, None);
        // As the responder would: the deciders from the configuration, before the first step.
        r = Run::new(&r.id, p, &r.target, r.context.clone(), None, now());
        r.mode_approvers = vec!["arn:aws:iam::222233334444:role/SecurityAutomation".into()];
        let effects = r.start(p, now());
        (r, effects)
    };
    let (mut r, first) = start(&p);
    assert!(
        matches!(&first[0], Effect::AskApproval { step, approvers, .. } if step == "mark" && approvers == &[decider.to_owned()]),
        "{first:?}"
    );
    assert_eq!(
        first[1],
        Effect::Timer {
            step: "mark".into(),
            at: now() + MODE_APPROVAL_WINDOW
        }
    );
    let e = r
        .advance(
            &p,
            Input::Decision {
                step: "mark".into(),
                principal: LEAD.into(),
                person: PAT.into(),
                approve: true,
            },
            now(),
        )
        .unwrap_err();
    assert!(e.0.contains("not among the approvers"), "{e:?}");
    let e = r
        .advance(
            &p,
            Input::Decision {
                step: "mark".into(),
                principal: decider.into(),
                person: "AROASECAUTO:bot".into(),
                approve: true,
            },
            now(),
        )
        .unwrap();
    assert_eq!(acted(&e).unwrap().0, "mark");
    let e = r.advance(&p, done("mark", 1, json!({})), now()).unwrap();
    assert_eq!(
        acted(&e).unwrap().0,
        "evidence",
        "one approval covers the run"
    );

    let (mut r, _) = start(&p);
    let e = r
        .advance(
            &p,
            Input::TimerFired {
                step: "mark".into(),
            },
            now() + MODE_APPROVAL_WINDOW,
        )
        .unwrap();
    assert!(
        matches!(&e[..], [Effect::Finished { status: Status::Ended { reason } }] if reason.contains("nobody approved")),
        "{e:?}"
    );
    let (mut r, _) = start(&p);
    let e = r
        .advance(
            &p,
            Input::Decision {
                step: "mark".into(),
                principal: decider.into(),
                person: "AROASECAUTO:bot".into(),
                approve: false,
            },
            now(),
        )
        .unwrap();
    assert!(
        matches!(
            &e[..],
            [Effect::Finished {
                status: Status::Ended { .. }
            }]
        ),
        "{e:?}"
    );
    assert_eq!(r.steps[0].outcome, "not_done");
}

#[test]
fn a_step_target_an_earlier_step_names_must_be_a_usable_id() {
    let p = crate::fixtures::playbook("guardduty-credential-exfiltration.yaml");
    let event = load("fixtures/events/guardduty-iam-instance-credential-exfiltration.json");
    let finding = serde_json::to_value(&findings(&event)[0]).unwrap();
    let context = json!({"event": event, "finding": finding, "resource": {}, "account": {}});
    for (instance, usable) in [("i-0abc1234def567890", true), ("i-1\u{7}", false)] {
        let mut r = Run::new(
            "run-2",
            &p,
            "web-instance-role",
            context.clone(),
            None,
            now(),
        );
        r.start(&p, now());
        r.advance(&p, done("revoke", 1, json!({})), now()).unwrap();
        r.advance(
            &p,
            done("source", 1, json!({"instance_id": instance})),
            now(),
        )
        .unwrap();
        let e = r
            .advance(
                &p,
                Input::Decision {
                    step: "approve_isolation".into(),
                    principal: LEAD.into(),
                    person: PAT.into(),
                    approve: true,
                },
                now(),
            )
            .unwrap();
        if usable {
            assert_eq!(acted(&e).unwrap().3, instance);
        } else {
            assert!(
                matches!(&e[..], [Effect::Finished { status: Status::Failed { reason } }] if reason.contains("no usable target")),
                "{e:?}"
            );
        }
    }
}
