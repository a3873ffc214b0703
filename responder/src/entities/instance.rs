//! Containing an EC2 instance. Its own credentials are denied on its instance-profile role
//! (`ec2:SourceInstanceARN`, so other instances with the same profile keep working). The network is
//! cut in two phases, because changing security groups does not end tracked connections: phase 1
//! gives every interface the VPC's "untracked" group (all traffic allowed by 0.0.0.0/0 and ::/0 rules,
//! which EC2 does not track) and lowers the connection-tracking timeouts; after the configured wait,
//! phase 2 gives every interface the VPC's isolation group, which has no rules, and every flow ends.
//! The instance is also tagged, protected from termination, set to stop on shutdown and, on request,
//! its volumes snapshotted for forensics.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, ConnectionTrackingSpecificationRequest, Filter,
    IpPermission, IpRange, Ipv6Range, ResourceType, Tag, TagSpecification,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_iam::Client as Iam;
use serde_json::{json, Value};

use super::StepOutcome;
use crate::aws_error::{AwsFailure, CallError, Described, Tolerate};
use crate::entity::Instance;

pub const PHASE_ONE: &[&str] = &[
    "deny_instance_credentials",
    "tag_instance",
    "termination_protection",
    "shutdown_behaviour_stop",
    "untracked_groups",
];
pub const SNAPSHOT_STEP: &str = "forensic_snapshots";
pub const PHASE_TWO: &[&str] = &["isolation_groups"];

pub const PURPOSE_TAG: &str = "quell:purpose";

/// What the responder needs to know about the instance, read once per step that needs it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub vpc: String,
    /// Network interface id and its current group ids.
    pub interfaces: Vec<(String, Vec<String>)>,
    pub profile_arn: Option<String>,
    pub volumes: Vec<String>,
}

fn quell_error(call: &str, message: String) -> CallError {
    CallError {
        call: call.into(),
        failure: AwsFailure {
            code: Some("Quell.Instance".into()),
            message,
        },
    }
}

pub async fn facts(ec2: &Ec2, i: &Instance) -> Result<Option<Facts>, CallError> {
    let out = match ec2
        .describe_instances()
        .instance_ids(&i.id)
        .send()
        .await
        .described("ec2:DescribeInstances")
    {
        Ok(o) => o,
        Err(e) if e.is_code("InvalidInstanceID.NotFound") => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(inst) = out
        .reservations()
        .iter()
        .flat_map(aws_sdk_ec2::types::Reservation::instances)
        .next()
    else {
        return Ok(None);
    };
    if inst
        .state()
        .and_then(|s| s.name())
        .is_some_and(|n| n.as_str() == "terminated")
    {
        return Ok(None);
    }
    let vpc = inst.vpc_id().map(str::to_owned).ok_or_else(|| {
        quell_error(
            "ec2:DescribeInstances",
            format!(
                "{} is not in a VPC (EC2-Classic cannot be isolated with security groups)",
                i.id
            ),
        )
    })?;
    let ids: Vec<String> = inst
        .network_interfaces()
        .iter()
        .filter_map(|n| n.network_interface_id().map(str::to_owned))
        .collect();
    // The interfaces themselves are the truth for groups (see the fidelity notes on instances).
    let interfaces = if ids.is_empty() {
        Vec::new()
    } else {
        let enis = ec2
            .describe_network_interfaces()
            .set_network_interface_ids(Some(ids))
            .send()
            .await
            .described("ec2:DescribeNetworkInterfaces")?;
        enis.network_interfaces()
            .iter()
            .map(|n| {
                (
                    n.network_interface_id().unwrap_or_default().to_owned(),
                    n.groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(str::to_owned))
                        .collect(),
                )
            })
            .collect()
    };
    Ok(Some(Facts {
        vpc,
        interfaces,
        profile_arn: inst
            .iam_instance_profile()
            .and_then(|p| p.arn())
            .map(str::to_owned),
        volumes: inst
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
            .collect(),
    }))
}

pub fn instance_arn(i: &Instance) -> String {
    format!(
        "arn:{}:ec2:{}:{}:instance/{}",
        i.partition, i.region, i.account, i.id
    )
}

pub fn policy_name(i: &Instance) -> String {
    format!("QuellContainInstance-{}", i.id)
}

pub struct Ctx<'a> {
    pub ec2: &'a Ec2,
    pub iam: &'a Iam,
    pub instance: &'a Instance,
    pub request_id: &'a str,
    pub name_prefix: &'a str,
    /// Quell's groups in the instance's Region, when they were read beside the instance
    /// ([`quell_groups`]): the first group a step needs is then found without another round trip.
    pub known_groups: Option<&'a [aws_sdk_ec2::types::SecurityGroup]>,
}

