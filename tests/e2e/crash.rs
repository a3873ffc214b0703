//! Crash consistency: the local Lambda host kills the responder at random moments of
//! containments (`quell sandbox crash`), as an out-of-memory kill or a hardware fault ends an
//! invocation on AWS. The platform's retry resumes the work; a claim left by a dead invocation is
//! taken over once its lease has run out, never earlier; no step is applied twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quell_responder::ledger::{Record, Status};
use serde_json::{json, Value};

use crate::contain::user_state;
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![containments_killed_part_way_are_resumed_after_the_lease_and_applied_once]
}

/// A short function timeout, so a dead invocation's claim runs out in 34 s (4 s and the margin).
const TIMEOUT_SECONDS: i64 = 4;
const USERS: usize = 6;
const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn with_timeout(text: &str) -> String {
    text.replace(
        "responder:\n",
        &format!("responder:\n  timeout_seconds: {TIMEOUT_SECONDS}\n  call_timeout_seconds: 1\n"),
    )
}

async fn containments_killed_part_way_are_resumed_after_the_lease_and_applied_once(
    s: Arc<Sandbox>,
) -> Result<()> {
    let short = s.config_variant("short-timeout.yaml", with_timeout)?;
    s.must(&["--sandbox", "upgrade", "--config", path(&short), "--yes"])?;
    s.settings_applied().await;
    let outcome = Box::pin(killed_and_resumed(&s)).await;
    // Whatever happened above, the other tests get their sandbox back.
    s.must(&["sandbox", "crash", "--off"])?;
    let original = s.config_path();
    s.must(&["--sandbox", "upgrade", "--config", path(&original), "--yes"])?;
    s.settings_applied().await;
    outcome
}

async fn killed_and_resumed(s: &Sandbox) -> Result<()> {
    let account = s.members().first().context("a member")?.clone();
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    let mut names = Vec::new();
    for i in 0..USERS {
        let name = format!("crash-{i}");
        iam.create_user().user_name(&name).send().await?;
        iam.create_access_key().user_name(&name).send().await?;
        names.push(name);
    }
    let before = killed(s)?;
    // Every other first try killed at a random moment of its first 150 ms (a warm containment
    // takes about that long here): before the claim, between steps, or after the last one.
    s.must(&[
        "sandbox",
        "crash",
        "--rate",
        "0.6",
        "--within-ms",
        "150",
        "--at-most",
        "3",
        "--seed",
        "7",
    ])?;
    let security = s.in_account(&s.security(), HOME).await?;
    let requester = s.requester().await?;
    let (sqs, url) = s.security_queue("quell-requests-contain").await?;
    let run = crate::remediate::uuid_like();
    let ids: Vec<String> = (0..USERS).map(|i| format!("crash-{run}-{i}")).collect();
    for (id, name) in ids.iter().zip(&names) {
        let body = json!({"version": "1", "request_id": id, "action": "contain",
            "entity": format!("arn:aws:iam::{account}:user/{name}"),
            "reason": "crash test", "requester": requester, "options": {}});
        sqs.send_message()
            .queue_url(&url)
            .message_body(body.to_string())
            .send()
            .await?;
    }

    // A claim outlives a dead invocation by the lease; the retry after it, and a margin.
    let ledger = crate::remediate::ledger_of(&security);
    let lease = Duration::from_secs(u64::try_from(TIMEOUT_SECONDS + 30)?);
    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    for id in &ids {
        loop {
            match ledger.get(id).await? {
                Some(r) if r.status.is_final() => {
                    records.push(r);
                    break;
                }
                other if started.elapsed() > lease * 3 => bail!(
                    "{id} has no outcome after {} s: {:?}; the host: {}",
                    started.elapsed().as_secs(),
                    other.map(|r| (r.status, r.attempts, r.steps.len())),
                    deliveries(s)?
                ),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    let kills = killed(s)? - before;

    let mut taken_over = 0;
    for (record, name) in records.iter().zip(&names) {
        ensure!(
            record.status == Status::Succeeded,
            "{name}: {:?} {:?}",
            record.status,
            record.error
        );
        // Read back: contained, and every step's effect there exactly once.
        let user = user_state(s, &account, name).await?;
        ensure!(
            user.attached.iter().filter(|p| *p == DENY_ALL).count() == 1
                && user.keys.iter().all(|(_, status)| status == "Inactive")
                && !user.login,
            "{name} read back contained: {:?} {:?}",
            user.attached,
            user.keys
        );
        let mut steps: Vec<&str> = record.steps.iter().map(|st| st.name.as_str()).collect();
        let listed = steps.len();
        steps.sort_unstable();
        steps.dedup();
        ensure!(
            steps.len() == listed,
            "{name}: each step recorded once: {:?}",
            record.steps
        );
        if record.attempts > 1 {
            // Taken over from a dead invocation: never before its claim ran out.
            taken_over += 1;
            let finished = record.finished_at.context("finished")?;
            ensure!(
                finished - record.received_at >= chrono::Duration::from_std(lease)?,
                "{name} resumed {} s after it was first claimed, inside the {} s lease",
                (finished - record.received_at).num_seconds(),
                lease.as_secs()
            );
        }
    }
    ensure!(
        kills > 0 && taken_over > 0,
        "the host killed {kills} tries, {taken_over} of them after the claim: {}",
        deliveries(s)?
    );
    eprintln!(
        "{kills} tries killed, {taken_over} containments taken over after the lease, all {USERS} contained once, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The host's kills so far, over every queue.
fn killed(s: &Sandbox) -> Result<u64> {
    let status = deliveries(s)?;
    Ok(status
        .as_object()
        .map(|queues| queues.values().filter_map(|q| q["killed"].as_u64()).sum())
        .unwrap_or_default())
}

fn deliveries(s: &Sandbox) -> Result<Value> {
    let status: Value =
        serde_json::from_slice(&s.must(&["--output", "json", "sandbox", "status"])?.stdout)?;
    Ok(status["deliveries"].clone())
}
