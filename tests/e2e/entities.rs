//! Containment of every entity type and its release, read back from the sandbox.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use aws_config::SdkConfig;
use quell_responder::ledger::Status;
use serde_json::Value;

use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        role_containment_denies_its_existing_session_and_release_restores_it,
        function_containment_is_scoped_to_the_function_and_released_exactly,
        instance_is_isolated_in_two_phases_and_released_to_its_groups,
        instance_without_a_profile_is_still_isolated,
        release_of_something_never_contained_changes_nothing,
        entity_that_vanished_is_refused,
        a_second_request_for_an_entity_in_progress_is_told_so,
        user_release_keeps_keys_inactive_unless_asked,
    ]
}

/// Runs a `quell` request command and returns its exit code and JSON report.
pub fn request(s: &Sandbox, args: &[&str]) -> Result<(Option<i32>, Value)> {
    let mut all = vec!["--sandbox", "--output", "json"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--yes", "--timeout", "60"]);
    let out = s.quell(&all);
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "quell {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), report))
}

fn step_names(report: &Value) -> Vec<String> {
    report["record"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

fn seeded(s: &Sandbox, account: &str, kind: &str) -> Result<String> {
    s.state["seeded"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["account"] == account && x["kind"] == kind && x["region"] != "eu-west-1")
        .and_then(|x| x["arn"].as_str().map(str::to_owned))
        .with_context(|| format!("no seeded {kind} in {account}"))
}

async fn role_policies(
    iam: &aws_sdk_iam::Client,
    role: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let attached = iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await?
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect();
    let inline = iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await?
        .policy_names()
        .to_vec();
    Ok((attached, inline))
}

async fn role_containment_denies_its_existing_session_and_release_restores_it(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members()[0].clone();
    let arn = seeded(&s, &account, "iam_role")?;
    let member = s.in_account(&account, HOME).await?;
    let session = aws_sdk_sts::Client::new(&member)
        .assume_role()
        .role_arn(&arn)
        .role_session_name("workload")
        .send()
        .await?;
    let c = session.credentials().context("credentials")?;
    let as_role: SdkConfig = s
        .with_keys(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            HOME,
        )
        .await;

    s.enforce_iam(true)?;
    let before = aws_sdk_s3::Client::new(&as_role)
        .list_buckets()
        .send()
        .await;
    s.enforce_iam(false)?;
    ensure!(
        before.is_ok(),
        "the role's session works before containment: {before:?}"
    );

    let (exit, report) = request(
        &s,
        &["contain", &arn, "--reason", "role credentials exfiltrated"],
    )?;
    ensure!(
        exit == Some(0) && report["status"] == "succeeded",
        "{report}"
    );
    ensure!(
        step_names(&report) == ["attach_deny_all", "revoke_older_sessions"],
        "{report}"
    );
    let iam = aws_sdk_iam::Client::new(&member);
    let (attached, inline) = role_policies(&iam, "app-runtime").await?;
    ensure!(
        attached.iter().any(|p| p.ends_with("/AWSDenyAll")),
        "{attached:?}"
    );
    ensure!(
        inline.contains(&"AWSRevokeOlderSessions".to_owned()),
        "{inline:?}"
    );

    s.enforce_iam(true)?;
    let after = aws_sdk_s3::Client::new(&as_role)
        .list_buckets()
        .send()
        .await;
    s.enforce_iam(false)?;
    ensure!(
        after
            .as_ref()
            .err()
            .is_some_and(|e| format!("{e:?}").contains("AccessDenied")),
        "the existing session is denied after containment: {after:?}"
    );

    let (exit, released) = request(&s, &["release", &arn])?;
    ensure!(
        exit == Some(0) && released["status"] == "succeeded",
        "{released}"
    );
    let (attached, inline) = role_policies(&iam, "app-runtime").await?;
    ensure!(
        attached == ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
        "only the role's own policy is left: {attached:?}"
    );
    ensure!(inline.is_empty(), "{inline:?}");
    let audit = s
        .audit_for(released["request_id"].as_str().unwrap_or_default(), 2)
        .await?;
    ensure!(
        audit.iter().any(|m| m["event"] == "released"),
        "a released audit message"
    );
    Ok(())
}

async fn function_containment_is_scoped_to_the_function_and_released_exactly(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members()[0].clone();
    let arn = seeded(&s, &account, "lambda_function")?;
    let member = s.in_account(&account, HOME).await?;
    let lambda = aws_sdk_lambda::Client::new(&member);
    // A second function on the same role must keep working, and the first has a setting to restore.
    let role = lambda
        .get_function_configuration()
        .function_name("orders-processor")
        .send()
        .await?
        .role()
        .unwrap_or_default()
        .to_owned();
    lambda
        .create_function()
        .function_name("orders-reporter")
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(&role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(tiny_zip()))
                .build(),
        )
        .send()
        .await?;
    lambda
        .put_function_concurrency()
        .function_name("orders-processor")
        .reserved_concurrent_executions(7)
        .send()
        .await?;

    let (exit, report) = request(&s, &["contain", &arn, "--reason", "function leaking data"])?;
    ensure!(
        exit == Some(0) && report["status"] == "succeeded",
        "{report}"
    );
    let deny = &report["record"]["steps"][0];
    ensure!(
        deny["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("lambda:SourceFunctionArn")
            && deny["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("orders-reporter"),
        "the output says which scoping: {deny}"
    );
    ensure!(
        report["record"]["steps"][1]["prior"]["reserved_concurrency"] == 7,
        "old concurrency recorded: {}",
        report["record"]["steps"][1]
    );

    let c = lambda
        .get_function_concurrency()
        .function_name("orders-processor")
        .send()
        .await?;
    ensure!(c.reserved_concurrent_executions() == Some(0));
    let iam = aws_sdk_iam::Client::new(&member);
    let role_name = role.rsplit('/').next().unwrap_or_default();
    let doc = iam
        .get_role_policy()
        .role_name(role_name)
        .policy_name("QuellContainFunction-orders-processor")
        .send()
        .await?;
    let doc = percent_encoding::percent_decode_str(doc.policy_document())
        .decode_utf8_lossy()
        .into_owned();
    ensure!(
        doc.contains("lambda:SourceFunctionArn") && doc.contains(&arn),
        "{doc}"
    );
    let other = lambda
        .get_function_concurrency()
        .function_name("orders-reporter")
        .send()
        .await?;
    ensure!(
        other.reserved_concurrent_executions().is_none(),
        "the other function is untouched"
    );

    let (exit, released) = request(&s, &["release", &arn])?;
    ensure!(exit == Some(0), "{released}");
    let c = lambda
        .get_function_concurrency()
        .function_name("orders-processor")
        .send()
        .await?;
    ensure!(
        c.reserved_concurrent_executions() == Some(7),
        "concurrency restored: {:?}",
        c.reserved_concurrent_executions()
    );
    let (_, inline) = role_policies(&iam, role_name).await?;
    ensure!(inline.is_empty(), "deny removed: {inline:?}");
    Ok(())
}

fn tiny_zip() -> Vec<u8> {
    // An empty zip archive (end-of-central-directory record only): moto stores it, never runs it.
    let mut z = vec![0x50, 0x4b, 0x05, 0x06];
    z.extend_from_slice(&[0; 18]);
    z
}

/// A new instance, in the default VPC, with no instance profile.
pub async fn launch(ec2: &aws_sdk_ec2::Client) -> Result<String> {
    let launched = ec2
        .run_instances()
        .image_id("ami-0abcdef1234567890")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await?;
    Ok(launched
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .context("an instance")?
        .to_owned())
}

/// The tags EC2 has on `resource` now: (key, value) each.
pub async fn tags_of(ec2: &aws_sdk_ec2::Client, resource: &str) -> Result<Vec<(String, String)>> {
    let out = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("resource-id")
                .values(resource)
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// The snapshots Quell took of `instance`'s volumes, by the tag it puts on each.
pub async fn evidence_of(
    ec2: &aws_sdk_ec2::Client,
    instance: &str,
) -> Result<Vec<aws_sdk_ec2::types::Snapshot>> {
    Ok(ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:quell:source-instance")
                .values(instance)
                .build(),
        )
        .send()
        .await?
        .snapshots()
        .to_vec())
}

pub async fn enis(ec2: &aws_sdk_ec2::Client, instance: &str) -> Result<Vec<Vec<String>>> {
    let out = ec2
        .describe_network_interfaces()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(instance)
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .network_interfaces()
        .iter()
        .map(|n| {
            let mut g: Vec<String> = n
                .groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_owned))
                .collect();
            g.sort();
            g
        })
        .collect())
}

async fn instance_is_isolated_in_two_phases_and_released_to_its_groups(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members()[1].clone();
    let arn = seeded(&s, &account, "ec2_instance")?;
    let id = arn.rsplit('/').next().unwrap_or_default().to_owned();
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
    let original = enis(&ec2, &id).await?;
    ensure!(!original.is_empty(), "the instance has interfaces");

    let (exit, report) = request(
        &s,
        &["contain", &arn, "--reason", "crypto miner", "--snapshot"],
    )?;
    ensure!(
        exit == Some(0) && report["status"] == "succeeded",
        "{report}"
    );
    let steps = step_names(&report);
    ensure!(
        steps
            == [
                "deny_instance_credentials",
                "tag_instance",
                "termination_protection",
                "shutdown_behaviour_stop",
                "forensic_snapshots",
                "untracked_groups",
                "schedule_isolation",
                "isolation_groups"
            ],
        "{steps:?}"
    );
    let isolation = report["record"]["steps"][7]["new"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let untracked = report["record"]["steps"][5]["new"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for groups in enis(&ec2, &id).await? {
        ensure!(
            groups == [isolation.clone()],
            "every interface only in the isolation group: {groups:?}"
        );
    }
    let groups = ec2
        .describe_security_groups()
        .group_ids(&isolation)
        .group_ids(&untracked)
        .send()
        .await?;
    for g in groups.security_groups() {
        let purpose = g
            .tags()
            .iter()
            .find(|t| t.key() == Some("quell:purpose"))
            .and_then(|t| t.value())
            .unwrap_or_default();
        if g.group_id() == Some(isolation.as_str()) {
            ensure!(
                purpose == "isolation"
                    && g.ip_permissions().is_empty()
                    && g.ip_permissions_egress().is_empty(),
                "isolation group has no rules: {g:?}"
            );
        } else {
            ensure!(purpose == "untracked", "{g:?}");
            let open = g.ip_permissions().iter().any(|p| {
                p.ip_protocol() == Some("-1")
                    && p.ip_ranges()
                        .iter()
                        .any(|r| r.cidr_ip() == Some("0.0.0.0/0"))
            });
            ensure!(open, "untracked group allows everything: {g:?}");
        }
    }
    ensure!(
        tags_of(&ec2, &id)
            .await?
            .iter()
            .any(|(k, v)| k == "quell:containment-request"
                && Some(v.as_str()) == report["request_id"].as_str()),
        "tagged with the request id"
    );
    ensure!(
        termination_protected(&ec2, &id).await?,
        "termination protection on"
    );
    ensure!(
        !evidence_of(&ec2, &id).await?.is_empty(),
        "forensic snapshots tagged with the instance"
    );
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    let doc = iam
        .get_role_policy()
        .role_name("app-server-role")
        .policy_name(format!("QuellContainInstance-{id}"))
        .send()
        .await?;
    let doc = percent_encoding::percent_decode_str(doc.policy_document())
        .decode_utf8_lossy()
        .into_owned();
    ensure!(
        doc.contains("ec2:SourceInstanceARN") && doc.contains(&arn),
        "{doc}"
    );

    let (exit, released) = request(&s, &["release", &arn])?;
    ensure!(
        exit == Some(0) && released["status"] == "succeeded",
        "{released}"
    );
    ensure!(
        enis(&ec2, &id).await? == original,
        "original groups restored on every interface"
    );
    ensure!(
        !termination_protected(&ec2, &id).await?,
        "termination protection as before"
    );
    let (_, inline) = role_policies(&iam, "app-server-role").await?;
    ensure!(inline.is_empty(), "{inline:?}");
    Ok(())
}

async fn termination_protected(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<bool> {
    let attr = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
        .send()
        .await?;
    Ok(attr
        .disable_api_termination()
        .and_then(aws_sdk_ec2::types::AttributeBooleanValue::value)
        == Some(true))
}

async fn instance_without_a_profile_is_still_isolated(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
    let id = launch(&ec2).await?;
    let arn = format!("arn:aws:ec2:{HOME}:{account}:instance/{id}");
    let (exit, report) = request(&s, &["contain", &arn, "--reason", "no profile"])?;
    ensure!(
        exit == Some(0) && report["status"] == "succeeded",
        "{report}"
    );
    let first = &report["record"]["steps"][0];
    ensure!(
        first["status"] == "skipped"
            && first["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("no instance profile"),
        "{first}"
    );
    Ok(())
}

async fn release_of_something_never_contained_changes_nothing(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    let arn = seeded(&s, &account, "lambda_function")?;
    let (exit, report) = request(&s, &["release", &arn])?;
    ensure!(exit == Some(3), "refused: {report}");
    ensure!(
        report["record"]["rejection"]["code"] == "not_contained",
        "{report}"
    );
    ensure!(
        report["record"]["steps"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{report}"
    );
    let lambda = aws_sdk_lambda::Client::new(&s.in_account(&account, HOME).await?);
    ensure!(lambda
        .get_function_concurrency()
        .function_name("orders-processor")
        .send()
        .await?
        .reserved_concurrent_executions()
        .is_none());
    Ok(())
}

async fn entity_that_vanished_is_refused(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    for (arn, kind) in [
        (
            format!("arn:aws:lambda:{HOME}:{account}:function:deleted-yesterday"),
            "Lambda function",
        ),
        (
            format!("arn:aws:ec2:{HOME}:{account}:instance/i-0123456789abcdef0"),
            "EC2 instance",
        ),
        (format!("arn:aws:iam::{account}:role/gone"), "IAM role"),
    ] {
        // Refused in the CLI, the ledger and the audit record alike, and nothing else touched.
        crate::bad_input::expect_cli_refused(&s, &arn, "entity_not_found", &format!("{kind} "))
            .await?;
    }
    Ok(())
}

async fn a_second_request_for_an_entity_in_progress_is_told_so(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[2].clone();
    let arn = seeded(&s, &account, "iam_role")?;
    // What a request still running elsewhere leaves in the ledger: the entity's lock.
    let security = s.in_account(&s.security(), HOME).await?;
    let ddb = aws_sdk_dynamodb::Client::new(&security);
    let expires = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    ddb.put_item()
        .table_name("quell-ledger")
        .item(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("lock:{arn}")),
        )
        .item(
            "owner",
            aws_sdk_dynamodb::types::AttributeValue::S("running-elsewhere".into()),
        )
        .item(
            "expires_at",
            aws_sdk_dynamodb::types::AttributeValue::S(expires),
        )
        .send()
        .await?;
    let (exit, report) = request(&s, &["contain", &arn, "--reason", "second analyst"])?;
    ddb.delete_item()
        .table_name("quell-ledger")
        .key(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("lock:{arn}")),
        )
        .send()
        .await?;
    ensure!(exit == Some(3), "{report}");
    ensure!(
        report["record"]["rejection"]["code"] == "in_progress",
        "{report}"
    );
    ensure!(
        report["record"]["rejection"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("running-elsewhere"),
        "names the request in progress: {report}"
    );
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    let (attached, _) = role_policies(&iam, "app-runtime").await?;
    ensure!(
        !attached.iter().any(|p| p.ends_with("/AWSDenyAll")),
        "nothing done: {attached:?}"
    );
    Ok(())
}

async fn user_release_keeps_keys_inactive_unless_asked(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[0].clone();
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    for (name, flag) in [
        ("contractor-a", None),
        ("contractor-b", Some("--reactivate-keys")),
    ] {
        iam.create_user().user_name(name).send().await?;
        iam.create_access_key().user_name(name).send().await?;
        let arn = format!("arn:aws:iam::{account}:user/{name}");
        let (exit, report) = request(
            &s,
            &["contain", &arn, "--reason", "contractor laptop stolen"],
        )?;
        ensure!(exit == Some(0), "{report}");
        let mut args = vec!["release", arn.as_str()];
        args.extend(flag);
        let (exit, report) = request(&s, &args)?;
        ensure!(
            exit == Some(0) && report["status"] == Status::Succeeded.as_str(),
            "{report}"
        );
        let keys = report["record"]["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|st| st["name"] == "release_deactivate_access_keys")
            .context("keys step")?
            .clone();
        let state = crate::contain::user_state(&s, &account, name).await?;
        ensure!(
            !state.attached.iter().any(|p| p.ends_with("/AWSDenyAll")) && state.inline.is_empty(),
            "{name}: Quell's policies removed"
        );
        if flag.is_none() {
            ensure!(
                keys["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("stay inactive"),
                "says why: {keys}"
            );
            ensure!(
                state.keys.iter().all(|(_, st)| st == "Inactive"),
                "{:?}",
                state.keys
            );
        } else {
            ensure!(
                state.keys.iter().all(|(_, st)| st == "Active"),
                "{:?}",
                state.keys
            );
        }
    }
    Ok(())
}