pub async fn run(
    c: &Ctx<'_>,
    facts: &Facts,
    step: &str,
    protected: &dyn Fn(&str) -> Option<String>,
) -> Result<StepOutcome, CallError> {
    match step {
        "deny_instance_credentials" => deny_credentials(c, facts, protected).await,
        "tag_instance" => tag(c).await,
        "termination_protection" => termination_protection(c).await,
        "shutdown_behaviour_stop" => shutdown_stop(c).await,
        "forensic_snapshots" => snapshots(c, facts).await,
        "untracked_groups" => swap_groups(c, facts, Purpose::Untracked).await,
        "isolation_groups" => swap_groups(c, facts, Purpose::Isolation).await,
        "patch_egress_groups" => swap_groups(c, facts, Purpose::PatchEgress).await,
        other => unreachable!("no instance step {other}"),
    }
}

/// The ARNs of the roles in an instance profile, as IAM has them.
async fn profile_roles(iam: &Iam, profile_arn: &str) -> Result<Vec<String>, CallError> {
    let name = profile_arn.rsplit('/').next().unwrap_or_default();
    let out = iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .described("iam:GetInstanceProfile")?;
    Ok(out
        .instance_profile()
        .map(|p| p.roles().iter().map(|r| r.arn().to_owned()).collect())
        .unwrap_or_default())
}

async fn deny_credentials(
    c: &Ctx<'_>,
    facts: &Facts,
    protected: &dyn Fn(&str) -> Option<String>,
) -> Result<StepOutcome, CallError> {
    let Some(profile) = &facts.profile_arn else {
        return Ok(StepOutcome::skipped(
            "the instance has no instance profile, so no role credentials to deny",
            json!({ "instance_profile": null }),
        ));
    };
    let arns = profile_roles(c.iam, profile).await?;
    // Matched on the roles as IAM has them, before any of them is written to.
    if let Some((arn, pattern)) = arns.iter().find_map(|a| protected(a).map(|p| (a, p))) {
        return Err(CallError {
            call: "deny_instance_credentials".into(),
            failure: AwsFailure {
                code: Some("Quell.ProtectedRole".into()),
                message: format!("profile role {arn} is protected ({pattern}): the profile's roles are left alone; the instance is still isolated by its groups"),
            },
        });
    }
    let roles: Vec<String> = arns
        .iter()
        .map(|arn| arn.rsplit('/').next().unwrap_or(arn).to_owned())
        .collect();
    if roles.is_empty() {
        return Ok(StepOutcome::skipped(
            format!("instance profile {profile} has no role"),
            json!({ "instance_profile": profile, "roles": [] }),
        ));
    }
    let name = policy_name(c.instance);
    let document = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "QuellDenyInstanceCredentials",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"ArnEquals": {"ec2:SourceInstanceARN": instance_arn(c.instance)}}
        }]
    })
    .to_string();
    let mut priors = Vec::new();
    for role in &roles {
        let prior = super::iam::role_inline_policy(c.iam, role, &name).await?;
        c.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(&name)
            .policy_document(&document)
            .send()
            .await
            .described("iam:PutRolePolicy")?;
        priors.push(json!({ "role": role, "document": prior }));
    }
    Ok(StepOutcome::done(
        format!("denied this instance's credentials on {} (ec2:SourceInstanceARN; other instances using the profile keep working)", roles.join(", ")),
        json!({ "instance_profile": profile, "roles": priors, "inline_policy": name }),
        json!({ "roles": roles, "inline_policy": name, "document": document }),
    ))
}

