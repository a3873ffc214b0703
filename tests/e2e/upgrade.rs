//! Upgrade as converge, status, doctor and uninstall against the sandbox: what moto applies
//! (instances added and removed, stacks updated, everything deleted) is read back from it. What it
//! does not (running, failed and stopped operations) is in the CLI's aws-smithy-mocks tests.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        upgrade_with_nothing_to_change_sends_no_write_call,
        upgrade_without_a_terminal_or_yes_refuses_and_changes_nothing,
        dry_run_shows_the_new_region_and_changes_nothing,
        a_region_added_and_removed_adds_and_removes_exactly_its_instances,
        an_ou_dropped_from_the_targets_loses_its_instances_and_gets_them_back,
        a_new_responder_build_uploads_one_package_and_updates_the_function,
        status_shows_versions_instances_and_the_latest_containments,
        doctor_names_what_is_missing_and_install_refuses_until_it_is_fixed,
        uninstall_leaves_nothing_behind_and_install_works_again,
    ]
}

const ROLES: &str = "quell-member-roles";
const REGIONAL: &str = "quell-member-regional";
const NEW_REGION: &str = "us-west-2";

fn json(out: &std::process::Output) -> Result<Value> {
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// (account, region) of every stack instance, read from CloudFormation.
async fn instances(s: &Sandbox, set: &str) -> Result<BTreeSet<(String, String)>> {
    let cfn = aws_sdk_cloudformation::Client::new(&s.admin(HOME).await);
    let out = cfn
        .list_stack_instances()
        .stack_set_name(set)
        .send()
        .await
        .with_context(|| format!("instances of {set}"))?;
    Ok(out
        .summaries()
        .iter()
        .map(|i| {
            (
                i.account().unwrap_or_default().to_owned(),
                i.region().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

fn with_new_region(text: &str) -> String {
    text.replace("regions: [", &format!("regions: [{NEW_REGION}, "))
}

async fn forwarding_rules(s: &Sandbox, account: &str, region: &str) -> Result<usize> {
    let config = s.in_account(account, region).await?;
    Ok(aws_sdk_eventbridge::Client::new(&config)
        .list_rules()
        .name_prefix("quell-forward")
        .send()
        .await?
        .rules()
        .len())
}

async fn upgrade_with_nothing_to_change_sends_no_write_call(s: Arc<Sandbox>) -> Result<()> {
    // No --yes and no terminal: with nothing to change there is nothing to confirm.
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&s.config_path()),
    ])?;
    let summary = json(&out)?;
    ensure!(
        summary["applied"] == false,
        "nothing applied: {}",
        summary["plan"]
    );
    let calls = &summary["aws_calls"];
    ensure!(calls["writes"] == 0, "no write call: {calls}");
    ensure!(
        calls["total"].as_u64().unwrap_or(0) > 10,
        "the reads were counted: {calls}"
    );
    Ok(())
}

async fn upgrade_without_a_terminal_or_yes_refuses_and_changes_nothing(
    s: Arc<Sandbox>,
) -> Result<()> {
    let config = s.config_variant("new-region.yaml", with_new_region)?;
    let before = instances(&s, REGIONAL).await?;
    let out = s.quell(&["--sandbox", "upgrade", "--config", path(&config)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(3),
        "refused (exit 3), got {:?}: {stderr}",
        out.status.code()
    );
    ensure!(stderr.contains("add --yes"), "says what to do: {stderr}");
    ensure!(
        stderr.contains(NEW_REGION),
        "the plan was shown first: {stderr}"
    );
    ensure!(
        instances(&s, REGIONAL).await? == before,
        "no instance was added"
    );
    Ok(())
}

async fn dry_run_shows_the_new_region_and_changes_nothing(s: Arc<Sandbox>) -> Result<()> {
    let config = s.config_variant("new-region.yaml", with_new_region)?;
    let before = instances(&s, REGIONAL).await?;
    let plan = json(&s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&config),
        "--dry-run",
    ])?)?;
    let regional = plan["stack_sets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == REGIONAL))
        .context("the regional stack set is in the plan")?;
    let adds = regional["instance_changes"]["add"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(!adds.is_empty(), "instances to add: {regional}");
    for add in &adds {
        ensure!(
            add["regions"] == serde_json::json!([NEW_REGION]),
            "only the new Region: {add}"
        );
        ensure!(add["whole_ou"] == true, "whole OUs: {add}");
    }
    ensure!(regional["instance_changes"]["remove"]
        .as_array()
        .is_some_and(Vec::is_empty));
    let roles = plan["stack_sets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == ROLES))
        .context("roles in the plan")?;
    ensure!(
        roles["action"] == "unchanged",
        "IAM roles are global: {roles}"
    );
    ensure!(roles["instance_changes"]["add"]
        .as_array()
        .is_some_and(Vec::is_empty));
    ensure!(
        instances(&s, REGIONAL).await? == before,
        "a dry run adds nothing"
    );
    Ok(())
}

async fn a_region_added_and_removed_adds_and_removes_exactly_its_instances(
    s: Arc<Sandbox>,
) -> Result<()> {
    let config = s.config_variant("new-region.yaml", with_new_region)?;
    let before = instances(&s, REGIONAL).await?;
    let roles_before = instances(&s, ROLES).await?;
    let accounts: BTreeSet<String> = before.iter().map(|(a, _)| a.clone()).collect();
    s.must(&["--sandbox", "upgrade", "--config", path(&config), "--yes"])?;
    let after = instances(&s, REGIONAL).await?;
    let added: BTreeSet<_> = after.difference(&before).cloned().collect();
    let expected: BTreeSet<_> = accounts
        .iter()
        .map(|a| (a.clone(), NEW_REGION.to_owned()))
        .collect();
    ensure!(
        added == expected,
        "added exactly the new Region's instances: {added:?}"
    );
    ensure!(before.is_subset(&after), "nothing else removed");
    ensure!(
        instances(&s, ROLES).await? == roles_before,
        "the roles stack set is untouched"
    );
    let some = accounts.iter().next().context("an account")?;
    ensure!(
        forwarding_rules(&s, some, NEW_REGION).await? == 4,
        "the rules exist in {some} {NEW_REGION}"
    );

    // Back to the original configuration: exactly those instances go, with their resources.
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&s.config_path()),
        "--yes",
    ])?;
    let summary = json(&out)?;
    ensure!(
        instances(&s, REGIONAL).await? == before,
        "back to where it was"
    );
    ensure!(
        forwarding_rules(&s, some, NEW_REGION).await? == 0,
        "the rules are gone from {some} {NEW_REGION}"
    );
    // The instances go, and the security stack follows (the sweep covers the configured Regions).
    let writes = &summary["aws_calls"]["write_operations"];
    ensure!(
        writes.as_object().is_some_and(|w| w.keys().all(|k| k
            == "CloudFormation:DeleteStackInstances"
            || k == "CloudFormation:UpdateStack")),
        "only instances were deleted and the security stack updated: {writes}"
    );
    let security = summary["plan"]["stacks"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "quell-security"))
        .context("the security stack in the plan")?;
    ensure!(
        security["template_from"].is_string(),
        "its template changed with the sweep's Regions: {security}"
    );
    Ok(())
}

