//! The responder under AWS's faults, injected by the proxy between it and the sandbox: throttling,
//! HTTP 500, calls that hang and are cut, connections cut before or after the sandbox made the
//! write. Every containment ends succeeded and read back, or failed with every step it records
//! as done read back too; sending the same request again completes it. While the ledger or the
//! ExternalId secret cannot be reached nothing is done at all, and a request that cannot be
//! recorded fails visibly; while the audit topic cannot be reached, the record says so.

use std::process::Output;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::contain::{user_state, UserState};
use crate::proxy::FaultProxy;
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        under_ten_percent_faults_every_containment_is_read_back_or_recorded_exactly_and_completes_when_sent_again,
        without_the_ledger_or_the_secret_nothing_is_done_and_without_the_audit_topic_the_record_says_so,
    ]
}

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

/// A user of the member account with a key and a console password, as an attacker finds one.
async fn user(s: &Sandbox, account: &str, name: &str) -> Result<String> {
    let iam = aws_sdk_iam::Client::new(&s.in_account(account, HOME).await?);
    iam.create_user().user_name(name).send().await?;
    iam.create_access_key().user_name(name).send().await?;
    iam.create_login_profile()
        .user_name(name)
        .password("Correct-Horse-9")
        .send()
        .await?;
    Ok(format!("arn:aws:iam::{account}:user/{name}"))
}

/// Whether a step's effect is what the account shows.
fn effect_shown(step: &str, state: &UserState) -> bool {
    match step {
        "attach_deny_all" => state.attached.iter().any(|p| p == DENY_ALL),
        "revoke_older_sessions" => state.inline.iter().any(|p| p == "AWSRevokeOlderSessions"),
        "deactivate_access_keys" => state.keys.iter().all(|(_, st)| st == "Inactive"),
        "delete_login_profile" => !state.login,
        _ => true,
    }
}

const STEPS: [&str; 4] = [
    "attach_deny_all",
    "revoke_older_sessions",
    "deactivate_access_keys",
    "delete_login_profile",
];

