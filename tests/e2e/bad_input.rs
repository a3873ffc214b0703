//! Every bad input on the containment path: a clear refusal on the CLI, in the ledger and in the
//! audit record, and no write to the account it names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_sns::types::MessageAttributeValue;
use quell_responder::authorization::Channel;
use quell_responder::ledger::{Record, Status};
use serde_json::{json, Value};

use crate::contain::user_state;
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        missing_external_id_is_refused,
        wrong_external_id_is_refused,
        malformed_message_json_is_refused,
        oversized_and_multi_line_text_is_refused,
        a_rotated_external_id_authenticates_and_the_old_one_only_within_its_grace,
        unsupported_and_malformed_arns_are_refused,
        account_outside_the_organization_is_refused,
        protected_principals_and_quells_own_roles_are_refused,
        user_that_does_not_exist_is_refused,
        the_same_request_sent_twice_is_acted_on_once,
        the_same_sns_message_delivered_twice_is_acted_on_once,
    ]
}

/// The user every refused request names: it must never change.
pub(crate) fn canary(s: &Sandbox) -> (String, String) {
    let account = s.members()[1].clone();
    let arn = Sandbox::user_arn(&account);
    (account, arn)
}

async fn assert_untouched(s: &Sandbox) -> Result<()> {
    let (account, _) = canary(s);
    let st = user_state(s, &account, "ci-deployer").await?;
    ensure!(
        st.attached == ["arn:aws:iam::aws:policy/PowerUserAccess"],
        "canary policies changed: {:?}",
        st.attached
    );
    ensure!(
        st.inline.is_empty(),
        "canary inline policies changed: {:?}",
        st.inline
    );
    ensure!(
        st.keys.iter().all(|(_, status)| status == "Active"),
        "canary keys changed: {:?}",
        st.keys
    );
    ensure!(st.login, "canary console login removed");
    Ok(())
}

fn message(request_id: &str, entity: &str) -> String {
    json!({"version": "1", "request_id": request_id, "action": "contain", "entity": entity, "reason": "e2e", "requester": "e2e"}).to_string()
}

fn topic(s: &Sandbox) -> String {
    format!("arn:aws:sns:{HOME}:{}:quell-containment", s.security())
}

/// Publishes straight to the containment topic, as any organization principal can.
pub(crate) async fn publish(s: &Sandbox, body: &str, external_id: Option<&str>) -> Result<String> {
    let security = s.in_account(&s.security(), HOME).await?;
    let mut req = aws_sdk_sns::Client::new(&security)
        .publish()
        .topic_arn(topic(s))
        .message(body);
    if let Some(id) = external_id {
        req = req.message_attributes(
            "ExternalId",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(id)
                .build()?,
        );
    }
    Ok(req
        .send()
        .await?
        .message_id()
        .unwrap_or_default()
        .to_owned())
}

pub(crate) async fn refusal(s: &Sandbox, message_id: &str) -> Result<Record> {
    let key = quell_responder::contract::rejection_key(message_id);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(r) = s.ledger(&key).await? {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no refusal recorded under {key}")
}

/// Checks the refusal's code in the ledger and in the audit message.
pub(crate) async fn expect_refused(
    s: &Sandbox,
    record: &Record,
    code: &str,
    words: &str,
) -> Result<()> {
    ensure!(record.status == Status::Rejected, "{record:?}");
    let rejection = record.rejection.as_ref().context("rejection")?;
    ensure!(
        rejection.code == code,
        "code {} != {code}: {}",
        rejection.code,
        rejection.message
    );
    ensure!(
        rejection.message.contains(words),
        "'{}' should say '{words}'",
        rejection.message
    );
    let audit = s.audit_for(&record.key, 1).await?;
    let rejected = audit
        .iter()
        .find(|m| m["event"] == "rejected")
        .context("a rejected audit message")?;
    ensure!(
        rejected["record"]["rejection"]["code"] == code,
        "audit says {}",
        rejected["record"]["rejection"]
    );
    assert_untouched(s).await
}

async fn missing_external_id_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let (_, arn) = canary(&s);
    let id = publish(&s, &message("no-external-id", &arn), None).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "external_id_missing",
        "no ExternalId",
    )
    .await
}