async fn an_ou_dropped_from_the_targets_loses_its_instances_and_gets_them_back(
    s: Arc<Sandbox>,
) -> Result<()> {
    let state: Value = serde_json::from_str(&std::fs::read_to_string(
        s.home().join("sandbox/state.json"),
    )?)?;
    let workloads = state["organizational_units"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["path"] == "/Workloads"))
        .and_then(|o| o["id"].as_str())
        .context("the Workloads OU")?
        .to_owned();
    let config = s.config_variant("no-workloads.yaml", |t| {
        t.replace(&format!("{workloads}, "), "")
            .replace(&format!(", {workloads}"), "")
    })?;
    ensure!(
        !std::fs::read_to_string(&config)?.contains(&workloads),
        "the variant drops {workloads}"
    );
    let before = instances(&s, ROLES).await?;
    s.must(&["--sandbox", "upgrade", "--config", path(&config), "--yes"])?;
    let after = instances(&s, ROLES).await?;
    let security = s.security();
    ensure!(
        after.iter().all(|(a, _)| *a == security) && !after.is_empty(),
        "only the security account keeps the roles: {after:?}"
    );
    for member in s.members() {
        let iam = aws_sdk_iam::Client::new(&s.in_account(&member, HOME).await?);
        let role = iam.get_role().role_name("quell-responder").send().await;
        ensure!(role.is_err(), "{member}: quell-responder was removed");
    }
    s.must(&[
        "--sandbox",
        "upgrade",
        "--config",
        path(&s.config_path()),
        "--yes",
    ])?;
    ensure!(
        instances(&s, ROLES).await? == before,
        "every instance is back"
    );
    for member in s.members() {
        let iam = aws_sdk_iam::Client::new(&s.in_account(&member, HOME).await?);
        iam.get_role()
            .role_name("quell-responder")
            .send()
            .await
            .with_context(|| format!("{member}: quell-responder is back"))?;
    }
    Ok(())
}

