//! The local Lambda host delivers as Lambda's event source mappings do: every event of a mixed
//! burst, put one right after another, is acted on, round after round, and the host's own count
//! shows nothing lost or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::remediate::{cloudtrail_authorize, ec2_rule, group_with, ingress, ledger_of};
use crate::storage::{bucket_state, cloudtrail_s3, public_bucket};
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_mixed_burst_of_events_is_acted_on_every_time_twenty_times_in_a_row,
        an_event_that_failed_until_the_dead_letter_queue_is_acted_on_once_redriven_after_the_fix,
    ]
}

/// How many bursts, one right after the other's fixes are read back.
const ROUNDS: usize = 20;

/// What the security account's queues hold now, visible and in flight, by name.
async fn queues_now(s: &Sandbox) -> Result<Value> {
    let sqs = aws_sdk_sqs::Client::new(&s.in_account(&s.security(), HOME).await?);
    let mut out = serde_json::Map::new();
    for url in sqs.list_queues().send().await?.queue_urls() {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await?;
        let get = |name: aws_sdk_sqs::types::QueueAttributeName| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .cloned()
                .unwrap_or_default()
        };
        let name = url.rsplit('/').next().unwrap_or(url).to_owned();
        // The dead-letter queue's messages themselves: what failed, and why.
        let peeked: Vec<String> = if name.ends_with("-dlq") {
            sqs.receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .message_attribute_names("All")
                .send()
                .await?
                .messages()
                .iter()
                .map(|m| {
                    format!(
                        "{:?} {}",
                        m.message_attributes(),
                        m.body().unwrap_or_default()
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        out.insert(
            name,
            serde_json::json!({
                "visible": get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
                "in_flight": get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
                "messages": peeked,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// What the host delivered, what the queues hold (the dead-letter queue's messages too) and the
/// ledger's records of `arns`: where an event that was not acted on went.
async fn what_happened(s: &Sandbox, arns: &[String]) -> Result<String> {
    let status: Value =
        serde_json::from_slice(&s.must(&["--output", "json", "sandbox", "status"])?.stdout)?;
    let ledger = ledger_of(&s.in_account(&s.security(), HOME).await?);
    let mut records = Vec::new();
    for arn in arns {
        for r in ledger.for_entity(arn).await? {
            records.push(format!(
                "{}: {:?} {:?} {:?}",
                r.key, r.status, r.error, r.rejection
            ));
        }
    }
    Ok(format!(
        "the host delivered {}; the queues hold {}; the ledger has {records:#?}",
        status["deliveries"],
        queues_now(s).await?
    ))
}

async fn open_to_the_world(s: &Sandbox, account: &str, group: &str) -> Result<bool> {
    Ok(ingress(s, account, HOME, group)
        .await?
        .iter()
        .any(|(_, _, cidr)| cidr == "0.0.0.0/0"))
}

async fn a_mixed_burst_of_events_is_acted_on_every_time_twenty_times_in_a_row(
    s: Arc<Sandbox>,
) -> Result<()> {
    let members = s.members();
    let first = members.first().context("a member")?.clone();
    let second = members.get(1).context("a second member")?.clone();
    for round in 1..=ROUNDS {
        // Two groups in two accounts and a bucket, each opened to the world; then the three
        // CloudTrail calls that opened them, put on the members' buses at once.
        let ssh = vec![ec2_rule("tcp", 22, "0.0.0.0/0")];
        let one = group_with(&s, &first, HOME, "burst", &[], ssh.clone()).await?;
        let two = group_with(&s, &second, HOME, "burst", &[], ssh).await?;
        let bucket = public_bucket(&s, &first, "burst").await?;
        tokio::try_join!(
            cloudtrail_authorize(&s, &first, HOME, &one),
            cloudtrail_authorize(&s, &second, HOME, &two),
            cloudtrail_s3(&s, &first, "PutBucketAcl", &bucket),
        )?;
        let started = Instant::now();
        loop {
            let left = [
                (open_to_the_world(&s, &first, &one).await?, one.as_str()),
                (open_to_the_world(&s, &second, &two).await?, two.as_str()),
                (
                    !bucket_state(&s, &first, &bucket).await?.0.is_empty(),
                    bucket.as_str(),
                ),
            ];
            let open: Vec<&str> = left.iter().filter(|(o, _)| *o).map(|(_, r)| *r).collect();
            if open.is_empty() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let arns = [
                    format!("arn:aws:s3:::{bucket}"),
                    format!("arn:aws:ec2:{HOME}:{first}:security-group/{one}"),
                    format!("arn:aws:ec2:{HOME}:{second}:security-group/{two}"),
                ];
                bail!(
                    "round {round}: still open after 60 s: {open:?}; {}",
                    what_happened(&s, &arns).await?
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // The host's own account of the rounds: everything settled, nothing dead-lettered.
    let status: Value =
        serde_json::from_slice(&s.must(&["--output", "json", "sandbox", "status"])?.stdout)?;
    let events = &status["deliveries"]["quell-events"];
    ensure!(
        events["delivered"].as_u64().unwrap_or_default() >= 3 * ROUNDS as u64
            && events["dead_lettered"] == 0
            && events["in_flight"] == 0,
        "every event delivered, none dead-lettered: {}",
        status["deliveries"]
    );
    Ok(())
}

/// The dead-letter queue as `quell dlq` reads it.
fn dead_letters(s: &Sandbox) -> Result<Vec<Value>> {
    let out = s.must(&["--sandbox", "--output", "json", "dlq"])?;
    let listed: Value = serde_json::from_slice(&out.stdout)?;
    Ok(listed.as_array().cloned().unwrap_or_default())
}

/// Where the responder reads its declared playbooks: (bucket, key).
async fn declared_document(s: &Sandbox) -> Result<(String, String)> {
    let lambda = aws_sdk_lambda::Client::new(&s.in_account(&s.security(), HOME).await?);
    let function = lambda
        .get_function_configuration()
        .function_name("quell-responder")
        .send()
        .await?;
    let uri = function
        .environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get("QUELL_DECLARED_PLAYBOOKS"))
        .context("the responder has declared playbooks")?;
    let (bucket, key) = uri
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .context("an s3:// URI")?;
    Ok((bucket.to_owned(), key.to_owned()))
}

async fn an_event_that_failed_until_the_dead_letter_queue_is_acted_on_once_redriven_after_the_fix(
    s: Arc<Sandbox>,
) -> Result<()> {
    use crate::declared::{declaring, upgrade_to};
    // Declared playbooks see every event first: while their document cannot be read, every event
    // fails and is tried again, then dead-lettered by the events queue's redrive.
    let config = declaring(&s, "dlq.yaml", "", "guardduty-instance-compromise.yaml")?;
    upgrade_to(&s, &config).await?;
    let (bucket, key) = declared_document(&s).await?;
    let s3 = aws_sdk_s3::Client::new(&s.in_account(&s.security(), HOME).await?);
    s3.delete_object().bucket(&bucket).key(&key).send().await?;

    let account = s.members()[0].clone();
    let ssh = vec![ec2_rule("tcp", 22, "0.0.0.0/0")];
    let group = group_with(&s, &account, HOME, "dead-lettered", &[], ssh).await?;
    cloudtrail_authorize(&s, &account, HOME, &group).await?;
    let started = Instant::now();
    let ours = loop {
        let found: Vec<Value> = dead_letters(&s)?
            .into_iter()
            .filter(|l| {
                l["kind"] == "event" && l["about"].as_str().is_some_and(|a| a.contains(&group))
            })
            .collect();
        if !found.is_empty() {
            break found;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the event never reached the dead-letter queue: {}",
            what_happened(
                &s,
                &[format!(
                    "arn:aws:ec2:{HOME}:{account}:security-group/{group}"
                )]
            )
            .await?
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    ensure!(ours.len() == 1, "once: {ours:?}");
    ensure!(
        open_to_the_world(&s, &account, &group).await?,
        "nothing was done while the document was missing"
    );

    // The fix: an upgrade puts the document back. Then the redrive, and the group is fixed.
    upgrade_to(&s, &config).await?;
    let out = s.must(&["--sandbox", "--output", "json", "dlq", "redrive", "--yes"])?;
    let redriven: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        redriven["sent"]
            .as_array()
            .is_some_and(|sent| sent.iter().any(|id| *id == ours[0]["message_id"])),
        "our event was sent back: {redriven}"
    );
    let started = Instant::now();
    while open_to_the_world(&s, &account, &group).await? {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the redriven event was not acted on: {}",
            what_happened(
                &s,
                &[format!(
                    "arn:aws:ec2:{HOME}:{account}:security-group/{group}"
                )]
            )
            .await?
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        !dead_letters(&s)?
            .iter()
            .any(|l| l["about"].as_str().is_some_and(|a| a.contains(&group))),
        "gone from the dead-letter queue"
    );
    upgrade_to(&s, &s.config_path()).await?;
    Ok(())
}