fn report_of(out: &Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "exit {:?}, no JSON report: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Sends every containment at once, each from its own `quell`.
fn contain_all(s: &Sandbox, requests: &[(String, String)], timeout: &str) -> Result<Vec<Output>> {
    let children = requests
        .iter()
        .map(|(id, arn)| {
            s.command(&[
                "--sandbox",
                "--output",
                "json",
                "contain",
                arn,
                "--reason",
                "fault test",
                "--request-id",
                id,
                "--yes",
                "--timeout",
                timeout,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("quell runs")
        })
        .collect::<Result<Vec<_>>>()?;
    children
        .into_iter()
        .map(|c| c.wait_with_output().context("quell ends"))
        .collect()
}

async fn under_ten_percent_faults_every_containment_is_read_back_or_recorded_exactly_and_completes_when_sent_again(
    s: Arc<Sandbox>,
) -> Result<()> {
    // 10 % of every call, which the SDK's own retries mostly absorb; then half of the member
    // account's IAM calls, which leaves some containments failed part way.
    let phases = [
        (
            "all",
            json!({"rate": 0.1, "stall_ms": 1500, "seed": 1130}),
            8,
        ),
        (
            "iam",
            json!({"rate": 0.5, "services": ["iam"], "stall_ms": 1000, "seed": 7}),
            6,
        ),
    ];
    for (phase, faults, count) in phases {
        contain_under(&s, phase, &faults, count).await?;
    }
    Ok(())
}

async fn contain_under(s: &Sandbox, phase: &str, faults: &Value, count: usize) -> Result<()> {
    let members = s.members();
    let mut requests = Vec::new();
    let mut users = Vec::new();
    for i in 0..count {
        let account = members[i % members.len()].clone();
        let name = format!("fault-{phase}-{i}");
        let arn = user(s, &account, &name).await?;
        requests.push((format!("fault-{phase}-{i}"), arn));
        users.push((account, name));
    }
    let proxy = FaultProxy::route_responder(s)?;
    proxy.set(faults).await?;
    let outs = contain_all(s, &requests, "240")?;
    let proxy_stats = proxy.stats().await?;
    proxy.set(&json!({"rate": 0.0})).await?;

    let mut again = Vec::new();
    for ((request, (account, name)), out) in requests.iter().zip(&users).zip(&outs) {
        let report = report_of(out)
            .with_context(|| format!("{} under faults; the proxy: {proxy_stats}", request.1))?;
        let state = user_state(s, account, name).await?;
        let steps = report["record"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Nothing is recorded as done that the account does not show.
        for step in &steps {
            let step_name = step["name"].as_str().unwrap_or_default();
            if step["status"] == "done" {
                ensure!(
                    effect_shown(step_name, &state),
                    "{} records {step_name} done, but the account shows {:?} {:?} {:?} {}",
                    request.1,
                    state.attached,
                    state.inline,
                    state.keys,
                    state.login
                );
            }
        }
        match report["status"].as_str() {
            Some("succeeded") => {
                for step in STEPS {
                    ensure!(
                        effect_shown(step, &state),
                        "{} succeeded, yet {step} is not in place",
                        request.1
                    );
                }
            }
            Some("failed") => again.push(request.clone()),
            other => bail!(
                "{} ended {other:?} under faults: {report}; the proxy: {proxy_stats}",
                request.1
            ),
        }
    }
    ensure!(
        proxy_stats["injected"]
            .as_object()
            .is_some_and(|i| !i.is_empty()),
        "faults were injected: {proxy_stats}"
    );
    eprintln!(
        "faults on {phase}: {} of {} containments succeeded and read back, {} failed with their done steps read back; the proxy: {proxy_stats}",
        requests.len() - again.len(),
        requests.len(),
        again.len()
    );

    // The same requests again, the faults gone: each completes.
    for (out, (id, arn)) in contain_all(s, &again, "120")?.iter().zip(&again) {
        let report = report_of(out)?;
        ensure!(
            report["status"] == "succeeded",
            "{arn} ({id}) sent again: {report}"
        );
    }
    for (account, name) in &users {
        let state = user_state(s, account, name).await?;
        for step in STEPS {
            ensure!(
                effect_shown(step, &state),
                "{name}: {step} in place at the end"
            );
        }
    }
    Ok(())
}

async fn without_the_ledger_or_the_secret_nothing_is_done_and_without_the_audit_topic_the_record_says_so(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().last().context("a member")?.clone();
    for (i, service) in ["dynamodb", "secretsmanager"].into_iter().enumerate() {
        let name = format!("unreachable-{service}");
        let arn = user(&s, &account, &name).await?;
        // A new proxy restarts the function: nothing it cached before counts.
        let proxy = FaultProxy::route_responder(&s)?;
        proxy
            .set(&json!({"rate": 1.0, "services": [service], "kinds": ["error"]}))
            .await?;
        let id = format!("unreachable-{i}");
        let out = &contain_all(&s, &[(id.clone(), arn.clone())], "15")?[0];
        ensure!(
            out.status.code() == Some(5),
            "{service} unreachable: no outcome in time (exit 5), got {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
        );
        let state = user_state(&s, &account, &name).await?;
        ensure!(
            state.attached.is_empty() && state.inline.is_empty() && state.login,
            "{service} unreachable: nothing was done without a record: {:?} {:?} {}",
            state.attached,
            state.inline,
            state.login
        );
        proxy.set(&json!({"rate": 0.0})).await?;
        // Sent again with the same id once it can be recorded: done, once.
        let out = &contain_all(&s, &[(id.clone(), arn.clone())], "60")?[0];
        let report = report_of(out)?;
        ensure!(report["status"] == "succeeded", "{service} back: {report}");
        drop(proxy);
    }

    let name = "unreachable-audit";
    let arn = user(&s, &account, name).await?;
    let proxy = FaultProxy::route_responder(&s)?;
    proxy
        .set(&json!({"rate": 1.0, "services": ["sns"], "kinds": ["error"]}))
        .await?;
    let out = &contain_all(&s, &[("unreachable-audit".into(), arn.clone())], "60")?[0];
    let report = report_of(out)?;
    ensure!(
        report["status"] == "succeeded",
        "the audit topic is the news, the ledger the evidence: contained all the same: {report}"
    );
    let record = s.ledger("unreachable-audit").await?.context("the record")?;
    ensure!(
        !record.audit_failures.is_empty(),
        "the record names the audit messages that could not be published"
    );
    let state = user_state(&s, &account, name).await?;
    for step in STEPS {
        ensure!(effect_shown(step, &state), "{step} in place");
    }
    Ok(())
}
