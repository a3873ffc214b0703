//! Public buckets and snapshots, approvals, and Security Hub events end to end: events shaped as
//! AWS sends them go through the member's rules, the central bus and the responder's queue to the
//! real `bootstrap`; every fix is read back from S3 or EC2.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use aws_sdk_s3::types::BucketCannedAcl;
use quell_responder::ledger::Status;
use serde_json::{json, Value};

use crate::remediate::{put_event, refused_event, remediation_for, uuid_like};
use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        a_public_bucket_is_made_private_and_its_other_statements_stay,
        a_public_snapshot_loses_only_the_everyone_permission,
        a_security_hub_finding_of_a_public_bucket_is_remediated,
        the_contain_custom_action_contains_the_findings_user,
        approve_mode_waits_for_approve_and_deny_and_refuses_a_second_decision,
        an_unknown_rule_and_a_malformed_finding_are_refused_with_no_write,
    ]
}

async fn s3_in(s: &Sandbox, account: &str) -> Result<aws_sdk_s3::Client> {
    Ok(aws_sdk_s3::Client::new(&s.in_account(account, HOME).await?))
}

/// A bucket readable by everyone through its ACL and a policy, with one statement that is not
/// public (the member account itself).
pub async fn public_bucket(s: &Sandbox, account: &str, prefix: &str) -> Result<String> {
    let s3 = s3_in(s, account).await?;
    let name = format!("{prefix}-{}", uuid_like());
    s3.create_bucket().bucket(&name).send().await?;
    s3.put_bucket_acl()
        .bucket(&name)
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await?;
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Everyone", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": format!("arn:aws:s3:::{name}/*")},
        {"Sid": "OwnAccount", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
         "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{name}/*")}
    ]});
    s3.put_bucket_policy()
        .bucket(&name)
        .policy(policy.to_string())
        .send()
        .await?;
    Ok(name)
}

