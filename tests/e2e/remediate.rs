//! Auto-remediation end to end: an event shaped as AWS sends it is put on a member account's
//! default bus, forwarded by the member regional StackSet's rule to the central bus, delivered by
//! the remediation rule to the responder's queue and run by the real `bootstrap`. Every fix is read
//! back from EC2.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_sdk_ec2::types::{IpPermission, IpRange, Tag, TagSpecification};
use quell_responder::ledger::{Ledger, Record, Status};
use serde_json::{json, Value};

use crate::support::{Sandbox, HOME, SECOND};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        an_ssh_rule_opened_to_the_world_is_revoked_and_the_good_rules_stay,
        a_config_compliance_change_closes_the_group_it_names,
        an_exempt_group_stays_open_and_the_skip_is_recorded_with_its_reason,
        a_malformed_event_and_a_vanished_group_are_refused_with_no_write,
        the_sweep_finds_what_no_event_reported_and_fixes_it_unless_dry_run,
    ]
}

pub fn ec2_rule(protocol: &str, port: i32, cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol(protocol)
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

pub async fn group_with(
    s: &Sandbox,
    account: &str,
    region: &str,
    name: &str,
    tags: &[(&str, &str)],
    rules: Vec<IpPermission>,
) -> Result<String> {
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(account, region).await?);
    let mut spec =
        TagSpecification::builder().resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let mut create = ec2
        .create_security_group()
        .group_name(format!("{name}-{}", uuid_like()))
        .description("e2e remediation");
    if !tags.is_empty() {
        create = create.tag_specifications(spec.build());
    }
    let id = create
        .send()
        .await?
        .group_id()
        .unwrap_or_default()
        .to_owned();
    ec2.authorize_security_group_ingress()
        .group_id(&id)
        .set_ip_permissions(Some(rules))
        .send()
        .await?;
    Ok(id)
}

