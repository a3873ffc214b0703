//! What a run's conditions see under `resource`: the target read live from its account, never
//! what the event says about it (anyone who can put an event can say anything).

use serde_json::{json, Map, Value};

use crate::aws_error::{CallError, Described};
use crate::clients::MemberClients;
use crate::playbooks::{bucket, security_group, snapshot};

/// The target as AWS has it now, `None` when it does not exist. The id is what AWS returns, so
/// a run acts on the real entity (an IAM name in another letter case is IAM's spelling).
pub async fn read(
    clients: &MemberClients,
    account: &str,
    name_prefix: &str,
    kind: &str,
    id: &str,
) -> Result<Option<Value>, CallError> {
    let tags = |t: &std::collections::HashMap<String, String>| {
        t.iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<Map<String, Value>>()
    };
    match kind {
        "AWS::EC2::Instance" => instance(clients, id).await,
        "AWS::IAM::Role" => role(clients, id).await,
        "AWS::IAM::User" => user(clients, id).await,
        "AWS::Lambda::Function" => function(clients, id).await,
        "AWS::EC2::SecurityGroup" => Ok(security_group::read(&clients.ec2, id, name_prefix)
            .await?
            .map(|g| json!({"id": g.id, "tags": tags(&g.tags), "ingress": g.ingress}))),
        // Read with the account as the expected owner: a bucket of that name elsewhere is not
        // this account's, and S3 refuses the calls.
        "AWS::S3::Bucket" => Ok(bucket::read(&clients.s3, id, account).await?.map(|b| {
            json!({"id": b.name, "tags": tags(&b.tags), "region": b.region,
                "public": b.exposure().is_public()})
        })),
        "AWS::EC2::Snapshot" => Ok(snapshot::read(&clients.ec2, id).await?.map(|s| {
            json!({"id": s.id, "tags": tags(&s.tags), "state": s.state,
                "public": s.public, "encrypted": s.encrypted})
        })),
        _ => Ok(Some(json!({ "id": id }))),
    }
}

/// The target types a scheduled playbook can sweep: each is listed below and read back by `read`.
pub const SWEPT_KINDS: &[&str] = &[
    "AWS::EC2::Instance",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::Snapshot",
    "AWS::Lambda::Function",
    "AWS::S3::Bucket",
    "AWS::IAM::User",
    "AWS::IAM::Role",
];

/// Where a scheduled sweep lists: one account in one Region. Buckets, users and roles are global,
/// so they are listed once per account, in the place where `global_here` is set.
pub struct SweptPlace<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    pub region: &'a str,
    pub global_here: bool,
    /// Why a principal is protected, when it is (the responder's own check: Quell's roles and
    /// the configured protected principals): those are never targets.
    pub protected: &'a dyn Fn(&str) -> Option<String>,
}

/// Every resource of `kind` in `place` that a scheduled playbook sweeps: (id, ARN) each, the id
/// being what `read` takes. Each run reads its target back before it checks or acts on it.
pub async fn swept(
    clients: &MemberClients,
    kind: &str,
    place: &SweptPlace<'_>,
) -> Result<Vec<(String, String)>, CallError> {
    let SweptPlace {
        partition,
        account,
        region,
        ..
    } = *place;
    Ok(match kind {
        "AWS::EC2::Instance" => instances(clients, partition, account, region).await?,
        "AWS::EC2::SecurityGroup" => {
            let mut out = Vec::new();
            let mut pages = clients
                .ec2
                .describe_security_groups()
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.described("ec2:DescribeSecurityGroups")?;
                out.extend(page.security_groups().iter().filter_map(|g| {
                    let id = g.group_id()?;
                    Some((
                        id.to_owned(),
                        format!("arn:{partition}:ec2:{region}:{account}:security-group/{id}"),
                    ))
                }));
            }
            out
        }
        "AWS::EC2::Snapshot" => snapshot::scan(&clients.ec2)
            .await?
            .into_iter()
            .map(|s| {
                let arn = format!("arn:{partition}:ec2:{region}::snapshot/{}", s.id);
                (s.id, arn)
            })
            .collect(),
        "AWS::Lambda::Function" => {
            let mut out = Vec::new();
            let mut pages = clients.lambda.list_functions().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.described("lambda:ListFunctions")?;
                out.extend(page.functions().iter().filter_map(|f| {
                    Some((f.function_name()?.to_owned(), f.function_arn()?.to_owned()))
                }));
            }
            out
        }
        "AWS::S3::Bucket" if place.global_here => bucket::list(&clients.s3)
            .await?
            .into_iter()
            .map(|name| {
                let arn = format!("arn:{partition}:s3:::{name}");
                (name, arn)
            })
            .collect(),
        "AWS::IAM::User" if place.global_here => {
            let mut out = Vec::new();
            let mut pages = clients.iam.list_users().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.described("iam:ListUsers")?;
                out.extend(
                    page.users()
                        .iter()
                        .filter(|u| (place.protected)(u.arn()).is_none())
                        .map(|u| (u.user_name().to_owned(), u.arn().to_owned())),
                );
            }
            out
        }
        "AWS::IAM::Role" if place.global_here => {
            let mut out = Vec::new();
            let mut pages = clients.iam.list_roles().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.described("iam:ListRoles")?;
                out.extend(
                    page.roles()
                        .iter()
                        // Service-linked roles cannot be changed, and protected ones never are.
                        .filter(|r| {
                            !r.path().starts_with("/aws-service-role/")
                                && (place.protected)(r.arn()).is_none()
                        })
                        .map(|r| (r.role_name().to_owned(), r.arn().to_owned())),
                );
            }
            out
        }
        // Global types outside the place they are listed in (the language takes no other type).
        _ => Vec::new(),
    })
}