async fn tag(c: &Ctx<'_>) -> Result<StepOutcome, CallError> {
    c.ec2
        .create_tags()
        .resources(&c.instance.id)
        .tags(
            Tag::builder()
                .key("quell:containment-request")
                .value(c.request_id)
                .build(),
        )
        .tags(
            Tag::builder()
                .key("quell:contained-at")
                .value(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .build(),
        )
        .send()
        .await
        .described("ec2:CreateTags")?;
    Ok(StepOutcome::done(
        format!("tagged quell:containment-request={}", c.request_id),
        Value::Null,
        json!({ "tags": ["quell:containment-request", "quell:contained-at"] }),
    ))
}

async fn attribute(
    c: &Ctx<'_>,
    name: aws_sdk_ec2::types::InstanceAttributeName,
) -> Result<
    aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeOutput,
    CallError,
> {
    c.ec2
        .describe_instance_attribute()
        .instance_id(&c.instance.id)
        .attribute(name)
        .send()
        .await
        .described("ec2:DescribeInstanceAttribute")
}

async fn termination_protection(c: &Ctx<'_>) -> Result<StepOutcome, CallError> {
    let a = attribute(
        c,
        aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination,
    )
    .await?;
    let prior = a
        .disable_api_termination()
        .and_then(AttributeBooleanValue::value)
        .unwrap_or(false);
    if prior {
        return Ok(StepOutcome::skipped(
            "termination protection was already on",
            json!({ "disable_api_termination": true }),
        ));
    }
    c.ec2
        .modify_instance_attribute()
        .instance_id(&c.instance.id)
        .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .described("ec2:ModifyInstanceAttribute")?;
    Ok(StepOutcome::done(
        "termination protection on: the evidence cannot be thrown away by an API call",
        json!({ "disable_api_termination": prior }),
        json!({ "disable_api_termination": true }),
    ))
}

async fn shutdown_stop(c: &Ctx<'_>) -> Result<StepOutcome, CallError> {
    let a = attribute(
        c,
        aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior,
    )
    .await?;
    let prior = a
        .instance_initiated_shutdown_behavior()
        .and_then(AttributeValue::value)
        .unwrap_or("stop")
        .to_owned();
    if prior == "stop" {
        return Ok(StepOutcome::skipped(
            "shutdown from inside already stops the instance",
            json!({ "shutdown_behavior": prior }),
        ));
    }
    c.ec2
        .modify_instance_attribute()
        .instance_id(&c.instance.id)
        .instance_initiated_shutdown_behavior(AttributeValue::builder().value("stop").build())
        .send()
        .await
        .described("ec2:ModifyInstanceAttribute")?;
    Ok(StepOutcome::done(
        "a shutdown from inside now stops the instance instead of terminating it",
        json!({ "shutdown_behavior": prior }),
        json!({ "shutdown_behavior": "stop" }),
    ))
}

async fn snapshots(c: &Ctx<'_>, facts: &Facts) -> Result<StepOutcome, CallError> {
    let mut taken = Vec::new();
    for volume in &facts.volumes {
        let snap = c
            .ec2
            .create_snapshot()
            .volume_id(volume)
            .description(format!(
                "Quell forensic snapshot of {volume} from {} (request {})",
                c.instance.id, c.request_id
            ))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .tags(
                        Tag::builder()
                            .key("quell:containment-request")
                            .value(c.request_id)
                            .build(),
                    )
                    .tags(
                        Tag::builder()
                            .key("quell:source-instance")
                            .value(&c.instance.id)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .described("ec2:CreateSnapshot")?;
        taken.push(json!({ "volume": volume, "snapshot": snap.snapshot_id() }));
    }
    if taken.is_empty() {
        return Ok(StepOutcome::skipped(
            "the instance has no EBS volumes to snapshot",
            json!({ "volumes": [] }),
        ));
    }
    Ok(StepOutcome::done(
        format!("{} forensic snapshot(s) started", taken.len()),
        json!({ "volumes": facts.volumes }),
        json!({ "snapshots": taken }),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Untracked,
    Isolation,
    /// HTTPS out and nothing else: SSM and the package repositories stay reachable, so a
    /// quarantined instance can still be patched.
    PatchEgress,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Untracked => "untracked",
            Purpose::Isolation => "isolation",
            Purpose::PatchEgress => "patch-egress",
        }
    }
}

/// Every rule of one direction, flattened: (protocol, ports, source). Rules that EC2 merges into one
/// permission or keeps apart compare the same.
fn flat_rules(perms: &[aws_sdk_ec2::types::IpPermission]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = p.ip_protocol().unwrap_or_default().to_owned();
        let ports = format!("{:?}-{:?}", p.from_port(), p.to_port());
        let ports = if proto == "-1" { String::new() } else { ports };
        let mut add = |source: String| {
            out.insert((proto.clone(), ports.clone(), source));
        };
        for r in p.ip_ranges() {
            add(r.cidr_ip().unwrap_or_default().to_owned());
        }
        for r in p.ipv6_ranges() {
            add(r.cidr_ipv6().unwrap_or_default().to_owned());
        }
        for g in p.user_id_group_pairs() {
            add(format!("group {}", g.group_id().unwrap_or_default()));
        }
        for l in p.prefix_list_ids() {
            add(format!(
                "prefix list {}",
                l.prefix_list_id().unwrap_or_default()
            ));
        }
    }
    out
}

/// Whether `g` is a Quell group for `purpose` in exactly the shape Quell made it: its name, its
/// tag, and its rules (isolation: none at all; untracked: all traffic from and to 0.0.0.0/0 and
/// ::/0, nothing else). Anyone in the account can tag a group, so the tag alone proves nothing; a
/// group that is not in shape is never used. `Err` says what is wrong with it.
pub fn verify_group(
    g: &aws_sdk_ec2::types::SecurityGroup,
    purpose: Purpose,
    prefix: &str,
) -> Result<(), String> {
    let base = format!("{prefix}-{}", purpose.tag());
    let name = g.group_name().unwrap_or_default();
    if name != base && !name.starts_with(&format!("{base}-")) {
        return Err(format!("its name {name:?} is not {base:?}"));
    }
    let tagged = g
        .tags()
        .iter()
        .any(|t| t.key() == Some(PURPOSE_TAG) && t.value() == Some(purpose.tag()));
    if !tagged {
        return Err(format!("it is not tagged {PURPOSE_TAG}={}", purpose.tag()));
    }
    let expected: BTreeSet<(String, String, String)> = match purpose {
        Purpose::Isolation | Purpose::PatchEgress => BTreeSet::new(),
        Purpose::Untracked => ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|c| ("-1".to_owned(), String::new(), (*c).to_owned()))
            .collect(),
    };
    let expected_out: BTreeSet<(String, String, String)> = match purpose {
        Purpose::PatchEgress => ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|c| {
                (
                    "tcp".to_owned(),
                    format!("{:?}-{:?}", Some(443), Some(443)),
                    (*c).to_owned(),
                )
            })
            .collect(),
        _ => expected.clone(),
    };
    for (direction, perms, expected) in [
        ("inbound", g.ip_permissions(), &expected),
        ("outbound", g.ip_permissions_egress(), &expected_out),
    ] {
        let found = flat_rules(perms);
        if found != *expected {
            return Err(format!(
                "its {direction} rules are {found:?}, not the {} group's {expected:?}",
                purpose.tag()
            ));
        }
    }
    Ok(())
}

