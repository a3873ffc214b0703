//! Requests by kind, in the sandbox: each kind arrives only through its own queue, the
//! ExternalId topic takes only what the configuration lets integrations ask for, and the sandbox
//! records the sender as unverified (its emulator has no real sender ids; the mocked tests show
//! verification, refusal of other principals and of self-approval).

use std::sync::Arc;

use anyhow::{ensure, Result};
use quell_responder::authorization::{Caller, Channel};
use quell_responder::ledger::Status;
use serde_json::json;

use crate::bad_input::{canary, expect_refused, publish, refusal};
use crate::support::Sandbox;
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        the_topic_takes_only_containment_and_the_queues_only_their_own_kind,
        a_queued_request_is_recorded_with_its_sender_unverified_in_the_sandbox,
    ]
}

/// Sends `body` to the request queue of `channel`, as `quell` does; the SQS message id.
pub async fn enqueue(s: &Sandbox, channel: Channel, body: &str) -> Result<String> {
    let (sqs, url) = s.security_queue(&channel.queue_name("quell")).await?;
    Ok(sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await?
        .message_id()
        .unwrap_or_default()
        .to_owned())
}

async fn the_topic_takes_only_containment_and_the_queues_only_their_own_kind(
    s: Arc<Sandbox>,
) -> Result<()> {
    let ext = s.external_ids().await?["message_external_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (_, arn) = canary(&s);
    // A release through the topic: its requester would be only what the sender wrote.
    let release = json!({"version": "1", "request_id": "topic-release", "action": "release",
        "entity": arn, "reason": "r", "requester": "arn:aws:iam::111122223333:user/lead"})
    .to_string();
    let id = publish(&s, &release, Some(&ext)).await?;
    let refused = refusal(&s, &id).await?;
    expect_refused(
        &s,
        &refused,
        "channel_not_allowed",
        "quell-requests-release",
    )
    .await?;
    ensure!(
        refused.caller == Some(Caller::SelfDeclared),
        "{:?}",
        refused.caller
    );
    // A release on the contain queue, whose policy may admit more principals.
    let id = enqueue(
        &s,
        Channel::Contain,
        &release.replace("topic-release", "queue-release"),
    )
    .await?;
    expect_refused(
        &s,
        &refusal(&s, &id).await?,
        "wrong_channel",
        "quell-requests-contain",
    )
    .await
}

async fn a_queued_request_is_recorded_with_its_sender_unverified_in_the_sandbox(
    s: Arc<Sandbox>,
) -> Result<()> {
    let (_, arn) = canary(&s);
    // Never contained, so refused as such: the record still says who asked, as far as AWS vouches.
    let release = json!({"version": "1", "request_id": "unverified-release", "action": "release",
        "entity": arn, "reason": "r", "requester": "arn:aws:iam::111122223333:user/lead"})
    .to_string();
    enqueue(&s, Channel::Release, &release).await?;
    let start = std::time::Instant::now();
    let record = loop {
        if let Some(r) = s.ledger("unverified-release").await? {
            if r.status.is_final() {
                break r;
            }
        }
        ensure!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the release was never recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    ensure!(record.status == Status::Rejected, "{record:?}");
    ensure!(
        record.rejection.as_ref().map(|r| r.code.as_str()) == Some("not_contained"),
        "{record:?}"
    );
    ensure!(
        record.caller == Some(Caller::Unverified),
        "the emulator's made-up sender id is never recorded: {:?}",
        record.caller
    );
    Ok(())
}