pub fn uuid_like() -> String {
    format!(
        "{:x}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

/// (protocol, from port, cidr) of every ingress rule.
pub async fn ingress(
    s: &Sandbox,
    account: &str,
    region: &str,
    group: &str,
) -> Result<Vec<(String, i32, String)>> {
    let ec2 = aws_sdk_ec2::Client::new(&s.in_account(account, region).await?);
    let rules = ec2
        .describe_security_group_rules()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .values(group)
                .build(),
        )
        .send()
        .await?;
    let mut out: Vec<(String, i32, String)> = rules
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() == Some(false))
        .map(|r| {
            (
                r.ip_protocol().unwrap_or_default().to_owned(),
                r.from_port().unwrap_or_default(),
                r.cidr_ipv4()
                    .or(r.cidr_ipv6())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Puts an event on the member's default bus, as the AWS service would.
pub async fn put_event(
    s: &Sandbox,
    account: &str,
    region: &str,
    source: &str,
    detail_type: &str,
    detail: &Value,
) -> Result<()> {
    let events = aws_sdk_eventbridge::Client::new(&s.in_account(account, region).await?);
    let out = events
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source(source)
                .detail_type(detail_type)
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await?;
    ensure!(
        out.failed_entry_count() == 0,
        "the event was accepted: {out:?}"
    );
    Ok(())
}

pub async fn cloudtrail_authorize(
    s: &Sandbox,
    account: &str,
    region: &str,
    group: &str,
) -> Result<()> {
    let detail = json!({
        "eventVersion": "1.09", "eventSource": "ec2.amazonaws.com",
        "eventName": "AuthorizeSecurityGroupIngress", "awsRegion": region,
        "recipientAccountId": account, "eventID": uuid_like(),
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/dev/jo")},
        "requestParameters": {"groupId": group,
            "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
                "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}}
    });
    put_event(
        s,
        account,
        region,
        "aws.ec2",
        "AWS API Call via CloudTrail",
        &detail,
    )
    .await
}

pub fn ledger_of(config: &aws_config::SdkConfig) -> Ledger {
    Ledger::new(aws_sdk_dynamodb::Client::new(config), "quell-ledger")
}

/// The finished remediation record about `arn`, waiting up to 30 s.
pub async fn remediation_for(s: &Sandbox, arn: &str) -> Result<Record> {
    let ledger = ledger_of(&s.in_account(&s.security(), HOME).await?);
    for _ in 0..60 {
        if let Some(r) = ledger
            .for_entity(arn)
            .await?
            .into_iter()
            .find(|r| r.status.is_final() && r.key.starts_with("remediation:"))
        {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no remediation record for {arn} within 30 s")
}

/// The refusal recorded for an event put after `since`, whose message mentions `words`.
/// The refusal of an event with `code` whose message has `words`, waiting up to 30 s.
pub async fn refused_event(
    s: &Sandbox,
    since: chrono::DateTime<chrono::Utc>,
    code: &str,
    words: &str,
) -> Result<Record> {
    let ledger = ledger_of(&s.in_account(&s.security(), HOME).await?);
    for _ in 0..60 {
        let found = ledger.recent(500).await?.into_iter().find(|r| {
            r.received_at >= since
                && r.rejection
                    .as_ref()
                    .is_some_and(|x| x.code == code && x.message.contains(words))
        });
        if let Some(r) = found {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no {code} refusal mentioning {words:?} within 30 s")
}

fn group_arn(account: &str, region: &str, group: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:security-group/{group}")
}

async fn an_ssh_rule_opened_to_the_world_is_revoked_and_the_good_rules_stay(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let group = group_with(
        &s,
        &account,
        HOME,
        "web",
        &[],
        vec![
            ec2_rule("tcp", 22, "0.0.0.0/0"),
            ec2_rule("tcp", 443, "0.0.0.0/0"),
            ec2_rule("tcp", 22, "10.0.0.0/8"),
        ],
    )
    .await?;
    cloudtrail_authorize(&s, &account, HOME, &group).await?;
    let record = remediation_for(&s, &group_arn(&account, HOME, &group)).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    let left = ingress(&s, &account, HOME, &group).await?;
    ensure!(
        left == [
            ("tcp".to_owned(), 22, "10.0.0.0/8".to_owned()),
            ("tcp".to_owned(), 443, "0.0.0.0/0".to_owned())
        ],
        "exactly the open SSH rule went: {left:?}"
    );
    let step = record
        .step("revoke_ingress")
        .context("the revoke is recorded")?;
    ensure!(
        step.prior.to_string().contains("0.0.0.0/0"),
        "the revoked rule is kept in the record: {}",
        step.prior
    );
    ensure!(
        record.requester.as_deref() == Some("CloudTrail AuthorizeSecurityGroupIngress"),
        "{:?}",
        record.requester
    );
    let audit = s.audit_for(&record.key, 1).await?;
    ensure!(
        audit.iter().any(|a| a["event"] == "succeeded"),
        "audited: {audit:?}"
    );
    Ok(())
}

async fn a_config_compliance_change_closes_the_group_it_names(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members().into_iter().nth(1).context("a second member")?;
    let group = group_with(
        &s,
        &account,
        SECOND,
        "db",
        &[],
        vec![ec2_rule("tcp", 5432, "0.0.0.0/0")],
    )
    .await?;
    let detail = json!({
        "resourceId": group, "awsRegion": SECOND, "awsAccountId": account,
        "configRuleName": "quell-restricted-ssh", "resourceType": "AWS::EC2::SecurityGroup",
        "newEvaluationResult": {"complianceType": "NON_COMPLIANT"},
        "messageType": "ComplianceChangeNotification"
    });
    put_event(
        &s,
        &account,
        SECOND,
        "aws.config",
        "Config Rules Compliance Change",
        &detail,
    )
    .await?;
    let record = remediation_for(&s, &group_arn(&account, SECOND, &group)).await?;
    ensure!(record.status == Status::Succeeded, "fixed: {record:?}");
    ensure!(
        ingress(&s, &account, SECOND, &group).await?.is_empty(),
        "PostgreSQL is no longer open to the world"
    );
    Ok(())
}

async fn an_exempt_group_stays_open_and_the_skip_is_recorded_with_its_reason(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let reason = "bastion for the incident drill, until 2026-12-01";
    let exempt = group_with(
        &s,
        &account,
        HOME,
        "bastion",
        &[("quell:exempt", reason)],
        vec![ec2_rule("tcp", 22, "0.0.0.0/0")],
    )
    .await?;
    cloudtrail_authorize(&s, &account, HOME, &exempt).await?;
    let record = remediation_for(&s, &group_arn(&account, HOME, &exempt)).await?;
    ensure!(record.status == Status::Skipped, "skipped: {record:?}");
    ensure!(
        record.reason.as_deref().is_some_and(|r| r.contains(reason)),
        "the reason is recorded: {:?}",
        record.reason
    );
    ensure!(
        ingress(&s, &account, HOME, &exempt).await?.len() == 1,
        "the exempt rule stays"
    );

    // A tag without a reason does not exempt.
    let unexplained = group_with(
        &s,
        &account,
        HOME,
        "nobody-knows",
        &[("quell:exempt", "")],
        vec![ec2_rule("tcp", 3389, "0.0.0.0/0")],
    )
    .await?;
    cloudtrail_authorize(&s, &account, HOME, &unexplained).await?;
    let record = remediation_for(&s, &group_arn(&account, HOME, &unexplained)).await?;
    ensure!(
        record.status == Status::Succeeded,
        "fixed despite the empty tag: {record:?}"
    );
    ensure!(
        record.step("exemption").is_some(),
        "the ignored tag is recorded"
    );
    ensure!(ingress(&s, &account, HOME, &unexplained).await?.is_empty());
    Ok(())
}

async fn a_malformed_event_and_a_vanished_group_are_refused_with_no_write(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().next().context("a member")?;
    let started = chrono::Utc::now();
    let detail = json!({
        "eventSource": "ec2.amazonaws.com", "eventName": "AuthorizeSecurityGroupIngress",
        "awsRegion": HOME, "recipientAccountId": account, "requestParameters": {}
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
    let refused = refused_event(&s, started, "malformed_event", "names no security group").await?;
    ensure!(refused.steps.is_empty(), "nothing was done");

    let gone = group_with(
        &s,
        &account,
        HOME,
        "short-lived",
        &[],
        vec![ec2_rule("tcp", 22, "0.0.0.0/0")],
    )
    .await?;
    aws_sdk_ec2::Client::new(&s.in_account(&account, HOME).await?)
        .delete_security_group()
        .group_id(&gone)
        .send()
        .await?;
    cloudtrail_authorize(&s, &account, HOME, &gone).await?;
    let record = remediation_for(&s, &group_arn(&account, HOME, &gone)).await?;
    ensure!(record.status == Status::Rejected, "{record:?}");
    ensure!(
        record
            .rejection
            .as_ref()
            .is_some_and(|r| r.code == "resource_gone"),
        "{:?}",
        record.rejection
    );
    ensure!(record.steps.is_empty(), "no write");
    Ok(())
}

/// The step of one account and Region, in that place's own record.
fn place<'a>(sweep: &'a Value, account: &str, region: &str) -> Result<&'a Value> {
    let key = format!(
        "{}/{account}/{region}",
        sweep["request_id"].as_str().unwrap_or("?")
    );
    sweep["places"]
        .as_array()
        .and_then(|places| places.iter().find(|p| p["key"] == key.as_str()))
        .and_then(|p| p["steps"].as_array()?.last())
        .with_context(|| format!("the sweep covered {account} {region}: {}", sweep["places"]))
}

fn exposed_outcome<'a>(step: &'a Value, snapshot: &str) -> Option<&'a str> {
    step["new"]["exposed"]
        .as_array()?
        .iter()
        .find(|e| e["resource"] == format!("ebs_snapshot {snapshot}"))
        .and_then(|e| e["outcome"].as_str())
}

fn outcome_of<'a>(step: &'a Value, group: &str) -> Option<&'a str> {
    step["new"]["open_groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == group)
        .and_then(|g| g["outcome"].as_str())
}

async fn the_sweep_finds_what_no_event_reported_and_fixes_it_unless_dry_run(
    s: Arc<Sandbox>,
) -> Result<()> {
    let account = s.members().into_iter().last().context("a member")?;
    let quiet = group_with(
        &s,
        &account,
        SECOND,
        "unnoticed",
        &[],
        vec![
            ec2_rule("tcp", 3389, "0.0.0.0/0"),
            ec2_rule("tcp", 80, "0.0.0.0/0"),
        ],
    )
    .await?;
    let reason = "vendor appliance, ticket SEC-12";
    let exempt = group_with(
        &s,
        &account,
        SECOND,
        "vendor",
        &[("quell:exempt", reason)],
        vec![ec2_rule("tcp", 22, "0.0.0.0/0")],
    )
    .await?;
    let snapshot = crate::storage::public_snapshot(&s, &account, SECOND, None).await?;
    let config = s.config_path();
    let config = config.to_str().unwrap_or_default();

    let dry = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "sweep",
        "--dry-run",
        "--config",
        config,
    ])?;
    let dry: Value = serde_json::from_slice(&dry.stdout)?;
    ensure!(dry["status"] == "succeeded", "{}", dry["status"]);
    let step = place(&dry, &account, SECOND)?;
    ensure!(
        outcome_of(step, &quiet) == Some("dry run"),
        "found, not fixed: {step}"
    );
    ensure!(
        ingress(&s, &account, SECOND, &quiet).await?.len() == 2,
        "a dry run changes nothing"
    );
    ensure!(
        exposed_outcome(step, &snapshot) == Some("dry run"),
        "the public snapshot is found: {step}"
    );
    ensure!(crate::storage::snapshot_is_public(&s, &account, SECOND, &snapshot).await?);

    let swept = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "sweep",
        "--yes",
        "--config",
        config,
    ])?;
    let swept: Value = serde_json::from_slice(&swept.stdout)?;
    let step = place(&swept, &account, SECOND)?;
    ensure!(outcome_of(step, &quiet) == Some("fixed"), "{step}");
    ensure!(
        outcome_of(step, &exempt).is_some_and(|o| o.contains(reason)),
        "the exemption and its reason are recorded: {step}"
    );
    ensure!(
        ingress(&s, &account, SECOND, &quiet).await?
            == [("tcp".to_owned(), 80, "0.0.0.0/0".to_owned())],
        "only RDP went"
    );
    ensure!(
        ingress(&s, &account, SECOND, &exempt).await?.len() == 1,
        "the exempt group stays open"
    );
    ensure!(
        exposed_outcome(step, &snapshot).is_some_and(|o| o.starts_with("succeeded")),
        "the snapshot is fixed under its own record: {step}"
    );
    ensure!(
        !crate::storage::snapshot_is_public(&s, &account, SECOND, &snapshot).await?,
        "read back private"
    );
    let places = swept["places"].as_array().map_or(0, Vec::len);
    ensure!(places == 8, "4 accounts x 2 Regions swept, got {places}");
    // The sweep's own record sums its places up from their tally: what was fixed is counted.
    let summary = swept["record"]["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|st| st["name"] == "places"))
        .context("the sweep's summary step")?;
    ensure!(summary["new"]["done"] == 8, "{summary}");
    ensure!(summary["new"]["failed"] == 0, "{summary}");
    ensure!(
        summary["new"]["open_fixed"].as_u64() >= Some(1),
        "the fixed group is counted: {summary}"
    );
    Ok(())
}
