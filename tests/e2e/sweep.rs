//! The sweep fans out: one message per account x Region on the sweep queue, each place under its
//! own record, counted once into the sweep's tally. A message on that queue is only a pointer:
//! one naming a place its sweep does not list, or a sweep that does not exist, changes nothing,
//! and a place delivered again is not counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::remediate::ledger_of;
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_place_message_acts_only_on_a_place_its_sweep_lists_and_a_place_delivered_again_counts_once,
    ]
}

/// What the local host has delivered from the sweep queue so far.
fn sweep_deliveries(s: &Sandbox) -> Result<(u64, u64)> {
    let status: Value =
        serde_json::from_slice(&s.must(&["--output", "json", "sandbox", "status"])?.stdout)?;
    let q = &status["deliveries"]["quell-sweep"];
    Ok((
        q["delivered"].as_u64().unwrap_or_default(),
        q["in_flight"].as_u64().unwrap_or_default(),
    ))
}

async fn a_place_message_acts_only_on_a_place_its_sweep_lists_and_a_place_delivered_again_counts_once(
    s: Arc<Sandbox>,
) -> Result<()> {
    let config = s.config_path();
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "sweep",
        "--dry-run",
        "--only",
        "security_group",
        "--config",
        config.to_str().unwrap_or_default(),
    ])?;
    let swept: Value = serde_json::from_slice(&out.stdout)?;
    let key = swept["request_id"]
        .as_str()
        .context("a request id")?
        .to_owned();
    let places = swept["places"].as_array().map_or(0, Vec::len) as u64;
    ensure!(places >= 2, "a sweep over several places: {swept}");

    let security = s.in_account(&s.security(), HOME).await?;
    let ledger = ledger_of(&security);
    let before = ledger.tally(&key).await?.context("the sweep's tally")?;
    ensure!(before.done == places, "{before:?}");
    let summary_before = ledger.get(&key).await?.context("the sweep's record")?;

    let member = s.members().into_iter().next().context("a member")?;
    let outsider = "999988887777";
    let messages = [
        // A real place of the finished sweep, delivered again.
        json!({"version": "1", "sweep": key, "account": member, "region": HOME}),
        // An account the sweep never listed.
        json!({"version": "1", "sweep": key, "account": outsider, "region": HOME}),
        // A sweep that does not exist.
        json!({"version": "1", "sweep": "no-such-sweep", "account": member, "region": HOME}),
        // Not a place at all.
        json!({"version": "1", "sweep": key, "account": member, "region": HOME, "dry_run": false}),
    ];
    let (delivered, _) = sweep_deliveries(&s)?;
    let sqs = aws_sdk_sqs::Client::new(&security);
    let url = sqs
        .get_queue_url()
        .queue_name("quell-sweep")
        .send()
        .await?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    for m in &messages {
        sqs.send_message()
            .queue_url(&url)
            .message_body(m.to_string())
            .send()
            .await?;
    }
    let started = Instant::now();
    loop {
        let (now, in_flight) = sweep_deliveries(&s)?;
        if now >= delivered + messages.len() as u64 && in_flight == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the host delivered {} of the {} messages within 60 s",
                now - delivered,
                messages.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let after = ledger.tally(&key).await?.context("the sweep's tally")?;
    ensure!(after == before, "counted once: {before:?} then {after:?}");
    let summary_after = ledger.get(&key).await?.context("the sweep's record")?;
    ensure!(
        summary_after.steps == summary_before.steps
            && summary_after.status == summary_before.status,
        "the summary is written once and stays"
    );
    for (sweep, account) in [(key.as_str(), outsider), ("no-such-sweep", member.as_str())] {
        let place = format!("{sweep}/{account}/{HOME}");
        ensure!(
            ledger.get(&place).await?.is_none(),
            "no record for {place}: nothing was swept there"
        );
    }
    ensure!(
        ledger.tally("no-such-sweep").await?.is_none(),
        "nothing counted for a sweep that does not exist"
    );
    Ok(())
}
