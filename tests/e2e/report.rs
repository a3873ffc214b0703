//! `quell report` opened in headless Chromium: the sandbox's organization after a containment
//! and a fix, and a saved report of 1,000 accounts x 4 Regions for size and load time.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use libtest_mimic::{Failed, Trial};
use quell_responder::ledger::Status;
use serde_json::{json, Value};

use crate::browser;
use crate::remediate::{ledger_of, remediation_for, uuid_like};
use crate::storage::{cloudtrail_s3, public_bucket};
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![the_report_shows_the_organization_a_containment_and_a_fix_in_a_browser]
}

pub fn offline() -> Vec<Trial> {
    vec![Trial::test(
        "a_report_of_a_thousand_accounts_is_under_5_mb_and_opens_in_under_2_s",
        || large_report().map_err(|e| Failed::from(format!("{e:#}"))),
    )]
}

/// A containment's reason is whatever its requester typed: here, markup that would run if the
/// page ever put text in as HTML.
const HOSTILE_REASON: &str = r#"<img src=x onerror="document.body.dataset.pwned=1">"#;

async fn the_report_shows_the_organization_a_containment_and_a_fix_in_a_browser(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    let name = format!("report-{}", &uuid_like()[..8]);
    iam.create_user().user_name(&name).send().await?;
    let user = format!("arn:aws:iam::{account}:user/{name}");
    s.must(&[
        "--sandbox",
        "contain",
        &user,
        "--reason",
        HOSTILE_REASON,
        "--yes",
    ])?;
    let contained = ledger_of(&s.in_account(&s.security(), HOME).await?)
        .for_entity(&user)
        .await?
        .into_iter()
        .next()
        .context("the containment is in the ledger")?;
    ensure!(contained.status == Status::Succeeded, "{contained:?}");

    let bucket = public_bucket(&s, &account, "glance").await?;
    cloudtrail_s3(&s, &account, "PutBucketPolicy", &bucket).await?;
    let fixed = remediation_for(&s, &format!("arn:aws:s3:::{bucket}")).await?;
    ensure!(fixed.status == Status::Succeeded, "{fixed:?}");

    let out = browser::output_dir()?;
    let html = out.join("report.html");
    s.must(&["--sandbox", "report", "--out", &html.display().to_string()])?;
    let page = browser::open(&html, &out.join("report.png"))?;
    page.drawn_cleanly()?;

    // A row per account of the organization, a cell per Region, in the state Quell is in there.
    let regions: Vec<String> = serde_json::from_value(s.state["regions"].clone())?;
    let organizations = aws_sdk_organizations::Client::new(&s.admin(HOME).await);
    let accounts = organizations.list_accounts().send().await?;
    let mut deployed = s.members();
    deployed.push(s.security());
    for a in accounts.accounts() {
        let id = a.id().unwrap_or_default();
        let row = page
            .element("tr", &format!("data-account=\"{id}\""))
            .with_context(|| format!("no row for account {id}"))?;
        let states: Vec<&str> = row
            .split("data-state=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let expected = if deployed.iter().any(|d| d == id) {
            "current"
        } else if id == s.management() {
            "not_targeted"
        } else {
            // An account another test added: shown, whatever its state.
            states.first().copied().unwrap_or_default()
        };
        ensure!(
            states.len() == regions.len() && states.iter().all(|st| *st == expected),
            "account {id}: cells {states:?}, expected {} x {expected}",
            regions.len()
        );
    }

    // The contained user with every step the ledger recorded, and how to release it.
    let shown = page
        .element("details", &format!("data-entity=\"{user}\""))
        .context("the contained user is not on the page")?;
    ensure!(shown.contains("succeeded"), "{shown}");
    for step in &contained.steps {
        ensure!(
            shown.contains(&format!("data-step=\"{}\"", step.name)),
            "step {} is missing from {shown}",
            step.name
        );
    }
    ensure!(
        shown.contains(&format!("quell release {user}")),
        "no release command in {shown}"
    );
    // The hostile reason is shown as the text it is, and nothing of it ran.
    ensure!(
        shown.contains("&lt;img src=x onerror="),
        "the reason is not shown as text: {shown}"
    );
    ensure!(
        !page.dom.contains("<img") && page.body("data-pwned").is_none(),
        "the requester's text became markup"
    );

    // The footprint counts the accounts Quell is deployed to, in every Region, and is priced.
    let status: Value =
        serde_json::from_slice(&s.must(&["--sandbox", "--output", "json", "status"])?.stdout)?;
    let footprint = &status["cost"]["footprint"];
    ensure!(
        footprint["accounts"] == json!(deployed.len())
            && footprint["regions"] == json!(regions.len())
            && footprint["config_rules_per_place"].as_u64() > Some(0)
            && status["cost"]["total_usd_per_month"].as_f64() > Some(0.0),
        "status's footprint: {}",
        status["cost"]
    );
    let cost = page
        .element("section", "aria-labelledby=\"h-cost\"")
        .context("no cost section")?;
    ensure!(
        cost.contains("a month") && cost.contains("AWS Config rule evaluations"),
        "{cost}"
    );

    // The fixed bucket, with what was done.
    let row = page
        .element("tr", &format!("data-key=\"{}\"", fixed.key))
        .context("the fixed bucket is not among the latest remediations")?;
    let detail = &fixed.steps.last().context("a step")?.detail;
    ensure!(
        row.contains("succeeded") && row.contains(&bucket) && row.contains(detail.as_str()),
        "{row}"
    );
    Ok(())
}