/// What the bucket looks like now: (public grantee URIs, policy Sids, public access block on).
pub async fn bucket_state(
    s: &Sandbox,
    account: &str,
    name: &str,
) -> Result<(Vec<String>, Vec<String>, bool)> {
    let s3 = s3_in(s, account).await?;
    let acl = s3.get_bucket_acl().bucket(name).send().await?;
    let public: Vec<String> = acl
        .grants()
        .iter()
        .filter_map(|g| g.grantee()?.uri().map(str::to_owned))
        .filter(|u| u.contains("AllUsers") || u.contains("AuthenticatedUsers"))
        .collect();
    let sids = match s3.get_bucket_policy().bucket(name).send().await {
        Ok(p) => {
            let doc: Value = serde_json::from_str(p.policy().unwrap_or("{}"))?;
            doc["Statement"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["Sid"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        }
        Err(_) => Vec::new(),
    };
    let blocked = s3
        .get_public_access_block()
        .bucket(name)
        .send()
        .await
        .ok()
        .and_then(|b| b.public_access_block_configuration().cloned())
        .is_some_and(|c| {
            c.block_public_acls() == Some(true)
                && c.ignore_public_acls() == Some(true)
                && c.block_public_policy() == Some(true)
                && c.restrict_public_buckets() == Some(true)
        });
    Ok((public, sids, blocked))
}

pub async fn cloudtrail_s3(
    s: &Sandbox,
    account: &str,
    event_name: &str,
    bucket: &str,
) -> Result<()> {
    let detail = json!({
        "eventVersion": "1.09", "eventSource": "s3.amazonaws.com", "eventName": event_name,
        "awsRegion": HOME, "recipientAccountId": account, "eventID": uuid_like(),
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/dev/jo")},
        "requestParameters": {"bucketName": bucket, "policy": ""}
    });
    put_event(
        s,
        account,
        HOME,
        "aws.s3",
        "AWS API Call via CloudTrail",
        &detail,
    )
    .await
}

async fn a_public_bucket_is_made_private_and_its_other_statements_stay(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let bucket = public_bucket(&s, &account, "reports").await?;
    let (public, _, _) = bucket_state(&s, &account, &bucket).await?;
    ensure!(!public.is_empty(), "the bucket starts public");
    cloudtrail_s3(&s, &account, "PutBucketPolicy", &bucket).await?;
    let record = remediation_for(&s, &format!("arn:aws:s3:::{bucket}")).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    let (public, sids, blocked) = bucket_state(&s, &account, &bucket).await?;
    ensure!(public.is_empty(), "no public grant is left: {public:?}");
    ensure!(
        sids == ["OwnAccount"],
        "only the public statement went: {sids:?}"
    );
    ensure!(blocked, "the public access block is on");
    let step = record
        .step("make_bucket_private")
        .context("the fix is recorded")?;
    ensure!(
        step.prior["statements"][0]["Sid"] == "Everyone"
            && step.prior["grants"][0]["permission"] == "READ",
        "what was removed is recorded: {}",
        step.prior
    );
    Ok(())
}

async fn a_public_snapshot_loses_only_the_everyone_permission(s: Arc<Sandbox>) -> Result<()> {
    let members = s.members();
    let account = members.first().context("a member")?.clone();
    let partner = members.get(1).context("a second member")?.clone();
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?);
    let snap = public_snapshot(&s, &account, HOME, Some(&partner)).await?;
    let detail = json!({
        "eventSource": "ec2.amazonaws.com", "eventName": "ModifySnapshotAttribute",
        "awsRegion": HOME, "recipientAccountId": account,
        "requestParameters": {"snapshotId": snap, "attributeType": "CREATE_VOLUME_PERMISSION",
            "createVolumePermission": {"add": {"items": [{"group": "all"}]}}}
    });
    put_event(
        &s,
        &account,
        HOME,
        "aws.ec2",
        "AWS API Call via CloudTrail",
        &detail,
    )
    .await?;
    let record = remediation_for(&s, &format!("arn:aws:ec2:{HOME}::snapshot/{snap}")).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    let attr = ec2
        .describe_snapshot_attribute()
        .snapshot_id(&snap)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await?;
    let perms = attr.create_volume_permissions();
    ensure!(
        perms.iter().all(|p| p.group().is_none()),
        "everyone can no longer restore it: {perms:?}"
    );
    ensure!(
        perms.iter().any(|p| p.user_id() == Some(partner.as_str())),
        "the share with {partner} stays: {perms:?}"
    );

    // The Config rule judges the account as a whole: each of its snapshots there is checked.
    let quiet = public_snapshot(&s, &account, HOME, None).await?;
    let rule = "quell-ebs-snapshot-public-restorable";
    let verdict = json!({
        "resourceId": account, "awsRegion": HOME, "awsAccountId": account,
        "configRuleName": rule, "resourceType": "AWS::::Account",
        "newEvaluationResult": {"complianceType": "NON_COMPLIANT"},
        "messageType": "ComplianceChangeNotification"
    });
    put_event(
        &s,
        &account,
        HOME,
        "aws.config",
        "Config Rules Compliance Change",
        &verdict,
    )
    .await?;
    let record = remediation_for(&s, &format!("arn:aws:ec2:{HOME}::snapshot/{quiet}")).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    ensure!(
        record.requester.as_deref() == Some(&format!("AWS Config rule {rule}")[..]),
        "{:?}",
        record.requester
    );
    ensure!(
        !snapshot_is_public(&s, &account, HOME, &quiet).await?,
        "read back private"
    );
    Ok(())
}

/// An encrypted snapshot (so that only the public-snapshot playbook has something to do) that
/// everyone may restore, and `partner` too when given.
pub async fn public_snapshot(
    s: &Sandbox,
    account: &str,
    region: &str,
    partner: Option<&str>,
) -> Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(account, region).await?);
    let volume = ec2
        .create_volume()
        .availability_zone(format!("{region}a"))
        .size(1)
        .encrypted(true)
        .send()
        .await?;
    let snap = ec2
        .create_snapshot()
        .volume_id(volume.volume_id().unwrap_or_default())
        .send()
        .await?
        .snapshot_id()
        .unwrap_or_default()
        .to_owned();
    let shares = [(Some("all"), None), (None, partner)];
    for (groups, users) in shares
        .into_iter()
        .filter(|(g, u)| g.is_some() || u.is_some())
    {
        ec2.modify_snapshot_attribute()
            .snapshot_id(&snap)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .operation_type(aws_sdk_ec2::types::OperationType::Add)
            .set_group_names(groups.map(|g| vec![g.to_owned()]))
            .set_user_ids(users.map(|u| vec![u.to_owned()]))
            .send()
            .await?;
    }
    Ok(snap)
}

