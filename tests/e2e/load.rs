//! Containment requests at once, as in an incident: users, roles and instances across the member accounts,
//! some delivered twice, all sent before the first is done, to a host running several responder
//! processes side by side. Every request ends recorded, every entity is read back contained, a
//! duplicate is acted on once, and nothing is lost or left in progress. (The short version of the
//! load the issue names; the soak and the large runs are scripts.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quell_responder::ledger::Status;
use serde_json::json;

use crate::contain::user_state;
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        containments_sent_at_once_across_accounts_all_end_contained_and_duplicates_are_acted_on_once,
    ]
}

/// Entities per member account: half users, half roles.
const PER_ACCOUNT: usize = 8;
const INSTANCES_PER_ACCOUNT: usize = 2;
/// Of every this many requests, one is delivered a second time.
const DUPLICATE_EVERY: usize = 4;

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

async fn containments_sent_at_once_across_accounts_all_end_contained_and_duplicates_are_acted_on_once(
    s: Arc<Sandbox>,
) -> Result<()> {
    let mut entities = Vec::new();
    for account in s.members() {
        let config = s.in_account(&account, HOME).await?;
        // Instances isolate in two phases, the second from the isolation queue, which another
        // environment may take the moment the first schedules it.
        let ec2 = aws_sdk_ec2::Client::new(&config);
        for _ in 0..INSTANCES_PER_ACCOUNT {
            let id = crate::entities::launch(&ec2).await?;
            entities.push((
                account.clone(),
                id.clone(),
                format!("arn:aws:ec2:{HOME}:{account}:instance/{id}"),
            ));
        }
        let iam = aws_sdk_iam::Client::new(&config);
        for i in 0..PER_ACCOUNT {
            let name = format!("load-{i}");
            if i % 2 == 0 {
                iam.create_user().user_name(&name).send().await?;
                iam.create_access_key().user_name(&name).send().await?;
                entities.push((
                    account.clone(),
                    name.clone(),
                    format!("arn:aws:iam::{account}:user/{name}"),
                ));
            } else {
                let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "sts:AssumeRole"}]});
                iam.create_role()
                    .role_name(&name)
                    .assume_role_policy_document(trust.to_string())
                    .send()
                    .await?;
                entities.push((
                    account.clone(),
                    name.clone(),
                    format!("arn:aws:iam::{account}:role/{name}"),
                ));
            }
        }
    }

    // Sent as `quell contain` sends them, from the security account, all at once.
    let security = s.in_account(&s.security(), HOME).await?;
    let requester = s.requester().await?;
    let (sqs, url) = s.security_queue("quell-requests-contain").await?;
    let mut sent = Vec::new();
    for (n, (_, _, arn)) in entities.iter().enumerate() {
        let id = format!("load-{n}");
        let body = json!({"version": "1", "request_id": id, "action": "contain", "entity": arn,
            "reason": "load test", "requester": requester, "options": {}})
        .to_string();
        let times = if n % DUPLICATE_EVERY == 0 { 2 } else { 1 };
        for _ in 0..times {
            let message = sqs
                .send_message()
                .queue_url(&url)
                .message_body(&body)
                .send()
                .await?;
            sent.push((
                id.clone(),
                message.message_id().unwrap_or_default().to_owned(),
            ));
        }
    }

    let ledger = crate::remediate::ledger_of(&security);
    let started = Instant::now();
    let mut records = Vec::new();
    for n in 0..entities.len() {
        let id = format!("load-{n}");
        loop {
            match ledger.get(&id).await? {
                Some(r) if r.status.is_final() => {
                    records.push(r);
                    break;
                }
                other if started.elapsed() > Duration::from_secs(240) => bail!(
                    "{id} has no outcome after 240 s: {:?}",
                    other.map(|r| (r.status, r.steps.len()))
                ),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
    let took = started.elapsed();
    for (record, (account, name, arn)) in records.iter().zip(&entities) {
        ensure!(
            record.status == Status::Succeeded,
            "{arn}: {:?} {:?}",
            record.status,
            record.error
        );
        ensure!(
            record.message_ids.len() == 1 && record.attempts == 1,
            "{arn} acted on once: {:?}",
            record.message_ids
        );
        if arn.contains(":instance/") {
            let ec2 = aws_sdk_ec2::Client::new(&s.in_account(account, HOME).await?);
            let isolation = record
                .steps
                .iter()
                .rev()
                .find(|st| st.name == "isolation_groups")
                .and_then(|st| st.new["group"].as_str())
                .with_context(|| format!("{arn}: the isolation step"))?
                .to_owned();
            let groups = crate::entities::enis(&ec2, name).await?;
            ensure!(
                !groups.is_empty() && groups.iter().all(|g| g == std::slice::from_ref(&isolation)),
                "{arn} read back isolated: {groups:?}"
            );
        } else if arn.contains(":user/") {
            let state = user_state(&s, account, name).await?;
            ensure!(
                state.attached.iter().any(|p| p == DENY_ALL)
                    && state.keys.iter().all(|(_, st)| st == "Inactive"),
                "{arn} read back contained: {:?} {:?}",
                state.attached,
                state.keys
            );
        } else {
            let iam = aws_sdk_iam::Client::new(&s.in_account(account, HOME).await?);
            let attached = iam
                .list_attached_role_policies()
                .role_name(name)
                .send()
                .await?;
            ensure!(
                attached
                    .attached_policies()
                    .iter()
                    .any(|p| p.policy_arn() == Some(DENY_ALL)),
                "{arn} read back contained"
            );
        }
    }
    // Every second delivery is recorded as the duplicate it is.
    for (id, message) in &sent {
        let record = records
            .iter()
            .find(|r| &r.key == id)
            .context("the request's record")?;
        if record.message_ids.contains(message) {
            continue;
        }
        let refused = ledger
            .get(&format!("delivery:{message}"))
            .await?
            .with_context(|| format!("the second delivery of {id} ({message}) is recorded"))?;
        ensure!(
            refused
                .rejection
                .as_ref()
                .is_some_and(|r| r.code == "duplicate"),
            "{id}: {:?}",
            refused.rejection
        );
    }
    eprintln!(
        "{} containments ({} deliveries) across {} accounts ended contained in {:.1} s",
        entities.len(),
        sent.len(),
        s.members().len(),
        took.as_secs_f64()
    );
    Ok(())
}