async fn wrong_external_id_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let (_, arn) = canary(&s);
    let real = s.external_ids().await?["message_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = publish(
        &s,
        &message("wrong-external-id", &arn),
        Some(&format!("{real}0")),
    )
    .await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "external_id_wrong",
        "does not match",
    )
    .await?;
    // The role ExternalId is not the message ExternalId.
    let role_id = s.external_ids().await?["role_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = publish(&s, &message("role-external-id", &arn), Some(&role_id)).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "external_id_wrong",
        "does not match",
    )
    .await
}

async fn malformed_message_json_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let ext = s.external_ids().await?["message_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = publish(&s, "{\"version\": \"1\", \"request_id\": ", Some(&ext)).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "not a containment request",
    )
    .await?;
    let (_, arn) = canary(&s);
    let extra = json!({"version": "1", "request_id": "x1", "action": "contain", "entity": arn, "reason": "r", "requester": "q", "force": true}).to_string();
    let id = publish(&s, &extra, Some(&ext)).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "unknown field",
    )
    .await?;
    // A dry run exists for sweeps only: a containment never half-happens.
    let dry = json!({"version": "1", "request_id": "x2", "action": "contain", "entity": arn, "reason": "r", "requester": "q", "options": {"dry_run": true}}).to_string();
    let id = publish(&s, &dry, Some(&ext)).await?;
    expect_refused(&s, &refusal(&s, &id).await?, "malformed_message", "dry_run").await?;
    // A sweep limited to a kind of resource it does not know changes nothing.
    let unknown = json!({"version": "1", "request_id": "x4", "action": "sweep", "entity": "organization", "reason": "r", "requester": "q", "options": {"only": ["rds_instance"]}}).to_string();
    // Sweeps come through their own queue (the topic takes containment only).
    let id = crate::authorization::enqueue(&s, Channel::Sweep, &unknown).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "rds_instance",
    )
    .await?;
    // A sweep covers the organization, nothing narrower.
    let narrow = json!({"version": "1", "request_id": "x3", "action": "sweep", "entity": arn, "reason": "r", "requester": "q"}).to_string();
    let id = crate::authorization::enqueue(&s, Channel::Sweep, &narrow).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "whole organization",
    )
    .await
}

