//! The sweep fans out: one message per account x Region on the sweep queue, each place under its
//! own record, counted once into the sweep's tally. A message on that queue is only a pointer:
//! one naming a place its sweep does not list, or a sweep that does not exist, changes nothing,
//! and a place delivered again is not counted twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::proxy::FaultProxy;
use crate::remediate::{ec2_rule, group_with, ingress, ledger_of};
use crate::support::{Sandbox, HOME, SECOND};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_place_message_acts_only_on_a_place_its_sweep_lists_and_a_place_delivered_again_counts_once,
        a_place_that_keeps_failing_is_counted_as_not_swept_on_its_last_try_and_the_others_are_fixed,
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
    let (sqs, url) = s.security_queue("quell-sweep").await?;
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

fn sweep_groups(s: &Sandbox) -> Result<(Option<i32>, Value)> {
    let config = s.config_path();
    let out = s.quell(&[
        "--sandbox",
        "--output",
        "json",
        "sweep",
        "--yes",
        "--only",
        "security_group",
        "--config",
        config.to_str().unwrap_or_default(),
    ]);
    let report = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("quell sweep: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code(), report))
}

async fn a_place_that_keeps_failing_is_counted_as_not_swept_on_its_last_try_and_the_others_are_fixed(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let ssh = vec![ec2_rule("tcp", 22, "0.0.0.0/0")];
    let here = group_with(&s, &account, HOME, "sweep-fault", &[], ssh.clone()).await?;
    let there = group_with(&s, &account, SECOND, "sweep-fault", &[], ssh).await?;
    // EC2 in the second Region fails every call: its places cannot be swept.
    let proxy = FaultProxy::route_responder(&s)?;
    proxy
        .set(&json!({"rate": 1.0, "services": ["ec2"], "regions": [SECOND], "kinds": ["error"]}))
        .await?;
    let (code, report) = sweep_groups(&s)?;
    drop(proxy);
    ensure!(
        code == Some(4) && report["status"] == "failed",
        "{code:?}: {report}"
    );
    let summary = report["record"]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|st| st["name"] == "places"))
        .context("the summary")?;
    let places = report["places"].as_array().cloned().unwrap_or_default();
    let in_second = places
        .iter()
        .filter(|p| p["key"].as_str().is_some_and(|k| k.ends_with(SECOND)))
        .count() as u64;
    ensure!(
        summary["new"]["done"] == places.len() as u64 && summary["new"]["failed"] == in_second,
        "every place counted, the second Region's as not swept: {summary}"
    );
    ensure!(
        summary["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("{account} {SECOND}"))),
        "the summary names the place: {summary}"
    );
    let key = format!(
        "{}/{account}/{SECOND}",
        report["request_id"].as_str().unwrap_or("?")
    );
    let failed = places
        .iter()
        .find(|p| p["key"] == key.as_str())
        .context("the place's record")?;
    ensure!(
        failed["status"] == "failed" && failed["attempts"] == 3,
        "tried three times, then counted: {failed}"
    );
    ensure!(
        ingress(&s, &account, HOME, &here).await?.is_empty(),
        "the place that could be swept was fixed"
    );
    ensure!(
        ingress(&s, &account, SECOND, &there).await?.len() == 1,
        "the place that could not was left as it was"
    );

    // The fault gone, the next sweep fixes what the last one could not.
    let (code, report) = sweep_groups(&s)?;
    ensure!(
        code == Some(0) && report["status"] == "succeeded",
        "{code:?}: {report}"
    );
    ensure!(
        ingress(&s, &account, SECOND, &there).await?.is_empty(),
        "fixed now"
    );
    Ok(())
}
