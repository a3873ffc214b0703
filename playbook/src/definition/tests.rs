use serde_json::{json, Value};

use super::*;
use crate::fixtures::shipped;

fn parse(v: &Value) -> Result<Playbook, Problem> {
    Playbook::parse(Node::new(v, "playbooks[0]"))
}

/// The shipped example with one change, the refusal it must bring.
fn refused(edit: impl FnOnce(&mut Value)) -> Problem {
    let mut v = shipped("critical-cve.yaml");
    edit(&mut v);
    parse(&v).expect_err("refused")
}

fn step<'a>(v: &'a mut Value, id: &str) -> &'a mut Value {
    v["steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == id)
        .unwrap()
}

#[test]
fn the_shipped_critical_cve_playbook_reads_whole() {
    let p = parse(&shipped("critical-cve.yaml")).unwrap();
    assert_eq!(p.id, "critical-cve");
    assert_eq!(p.steps.len(), 9);
    assert!(matches!(p.trigger, Trigger::Inspector { .. }));
    assert_eq!(p.steps[4].timeout, Some(Duration::from_secs(72 * 3600)));
    let iam = p.iam_actions();
    assert!(
        iam.contains("ssm:SendCommand") && iam.contains("ec2:CreateSnapshot"),
        "{iam:?}"
    );
}

#[test]
fn a_typo_in_a_key_or_an_action_names_the_nearest_one() {
    let e = refused(|v| {
        let w = v.as_object_mut().unwrap().remove("when").unwrap();
        v["wehn"] = w;
    });
    assert_eq!(e.at, "playbooks[0].wehn");
    assert_eq!(e.did_you_mean.as_deref(), Some("when"));
    let e = refused(|v| {
        step(v, "mark")["action"] = json!("tga");
    });
    assert_eq!(e.at, "playbooks[0].steps[0].action");
    assert_eq!(e.did_you_mean.as_deref(), Some("tag"));
    let e = refused(|v| {
        step(v, "patch")["with"] = json!({"rebot": "never"});
    });
    assert_eq!(e.did_you_mean.as_deref(), Some("reboot"));
    let e = refused(|v| {
        step(v, "patch")["with"] = json!({"reboot": "sometimes"});
    });
    assert!(e.to_string().contains("if_needed, never"), "{e}");
}

#[test]
fn waits_and_approvals_must_be_bounded() {
    let e = refused(|v| {
        step(v, "approve_patch")
            .as_object_mut()
            .unwrap()
            .remove("timeout");
    });
    assert!(e.found.contains("no `timeout`"), "{e}");
    assert_eq!(e.at, "playbooks[0].steps[4]");
    let e = refused(|v| {
        step(v, "fixed")
            .as_object_mut()
            .unwrap()
            .remove("on_timeout");
    });
    assert!(e.found.contains("no `on_timeout`"), "{e}");
    let e = refused(|v| {
        step(v, "approve_patch")["timeout"] = json!("60d");
    });
    assert!(e.to_string().contains("at most 30d"), "{e}");
}

#[test]
fn references_go_to_earlier_outputs_and_jumps_go_forward() {
    let e = refused(|v| {
        step(v, "close_ticket")["with"]["ticket_id"] = json!("${{ steps.ticket.outputs.id }}");
    });
    assert!(e.found.contains("declares no output `id`"), "{e}");
    let e = refused(|v| {
        step(v, "mark")["with"]["tags"]["t"] = json!("${{ steps.ticket.outputs.ticket_id }}");
    });
    assert!(e.found.contains("runs later"), "{e}");
    let e = refused(|v| {
        step(v, "patch")["on_error"] = json!("mark");
    });
    assert!(e.found.contains("jumps back"), "{e}");
    let e = refused(|v| {
        step(v, "patch")["on_error"] = json!("rollbak");
    });
    assert_eq!(e.did_you_mean.as_deref(), Some("rollback"));
    let e = refused(|v| {
        v["when"] = json!({"path": "steps.mark.outputs.x", "exists": true});
    });
    assert!(e.to_string().contains("known before the first step"), "{e}");
    let e = refused(|v| {
        step(v, "evidence")["outputs"] = json!(["snapshots"]);
    });
    assert_eq!(e.did_you_mean.as_deref(), Some("snapshot_ids"));
    let e = refused(|v| {
        step(v, "patch")["id"] = json!("evidence");
    });
    assert!(e.found.contains("a second step"), "{e}");
}

