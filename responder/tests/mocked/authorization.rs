//! Authorisation by AWS, per kind of request, with the identities AWS authenticated: what the
//! local emulator cannot show (its SQS stamps one made-up sender id on every message, and it does
//! not evaluate queue policies). SQS's `SenderId` arrives here as the Lambda event has it, and the
//! security account's IAM answers who has which unique id.

use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};
use serde_json::{json, Value};

use super::playbooks::{create_snapshot_event, event_delivery, snapshots_ec2, Snap, EVENTS_QUEUE};
use super::{calls, entity, meta, record, responder_full, settings_with, world, Shared};
use quell_responder::authorization::Caller;
use quell_responder::ledger::Status;
use quell_responder::Responder;

/// Every kind through the ExternalId topic, self-approval allowed: for tests of other things.
pub const PERMISSIVE: &str = r#"{"contain":["arn:aws:iam::222233334444:role/team/Analyst"],"release":["arn:aws:iam::222233334444:role/team/Analyst"],"decide":["arn:aws:iam::222233334444:role/team/Analyst"],"sweep":["arn:aws:iam::222233334444:role/team/Analyst"],"allow_self_approval":true,"external_id_actions":["contain","release","approve","deny","sweep"]}"#;

/// What an install gets by default, narrowed to the analysts' role and one user.
const STRICT: &str = r#"{"contain":["arn:aws:iam::222233334444:role/team/Analyst","arn:aws:iam::222233334444:user/alice"],"release":["arn:aws:iam::222233334444:role/team/Analyst","arn:aws:iam::222233334444:user/alice"],"decide":["arn:aws:iam::222233334444:role/team/Analyst"],"sweep":["arn:aws:iam::222233334444:role/team/Analyst"],"allow_self_approval":false,"external_id_actions":["contain"]}"#;

const ANALYST_ID: &str = "AROAANALYST000000001";
const INTERN_ID: &str = "AROAINTERN0000000001";
const ALICE_ID: &str = "AIDAALICE00000000001";