/// Whether everyone may restore the snapshot, read from EC2.
pub async fn snapshot_is_public(
    s: &Sandbox,
    account: &str,
    region: &str,
    snap: &str,
) -> Result<bool> {
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(account, region).await?);
    let attr = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snap)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await?;
    Ok(attr
        .create_volume_permissions()
        .iter()
        .any(|p| p.group().is_some()))
}

fn finding(account: &str, resource: &Value, control: &str) -> Value {
    json!({
        "SchemaVersion": "2018-10-08", "Id": format!("arn:aws:securityhub:{HOME}:{account}:finding/{}", uuid_like()),
        "ProductArn": format!("arn:aws:securityhub:{HOME}::product/aws/securityhub"),
        "GeneratorId": "security-control", "AwsAccountId": account, "Region": HOME,
        "Types": ["Software and Configuration Checks"], "Title": "e2e", "Description": "e2e",
        "Severity": {"Label": "HIGH"}, "RecordState": "ACTIVE", "Workflow": {"Status": "NEW"},
        "Compliance": {"Status": "FAILED", "SecurityControlId": control},
        "Resources": [resource]
    })
}

async fn a_security_hub_finding_of_a_public_bucket_is_remediated(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members().into_iter().nth(1).context("a member")?;
    let bucket = public_bucket(&s, &account, "hub").await?;
    let resource = json!({"Type": "AwsS3Bucket", "Id": format!("arn:aws:s3:::{bucket}"), "Region": HOME, "Partition": "aws"});
    let detail = json!({"findings": [finding(&account, &resource, "S3.2")]});
    put_event(
        &s,
        &account,
        HOME,
        "aws.securityhub",
        "Security Hub Findings - Imported",
        &detail,
    )
    .await?;
    let record = remediation_for(&s, &format!("arn:aws:s3:::{bucket}")).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    ensure!(
        record.requester.as_deref() == Some("Security Hub control S3.2"),
        "{:?}",
        record.requester
    );
    let (public, sids, blocked) = bucket_state(&s, &account, &bucket).await?;
    ensure!(
        public.is_empty() && sids == ["OwnAccount"] && blocked,
        "{public:?} {sids:?} {blocked}"
    );
    // The finding update itself is shown against mocks (the sandbox has no BatchUpdateFindings);
    // here: it was attempted and recorded, whatever the endpoint said.
    ensure!(
        record.step("update_finding").is_some(),
        "the finding update is recorded"
    );
    Ok(())
}

/// An analyst choosing the custom action `id` (named `name`) on `finding` in the security
/// account's Security Hub: the event Security Hub sends, put on that account's bus (the sandbox's
/// emulator has no custom actions).
pub async fn choose_custom_action(
    s: &Sandbox,
    id: &str,
    name: &str,
    finding: &Value,
) -> Result<()> {
    let security = s.security();
    let events = aws_sdk_eventbridge::Client::new(&s.in_account(&security, HOME).await?);
    let out = events
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source("aws.securityhub")
                .detail_type("Security Hub Findings - Custom Action")
                .resources(format!(
                    "arn:aws:securityhub:{HOME}:{security}:action/custom/{id}"
                ))
                .detail(
                    json!({"actionName": name, "actionDescription": name, "findings": [finding]})
                        .to_string(),
                )
                .build(),
        )
        .send()
        .await?;
    ensure!(out.failed_entry_count() == 0, "{out:?}");
    Ok(())
}