/// Every instance in the account and Region the clients act in that has not been terminated.
async fn instances(
    clients: &MemberClients,
    partition: &str,
    account: &str,
    region: &str,
) -> Result<Vec<(String, String)>, CallError> {
    let mut out = Vec::new();
    let mut pages = clients
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.described("ec2:DescribeInstances")?;
        for i in page
            .reservations()
            .iter()
            .flat_map(aws_sdk_ec2::types::Reservation::instances)
        {
            if let Some(id) = i.instance_id() {
                out.push((
                    id.to_owned(),
                    format!("arn:{partition}:ec2:{region}:{account}:instance/{id}"),
                ));
            }
        }
    }
    Ok(out)
}

pub async fn instance(clients: &MemberClients, id: &str) -> Result<Option<Value>, CallError> {
    let out = match clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .described("ec2:DescribeInstances")
    {
        Ok(out) => out,
        Err(e)
            if e.is_code("InvalidInstanceID.NotFound")
                || e.is_code("InvalidInstanceID.Malformed") =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(i) = out
        .reservations()
        .iter()
        .flat_map(aws_sdk_ec2::types::Reservation::instances)
        .find(|i| i.instance_id() == Some(id))
    else {
        return Ok(None);
    };
    let tags: Map<String, Value> = i
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), json!(t.value().unwrap_or_default()))))
        .collect();
    Ok(Some(json!({
        "id": i.instance_id(),
        "state": i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()),
        "tags": tags,
        "vpc": i.vpc_id(),
        "profile_arn": i.iam_instance_profile().and_then(|p| p.arn()),
        "security_groups": i.security_groups().iter().filter_map(|g| g.group_id()).collect::<Vec<_>>(),
        "launched_at": i.launch_time().map(ToString::to_string),
    })))
}

async fn role(clients: &MemberClients, name: &str) -> Result<Option<Value>, CallError> {
    match clients
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .described("iam:GetRole")
    {
        Ok(out) => Ok(out.role().map(|r| {
            let tags: Map<String, Value> = r
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), json!(t.value())))
                .collect();
            json!({ "id": r.role_name(), "arn": r.arn(), "path": r.path(), "tags": tags })
        })),
        Err(e) if e.is_code("NoSuchEntity") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn user(clients: &MemberClients, name: &str) -> Result<Option<Value>, CallError> {
    match clients
        .iam
        .get_user()
        .user_name(name)
        .send()
        .await
        .described("iam:GetUser")
    {
        Ok(out) => Ok(out.user().map(|u| {
            let tags: Map<String, Value> = u
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), json!(t.value())))
                .collect();
            json!({ "id": u.user_name(), "arn": u.arn(), "path": u.path(), "tags": tags })
        })),
        Err(e) if e.is_code("NoSuchEntity") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The function's configuration and its tags. Not GetFunction: it also hands out a link to the
/// function's code, which nothing here needs to be able to read.
async fn function(clients: &MemberClients, name: &str) -> Result<Option<Value>, CallError> {
    let config = match clients
        .lambda
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .described("lambda:GetFunctionConfiguration")
    {
        Ok(c) => c,
        Err(e) if e.is_code("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(e),
    };
    let arn = config.function_arn().unwrap_or_default();
    let tags: Map<String, Value> = clients
        .lambda
        .list_tags()
        .resource(arn)
        .send()
        .await
        .described("lambda:ListTags")?
        .tags()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Ok(Some(json!({
        "id": config.function_name(), "arn": arn, "role": config.role(), "tags": tags
    })))
}

#[cfg(test)]
mod tests {
    use super::SWEPT_KINDS;
    use crate::playbooks::language::definition::TARGET_TYPES;

    /// A target type added to the language needs its listing here before a schedule can sweep it.
    #[test]
    fn every_target_type_a_playbook_may_name_can_be_swept() {
        let mut swept = SWEPT_KINDS.to_vec();
        let mut named = TARGET_TYPES.to_vec();
        swept.sort_unstable();
        named.sort_unstable();
        assert_eq!(swept, named);
    }
}