/// The VPC's group for `purpose`, and what was found and not used.
#[derive(Debug, Clone)]
pub struct VpcGroup {
    pub id: String,
    pub created: bool,
    /// Groups that carried Quell's tag but were not Quell's in shape, with what is wrong.
    pub refused: Vec<String>,
}

/// Every group of the Region that carries Quell's purpose tag, whatever its VPC: read beside the
/// instance, before its VPC is known. What is in it is verified like any group ([`vpc_group`]).
pub async fn quell_groups(ec2: &Ec2) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, CallError> {
    let out = ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(PURPOSE_TAG)
                .build(),
        )
        .send()
        .await
        .described("ec2:DescribeSecurityGroups")?;
    Ok(out.security_groups().to_vec())
}

/// The first of `groups` in `vpc` that is Quell's group for `purpose`, and why the others
/// carrying its tag are not.
fn first_verified<'g>(
    groups: impl Iterator<Item = &'g aws_sdk_ec2::types::SecurityGroup>,
    vpc: &str,
    purpose: Purpose,
    prefix: &str,
) -> (Option<String>, Vec<String>) {
    let mut refused = Vec::new();
    let tagged = groups.filter(|g| {
        g.vpc_id() == Some(vpc)
            && g.tags()
                .iter()
                .any(|t| t.key() == Some(PURPOSE_TAG) && t.value() == Some(purpose.tag()))
    });
    for g in tagged {
        let id = g.group_id().unwrap_or_default();
        match verify_group(g, purpose, prefix) {
            Ok(()) => return (Some(id.to_owned()), refused),
            Err(why) => refused.push(format!("{id}: {why}")),
        }
    }
    (None, refused)
}

/// The VPC's group for `purpose`: an existing one only when [`verify_group`] accepts it, else a
/// fresh one (under another name when the usual one is taken). `known`: the Region's groups as
/// [`quell_groups`] read them a moment ago, looked at before asking EC2 again.
pub async fn vpc_group(
    ec2: &Ec2,
    vpc: &str,
    purpose: Purpose,
    prefix: &str,
    known: Option<&[aws_sdk_ec2::types::SecurityGroup]>,
) -> Result<VpcGroup, CallError> {
    let find = || async {
        let out = ec2
            .describe_security_groups()
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .filters(
                Filter::builder()
                    .name(format!("tag:{PURPOSE_TAG}"))
                    .values(purpose.tag())
                    .build(),
            )
            .send()
            .await
            .described("ec2:DescribeSecurityGroups")?;
        Ok::<_, CallError>(first_verified(
            out.security_groups().iter(),
            vpc,
            purpose,
            prefix,
        ))
    };
    let (existing, mut refused) =
        match known.map(|k| first_verified(k.iter(), vpc, purpose, prefix)) {
            Some((Some(id), refused)) => (Some(id), refused),
            // Not among them (made since, or never): EC2 is asked.
            _ => find().await?,
        };
    if let Some(id) = existing {
        return Ok(VpcGroup {
            id,
            created: false,
            refused,
        });
    }
    let base = format!("{prefix}-{}", purpose.tag());
    let id = match create_group(ec2, vpc, purpose, &base).await {
        Ok(id) => id,
        Err(e) if e.is_code("InvalidGroup.Duplicate") => {
            // Another containment made it a moment ago, or someone holds the name.
            let (again, seen) = find().await?;
            if let Some(id) = again {
                return Ok(VpcGroup {
                    id,
                    created: false,
                    refused: seen,
                });
            }
            refused = seen;
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
            create_group(ec2, vpc, purpose, &format!("{base}-{suffix}")).await?
        }
        Err(e) => return Err(e),
    };
    Ok(VpcGroup {
        id,
        created: true,
        refused,
    })
}