async fn the_contain_custom_action_contains_the_findings_user(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members().into_iter().last().context("a member")?;
    let iam = aws_sdk_iam::Client::new(&s.in_account(&account, HOME).await?);
    let user = format!("leaked-{}", uuid_like());
    iam.create_user().user_name(&user).send().await?;
    let arn = format!("arn:aws:iam::{account}:user/{user}");
    let resource = json!({"Type": "AwsIamUser", "Id": arn, "Region": HOME, "Partition": "aws"});
    // The analyst chose "Quell: contain" in the security account's Security Hub.
    let security = s.security();
    choose_custom_action(
        &s,
        "QuellContain",
        "Quell: contain",
        &finding(&account, &resource, "IAM.1"),
    )
    .await?;
    let ledger = crate::remediate::ledger_of(&s.in_account(&security, HOME).await?);
    let mut record = None;
    for _ in 0..60 {
        let records = ledger.for_entity(&arn).await?;
        // A repeated delivery of the event is refused as a duplicate; the containment is the
        // record under the request id.
        ensure!(
            records.iter().all(|r| !r.key.starts_with("delivery:")
                || r.rejection.as_ref().is_some_and(|x| x.code == "duplicate")),
            "{records:?}"
        );
        record = records
            .into_iter()
            .find(|r| r.status.is_final() && !r.key.starts_with("delivery:"));
        if record.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let record = record.context("a containment record for the finding's user")?;
    ensure!(record.status == Status::Succeeded, "{record:?}");
    ensure!(
        record
            .requester
            .as_deref()
            .is_some_and(|r| r.contains("Quell: contain")),
        "{:?}",
        record.requester
    );
    let attached = iam
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await?;
    ensure!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_name() == Some("AWSDenyAll")),
        "AWSDenyAll is on the user: {attached:?}"
    );
    Ok(())
}

async fn approve_mode_waits_for_approve_and_deny_and_refuses_a_second_decision(
    s: Arc<Sandbox>,
) -> Result<()> {
    let approve = s.config_variant("approve-buckets.yaml", |t| {
        format!("{t}playbooks:\n  public_bucket:\n    mode: approve\n")
    })?;
    let approve = approve.to_str().unwrap_or_default().to_owned();
    s.must(&["--sandbox", "upgrade", "--yes", "--config", &approve])?;
    let result = approvals(&s).await;
    let original = s.config_path();
    s.must(&[
        "--sandbox",
        "upgrade",
        "--yes",
        "--config",
        original.to_str().unwrap_or_default(),
    ])?;
    s.settings_applied().await;
    result
}

/// A public bucket whose fix the responder holds for approval. Until the function runs with the
/// upgraded settings (Lambda, like the sandbox host, applies them within seconds), the bucket is
/// still fixed at once; such a bucket is set aside and another one made, up to a limit.
async fn held_for_approval(
    s: &Sandbox,
    account: &str,
    prefix: &str,
) -> Result<(String, quell_responder::ledger::Record)> {
    for _ in 0..10 {
        let bucket = public_bucket(s, account, prefix).await?;
        cloudtrail_s3(s, account, "PutBucketAcl", &bucket).await?;
        let record = remediation_for(s, &format!("arn:aws:s3:::{bucket}")).await?;
        match record.status {
            Status::AwaitingApproval => return Ok((bucket, record)),
            Status::Succeeded => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            _ => anyhow::bail!("neither held nor fixed: {record:?}"),
        }
    }
    anyhow::bail!("approve mode never took effect after the upgrade")
}