/// A reason of ~130 KB once pushed the audit message past SNS's limit, and a line break in the
/// requester could forge a line of the audit e-mail: both are refused, by the responder and by
/// the CLI before anything is sent.
async fn oversized_and_multi_line_text_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let ext = s.external_ids().await?["message_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, arn) = canary(&s);
    let big =
        json!({"version": "1", "request_id": "big-reason", "action": "contain", "entity": arn,
        "reason": "x".repeat(130_000), "requester": "q"})
        .to_string();
    let id = publish(&s, &big, Some(&ext)).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "reason is 130000 bytes",
    )
    .await?;
    let forged =
        json!({"version": "1", "request_id": "forged-line", "action": "contain", "entity": arn,
        "reason": "r", "requester": "jo\nApprove:    quell approve remediation:x"})
        .to_string();
    let id = publish(&s, &forged, Some(&ext)).await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "malformed_message",
        "requester contains the control character",
    )
    .await?;
    let long = "y".repeat(2000);
    let out = s.quell(&[
        "--sandbox",
        "contain",
        &arn,
        "--reason",
        &long,
        "--yes",
        "--timeout",
        "10",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.code() == Some(3),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    ensure!(stderr.contains("--reason is 2000 bytes"), "{stderr}");
    assert_untouched(&s).await
}

/// Publishes a request that passes authentication and is then refused for its ARN: its refusal
/// code tells whether `external_id` was accepted.
async fn authenticates(s: &Sandbox, request_id: &str, external_id: &str) -> Result<String> {
    let body = json!({"version": "1", "request_id": request_id, "action": "contain",
        "entity": "not-an-arn", "reason": "rotation check", "requester": "e2e"})
    .to_string();
    let id = publish(s, &body, Some(external_id)).await?;
    let record = refusal(s, &id).await?;
    Ok(record.rejection.context("a rejection")?.code)
}

fn rotate(s: &Sandbox, grace_minutes: &str) -> Result<()> {
    let out = s.quell(&[
        "--sandbox",
        "rotate-external-id",
        "--grace-minutes",
        grace_minutes,
        "--yes",
    ]);
    ensure!(
        out.status.success(),
        "rotate-external-id: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn message_external_id(s: &Sandbox) -> Result<String> {
    Ok(s.external_ids().await?["message_external_id"]
        .as_str()
        .context("message_external_id")?
        .to_owned())
}

async fn a_rotated_external_id_authenticates_and_the_old_one_only_within_its_grace(
    s: Arc<Sandbox>,
) -> Result<()> {
    let first = message_external_id(&s).await?;
    rotate(&s, "0")?;
    let second = message_external_id(&s).await?;
    ensure!(second != first, "a new id");
    // A warm responder reads the secret again when an unknown id arrives, at most every 5 s
    // (`REREAD_ON_MISMATCH`): the documented bound for a new id to be accepted.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(authenticates(&s, "rot-new", &second).await? == "malformed_arn");
    ensure!(
        authenticates(&s, "rot-old", &first).await? == "external_id_wrong",
        "no grace was given: the old id is refused"
    );
    rotate(&s, "60")?;
    let third = message_external_id(&s).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(authenticates(&s, "rot-third", &third).await? == "malformed_arn");
    ensure!(
        authenticates(&s, "rot-grace", &second).await? == "malformed_arn",
        "the previous id is accepted within its grace period"
    );
    assert_untouched(&s).await
}

/// Runs `quell contain` and returns its exit code and JSON report.
fn contain(s: &Sandbox, arn: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec![
        "--sandbox",
        "--output",
        "json",
        "contain",
        arn,
        "--reason",
        "e2e bad input",
        "--yes",
        "--timeout",
        "60",
    ];
    args.extend_from_slice(extra);
    let out = s.quell(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

pub async fn expect_cli_refused(s: &Sandbox, arn: &str, code: &str, words: &str) -> Result<()> {
    let (exit, report, stderr) = contain(s, arn, &[]);
    ensure!(
        exit == Some(3),
        "{arn}: exit {exit:?} (3 = refused); stderr {stderr}"
    );
    ensure!(report["status"] == "rejected", "{arn}: {report}");
    let key = report["record"]["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let record = s
        .ledger(&key)
        .await?
        .with_context(|| format!("ledger {key}"))?;
    expect_refused(s, &record, code, words).await
}

async fn unsupported_and_malformed_arns_are_refused(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[1].clone();
    expect_cli_refused(
        &s,
        &format!("arn:aws:s3:::public-assets-{account}"),
        "unsupported_entity",
        "cannot contain",
    )
    .await?;
    expect_cli_refused(
        &s,
        &format!("arn:aws:iam::{account}:group/admins"),
        "unsupported_entity",
        "an IAM group",
    )
    .await?;
    expect_cli_refused(&s, "ci-deployer", "malformed_arn", "is not an ARN").await
}

async fn account_outside_the_organization_is_refused(s: Arc<Sandbox>) -> Result<()> {
    expect_cli_refused(
        &s,
        "arn:aws:iam::999999999999:user/ci-deployer",
        "outside_organization",
        "999999999999 is not in organization",
    )
    .await
}

async fn protected_principals_and_quells_own_roles_are_refused(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[1].clone();
    expect_cli_refused(
        &s,
        &format!("arn:aws:iam::{account}:role/quell-responder"),
        "protected_principal",
        "is protected",
    )
    .await?;
    expect_cli_refused(
        &s,
        &format!(
            "arn:aws:iam::{}:role/quell-responder-execution",
            s.security()
        ),
        "protected_principal",
        "is protected",
    )
    .await?;
    expect_cli_refused(
        &s,
        &format!("arn:aws:iam::{}:user/quell-sandbox-admin", s.management()),
        "protected_principal",
        "is protected",
    )
    .await
}

async fn user_that_does_not_exist_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[1].clone();
    let arn = format!("arn:aws:iam::{account}:user/nobody");
    let (exit, report, stderr) = contain(&s, &arn, &[]);
    ensure!(exit == Some(3), "exit {exit:?}: {stderr}");
    ensure!(
        report["record"]["rejection"]["code"] == "entity_not_found",
        "{report}"
    );
    ensure!(
        report["record"]["rejection"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "{report}"
    );
    ensure!(
        report["record"]["steps"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no step ran: {report}"
    );
    assert_untouched(&s).await
}

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

async fn detach_deny_all(s: &Sandbox, account: &str) -> Result<()> {
    let iam = aws_sdk_iam::Client::new(&s.in_account(account, HOME).await?);
    iam.detach_user_policy()
        .user_name("ci-deployer")
        .policy_arn(DENY_ALL)
        .send()
        .await?;
    Ok(())
}

async fn deny_all_attached(s: &Sandbox, account: &str) -> Result<bool> {
    Ok(user_state(s, account, "ci-deployer")
        .await?
        .attached
        .iter()
        .any(|p| p == DENY_ALL))
}

async fn the_same_request_sent_twice_is_acted_on_once(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    let arn = Sandbox::user_arn(&account);
    let (exit, first, stderr) = contain(&s, &arn, &["--request-id", "repeat-1"]);
    ensure!(exit == Some(0), "first request succeeds: {stderr}");
    ensure!(first["status"] == "succeeded");
    // Undo one effect by hand: a second action would put it back.
    detach_deny_all(&s, &account).await?;
    let (exit, second, stderr) = contain(&s, &arn, &["--request-id", "repeat-1"]);
    ensure!(exit == Some(3), "repeat is refused: {exit:?} {stderr}");
    ensure!(
        second["record"]["rejection"]["code"] == "duplicate",
        "{second}"
    );
    ensure!(
        second["record"]["rejection"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not acted on twice"),
        "{second}"
    );
    ensure!(!deny_all_attached(&s, &account).await?, "the repeat acted");
    Ok(())
}

/// SNS delivers at least once: the very same message (same MessageId) can reach the function twice.
async fn the_same_sns_message_delivered_twice_is_acted_on_once(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    let security = s.in_account(&s.security(), HOME).await?;
    let sqs = aws_sdk_sqs::Client::new(&security);
    // A copy of what the topic delivers, to deliver it a second time by hand.
    let copy = sqs
        .create_queue()
        .queue_name("e2e-containment-copy")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let copy_arn = format!("arn:aws:sqs:{HOME}:{}:e2e-containment-copy", s.security());
    let sub = aws_sdk_sns::Client::new(&security)
        .subscribe()
        .topic_arn(topic(&s))
        .protocol("sqs")
        .endpoint(&copy_arn)
        .return_subscription_arn(true)
        .send()
        .await?;
    let ext = s.external_ids().await?["message_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message_id = publish(
        &s,
        &message("delivered-twice", &Sandbox::user_arn(&account)),
        Some(&ext),
    )
    .await?;
    let start = Instant::now();
    let first = loop {
        if let Some(r) = s.ledger("delivered-twice").await? {
            if r.status.is_final() {
                break r;
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "first delivery never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(first.status == Status::Succeeded, "{first:?}");
    let envelope = sqs
        .receive_message()
        .queue_url(&copy)
        .wait_time_seconds(2)
        .send()
        .await?;
    let body = envelope
        .messages()
        .first()
        .and_then(|m| m.body())
        .context("copy of the delivery")?
        .to_owned();
    aws_sdk_sns::Client::new(&security)
        .unsubscribe()
        .subscription_arn(sub.subscription_arn().unwrap_or_default())
        .send()
        .await?;
    detach_deny_all(&s, &account).await?;
    let inbox = sqs
        .get_queue_url()
        .queue_name("quell-sandbox-lambda-inbox")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    sqs.send_message()
        .queue_url(inbox)
        .message_body(body)
        .send()
        .await?;
    let record = refusal(&s, &message_id).await?;
    ensure!(
        record
            .rejection
            .as_ref()
            .is_some_and(|r| r.code == "duplicate"),
        "{record:?}"
    );
    ensure!(
        !deny_all_attached(&s, &account).await?,
        "the second delivery acted"
    );
    Ok(())
}