async fn create_group(
    ec2: &Ec2,
    vpc: &str,
    purpose: Purpose,
    name: &str,
) -> Result<String, CallError> {
    let description = match purpose {
        Purpose::Untracked => "Quell containment phase 1: all traffic by 0.0.0.0/0 and ::/0 rules, so EC2 stops tracking flows",
        Purpose::Isolation => "Quell containment phase 2: no rules, no traffic",
        Purpose::PatchEgress => "Quell quarantine for patching: HTTPS out, nothing else",
    };
    let created = ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(Tag::builder().key(PURPOSE_TAG).value(purpose.tag()).build())
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await
        .described("ec2:CreateSecurityGroup")?;
    let id = created.group_id().unwrap_or_default().to_owned();
    let everything = || {
        IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build()
    };
    match purpose {
        Purpose::Untracked => {
            ec2.authorize_security_group_ingress()
                .group_id(&id)
                .ip_permissions(everything())
                .send()
                .await
                .described("ec2:AuthorizeSecurityGroupIngress")?;
            let ipv6_out = IpPermission::builder()
                .ip_protocol("-1")
                .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
                .build();
            ec2.authorize_security_group_egress()
                .group_id(&id)
                .ip_permissions(ipv6_out)
                .send()
                .await
                .described("ec2:AuthorizeSecurityGroupEgress")
                .tolerating("InvalidPermission.Duplicate")?;
        }
        Purpose::Isolation | Purpose::PatchEgress => {
            let default_out = IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build();
            ec2.revoke_security_group_egress()
                .group_id(&id)
                .ip_permissions(default_out)
                .send()
                .await
                .described("ec2:RevokeSecurityGroupEgress")
                .tolerating("InvalidPermission.NotFound")?;
            if purpose == Purpose::PatchEgress {
                let https = IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(443)
                    .to_port(443)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
                    .build();
                ec2.authorize_security_group_egress()
                    .group_id(&id)
                    .ip_permissions(https)
                    .send()
                    .await
                    .described("ec2:AuthorizeSecurityGroupEgress")
                    .tolerating("InvalidPermission.Duplicate")?;
            }
        }
    }
    Ok(id)
}

async fn swap_groups(
    c: &Ctx<'_>,
    facts: &Facts,
    purpose: Purpose,
) -> Result<StepOutcome, CallError> {
    if facts.interfaces.is_empty() {
        return Err(quell_error(
            "ec2:DescribeInstances",
            format!("{} has no network interface to isolate", c.instance.id),
        ));
    }
    let VpcGroup {
        id: group,
        created,
        refused,
    } = vpc_group(c.ec2, &facts.vpc, purpose, c.name_prefix, c.known_groups).await?;
    let single = facts.interfaces.len() == 1;
    let mut moved: Vec<&(String, Vec<String>)> = Vec::new();
    for iface in &facts.interfaces {
        if let Err(e) = set_groups(c, &iface.0, std::slice::from_ref(&group), single).await {
            // Phase 1 must never leave an interface in the all-open group without isolation to
            // follow: what moved goes back. (Phase 2's leftovers are the engine's, which knows
            // the groups from before phase 1.)
            if purpose == Purpose::Untracked {
                return Err(move_back(c, &moved, single, e).await);
            }
            return Err(e);
        }
        moved.push(iface);
    }
    let mut detail = format!(
        "{} interface(s) now in the {} group {group}{}",
        facts.interfaces.len(),
        purpose.tag(),
        if created {
            " (created for this VPC)"
        } else {
            ""
        }
    );
    if !refused.is_empty() {
        let _ = write!(
            detail,
            "; not used, as not Quell's in shape: {}",
            refused.join("; ")
        );
    }
    if purpose == Purpose::Untracked {
        // Shorter timeouts end what is still tracked sooner; a best effort, the groups are the
        // control: failing here would leave the interfaces in the open group unscheduled.
        let mut not_lowered = Vec::new();
        for (eni, _) in &facts.interfaces {
            let spec = ConnectionTrackingSpecificationRequest::builder()
                .tcp_established_timeout(60)
                .udp_stream_timeout(60)
                .udp_timeout(30)
                .build();
            if let Err(e) = c
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(eni)
                .connection_tracking_specification(spec)
                .send()
                .await
                .described("ec2:ModifyNetworkInterfaceAttribute")
            {
                not_lowered.push(format!("{eni}: {e}"));
            }
        }
        if not_lowered.is_empty() {
            detail.push_str("; connection-tracking timeouts lowered to 60 s TCP, 60/30 s UDP");
        } else {
            let _ = write!(
                detail,
                "; connection-tracking timeouts NOT lowered ({}): flows tracked before containment keep EC2's timeouts",
                not_lowered.join("; ")
            );
        }
    }
    let prior: Vec<Value> = facts
        .interfaces
        .iter()
        .map(|(eni, groups)| json!({ "interface": eni, "groups": groups }))
        .collect();
    Ok(StepOutcome::done(
        detail,
        json!({ "interfaces": prior }),
        json!({ "group": group, "vpc": facts.vpc }),
    ))
}

