//! The demo's misconfigurations: a security group opened to the world and a bucket made public in
//! a member account. Each change is announced the way AWS would (a CloudTrail event on the
//! member's default bus), the responder fixes it through the event path, and the demo reads the
//! resource back.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{IpPermission, IpRange};
use aws_sdk_s3::types::BucketCannedAcl;
use quell_responder::ledger::{Ledger, Record};
use serde_json::{json, Value};

/// A misconfiguration the responder dealt with, and what the demo saw before and after.
pub struct Remediated {
    pub entity: String,
    pub record: Record,
    pub observed: Vec<String>,
    /// Read back as fixed, with nothing else changed.
    pub fixed: bool,
}

fn suffix() -> String {
    format!("{:x}", chrono::Utc::now().timestamp_subsec_nanos())
}

fn rule(port: i32, cidr: &str) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
        .build()
}

async fn announce(member: &SdkConfig, source: &str, detail: &Value) -> anyhow::Result<()> {
    let out = aws_sdk_eventbridge::Client::new(member)
        .put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source(source)
                .detail_type("AWS API Call via CloudTrail")
                .detail(detail.to_string())
                .build(),
        )
        .send()
        .await?;
    if out.failed_entry_count() > 0 {
        bail!("the sandbox refused the event: {out:?}");
    }
    Ok(())
}

/// The remediation record about `entity` once it is final.
async fn outcome(ledger: &Ledger, entity: &str) -> anyhow::Result<Record> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let done = ledger
            .for_entity(entity)
            .await?
            .into_iter()
            .find(|r| r.status.is_final() && r.key.starts_with("remediation:"));
        if let Some(r) = done {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no remediation of {entity} within 60 s: is the responder running (`quell sandbox status`)?")
}

async fn ingress(ec2: &aws_sdk_ec2::Client, group: &str) -> anyhow::Result<Vec<String>> {
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
    let mut out: Vec<String> = rules
        .security_group_rules()
        .iter()
        .filter(|r| r.is_egress() == Some(false))
        .map(|r| {
            format!(
                "tcp {} from {}",
                r.from_port().unwrap_or_default(),
                r.cidr_ipv4().unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Someone opens SSH to the world on a web server's group that also has two rules to keep.
pub async fn open_ssh(
    member: &SdkConfig,
    account: &str,
    region: &str,
    ledger: &Ledger,
) -> anyhow::Result<Remediated> {
    let ec2 = aws_sdk_ec2::Client::new(member);
    let group = ec2
        .create_security_group()
        .group_name(format!("web-{}", suffix()))
        .description("web servers")
        .send()
        .await?
        .group_id()
        .context("no group id")?
        .to_owned();
    ec2.authorize_security_group_ingress()
        .group_id(&group)
        .ip_permissions(rule(443, "0.0.0.0/0"))
        .ip_permissions(rule(22, "10.0.0.0/8"))
        .ip_permissions(rule(22, "0.0.0.0/0"))
        .send()
        .await?;
    let before = ingress(&ec2, &group).await?;
    announce(
        member,
        "aws.ec2",
        &json!({
            "eventSource": "ec2.amazonaws.com", "eventName": "AuthorizeSecurityGroupIngress",
            "awsRegion": region, "recipientAccountId": account,
            "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/developer/sam")},
            "requestParameters": {"groupId": group}
        }),
    )
    .await?;
    let entity = format!("arn:aws:ec2:{region}:{account}:security-group/{group}");
    let record = outcome(ledger, &entity).await?;
    let after = ingress(&ec2, &group).await?;
    let fixed = after == ["tcp 22 from 10.0.0.0/8", "tcp 443 from 0.0.0.0/0"];
    Ok(Remediated {
        entity,
        record,
        observed: vec![
            format!("before: {}", before.join(", ")),
            format!("after: {}", after.join(", ")),
        ],
        fixed,
    })
}

/// What makes the bucket public, in words: ACL grants to everyone and the block's settings.
async fn exposure(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let acl = s3.get_bucket_acl().bucket(bucket).send().await?;
    let public = acl
        .grants()
        .iter()
        .filter_map(|g| {
            let uri = g.grantee()?.uri()?;
            uri.ends_with("/AllUsers").then(|| {
                format!(
                    "ACL grants {} to everyone",
                    g.permission().map_or("?", |p| p.as_str())
                )
            })
        })
        .collect();
    let blocked = s3
        .get_public_access_block()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|b| b.public_access_block_configuration().cloned())
        .is_some_and(|c| {
            c.block_public_acls() == Some(true) && c.restrict_public_buckets() == Some(true)
        });
    Ok((public, blocked))
}

/// Someone makes a reports bucket readable by everyone.
pub async fn public_bucket(
    member: &SdkConfig,
    account: &str,
    region: &str,
    ledger: &Ledger,
) -> anyhow::Result<Remediated> {
    let s3 = aws_sdk_s3::Client::new(member);
    let bucket = format!("quarterly-reports-{}", suffix());
    s3.create_bucket().bucket(&bucket).send().await?;
    s3.put_bucket_acl()
        .bucket(&bucket)
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await?;
    let (before, _) = exposure(&s3, &bucket).await?;
    announce(
        member,
        "aws.s3",
        &json!({
            "eventSource": "s3.amazonaws.com", "eventName": "PutBucketAcl",
            "awsRegion": region, "recipientAccountId": account,
            "requestParameters": {"bucketName": bucket, "x-amz-acl": ["public-read"]}
        }),
    )
    .await?;
    let entity = format!("arn:aws:s3:::{bucket}");
    let record = outcome(ledger, &entity).await?;
    let (after, blocked) = exposure(&s3, &bucket).await?;
    Ok(Remediated {
        entity,
        record,
        observed: vec![
            format!("before: {}", before.join(", ")),
            format!(
                "after: {}; public access block {}",
                if after.is_empty() {
                    "no ACL grant to everyone".to_owned()
                } else {
                    after.join(", ")
                },
                if blocked { "on" } else { "OFF" }
            ),
        ],
        fixed: after.is_empty() && blocked && !before.is_empty(),
    })
}
