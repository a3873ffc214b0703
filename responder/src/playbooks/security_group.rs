//! Playbook: a security group open to the world on a sensitive port. Matches ingress rules from
//! 0.0.0.0/0 or ::/0 that reach a configured port (protocol -1 and port ranges included), revokes
//! exactly those rules by id and nothing else, and records each revoked rule in full.

use std::collections::{HashMap, HashSet};

use aws_sdk_ec2::types::Filter;

use super::exposure::{self, Rule};
use crate::aws_error::{CallError, Described};
use crate::entities::instance::{verify_group, Purpose, PURPOSE_TAG};

/// A group as read before and after the fix.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub tags: HashMap<String, String>,
    /// Ingress rules only: egress never exposes the group.
    pub ingress: Vec<Rule>,
    /// Quell's own untracked group, verified by name, tag and exact rules: open to the world
    /// on purpose while an instance's containment passes through it, and left alone.
    pub quell_untracked: bool,
}

impl Group {
    pub fn offending(&self, ports: &[u16]) -> Vec<Rule> {
        exposure::offending(&self.ingress, ports)
            .into_iter()
            .cloned()
            .collect()
    }
}

fn rule_of(r: &aws_sdk_ec2::types::SecurityGroupRule) -> Rule {
    Rule {
        id: r.security_group_rule_id().unwrap_or_default().to_owned(),
        protocol: r.ip_protocol().unwrap_or_default().to_owned(),
        from_port: r.from_port(),
        to_port: r.to_port(),
        cidr: r.cidr_ipv4().or(r.cidr_ipv6()).map(str::to_owned),
        description: r.description().map(str::to_owned),
    }
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> HashMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// The group, or `None` when it no longer exists.
pub async fn read(
    ec2: &aws_sdk_ec2::Client,
    group_id: &str,
    prefix: &str,
) -> Result<Option<Group>, CallError> {
    let described = ec2
        .describe_security_groups()
        .group_ids(group_id)
        .send()
        .await
        .described("ec2:DescribeSecurityGroups");
    let group = match described {
        Ok(out) => match out.security_groups().first() {
            Some(g) => g.clone(),
            None => return Ok(None),
        },
        Err(e) if e.is_code("InvalidGroup.NotFound") || e.is_code("InvalidGroupId.Malformed") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let mut ingress = Vec::new();
    let mut pages = ec2
        .describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(group_id).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for r in page
            .described("ec2:DescribeSecurityGroupRules")?
            .security_group_rules()
        {
            if r.is_egress() == Some(true) {
                continue;
            }
            ingress.push(rule_of(r));
        }
    }
    Ok(Some(Group {
        id: group_id.to_owned(),
        tags: tags_of(group.tags()),
        ingress,
        quell_untracked: verify_group(&group, Purpose::Untracked, prefix).is_ok(),
    }))
}

/// Revokes exactly these rules.
pub async fn revoke(
    ec2: &aws_sdk_ec2::Client,
    group_id: &str,
    rules: &[Rule],
) -> Result<(), CallError> {
    ec2.revoke_security_group_ingress()
        .group_id(group_id)
        .set_security_group_rule_ids(Some(rules.iter().map(|r| r.id.clone()).collect()))
        .send()
        .await
        .described("ec2:RevokeSecurityGroupIngress")?;
    Ok(())
}

/// Every ingress rule of the account and Region, by group, and how many groups there are (every
/// group has at least its egress rule): one paginated listing, however many groups there are.
pub async fn ingress_by_group(
    ec2: &aws_sdk_ec2::Client,
) -> Result<(HashMap<String, Vec<Rule>>, usize), CallError> {
    let mut ingress: HashMap<String, Vec<Rule>> = HashMap::new();
    let mut groups = std::collections::HashSet::new();
    let mut pages = ec2
        .describe_security_group_rules()
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for r in page
            .described("ec2:DescribeSecurityGroupRules")?
            .security_group_rules()
        {
            let Some(group) = r.group_id() else { continue };
            groups.insert(group.to_owned());
            if r.is_egress() != Some(true) {
                ingress
                    .entry(group.to_owned())
                    .or_default()
                    .push(rule_of(r));
            }
        }
    }
    Ok((ingress, groups.len()))
}

/// The groups carrying tag `key`, with its value: one filtered listing instead of reading every
/// group's tags.
pub async fn tagged(
    ec2: &aws_sdk_ec2::Client,
    key: &str,
) -> Result<HashMap<String, String>, CallError> {
    let mut out = HashMap::new();
    let mut pages = ec2
        .describe_tags()
        .filters(
            Filter::builder()
                .name("resource-type")
                .values("security-group")
                .build(),
        )
        .filters(Filter::builder().name("key").values(key).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for t in page.described("ec2:DescribeTags")?.tags() {
            if let Some(id) = t.resource_id() {
                out.insert(id.to_owned(), t.value().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(out)
}

/// The ids of the account and Region's groups that are Quell's own untracked groups, verified by
/// name, tag and exact rules (see [`verify_group`]): one filtered listing.
pub async fn quell_untracked(
    ec2: &aws_sdk_ec2::Client,
    prefix: &str,
) -> Result<HashSet<String>, CallError> {
    let mut out = HashSet::new();
    let mut pages = ec2
        .describe_security_groups()
        .filters(
            Filter::builder()
                .name(format!("tag:{PURPOSE_TAG}"))
                .values("untracked")
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for g in page
            .described("ec2:DescribeSecurityGroups")?
            .security_groups()
        {
            if verify_group(g, Purpose::Untracked, prefix).is_ok() {
                out.insert(g.group_id().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(out)
}

/// Every group of the account and Region that has ingress rules, with those rules and the
/// exemption tag `tag` when it carries it. Returns the groups and how many groups there are.
pub async fn scan(ec2: &aws_sdk_ec2::Client, tag: &str) -> Result<(Vec<Group>, usize), CallError> {
    let (ingress, count) = ingress_by_group(ec2).await?;
    let tags = tagged(ec2, tag).await?;
    let mut out: Vec<Group> = ingress
        .into_iter()
        .map(|(id, rules)| Group {
            quell_untracked: false,
            tags: tags
                .get(&id)
                .map(|v| HashMap::from([(tag.to_owned(), v.clone())]))
                .unwrap_or_default(),
            id,
            ingress: rules,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, count))
}
