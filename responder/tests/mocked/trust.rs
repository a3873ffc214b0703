//! Trust boundaries, tried as an attacker inside one member account would: lookalike ARNs of
//! protected principals, custom actions forged from a member, oversized and multi-line text, an
//! audit topic that will not take messages. Each refusal is recorded and audited, and nothing is
//! written in the member account.

use serde_json::json;

use super::playbooks::{event_delivery, request_delivery, EVENTS_QUEUE};
use super::{
    calls, delivery, ec2_instance, record, responder_full, settings, settings_with, world, Shared,
    ACCOUNT,
};
use quell_responder::ledger::{Status, StepStatus};
use quell_responder::settings::Settings;
use quell_responder::Responder;

/// The responder with no EC2 or S3 in the member account, and these settings.
fn responder_with(w: &Shared, settings: Settings) -> Responder {
    responder_full(
        w,
        Vec::new(),
        aws_smithy_mocks::mock_client!(aws_sdk_ec2, aws_smithy_mocks::RuleMode::MatchAny, &[]),
        None,
        settings,
    )
}

fn responder_protecting(w: &Shared, protected: &str) -> Responder {
    responder_with(
        w,
        settings_with(&[("QUELL_PROTECTED_PRINCIPALS", protected)]),
    )
}

/// No IAM or Lambda write reached the member account.
fn nothing_written(w: &Shared) {
    for op in [
        "AttachUserPolicy",
        "AttachRolePolicy",
        "PutUserPolicy",
        "PutRolePolicy",
        "UpdateAccessKey",
        "DeleteLoginProfile",
        "PutFunctionConcurrency",
    ] {
        assert_eq!(calls(w, op), 0, "{op} was called");
    }
}

fn rejection_code(w: &Shared, key: &str) -> String {
    let r = record(w, key);
    assert_eq!(r.status, Status::Rejected, "{key}: {r:?}");
    r.rejection.expect("a rejection").code
}