async fn approvals(s: &Sandbox) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let mut keys = Vec::new();
    let mut buckets = Vec::new();
    for prefix in ["approve", "deny"] {
        let (bucket, record) = held_for_approval(s, &account, prefix).await?;
        ensure!(record.pending.is_some(), "the fix to make is recorded");
        let (public, _, _) = bucket_state(s, &account, &bucket).await?;
        ensure!(!public.is_empty(), "nothing changes before approval");
        let audit = s.audit_for(&record.key, 1).await?;
        ensure!(
            audit.iter().any(|a| a["event"] == "awaiting_approval"),
            "the audit topic is told: {audit:?}"
        );
        keys.push(record.key);
        buckets.push(bucket);
    }
    let status = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "status",
        "--config",
        &s.config_path().to_string_lossy(),
    ])?;
    let status: Value = serde_json::from_slice(&status.stdout)?;
    let waiting: Vec<&str> = status["awaiting_approval"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["key"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        keys.iter().all(|k| waiting.contains(&k.as_str())),
        "quell status lists both: {waiting:?}"
    );
    let approved = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "approve",
        &keys[0],
        "--reason",
        "CHG-7 reviewed",
        "--yes",
    ])?;
    let approved: Value = serde_json::from_slice(&approved.stdout)?;
    ensure!(approved["status"] == "succeeded", "{approved}");
    let (public, sids, blocked) = bucket_state(s, &account, &buckets[0]).await?;
    ensure!(
        public.is_empty() && sids == ["OwnAccount"] && blocked,
        "approved and fixed: {public:?} {sids:?}"
    );

    s.must(&[
        "--sandbox",
        "deny",
        &keys[1],
        "--reason",
        "public website, SEC-9",
        "--yes",
    ])?;
    let (public, _, _) = bucket_state(s, &account, &buckets[1]).await?;
    ensure!(!public.is_empty(), "a denied fix is never made");
    let ledger = crate::remediate::ledger_of(&s.in_account(&s.security(), HOME).await?);
    let denied = ledger.get(&keys[1]).await?.context("the record")?;
    ensure!(denied.status == Status::Denied, "{denied:?}");
    ensure!(
        denied
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("SEC-9")),
        "{:?}",
        denied.reason
    );

    let again = s.quell(&[
        "--sandbox",
        "approve",
        &keys[1],
        "--reason",
        "changed my mind",
        "--yes",
    ]);
    ensure!(!again.status.success(), "a denied fix cannot be approved");
    let said = String::from_utf8_lossy(&again.stdout).to_string()
        + &String::from_utf8_lossy(&again.stderr);
    ensure!(said.contains("not awaiting approval"), "says why: {said}");
    let bogus = s.quell(&["--sandbox", "approve", "sg-123", "--reason", "x", "--yes"]);
    ensure!(!bogus.status.success());
    ensure!(
        String::from_utf8_lossy(&bogus.stderr).contains("is not a remediation or run id"),
        "{}",
        String::from_utf8_lossy(&bogus.stderr)
    );
    Ok(())
}

async fn an_unknown_rule_and_a_malformed_finding_are_refused_with_no_write(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let bucket = public_bucket(&s, &account, "untouched").await?;
    let since = chrono::Utc::now();
    // A rule that is not Quell's, about a real public bucket: its verdict is not acted on.
    let foreign = json!({
        "resourceId": bucket, "awsRegion": HOME, "awsAccountId": account,
        "configRuleName": "someone-elses-rule", "resourceType": "AWS::S3::Bucket",
        "newEvaluationResult": {"complianceType": "NON_COMPLIANT"},
        "messageType": "ComplianceChangeNotification"
    });
    // The member's rule forwards only Quell's rule names, so the foreign one is put on the
    // central bus directly, as a misconfigured forwarder would.
    let security = s.security();
    let central = aws_sdk_eventbridge::Client::new(&s.in_account(&security, HOME).await?);
    let out = central
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name("quell-central")
                .source("aws.config")
                .detail_type("Config Rules Compliance Change")
                .detail(foreign.to_string())
                .build(),
        )
        .send()
        .await?;
    ensure!(out.failed_entry_count() == 0, "{out:?}");
    let refused = refused_event(&s, since, "provenance", "someone-elses-rule").await?;
    ensure!(refused.steps.is_empty(), "nothing was done");
    // A finding without the resources it is about.
    let mut broken = finding(&account, &json!({}), "S3.2");
    broken
        .as_object_mut()
        .context("a finding")?
        .remove("Resources");
    put_event(
        &s,
        &account,
        HOME,
        "aws.securityhub",
        "Security Hub Findings - Imported",
        &json!({"findings": [broken]}),
    )
    .await?;
    let refused = refused_event(&s, since, "malformed_event", "has no Resources").await?;
    ensure!(refused.steps.is_empty(), "nothing was done");
    let (public, _, blocked) = bucket_state(&s, &account, &bucket).await?;
    ensure!(!public.is_empty() && !blocked, "the bucket was not touched");
    Ok(())
}
