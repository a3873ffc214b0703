//! Playbook: a security group open to the world on a sensitive port. Matches ingress rules from
//! 0.0.0.0/0 or ::/0 that reach a configured port (protocol -1 and port ranges included), revokes
//! exactly those rules by id and nothing else, and records each revoked rule in full.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;

use super::exposure::{self, Rule};
use crate::aws_error::{CallError, Described};

/// A group as read before and after the fix.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub tags: HashMap<String, String>,
    /// Ingress rules only: egress never exposes the group.
    pub ingress: Vec<Rule>,
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
pub async fn read(ec2: &aws_sdk_ec2::Client, group_id: &str) -> Result<Option<Group>, CallError> {
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

/// Every group of the account and Region with its ingress rules and tags: two paginated listings,
/// however many groups there are.
pub async fn scan(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Group>, CallError> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut pages = ec2.describe_security_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page
            .described("ec2:DescribeSecurityGroups")?
            .security_groups()
        {
            let id = g.group_id().unwrap_or_default().to_owned();
            groups.insert(
                id.clone(),
                Group {
                    id,
                    tags: tags_of(g.tags()),
                    ingress: Vec::new(),
                },
            );
        }
    }
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
            if r.is_egress() == Some(true) {
                continue;
            }
            if let Some(g) = r.group_id().and_then(|id| groups.get_mut(id)) {
                g.ingress.push(rule_of(r));
            }
        }
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