#[test]
fn a_quarantine_that_blocks_its_own_patch_is_refused() {
    let e = refused(|v| {
        step(v, "quarantine")["with"]["profile"] = json!("deny_all");
    });
    assert!(e.found.contains("deny_all quarantine"), "{e}");
    assert_eq!(e.at, "playbooks[0].steps[5].action");
}

#[test]
fn release_covers_every_undoable_write_and_only_those() {
    let e = refused(|v| {
        step(v, "put_back")["with"]["steps"] = json!(["mark"]);
    });
    assert!(e.found.contains("leaves step `quarantine`"), "{e}");
    let e = refused(|v| {
        step(v, "put_back")["with"]["steps"] = json!(["quarantine", "mark", "evidence"]);
    });
    assert!(e.found.contains("nothing undoes"), "{e}");
    let e = refused(|v| {
        step(v, "put_back")["with"]["steps"] = json!(["quarantine", "mark", "close_ticket"]);
    });
    assert!(e.found.contains("runs later"), "{e}");
}

#[test]
fn events_never_shape_what_is_fixed_in_the_playbook() {
    let e = refused(|v| {
        step(v, "quarantine")["with"]["profile"] = json!("${{ event.detail.profile }}");
    });
    assert!(e.to_string().contains("never taken from an event"), "{e}");
    let e = refused(|v| {
        step(v, "patch")["action"] = json!("ssm.run_document");
        step(v, "patch")["with"] = json!({"document": "AWS-RunShellScript"});
    });
    assert!(e.to_string().contains("takes no command line"), "{e}");
    let e = refused(|v| {
        v["target"]["id"] = json!("${{ resource.id }}");
    });
    assert!(e.to_string().contains("known before any step"), "{e}");
}

#[test]
fn actions_fit_the_target_type() {
    let e = refused(|v| {
        v["target"]["type"] = json!("AWS::IAM::User");
    });
    assert!(e.found.contains("on a AWS::IAM::User"), "{e}");
    let e = refused(|v| {
        v["target"]["type"] = json!("AWS::EC2::Instanse");
    });
    assert_eq!(e.did_you_mean.as_deref(), Some("AWS::EC2::Instance"));
    let e = refused(|v| {
        v["version"] = json!(0);
    });
    assert_eq!(e.at, "playbooks[0].version");
    let e = refused(|v| {
        v["id"] = json!("Critical CVE");
    });
    assert_eq!(e.at, "playbooks[0].id");
    let e = refused(|v| {
        v["tests"][0]["expect"] = json!({"match": true});
    });
    assert_eq!(e.at, "playbooks[0].tests[0].expect.match");
    assert_eq!(e.did_you_mean.as_deref(), Some("matched"));
    let e = refused(|v| {
        v["mode"] = json!("automatic");
    });
    assert_eq!(e.did_you_mean.as_deref(), None, "{e}");
    assert!(
        e.to_string().contains("auto, approve, notify, simulate"),
        "{e}"
    );
}

#[test]
fn a_step_may_act_on_another_resource_named_by_an_earlier_step() {
    let v = shipped("guardduty-credential-exfiltration.yaml");
    let p = parse(&v).unwrap();
    let isolate = p.steps.iter().find(|s| s.id == "isolate").unwrap();
    assert_eq!(isolate.target.as_ref().unwrap().kind, "AWS::EC2::Instance");
    let refused = |edit: &dyn Fn(&mut Value)| {
        let mut v = shipped("guardduty-credential-exfiltration.yaml");
        edit(&mut v);
        parse(&v).expect_err("refused")
    };
    let e = refused(&|v| {
        step(v, "isolate").as_object_mut().unwrap().remove("target");
    });
    assert!(
        e.found.contains("`ec2.quarantine` on a AWS::IAM::Role"),
        "{e}"
    );
    let e = refused(&|v| {
        step(v, "isolate")["target"]["id"] = json!("${{ steps.note.outputs.x }}");
    });
    assert_eq!(e.at, "playbooks[0].steps[3].target.id");
    assert!(
        e.found.contains("names no step") || e.found.contains("runs later"),
        "{e}"
    );
    let e = refused(&|v| {
        step(v, "isolate")["target"]["id"] = json!("${{ resource.instance }}");
    });
    assert!(e.to_string().contains("earlier step's outputs"), "{e}");
    let e = refused(&|v| {
        step(v, "isolate")["target"]["type"] = json!("AWS::EC2::Instace");
    });
    assert_eq!(e.did_you_mean.as_deref(), Some("AWS::EC2::Instance"));
}