async fn a_new_responder_build_uploads_one_package_and_updates_the_function(
    s: Arc<Sandbox>,
) -> Result<()> {
    let bootstrap = Sandbox::bin_dir().join("bootstrap");
    let next = s.home().join("bootstrap-next");
    let mut bytes = std::fs::read(&bootstrap)?;
    // Another build: the same program with different bytes (an ELF ignores trailing data).
    bytes.extend_from_slice(b"quell e2e: a newer build");
    std::fs::write(&next, bytes)?;
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&s.config_path()),
        "--bootstrap",
        path(&next),
        "--yes",
    ])?;
    let summary = json(&out)?;
    let key = summary["artifact_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(
        summary["plan"]["upload_artifact"] == true,
        "the new build was uploaded"
    );
    let writes = &summary["aws_calls"]["write_operations"];
    ensure!(
        writes["S3:PutObject"] == 1,
        "one package uploaded: {writes}"
    );
    let security_stack = summary["plan"]["stacks"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "quell-security"))
        .context("security stack in the plan")?;
    ensure!(
        security_stack["action"] == "update"
            && security_stack["parameters"]
                .as_array()
                .is_some_and(|p| p.len() == 1 && p[0]["name"] == "ArtifactKey"),
        "only the artifact key changed: {security_stack}"
    );
    for other in ["quell-artifacts", "quell-management"] {
        let st = summary["plan"]["stacks"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == other))
            .context("stack in the plan")?;
        ensure!(st["action"] == "unchanged", "{other} unchanged: {st}");
    }
    let security = s.in_account(&s.security(), HOME).await?;
    let function = aws_sdk_lambda::Client::new(&security)
        .get_function()
        .function_name("quell-responder")
        .send()
        .await?;
    let env = function
        .configuration()
        .and_then(|c| c.environment())
        .and_then(|e| e.variables())
        .cloned()
        .unwrap_or_default();
    let stack = aws_sdk_cloudformation::Client::new(&security)
        .describe_stacks()
        .stack_name("quell-security")
        .send()
        .await?;
    let deployed_key = stack
        .stacks()
        .first()
        .and_then(|st| {
            st.parameters()
                .iter()
                .find(|p| p.parameter_key() == Some("ArtifactKey"))
        })
        .and_then(|p| p.parameter_value())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        deployed_key == key,
        "the function's stack runs {key}, not {deployed_key} (env {env:?})"
    );

    // The same build again: nothing to upload, nothing to change.
    let again = json(&s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&s.config_path()),
        "--bootstrap",
        path(&next),
    ])?)?;
    ensure!(
        again["aws_calls"]["writes"] == 0,
        "unchanged build, no writes: {}",
        again["aws_calls"]
    );

    // Back to the tested build: already uploaded, so only the stack changes.
    let back = json(&s.must(&[
        "--sandbox",
        "--output",
        "json",
        "upgrade",
        "--config",
        path(&s.config_path()),
        "--yes",
    ])?)?;
    ensure!(
        back["plan"]["upload_artifact"] == false,
        "the original package is still there"
    );
    ensure!(back["aws_calls"]["write_operations"]["S3:PutObject"].is_null());
    Ok(())
}

async fn status_shows_versions_instances_and_the_latest_containments(
    s: Arc<Sandbox>,
) -> Result<()> {
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "status",
        "--config",
        path(&s.config_path()),
    ])?;
    let status = json(&out)?;
    for st in status["stacks"].as_array().context("stacks")? {
        ensure!(
            st["current"] == true && st["status"].is_string(),
            "deployed and current: {st}"
        );
    }
    let build = status["responder_build"].as_str().unwrap_or_default();
    ensure!(
        build.starts_with("responder/")
            && std::path::Path::new(build)
                .extension()
                .is_some_and(|e| e == "zip"),
        "the build: {build}"
    );
    let regional = status["stack_sets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == REGIONAL))
        .context("regional set")?;
    let per_region = regional["regions"].as_object().context("per Region")?;
    ensure!(per_region.len() == 2, "two Regions: {regional}");
    for (region, counts) in per_region {
        ensure!(
            counts["SUCCEEDED"] == 4,
            "{region}: 4 instances SUCCEEDED: {counts}"
        );
    }
    ensure!(regional["failed"].as_array().is_some_and(Vec::is_empty));
    ensure!(status["containments"].is_array());
    let text = s.must(&["--sandbox", "status", "--config", path(&s.config_path())])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        text.contains("Latest containments:") && text.contains(build),
        "{text}"
    );
    Ok(())
}

