//! A deployment's burst of CloudTrail events: many groups opened to the world at once, each event
//! delivered up to three times (EventBridge delivers at least once) and out of order. Every group
//! is fixed exactly once, counted at the wire by the proxy in front of the sandbox, and nothing
//! goes to the dead-letter queue. (The short version of the burst; `bench/burst` is the long one.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::{json, Value};

use crate::proxy::FaultProxy;
use crate::remediate::{ec2_rule, group_with, ingress, uuid_like};
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_burst_of_cloudtrail_events_delivered_up_to_three_times_out_of_order_fixes_each_group_once
    ]
}

/// Groups per member account.
const GROUPS_PER_ACCOUNT: usize = 12;

/// The CloudTrail event of the call that opened `group` to the world on port 22.
fn opened(account: &str, group: &str) -> Value {
    json!({
        "eventVersion": "1.09", "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroupIngress", "awsRegion": HOME,
        "recipientAccountId": account, "eventID": format!("burst-{}", uuid_like()),
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/deployer/pipeline")},
        "requestParameters": {"groupId": group,
            "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}
    })
}

async fn a_burst_of_cloudtrail_events_delivered_up_to_three_times_out_of_order_fixes_each_group_once(
    s: Arc<Sandbox>,
) -> Result<()> {
    let proxy = FaultProxy::route_responder(&s)?;
    let mut groups = Vec::new();
    for account in s.members() {
        for _ in 0..GROUPS_PER_ACCOUNT {
            let ssh = vec![
                ec2_rule("tcp", 22, "0.0.0.0/0"),
                ec2_rule("tcp", 443, "10.0.0.0/8"),
            ];
            let id = group_with(&s, &account, HOME, "burst", &[], ssh).await?;
            groups.push((account.clone(), id));
        }
    }
    // What came before (the sweep after install, earlier tests) is settled before the count.
    wait_for_quiet_events_queue(&s).await?;
    let dead_before = dead_lettered(&s)?;
    let revokes_before = revokes(&proxy).await?;

    // Each event one to three times, all shuffled, put ten to a call as EventBridge takes them.
    let mut rng = fastrand::Rng::with_seed(13);
    let mut deliveries: Vec<(String, Value)> = Vec::new();
    for (n, (account, group)) in groups.iter().enumerate() {
        let event = opened(account, group);
        for _ in 0..=(n % 3) {
            deliveries.push((account.clone(), event.clone()));
        }
    }
    rng.shuffle(&mut deliveries);
    for account in s.members() {
        let events = aws_sdk_eventbridge::Client::new(&s.in_account(&account, HOME).await?);
        let mine: Vec<&Value> = deliveries
            .iter()
            .filter(|(a, _)| *a == account)
            .map(|(_, e)| e)
            .collect();
        for batch in mine.chunks(10) {
            let out = events
                .put_events()
                .set_entries(Some(
                    batch
                        .iter()
                        .map(|detail| {
                            PutEventsRequestEntry::builder()
                                .source("aws.ec2")
                                .detail_type("AWS API Call via CloudTrail")
                                .detail(detail.to_string())
                                .build()
                        })
                        .collect(),
                ))
                .send()
                .await?;
            ensure!(out.failed_entry_count() == 0, "accepted: {out:?}");
        }
    }

    // Every group closed, its internal rule kept.
    let started = Instant::now();
    let mut open = groups.clone();
    while !open.is_empty() {
        let mut still = Vec::new();
        for (account, group) in open {
            let rules = ingress(&s, &account, HOME, &group).await?;
            ensure!(
                rules
                    .iter()
                    .any(|(_, port, cidr)| *port == 443 && cidr == "10.0.0.0/8"),
                "{group}: the internal rule stays: {rules:?}"
            );
            if rules.iter().any(|(_, _, cidr)| cidr == "0.0.0.0/0") {
                still.push((account, group));
            }
        }
        if !still.is_empty() && started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{} of {} groups still open after 120 s: {:?}",
                still.len(),
                groups.len(),
                still.first()
            );
        }
        open = still;
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let closed_in = started.elapsed();
    // The duplicates still on their way are settled before the count.
    wait_for_quiet_events_queue(&s).await?;
    let fixes = revokes(&proxy).await? - revokes_before;
    let ledger = crate::remediate::ledger_of(&s.in_account(&s.security(), HOME).await?);
    let mut twice = Vec::new();
    for (account, group) in &groups {
        let arn = format!("arn:aws:ec2:{HOME}:{account}:security-group/{group}");
        let succeeded = ledger
            .for_entity(&arn)
            .await?
            .into_iter()
            .filter(|r| r.status == quell_responder::ledger::Status::Succeeded)
            .count();
        if succeeded != 1 {
            twice.push((group.clone(), succeeded));
        }
    }
    ensure!(
        twice.is_empty() && fixes == groups.len() as u64,
        "{} groups, each fixed once: {fixes} revokes reached the sandbox; groups not fixed exactly once: {twice:?}",
        groups.len()
    );
    ensure!(
        dead_lettered(&s)? == dead_before,
        "nothing dead-lettered: {}",
        status(&s)?["deliveries"]
    );
    let stats = proxy.stats().await?;
    eprintln!(
        "{} groups from {} events, all closed in {:.1} s with {fixes} revokes ({} tries)",
        groups.len(),
        deliveries.len(),
        closed_in.as_secs_f64(),
        stats["calls_by_call"]["ec2:RevokeSecurityGroupIngress"]
    );
    Ok(())
}

/// Revokes the sandbox made: tries of one call that failed (the SDK tries again when the
/// sandbox answers 500 under load) are not fixes.
async fn revokes(proxy: &FaultProxy) -> Result<u64> {
    Ok(
        proxy.stats().await?["succeeded_by_call"]["ec2:RevokeSecurityGroupIngress"]
            .as_u64()
            .unwrap_or_default(),
    )
}

fn status(s: &Sandbox) -> Result<Value> {
    Ok(serde_json::from_slice(
        &s.must(&["--output", "json", "sandbox", "status"])?.stdout,
    )?)
}

fn dead_lettered(s: &Sandbox) -> Result<u64> {
    Ok(status(s)?["deliveries"]
        .as_object()
        .map(|q| q.values().filter_map(|c| c["dead_lettered"].as_u64()).sum())
        .unwrap_or_default())
}

/// Waits until the events queue holds nothing and the host has nothing of it in flight.
async fn wait_for_quiet_events_queue(s: &Sandbox) -> Result<()> {
    let (sqs, url) = s.security_queue("quell-events").await?;
    for _ in 0..120 {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let count = |name| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        let waiting = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed);
        let in_flight = status(s)?["deliveries"]["quell-events"]["in_flight"]
            .as_u64()
            .unwrap_or_default();
        if waiting == 0 && in_flight == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!(
        "the events queue never emptied: {}",
        status(s)?["deliveries"]
    )
}