/// Puts the interfaces phase 1 already moved back into their groups; the error to report.
async fn move_back(
    c: &Ctx<'_>,
    moved: &[&(String, Vec<String>)],
    single: bool,
    failed: CallError,
) -> CallError {
    let mut stuck = Vec::new();
    for (eni, groups) in moved {
        if let Err(e) = set_groups(c, eni, groups, single).await {
            stuck.push(format!("{eni}: {e}"));
        }
    }
    let mut failed = failed;
    failed.failure.message = if stuck.is_empty() {
        format!(
            "{}; the {} interface(s) already in the untracked group were moved back to their groups",
            failed.failure.message,
            moved.len()
        )
    } else {
        format!(
            "{}; moving back FAILED, these interfaces are still in the all-open untracked group: {}",
            failed.failure.message,
            stuck.join("; ")
        )
    };
    failed
}

/// The interfaces and their groups as a step recorded them (`{"interfaces": [{"interface",
/// "groups"}]}`).
fn recorded_groups(prior: &Value) -> Vec<(String, Vec<String>)> {
    prior["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["interface"].as_str().unwrap_or_default().to_owned(),
                entry["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect()
}

/// Isolation did not complete after phase 1: interfaces still in the all-open untracked group go
/// back to the groups they had before containment (phase 1's record), so the instance is never
/// left more open than it was.
pub async fn leave_untracked(
    c: &Ctx<'_>,
    phase_one: &crate::ledger::Step,
) -> Result<StepOutcome, CallError> {
    let untracked = phase_one.new["group"].as_str().unwrap_or_default();
    let Some(facts) = facts(c.ec2, c.instance).await? else {
        return Err(quell_error(
            "ec2:DescribeInstances",
            format!("{} no longer exists", c.instance.id),
        ));
    };
    let single = facts.interfaces.len() == 1;
    let mut moved_back = Vec::new();
    let mut unknown = Vec::new();
    for (eni, groups) in &facts.interfaces {
        if !groups.iter().any(|g| g == untracked) {
            continue;
        }
        let original = recorded_groups(&phase_one.prior)
            .into_iter()
            .find(|(id, _)| id == eni)
            .map(|(_, groups)| groups);
        match original {
            Some(original) if !original.is_empty() => {
                set_groups(c, eni, &original, single).await?;
                moved_back.push(json!({ "interface": eni, "groups": original }));
            }
            _ => unknown.push(eni.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(quell_error(
            "ec2:ModifyNetworkInterfaceAttribute",
            format!(
                "interfaces {} are in the all-open untracked group {untracked} and their earlier groups are not on record: put them in a closed group by hand",
                unknown.join(", ")
            ),
        ));
    }
    Ok(StepOutcome::done(
        format!(
            "isolation did not complete, so the {} interface(s) still in the all-open untracked group {untracked} went back to their groups from before containment",
            moved_back.len()
        ),
        json!({ "untracked_group": untracked }),
        json!({ "interfaces": moved_back }),
    ))
}

/// Sets an interface's groups. A single-interface instance gets them through the instance-level call
/// as well, which keeps DescribeInstances' view of the instance in step with its interface (moto,
/// for one, reports the union of both otherwise; on AWS the second call changes nothing more).
async fn set_groups(
    c: &Ctx<'_>,
    eni: &str,
    groups: &[String],
    single_interface: bool,
) -> Result<(), CallError> {
    c.ec2
        .modify_network_interface_attribute()
        .network_interface_id(eni)
        .set_groups(Some(groups.to_vec()))
        .send()
        .await
        .described("ec2:ModifyNetworkInterfaceAttribute")?;
    if single_interface {
        c.ec2
            .modify_instance_attribute()
            .instance_id(&c.instance.id)
            .set_groups(Some(groups.to_vec()))
            .send()
            .await
            .described("ec2:ModifyInstanceAttribute")?;
    }
    Ok(())
}

/// After phase 2: every interface is in the isolation group and nothing else.
pub async fn verify(c: &Ctx<'_>, isolation_done: bool) -> Result<Vec<String>, CallError> {
    let Some(facts) = facts(c.ec2, c.instance).await? else {
        return Ok(vec![format!("{} no longer exists", c.instance.id)]);
    };
    let mut problems = Vec::new();
    if isolation_done {
        // Read, never made: every interface in one group, and that group Quell's isolation
        // group in shape (nobody added a rule to it since).
        let mut isolation: BTreeSet<&String> = BTreeSet::new();
        for (eni, groups) in &facts.interfaces {
            match groups.as_slice() {
                [only] => {
                    isolation.insert(only);
                }
                _ => problems.push(format!(
                    "interface {eni} is in {groups:?}, not only an isolation group"
                )),
            }
        }
        if !isolation.is_empty() {
            let out = c
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(isolation.iter().map(|g| (*g).clone()).collect()))
                .send()
                .await
                .described("ec2:DescribeSecurityGroups")?;
            for g in out.security_groups() {
                if let Err(why) = verify_group(g, Purpose::Isolation, c.name_prefix) {
                    problems.push(format!(
                        "the interfaces' group {} is not an isolation group: {why}",
                        g.group_id().unwrap_or_default()
                    ));
                }
            }
        }
    }
    let a = attribute(
        c,
        aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination,
    )
    .await?;
    if a.disable_api_termination()
        .and_then(AttributeBooleanValue::value)
        != Some(true)
    {
        problems.push("termination protection is off".into());
    }
    Ok(problems)
}

/// Restores the groups of every interface, the credentials and the attributes from the ledger.
pub async fn release(
    c: &Ctx<'_>,
    done: &[&crate::ledger::Step],
) -> Vec<(String, Result<StepOutcome, CallError>)> {
    let mut out = Vec::new();
    let current = facts(c.ec2, c.instance).await;
    for step in done {
        let result = match step.name.as_str() {
            "isolation_groups" | "patch_egress_groups" => {
                restore_groups(c, &current, step, done).await
            }
            "deny_instance_credentials" => {
                async {
                    let name = policy_name(c.instance);
                    for role in step.new["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        c.iam
                            .delete_role_policy()
                            .role_name(role)
                            .policy_name(&name)
                            .send()
                            .await
                            .described("iam:DeleteRolePolicy")
                            .tolerating("NoSuchEntity")?;
                    }
                    Ok(StepOutcome::done(
                        format!("removed {name}"),
                        step.new.clone(),
                        Value::Null,
                    ))
                }
                .await
            }
            "termination_protection" => {
                let prior = step.prior["disable_api_termination"]
                    .as_bool()
                    .unwrap_or(false);
                c.ec2
                    .modify_instance_attribute()
                    .instance_id(&c.instance.id)
                    .disable_api_termination(AttributeBooleanValue::builder().value(prior).build())
                    .send()
                    .await
                    .described("ec2:ModifyInstanceAttribute")
                    .map(|_| {
                        StepOutcome::done(
                            format!("termination protection restored to {prior}"),
                            step.new.clone(),
                            step.prior.clone(),
                        )
                    })
            }
            "shutdown_behaviour_stop" => {
                let prior = step.prior["shutdown_behavior"]
                    .as_str()
                    .unwrap_or("stop")
                    .to_owned();
                c.ec2
                    .modify_instance_attribute()
                    .instance_id(&c.instance.id)
                    .instance_initiated_shutdown_behavior(
                        AttributeValue::builder().value(&prior).build(),
                    )
                    .send()
                    .await
                    .described("ec2:ModifyInstanceAttribute")
                    .map(|_| {
                        StepOutcome::done(
                            format!("shutdown behaviour restored to {prior}"),
                            step.new.clone(),
                            step.prior.clone(),
                        )
                    })
            }
            _ => continue,
        };
        out.push((format!("release_{}", step.name), result));
    }
    out
}

async fn restore_groups(
    c: &Ctx<'_>,
    current: &Result<Option<Facts>, CallError>,
    isolation: &crate::ledger::Step,
    done: &[&crate::ledger::Step],
) -> Result<StepOutcome, CallError> {
    let facts = match current {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err(quell_error(
                "ec2:DescribeInstances",
                format!("{} no longer exists", c.instance.id),
            ))
        }
        Err(e) => return Err(e.clone()),
    };
    // The groups before containment are recorded by phase 1 (phase 2 saw the untracked group).
    let original = done
        .iter()
        .find(|s| s.name == "untracked_groups")
        .map_or(&isolation.prior, |s| &s.prior);
    let isolation_group = isolation.new["group"].as_str().unwrap_or_default();
    let mut restored = Vec::new();
    let mut left = Vec::new();
    for (eni, groups) in recorded_groups(original) {
        let eni = eni.as_str();
        let now = facts
            .interfaces
            .iter()
            .find(|(id, _)| id == eni)
            .map(|(_, g)| g.clone());
        match now {
            Some(g) if g == [isolation_group.to_owned()] => {
                set_groups(c, eni, &groups, facts.interfaces.len() == 1).await?;
                restored.push(json!({ "interface": eni, "groups": groups }));
            }
            Some(g) => left.push(format!("{eni} (now in {g:?}, changed since containment)")),
            None => left.push(format!("{eni} (no longer attached)")),
        }
    }
    let mut detail = format!(
        "restored the original groups on {} interface(s)",
        restored.len()
    );
    if !left.is_empty() {
        let _ = write!(detail, "; left as they are: {}", left.join(", "));
    }
    Ok(StepOutcome::done(
        detail,
        json!({ "isolation_group": isolation_group }),
        json!({ "interfaces": restored }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::SecurityGroup;

    fn tag(purpose: &str) -> Tag {
        Tag::builder().key(PURPOSE_TAG).value(purpose).build()
    }

    fn all(cidr4: bool) -> IpPermission {
        let p = IpPermission::builder().ip_protocol("-1");
        let p = if cidr4 {
            p.ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        } else {
            p
        };
        p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6("::/0").build())
            .build()
    }

    fn group(name: &str, purpose: &str) -> aws_sdk_ec2::types::builders::SecurityGroupBuilder {
        SecurityGroup::builder()
            .group_id("sg-1")
            .group_name(name)
            .tags(tag(purpose))
    }

    #[test]
    fn a_group_read_beside_the_instance_is_used_only_in_its_vpc_and_only_when_it_is_quells() {
        let planted = group("quell-isolation", "isolation")
            .group_id("sg-planted")
            .vpc_id("vpc-1")
            .ip_permissions(all(true))
            .build();
        let elsewhere = group("quell-isolation", "isolation")
            .group_id("sg-other-vpc")
            .vpc_id("vpc-2")
            .build();
        let untracked = group("quell-untracked", "untracked")
            .group_id("sg-untracked")
            .vpc_id("vpc-1")
            .build();
        let real = group("quell-isolation-1a2b", "isolation")
            .group_id("sg-real")
            .vpc_id("vpc-1")
            .build();
        let region = [planted, elsewhere, untracked, real];
        let (found, refused) = first_verified(region.iter(), "vpc-1", Purpose::Isolation, "quell");
        assert_eq!(found.as_deref(), Some("sg-real"));
        assert!(
            refused.len() == 1 && refused[0].starts_with("sg-planted"),
            "{refused:?}"
        );
        // Nothing of Quell's in the VPC: EC2 is asked (and a group made) instead.
        let (none, _) = first_verified(region[..3].iter(), "vpc-3", Purpose::Isolation, "quell");
        assert_eq!(none, None);
    }

    #[test]
    fn a_planted_isolation_group_with_rules_is_not_quells() {
        let clean = group("quell-isolation", "isolation").build();
        assert!(verify_group(&clean, Purpose::Isolation, "quell").is_ok());
        // Tagged by someone in the account, with rules that let everything in.
        let planted = group("quell-isolation", "isolation")
            .ip_permissions(all(true))
            .build();
        let why = verify_group(&planted, Purpose::Isolation, "quell").unwrap_err();
        assert!(why.contains("inbound rules"), "{why}");
        // Default egress left in place: traffic still leaves.
        let leaky = group("quell-isolation-1a2b", "isolation")
            .ip_permissions_egress(all(true))
            .build();
        assert!(verify_group(&leaky, Purpose::Isolation, "quell").is_err());
        // The tag alone, on a group of another name.
        let other = group("web", "isolation").build();
        assert!(verify_group(&other, Purpose::Isolation, "quell")
            .unwrap_err()
            .contains("name"));
        let untagged = SecurityGroup::builder()
            .group_name("quell-isolation")
            .build();
        assert!(verify_group(&untagged, Purpose::Isolation, "quell").is_err());
    }

    #[test]
    fn the_untracked_group_is_quells_only_with_exactly_its_rules() {
        let merged = group("quell-untracked", "untracked")
            .ip_permissions(all(true))
            .ip_permissions_egress(all(true))
            .build();
        assert!(verify_group(&merged, Purpose::Untracked, "quell").is_ok());
        // EC2 may list the two egress rules apart: the same rules.
        let split = group("quell-untracked", "untracked")
            .ip_permissions(all(true))
            .ip_permissions_egress(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .ip_permissions_egress(all(false))
            .build();
        assert!(verify_group(&split, Purpose::Untracked, "quell").is_ok());
        // Stripped by a playbook: no longer the untracked shape, so never reused.
        let stripped = group("quell-untracked", "untracked")
            .ip_permissions(all(false))
            .ip_permissions_egress(all(true))
            .build();
        assert!(verify_group(&stripped, Purpose::Untracked, "quell").is_err());
        // One more rule (a group pair) is not Quell's shape either.
        let extra = group("quell-untracked", "untracked")
            .ip_permissions(all(true))
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .user_id_group_pairs(
                        aws_sdk_ec2::types::UserIdGroupPair::builder()
                            .group_id("sg-attacker")
                            .build(),
                    )
                    .build(),
            )
            .ip_permissions_egress(all(true))
            .build();
        assert!(verify_group(&extra, Purpose::Untracked, "quell").is_err());
    }
}