async fn doctor_names_what_is_missing_and_install_refuses_until_it_is_fixed(
    s: Arc<Sandbox>,
) -> Result<()> {
    let doctor = || {
        s.quell(&[
            "--sandbox",
            "--output",
            "json",
            "doctor",
            "--config",
            path(&s.config_path()),
        ])
    };
    let out = doctor();
    ensure!(
        out.status.code() == Some(0),
        "every place records with AWS Config, as a landing zone makes it: {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    let report = json(&out)?;
    ensure!(report["role"] == "management account", "{}", report["role"]);
    let check = |r: &Value, name: &str| -> Result<Value> {
        r["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["check"] == name))
            .cloned()
            .with_context(|| format!("the {name} check"))
    };
    let actions = check(&report, "Security Hub custom actions")?;
    ensure!(
        actions["severity"] != "blocking",
        "custom actions never stop an install: {actions}"
    );
    let hub = check(&report, "Security Hub administrator")?;
    ensure!(
        hub["severity"] == "warning"
            && hub["fix"]
                .as_str()
                .unwrap_or_default()
                .contains(&s.security()),
        "no Security Hub administrator in the sandbox: a warning naming the fix: {hub}"
    );
    let recording = check(&report, "AWS Config")?;
    ensure!(
        recording["severity"] == "ok"
            && recording["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("all 8"),
        "{recording}"
    );

    // One member stops recording in its home Region: doctor names the place, install refuses.
    let member = s.members().into_iter().next().context("a member")?;
    let cfg = aws_sdk_config::Client::new(&s.in_account(&member, HOME).await?);
    cfg.stop_configuration_recorder()
        .configuration_recorder_name("default")
        .send()
        .await?;
    aws_sdk_securityhub::Client::new(&s.admin(HOME).await)
        .enable_organization_admin_account()
        .admin_account_id(s.security())
        .send()
        .await?;
    let out = doctor();
    ensure!(out.status.code() == Some(1), "install would fail now");
    let report = json(&out)?;
    let recording = check(&report, "AWS Config")?;
    let detail = recording["detail"].as_str().unwrap_or_default();
    ensure!(
        recording["severity"] == "blocking"
            && detail.starts_with("1 of 8")
            && detail.contains(&format!("{member} {HOME}")),
        "{recording}"
    );
    ensure!(
        recording["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("config_rules: false"),
        "{recording}"
    );
    let hub = check(&report, "Security Hub administrator")?;
    ensure!(hub["severity"] == "ok", "now the administrator: {hub}");

    let log = s.home().join("cli-calls.log");
    let logged = std::fs::read_to_string(&log).unwrap_or_default().len();
    let refused = s.quell(&[
        "--sandbox",
        "install",
        "--config",
        path(&s.config_path()),
        "--yes",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(3)
            && stderr.contains("install would fail, so nothing was changed")
            && stderr.contains(&format!("{member} {HOME}"))
            && stderr.contains("start-configuration-recorder")
            && stderr.contains("--skip-checks"),
        "install refuses, naming the place and the fix: {:?}\n{stderr}",
        refused.status.code()
    );
    let calls = std::fs::read_to_string(&log)?;
    let writes: Vec<&str> = calls[logged..]
        .lines()
        .filter(|l| {
            let op = l.split_once(':').map_or(*l, |(_, op)| op);
            !["Describe", "List", "Get", "Head", "AssumeRole"]
                .iter()
                .any(|p| op.starts_with(p))
        })
        .collect();
    ensure!(writes.is_empty(), "the refused install wrote: {writes:?}");

    cfg.start_configuration_recorder()
        .configuration_recorder_name("default")
        .send()
        .await?;
    let out = doctor();
    ensure!(
        out.status.code() == Some(0),
        "fixed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

async fn uninstall_leaves_nothing_behind_and_install_works_again(s: Arc<Sandbox>) -> Result<()> {
    let security_account = s.security();
    let security = s.in_account(&security_account, HOME).await?;
    let refused = s.quell(&["--sandbox", "uninstall", "--config", path(&s.config_path())]);
    ensure!(
        refused.status.code() == Some(3),
        "no terminal and no --yes: refused"
    );
    ensure!(
        !instances(&s, ROLES).await?.is_empty(),
        "a refused uninstall removes nothing"
    );

    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "uninstall",
        "--config",
        path(&s.config_path()),
        "--yes",
        "--release-all",
        "--delete-ledger",
    ])?;
    let report = json(&out)?;

    // Every containment the earlier tests left was released first, and the ledger says so.
    let export = report["ledger_export"]
        .as_str()
        .context("the ledger was exported")?;
    let records: Vec<quell_responder::ledger::Record> =
        serde_json::from_str(&std::fs::read_to_string(s.home().join(export))?)?;
    ensure!(!records.is_empty(), "the export holds the records");
    for released in report["released"].as_array().into_iter().flatten() {
        let arn = released.as_str().unwrap_or_default();
        let newest = records
            .iter()
            .filter(|r| {
                r.entity.as_deref() == Some(arn)
                    && r.status == quell_responder::ledger::Status::Succeeded
            })
            .max_by_key(|r| r.received_at)
            .context("a record")?;
        ensure!(
            newest.action == quell_responder::contract::Action::Release,
            "{arn} released last"
        );
    }

    // Nothing of Quell's is left.
    let cfn = aws_sdk_cloudformation::Client::new(&s.admin(HOME).await);
    for set in [ROLES, REGIONAL] {
        ensure!(
            cfn.describe_stack_set()
                .stack_set_name(set)
                .send()
                .await
                .is_err_or_deleted(),
            "{set} is gone"
        );
    }
    let stacks = aws_sdk_cloudformation::Client::new(&security)
        .list_stacks()
        .send()
        .await?;
    let live: Vec<&str> = stacks
        .stack_summaries()
        .iter()
        .filter(|x| {
            x.stack_status()
                .is_some_and(|st| st.as_str() != "DELETE_COMPLETE")
        })
        .filter_map(|x| x.stack_name())
        .filter(|n| n.starts_with("quell-"))
        .collect();
    ensure!(
        live.is_empty(),
        "no quell stack in the security account: {live:?}"
    );
    for account in std::iter::once(security_account.clone()).chain(s.members()) {
        let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
        ensure!(
            iam.get_role()
                .role_name("quell-responder")
                .send()
                .await
                .is_err(),
            "{account}: role gone"
        );
        ensure!(
            forwarding_rules(&s, &account, HOME).await? == 0,
            "{account}: rules gone"
        );
        let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
        let groups = ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag-key")
                    .values("quell:purpose")
                    .build(),
            )
            .send()
            .await?;
        for g in groups.security_groups() {
            let id = g.group_id().unwrap_or_default();
            let listed = report["left"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["what"].as_str().unwrap_or_default().contains(id));
            ensure!(
                listed,
                "{account}: group {id} is still there, so it must be listed as left"
            );
        }
    }
    let mgmt = aws_sdk_iam::Client::new(&s.admin(HOME).await);
    ensure!(
        mgmt.get_role()
            .role_name("quell-org-reader")
            .send()
            .await
            .is_err(),
        "org reader gone"
    );
    let secrets = aws_sdk_secretsmanager::Client::new(&security);
    ensure!(
        secrets
            .describe_secret()
            .secret_id("quell/external-ids")
            .send()
            .await
            .is_err(),
        "secret gone"
    );
    let dynamodb = aws_sdk_dynamodb::Client::new(&security);
    ensure!(
        dynamodb
            .describe_table()
            .table_name("quell-ledger")
            .send()
            .await
            .is_err(),
        "ledger table gone"
    );
    let buckets = aws_sdk_s3::Client::new(&security)
        .list_buckets()
        .send()
        .await?;
    ensure!(
        !buckets
            .buckets()
            .iter()
            .any(|b| b.name().is_some_and(|n| n.starts_with("quell-artifacts"))),
        "artifact bucket gone"
    );
    let left = report["left"].as_array().cloned().unwrap_or_default();
    let what = |l: &Value| l["what"].as_str().unwrap_or_default().to_owned();
    ensure!(
        left.iter()
            .all(|l| what(l).starts_with("security group") || what(l).starts_with("log group")),
        "only groups in use and the responder's logs (evidence) may stay: {left:?}"
    );
    ensure!(
        left.iter().any(|l| what(l).starts_with("log group")),
        "the kept log group is named: {left:?}"
    );

    // And a fresh install works on the cleaned organization.
    s.must(&[
        "--sandbox",
        "install",
        "--config",
        path(&s.config_path()),
        "--yes",
    ])?;
    ensure!(instances(&s, ROLES).await?.len() == 4, "installed again");
    Ok(())
}

/// A stack set that is gone answers StackSetNotFound, or (in some services) DELETED.
trait GoneStackSet {
    fn is_err_or_deleted(&self) -> bool;
}

impl<E> GoneStackSet
    for Result<aws_sdk_cloudformation::operation::describe_stack_set::DescribeStackSetOutput, E>
{
    fn is_err_or_deleted(&self) -> bool {
        match self {
            Err(_) => true,
            Ok(o) => o
                .stack_set()
                .and_then(|x| x.status())
                .is_some_and(|st| st.as_str() == "DELETED"),
        }
    }
}