/// The security account's IAM: the Analyst role (under a path), the Intern role and the user
/// alice; anything else does not exist.
pub fn security_account_iam() -> aws_sdk_iam::Client {
    use aws_sdk_iam::operation::{get_role::*, get_user::*};
    use aws_sdk_iam::types::{Role, User};
    let now = aws_smithy_types::DateTime::from_secs(1_700_000_000);
    let role = mock!(aws_sdk_iam::Client::get_role).then_compute_response(move |req| {
        let (id, arn) = match req.role_name().unwrap_or_default() {
            "Analyst" => (ANALYST_ID, "arn:aws:iam::222233334444:role/team/Analyst"),
            "Intern" => (INTERN_ID, "arn:aws:iam::222233334444:role/Intern"),
            _ => return MockResponse::Error(GetRoleError::generic(meta("NoSuchEntity"))),
        };
        MockResponse::Output(
            GetRoleOutput::builder()
                .role(
                    Role::builder()
                        .path("/")
                        .role_name(req.role_name().unwrap_or_default())
                        .role_id(id)
                        .arn(arn)
                        .create_date(now)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
    });
    let user = mock!(aws_sdk_iam::Client::get_user).then_compute_response(move |req| {
        if req.user_name() != Some("alice") {
            return MockResponse::Error(GetUserError::generic(meta("NoSuchEntity")));
        }
        MockResponse::Output(
            GetUserOutput::builder()
                .user(
                    User::builder()
                        .path("/")
                        .user_name("alice")
                        .user_id(ALICE_ID)
                        .arn("arn:aws:iam::222233334444:user/alice")
                        .create_date(now)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
    });
    mock_client!(aws_sdk_iam, RuleMode::MatchAny, &[&role, &user])
}

fn strict(w: &Shared, extra: &[(&str, &str)]) -> Responder {
    let mut env = vec![("QUELL_AUTHORIZATION", STRICT)];
    env.extend_from_slice(extra);
    responder_full(
        w,
        Vec::new(),
        mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[]),
        None,
        settings_with(&env),
    )
}

/// A request as Lambda hands it over from the `kind` queue, stamped by SQS with `sender`.
pub fn queued(kind: &str, message_id: &str, body: &Value, sender: Option<&str>) -> Value {
    let attributes = match sender {
        Some(s) => json!({"SenderId": s, "ApproximateReceiveCount": "1"}),
        None => json!({"ApproximateReceiveCount": "1"}),
    };
    json!({"Records": [{
        "messageId": message_id, "receiptHandle": "r", "body": body.to_string(),
        "attributes": attributes, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:222233334444:quell-requests-{kind}"),
        "awsRegion": "us-east-1"
    }]})
}

fn request(action: &str, request_id: &str, requester: &str) -> Value {
    json!({"version": "1", "request_id": request_id, "action": action, "entity": entity("user"),
           "reason": "ticket 7", "requester": requester})
}

const JO: &str = "arn:aws:sts::222233334444:assumed-role/Analyst/jo";
const KIM: &str = "arn:aws:sts::222233334444:assumed-role/Analyst/kim";

fn refused(w: &Shared, key: &str, code: &str) {
    let r = record(w, key);
    assert_eq!(r.status, Status::Rejected, "{key}: {r:?}");
    assert_eq!(r.rejection.as_ref().unwrap().code, code, "{r:?}");
}

fn nothing_written(w: &Shared) {
    for op in [
        "AttachUserPolicy",
        "PutUserPolicy",
        "UpdateAccessKey",
        "DeleteLoginProfile",
    ] {
        assert_eq!(calls(w, op), 0, "{op} was called");
    }
}

#[tokio::test]
async fn a_queued_request_records_the_principal_aws_authenticated() {
    let w = world();
    let r = strict(&w, &[]);
    r.handle(queued(
        "contain",
        "m1",
        &request("contain", "by-jo", JO),
        Some(&format!("{ANALYST_ID}:jo")),
    ))
    .await
    .unwrap();
    let rec = record(&w, "by-jo");
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(
        rec.caller,
        Some(Caller::Verified {
            sender_id: format!("{ANALYST_ID}:jo"),
            principal_arn: "arn:aws:iam::222233334444:role/team/Analyst".into()
        })
    );
    assert_eq!(calls(&w, "AttachUserPolicy"), 1, "the containment ran");
    let audit = w.lock().unwrap().published.clone();
    assert!(
        audit.iter().any(|m| m["record"]["caller"]["principal_arn"]
            == "arn:aws:iam::222233334444:role/team/Analyst"),
        "the audit message names the verified principal: {audit:?}"
    );
}

#[tokio::test]
async fn a_requester_that_is_not_the_sender_is_refused() {
    let w = world();
    let r = strict(&w, &[]);
    // The intern writes the analyst's name; SQS stamped the intern's id.
    r.handle(queued(
        "contain",
        "m1",
        &request("contain", "forged", JO),
        Some(&format!("{INTERN_ID}:jo")),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m1", "requester_mismatch");
    // The analyst's role id, another session than the one written.
    r.handle(queued(
        "contain",
        "m2",
        &request("contain", "other-session", JO),
        Some(&format!("{ANALYST_ID}:kim")),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m2", "requester_mismatch");
    // A principal that does not exist, and a requester that is no principal at all.
    for (m, requester) in [
        ("m3", "arn:aws:sts::222233334444:assumed-role/Ghost/jo"),
        ("m4", "the security team"),
    ] {
        r.handle(queued(
            "contain",
            m,
            &request("contain", m, requester),
            Some(&format!("{ANALYST_ID}:jo")),
        ))
        .await
        .unwrap();
        refused(&w, &format!("delivery:{m}"), "requester_mismatch");
    }
    nothing_written(&w);
}

#[tokio::test]
async fn a_principal_outside_the_configured_patterns_is_refused() {
    let w = world();
    let r = strict(&w, &[]);
    r.handle(queued(
        "contain",
        "m1",
        &request(
            "contain",
            "intern",
            "arn:aws:sts::222233334444:assumed-role/Intern/sam",
        ),
        Some(&format!("{INTERN_ID}:sam")),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m1", "not_authorized");
    let why = record(&w, "delivery:m1").rejection.unwrap().message;
    assert!(why.contains("authorization.contain"), "{why}");
    // alice may contain but not approve: decisions are for the analysts' role only.
    r.handle(queued(
        "decide",
        "m2",
        &json!({"version": "1", "request_id": "alice-approves", "action": "approve",
                "entity": "remediation:e:sg-1", "reason": "ok", "requester": "arn:aws:iam::222233334444:user/alice"}),
        Some(ALICE_ID),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m2", "not_authorized");
    nothing_written(&w);
}

#[tokio::test]
async fn a_request_on_another_kinds_queue_is_refused() {
    let w = world();
    let r = strict(&w, &[]);
    // The contain queue may admit more principals than the release queue.
    r.handle(queued(
        "contain",
        "m1",
        &request("release", "sneaky-release", JO),
        Some(&format!("{ANALYST_ID}:jo")),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m1", "wrong_channel");
    nothing_written(&w);
}

#[tokio::test]
async fn a_queued_request_without_a_sender_id_is_refused_unless_the_sandbox_host_says_so() {
    let w = world();
    strict(&w, &[])
        .handle(queued(
            "contain",
            "m1",
            &request("contain", "anon", JO),
            None,
        ))
        .await
        .unwrap();
    refused(&w, "delivery:m1", "unauthenticated");
    nothing_written(&w);

    let w = world();
    strict(&w, &[("QUELL_SANDBOX_REQUESTS_WITHOUT_SENDER_ID", "1")])
        .handle(queued(
            "contain",
            "m1",
            &request("contain", "sandbox", JO),
            None,
        ))
        .await
        .unwrap();
    let rec = record(&w, "sandbox");
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(
        rec.caller,
        Some(Caller::Unverified),
        "never a made-up identity"
    );
}

#[tokio::test]
async fn the_external_id_topic_takes_only_the_configured_kinds_and_records_them_as_self_declared() {
    let w = world();
    let r = strict(&w, &[]);
    let sns = |message_id: &str, body: &Value| super::playbooks::request_delivery(message_id, body);
    r.handle(sns("s1", &request("contain", "via-topic", JO)))
        .await
        .unwrap();
    let rec = record(&w, "via-topic");
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(rec.caller, Some(Caller::SelfDeclared));
    let attached = calls(&w, "AttachUserPolicy");
    r.handle(sns("s2", &request("release", "release-via-topic", JO)))
        .await
        .unwrap();
    refused(&w, "delivery:s2", "channel_not_allowed");
    let why = record(&w, "delivery:s2").rejection.unwrap().message;
    assert!(why.contains("quell-requests-release"), "{why}");
    assert_eq!(calls(&w, "DetachUserPolicy"), 0);
    assert_eq!(calls(&w, "AttachUserPolicy"), attached);
}

#[tokio::test]
async fn the_principal_who_contained_may_not_release_unless_the_configuration_allows_it() {
    let w = world();
    let r = strict(&w, &[]);
    let jo = format!("{ANALYST_ID}:jo");
    r.handle(queued(
        "contain",
        "m1",
        &request("contain", "c1", JO),
        Some(&jo),
    ))
    .await
    .unwrap();
    assert_eq!(record(&w, "c1").status, Status::Succeeded);
    // jo writes kim's name to look like someone else: the sender id says jo.
    r.handle(queued(
        "release",
        "m2",
        &request("release", "r-forged", KIM),
        Some(&jo),
    ))
    .await
    .unwrap();
    refused(&w, "delivery:m2", "requester_mismatch");
    r.handle(queued(
        "release",
        "m3",
        &request("release", "r-self", JO),
        Some(&jo),
    ))
    .await
    .unwrap();
    refused(&w, "r-self", "self_approval");
    assert_eq!(calls(&w, "DetachUserPolicy"), 0, "nothing released");
    // Another person in the same role is another principal.
    r.handle(queued(
        "release",
        "m4",
        &request("release", "r-kim", KIM),
        Some(&format!("{ANALYST_ID}:kim")),
    ))
    .await
    .unwrap();
    let rec = record(&w, "r-kim");
    assert_ne!(rec.status, Status::Rejected, "{rec:?}");
    assert_eq!(rec.releases.as_deref(), Some("c1"));

    // Allowed by configuration: the same principal releases its own containment.
    let w = world();
    let allowing = STRICT.replace(
        r#""allow_self_approval":false"#,
        r#""allow_self_approval":true"#,
    );
    let r = strict(&w, &[("QUELL_AUTHORIZATION", &allowing)]);
    r.handle(queued(
        "contain",
        "m1",
        &request("contain", "c1", JO),
        Some(&jo),
    ))
    .await
    .unwrap();
    r.handle(queued(
        "release",
        "m3",
        &request("release", "r-self", JO),
        Some(&jo),
    ))
    .await
    .unwrap();
    let rec = record(&w, "r-self");
    assert_ne!(rec.status, Status::Rejected, "{rec:?}");
}

#[tokio::test]
async fn a_pending_fix_is_not_approved_by_whoever_asked_for_the_sweep_that_found_it() {
    let w = world();
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0c3".into(), Snap::plain(false));
    let r = responder_full(
        &w,
        Vec::new(),
        snapshots_ec2(&w, false),
        None,
        settings_with(&[
            ("QUELL_AUTHORIZATION", STRICT),
            ("QUELL_EVENTS_QUEUE_ARN", EVENTS_QUEUE),
            (
                "QUELL_PLAYBOOKS",
                r#"{"unencrypted_snapshot": {"mode": "approve"}}"#,
            ),
        ]),
    );
    r.handle(event_delivery("e-1", &create_snapshot_event("snap-0c3")))
        .await
        .unwrap();
    let key = "remediation:ev-snap:snap-0c3";
    assert_eq!(record(&w, key).status, Status::AwaitingApproval);
    // Recorded as a sweep jo asked for records what it found (the sweep's own mocks would need
    // an organization's worth of accounts and Regions).
    let jo = format!("{ANALYST_ID}:jo");
    {
        let mut world = w.lock().unwrap();
        let item = world.ledger.get_mut(key).unwrap();
        let doc = item["record"].as_s().unwrap().clone();
        let mut rec: Value = serde_json::from_str(&doc).unwrap();
        rec["caller"] = json!({"kind": "verified", "sender_id": jo,
                               "principal_arn": "arn:aws:iam::222233334444:role/team/Analyst"});
        item.insert(
            "record".into(),
            aws_sdk_dynamodb::types::AttributeValue::S(rec.to_string()),
        );
    }
    let approve = |request_id: &str, requester: &str| {
        json!({"version": "1", "request_id": request_id, "action": "approve", "entity": key,
               "reason": "change 9", "requester": requester})
    };
    r.handle(queued(
        "decide",
        "d-1",
        &approve("jo-approves", JO),
        Some(&jo),
    ))
    .await
    .unwrap();
    refused(&w, "jo-approves", "self_approval");
    assert_eq!(
        record(&w, key).status,
        Status::AwaitingApproval,
        "still pending"
    );
    r.handle(queued(
        "decide",
        "d-2",
        &approve("kim-approves", KIM),
        Some(&format!("{ANALYST_ID}:kim")),
    ))
    .await
    .unwrap();
    let done = record(&w, key);
    assert_ne!(done.status, Status::AwaitingApproval, "{done:?}");
    let decided = done.decided_by.unwrap();
    assert!(
        decided.contains("verified: arn:aws:iam::222233334444:role/team/Analyst")
            && decided.contains(":kim"),
        "the decision records who decided, as AWS authenticated it: {decided}"
    );
}