#[tokio::test]
async fn a_protected_role_under_another_letter_case_or_path_is_never_contained() {
    // The mock's IAM, like AWS, answers GetRole("app") with the role's real ARN, role/app.
    let protected = format!(r#"["arn:aws:iam::{ACCOUNT}:role/app"]"#);
    let w = world();
    let r = responder_protecting(&w, &protected);
    r.handle(delivery(
        "m1",
        "case",
        &format!("arn:aws:iam::{ACCOUNT}:role/APP"),
    ))
    .await
    .unwrap();
    // Refused on the ARN as given, before it was even looked up.
    assert_eq!(rejection_code(&w, "delivery:m1"), "protected_principal");
    r.handle(delivery(
        "m2",
        "path",
        &format!("arn:aws:iam::{ACCOUNT}:role/ops/app"),
    ))
    .await
    .unwrap();
    // Not protected as spelled; read back, it is the protected role/app.
    assert_eq!(rejection_code(&w, "path"), "arn_mismatch");
    let why = record(&w, "path").rejection.unwrap().message;
    assert!(
        why.contains(&format!("arn:aws:iam::{ACCOUNT}:role/app")),
        "{why}"
    );
    nothing_written(&w);
    let rejected = w
        .lock()
        .unwrap()
        .published
        .iter()
        .filter(|d| d["event"] == "rejected")
        .count();
    assert_eq!(rejected, 2, "both refusals are audited");
}

#[tokio::test]
async fn a_request_whose_arn_differs_from_the_real_one_is_refused_even_when_nothing_is_protected() {
    let w = world();
    let r = responder_with(&w, settings());
    r.handle(delivery(
        "m1",
        "alias",
        &format!("arn:aws:iam::{ACCOUNT}:user/team/alice"),
    ))
    .await
    .unwrap();
    assert_eq!(rejection_code(&w, "alias"), "arn_mismatch");
    nothing_written(&w);
}

#[tokio::test]
async fn a_functions_protected_execution_role_is_left_alone_and_the_function_still_stopped() {
    let protected = format!(r#"["arn:aws:iam::{ACCOUNT}:role/ORDERS-role"]"#);
    let w = world();
    let r = responder_protecting(&w, &protected);
    r.handle(delivery(
        "m1",
        "fn",
        &format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"),
    ))
    .await
    .unwrap();
    let rec = record(&w, "fn");
    let deny = rec.step("deny_function_credentials").unwrap();
    assert_eq!(deny.status, StepStatus::Failed);
    assert!(deny.detail.contains("is protected"), "{}", deny.detail);
    assert_eq!(
        calls(&w, "PutRolePolicy"),
        0,
        "the protected role is not written to"
    );
    assert_eq!(
        rec.step("zero_concurrency").unwrap().status,
        StepStatus::Done,
        "the function is still stopped"
    );
}

#[tokio::test]
async fn an_instances_protected_profile_role_is_never_written_to() {
    let w = world();
    let iam_profile = {
        use aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileOutput;
        use aws_sdk_iam::types::{InstanceProfile, Role};
        let now = aws_smithy_types::DateTime::from_secs(1_700_000_000);
        aws_smithy_mocks::mock!(aws_sdk_iam::Client::get_instance_profile).then_output(move || {
            let role = Role::builder()
                .path("/admin/")
                .role_name("break-glass")
                .role_id("AROA2")
                .arn(format!("arn:aws:iam::{ACCOUNT}:role/admin/break-glass"))
                .create_date(now)
                .build()
                .unwrap();
            GetInstanceProfileOutput::builder()
                .instance_profile(
                    InstanceProfile::builder()
                        .path("/")
                        .instance_profile_name("web")
                        .instance_profile_id("AIPA")
                        .arn(format!("arn:aws:iam::{ACCOUNT}:instance-profile/web"))
                        .create_date(now)
                        .roles(role)
                        .build()
                        .unwrap(),
                )
                .build()
        })
    };
    // Protected with its path: only the role as IAM has it, path included, matches.
    let r = responder_full(
        &w,
        vec![iam_profile],
        ec2_instance(&w, Some("arn:aws:iam::111122223333:instance-profile/web")),
        None,
        settings_with(&[(
            "QUELL_PROTECTED_PRINCIPALS",
            r#"["arn:aws:iam::*:role/admin/*"]"#,
        )]),
    );
    r.handle(delivery(
        "m1",
        "i",
        &format!("arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0123456789abcdef0"),
    ))
    .await
    .unwrap();
    let deny = record(&w, "i")
        .step("deny_instance_credentials")
        .unwrap()
        .clone();
    assert_eq!(deny.status, StepStatus::Failed);
    assert!(
        deny.detail.contains("role/admin/break-glass is protected"),
        "{}",
        deny.detail
    );
    assert_eq!(calls(&w, "PutRolePolicy"), 0);
}

fn request(id: &str, reason: &str, requester: &str) -> serde_json::Value {
    request_delivery(
        &format!("msg-{id}"),
        &json!({"version": "1", "request_id": id, "action": "contain",
                "entity": format!("arn:aws:iam::{ACCOUNT}:user/alice"),
                "reason": reason, "requester": requester}),
    )
}

#[tokio::test]
async fn an_oversized_or_multi_line_reason_or_requester_is_refused_and_kept_short() {
    let w = world();
    let r = responder_with(&w, settings());
    // ~130 KB once pushed the audit message past SNS's limit: the containment ran unaudited.
    r.handle(request("big", &"x".repeat(130_000), "jo"))
        .await
        .unwrap();
    let refused = record(&w, "delivery:msg-big");
    assert_eq!(
        refused.rejection.as_ref().unwrap().code,
        "malformed_message"
    );
    assert!(refused
        .rejection
        .as_ref()
        .unwrap()
        .message
        .contains("reason is 130000 bytes"));
    assert!(
        refused.reason.as_ref().map_or(0, String::len) < 1200,
        "a refused reason is never kept whole"
    );
    r.handle(request(
        "lines",
        "ok",
        "jo\nApprove:    quell approve remediation:x",
    ))
    .await
    .unwrap();
    let refused = record(&w, "delivery:msg-lines");
    assert!(refused
        .rejection
        .as_ref()
        .unwrap()
        .message
        .contains("requester contains the control character"));
    nothing_written(&w);
    assert_eq!(calls(&w, "GetUser"), 0, "refused before the member account");
}

#[tokio::test]
async fn a_quell_custom_action_forged_in_a_member_account_is_refused_and_audited() {
    let w = world();
    let r = responder_with(
        &w,
        settings_with(&[("QUELL_EVENTS_QUEUE_ARN", EVENTS_QUEUE)]),
    );
    // The member names another account's role on a finding it imported itself, and sends the
    // custom action event from its own account with Quell's action id.
    let event = json!({"id": "ev-forged", "detail-type": "Security Hub Findings - Custom Action",
        "source": "aws.securityhub", "account": ACCOUNT, "region": "us-east-1",
        "resources": [format!("arn:aws:securityhub:us-east-1:{ACCOUNT}:action/custom/QuellContain")],
        "detail": {"actionName": "Quell: contain", "findings": [{
            "Id": "f-1", "ProductArn": format!("arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"),
            "AwsAccountId": ACCOUNT, "Region": "us-east-1",
            "Resources": [{"Type": "AwsIamRole", "Id": "arn:aws:iam::444455556666:role/payments"}]}]}});
    r.handle(event_delivery("m-forged", &event)).await.unwrap();
    assert_eq!(rejection_code(&w, "event:m-forged"), "provenance");
    assert!(
        w.lock()
            .unwrap()
            .published
            .iter()
            .any(|d| d["event"] == "rejected" && d["record"]["key"] == "event:m-forged"),
        "the refusal is audited"
    );
    assert_eq!(calls(&w, "GetRole"), 0);
    nothing_written(&w);
}

#[tokio::test]
async fn an_audit_topic_that_refuses_messages_is_recorded_on_the_ledger_record() {
    let w = world();
    w.lock().unwrap().failures.insert(
        "Publish",
        std::iter::repeat_n("AuthorizationError", 100).collect(),
    );
    let r = responder_with(&w, settings());
    r.handle(delivery(
        "m1",
        "unaudited",
        &format!("arn:aws:iam::{ACCOUNT}:user/alice"),
    ))
    .await
    .unwrap();
    let rec = record(&w, "unaudited");
    assert_eq!(
        rec.status,
        Status::Succeeded,
        "the containment still happens"
    );
    assert!(
        rec.audit_failures
            .iter()
            .any(|f| f.starts_with("Succeeded")),
        "{:?}",
        rec.audit_failures
    );
    assert!(calls(&w, "Publish") >= 6, "each message was tried again");
}