/// The largest page the report makes for 1,000 accounts x 4 Regions and 10,000 ledger records:
/// the newest 1,000 containments with their timelines, 500 remediations listed, counts per
/// playbook and account, a sweep of 4,000 places. Saved as `--output json` would, rendered with
/// `--from`.
fn large_report() -> Result<()> {
    let dir = browser::output_dir()?;
    let saved = dir.join("report-large.json");
    std::fs::write(&saved, serde_json::to_string(&large())?)?;
    let html = dir.join("report-large.html");
    let out = std::process::Command::new(crate::cli::quell_bin())
        .args(["report", "--from"])
        .arg(&saved)
        .arg("--out")
        .arg(&html)
        .output()?;
    ensure!(
        out.status.success(),
        "quell report --from: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::metadata(&html)?.len();
    ensure!(bytes < 5_000_000, "the page is {bytes} bytes");
    let page = browser::open(&html, &dir.join("report-large.png"))?;
    page.drawn_cleanly()?;
    let cells = page.dom.matches("role=\"gridcell\"").count();
    ensure!(cells == 4_000, "{cells} grid cells");
    let load_ms: u64 = page
        .body("data-load-ms")
        .context("the page did not time itself")?
        .parse()?;
    println!("report of 1,000 accounts x 4 Regions: {bytes} bytes, drawn {load_ms} ms after navigation began");
    ensure!(load_ms < 2_000, "the page took {load_ms} ms to draw");
    Ok(())
}

fn large() -> Value {
    let regions = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"];
    let now = "2026-11-30T12:00:00Z";
    let account = |i: usize| format!("{:012}", 100_000_000_000 + i);
    let ous: Vec<Value> = (0..10)
        .map(|o| {
            json!({
                "id": format!("ou-root-{o:08}"), "name": format!("Workloads {o}"), "children": [],
                "accounts": (0..100).map(|i| {
                    let id = account(o * 100 + i);
                    let failed = i == 7;
                    json!({"id": id, "name": format!("team-{}", o * 100 + i), "cells": regions.iter().map(|_| if failed {
                        json!({"state": "failed", "instances": [{"stack_set": "quell-member-regional", "status": "FAILED", "reason": "Role quell-responder already exists"}]})
                    } else {
                        json!({"state": "current", "instances": [{"stack_set": "quell-member-regional", "status": "SUCCEEDED"}]})
                    }).collect::<Vec<_>>()})
                }).collect::<Vec<_>>()
            })
        })
        .collect();
    let step = |n: usize| {
        json!({"name": format!("step_{n}"), "status": "done", "at": now,
            "detail": "attached the deny policy quell-deny-all; 2 access keys made inactive"})
    };
    let containments: Vec<Value> = (0..1_000)
        .map(|n| {
            let a = account(n % 1_000);
            json!({"key": format!("request-{n:05}"), "action": "contain", "status": "succeeded",
                "entity": format!("arn:aws:iam::{a}:user/ci-deployer-{n}"), "kind": "IAM user", "account": a,
                "requester": format!("arn:aws:sts::{a}:assumed-role/analyst/jo"), "reason": "access key leaked",
                "approver": null, "received_at": now, "finished_at": now, "steps": (0..8).map(step).collect::<Vec<_>>(),
                "error": null, "release_command": format!("quell release arn:aws:iam::{a}:user/ci-deployer-{n}"), "released_by": null})
        })
        .collect();
    let mut by_playbook = Vec::new();
    for i in 0..1_000 {
        for p in ["open_security_group", "public_bucket"] {
            by_playbook.push(json!({"playbook": p, "account": account(i), "fixed": 4, "skipped": 1, "failed": 0, "awaiting": 0}));
        }
    }
    let by_day: Vec<Value> = (1..=30)
        .map(|d| json!({"day": format!("2026-11-{d:02}"), "fixed": 200, "skipped": 30, "failed": 2, "awaiting": 1}))
        .collect();
    let latest: Vec<Value> = (0..500)
        .map(|n| {
            let a = account(n);
            json!({"key": format!("remediation:{n}"), "playbook": "open_security_group", "entity": format!("arn:aws:ec2:us-east-1:{a}:security-group/sg-{n:017}"),
                "account": a, "status": "succeeded", "detail": "revoked tcp 22 from 0.0.0.0/0; 2 other ingress rules kept", "received_at": now})
        })
        .collect();
    let mut places = Vec::new();
    for i in 0..1_000 {
        for r in regions {
            places.push(json!({"account": account(i), "region": r, "status": "done", "found": 3, "fixed": 3,
                "detail": "12 groups, 3 open to the world on a sensitive port, 3 fixed; 4 snapshots, 2 buckets, 0 exposed"}));
        }
    }
    let mut awaiting = Vec::new();
    for n in 0..100 {
        let key = format!("remediation:held-{n}");
        awaiting.push(json!({"key": key, "entity": format!("arn:aws:ec2:us-east-1:{}:snapshot/snap-{n:017}", account(n)), "account": account(n),
            "why": "deleting the unencrypted original waits for approval", "since": now, "approve": format!("quell approve {key}"), "deny": format!("quell deny {key}")}));
    }
    json!({
        "generated_at": now, "since": "2026-10-31T12:00:00Z", "name": "quell", "organization_id": "o-large",
        "regions": regions, "responder": {"deployed": "responder/abc.zip", "this_build": "responder/abc.zip"},
        "stack_sets": [{"name": "quell-member-regional", "template": "8892663ec395", "current": true}],
        "tree": [{"id": "r-root", "name": "Root", "accounts": [], "children": ous}],
        "containments": containments, "containments_in_period": 3_000,
        "remediations": {"by_playbook": by_playbook, "by_day": by_day, "awaiting": awaiting, "latest": latest},
        "sweep": {"key": "sweep:large", "status": "succeeded", "received_at": now, "finished_at": now, "places": places},
        "totals": {"fixes": 7_000, "fix_seconds_median": 4.2, "fix_seconds_p95": 11.0, "containments": 3_000, "open_items": 100}
    })
}
