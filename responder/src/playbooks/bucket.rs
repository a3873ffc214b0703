//! Playbook: a public S3 bucket. Matches ACL grants to everyone (AllUsers, AuthenticatedUsers) and
//! policy statements that allow anyone without a condition that narrows who. The fix turns on the
//! bucket's public access block, then removes exactly those grants and statements; the record keeps
//! each one removed, and everything else in the ACL and the policy stays as it was.

use std::collections::HashMap;

use aws_sdk_s3::types::{
    AccessControlPolicy, Grant, Grantee, Owner, PublicAccessBlockConfiguration, Type,
};
use serde::Serialize;
use serde_json::Value;

use crate::aws_error::{CallError, Described};

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// Condition keys that narrow a statement to known callers: with one of them, `"Principal": "*"`
/// is not public (the same keys AWS's own public-policy evaluation accepts).
const NARROWING_KEYS: &[&str] = &[
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "aws:userid",
];

/// A grant that opens the bucket to everyone, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicGrant {
    pub grantee: String,
    pub permission: String,
}

/// What makes a bucket public.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Exposure {
    pub grants: Vec<PublicGrant>,
    /// Policy statements open to everyone, verbatim.
    pub statements: Vec<Value>,
}

impl Exposure {
    pub fn is_public(&self) -> bool {
        !self.grants.is_empty() || !self.statements.is_empty()
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .grants
            .iter()
            .map(|g| {
                let who = g.grantee.rsplit('/').next().unwrap_or(&g.grantee);
                format!("ACL grant {} to {who}", g.permission)
            })
            .collect();
        parts.extend(self.statements.iter().map(|s| {
            format!(
                "policy statement {}",
                s.get("Sid")
                    .and_then(Value::as_str)
                    .map_or_else(|| "(no Sid)".to_owned(), |sid| format!("{sid:?}"))
            )
        }));
        parts.join(", ")
    }
}

/// A bucket as read before and after the fix.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
    /// The account the bucket must belong to: every call says so (`ExpectedBucketOwner`), so a
    /// bucket name that is another account's is never read or changed.
    pub account: String,
    pub region: String,
    pub tags: HashMap<String, String>,
    owner: Option<Owner>,
    grants: Vec<Grant>,
    pub policy: Option<Value>,
    /// The four public access block settings, all true when fully blocked.
    pub block: [bool; 4],
}

impl Bucket {
    pub fn exposure(&self) -> Exposure {
        Exposure {
            grants: self.grants.iter().filter_map(public_grant).collect(),
            statements: self
                .policy
                .as_ref()
                .map(|p| split_policy(p).0)
                .unwrap_or_default(),
        }
    }

    pub fn blocked(&self) -> bool {
        self.block.iter().all(|b| *b)
    }
}

fn public_grant(g: &Grant) -> Option<PublicGrant> {
    let uri = g.grantee()?.uri()?;
    (uri == ALL_USERS || uri == AUTHENTICATED_USERS).then(|| PublicGrant {
        grantee: uri.to_owned(),
        permission: g
            .permission()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    })
}

fn statements(policy: &Value) -> Vec<Value> {
    match policy.get("Statement") {
        Some(Value::Array(s)) => s.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// The policy's statements split into (open to everyone, the rest).
pub fn split_policy(policy: &Value) -> (Vec<Value>, Vec<Value>) {
    statements(policy).into_iter().partition(is_public)
}

fn is_everyone(v: &Value) -> bool {
    match v {
        Value::String(s) => s == "*",
        Value::Array(a) => a.iter().any(is_everyone),
        Value::Object(m) => m.values().any(is_everyone),
        _ => false,
    }
}

fn is_public(statement: &Value) -> bool {
    if statement.get("Effect").and_then(Value::as_str) != Some("Allow") {
        return false;
    }
    // NotPrincipal with Allow grants everyone but the few named.
    let open = statement.get("Principal").is_some_and(is_everyone)
        || statement.get("NotPrincipal").is_some();
    let narrowed = statement
        .get("Condition")
        .and_then(Value::as_object)
        .is_some_and(|ops| {
            ops.values().filter_map(Value::as_object).any(|keys| {
                keys.keys()
                    .any(|k| NARROWING_KEYS.contains(&k.to_ascii_lowercase().as_str()))
            })
        });
    open && !narrowed
}

fn s3_in(s3: &aws_sdk_s3::Client, region: &str) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .region(aws_sdk_s3::config::Region::new(region.to_owned()))
            .build(),
    )
}

/// The bucket, or `None` when it no longer exists. Reads through a client in the bucket's own
/// Region, whatever Region `s3` was made for, and only a bucket `account` owns: S3 refuses the
/// calls (403) for a bucket of any other account.
pub async fn read(
    s3: &aws_sdk_s3::Client,
    name: &str,
    account: &str,
) -> Result<Option<Bucket>, CallError> {
    let location = match s3
        .get_bucket_location()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .described("s3:GetBucketLocation")
    {
        Ok(l) => l,
        Err(e) if e.is_code("NoSuchBucket") => return Ok(None),
        Err(e) => return Err(e),
    };
    let region = match location
        .location_constraint()
        .map(aws_sdk_s3::types::BucketLocationConstraint::as_str)
    {
        None | Some("") => "us-east-1".to_owned(),
        Some("EU") => "eu-west-1".to_owned(),
        Some(r) => r.to_owned(),
    };
    let s3 = s3_in(s3, &region);
    let acl = s3
        .get_bucket_acl()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .described("s3:GetBucketAcl")?;
    let policy = match s3
        .get_bucket_policy()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .described("s3:GetBucketPolicy")
    {
        Ok(p) => match p.policy() {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                CallError::local(
                    "s3:GetBucketPolicy",
                    format!("the policy of {name} is not JSON: {e}"),
                )
            })?),
            None => None,
        },
        Err(e) if e.is_code("NoSuchBucketPolicy") => None,
        Err(e) => return Err(e),
    };
    let block = match s3
        .get_public_access_block()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .described("s3:GetPublicAccessBlock")
    {
        Ok(b) => b
            .public_access_block_configuration()
            .map(|c| {
                [
                    c.block_public_acls() == Some(true),
                    c.ignore_public_acls() == Some(true),
                    c.block_public_policy() == Some(true),
                    c.restrict_public_buckets() == Some(true),
                ]
            })
            .unwrap_or_default(),
        Err(e) if e.is_code("NoSuchPublicAccessBlockConfiguration") => [false; 4],
        Err(e) => return Err(e),
    };
    let tags = match s3
        .get_bucket_tagging()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
        .described("s3:GetBucketTagging")
    {
        Ok(t) => t
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        Err(e) if e.is_code("NoSuchTagSet") || e.is_code("NoSuchTagSetError") => HashMap::new(),
        Err(e) => return Err(e),
    };
    Ok(Some(Bucket {
        name: name.to_owned(),
        account: account.to_owned(),
        region,
        tags,
        owner: acl.owner().cloned(),
        grants: acl.grants().to_vec(),
        policy,
        block,
    }))
}

/// Blocks public access, then removes exactly the public grants and statements.
pub async fn make_private(
    s3: &aws_sdk_s3::Client,
    bucket: &Bucket,
    exposure: &Exposure,
) -> Result<(), CallError> {
    let s3 = s3_in(s3, &bucket.region);
    // The block first: from here on nothing new can make the bucket public while the grants and
    // statements are being removed.
    s3.put_public_access_block()
        .bucket(&bucket.name)
        .expected_bucket_owner(&bucket.account)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .described("s3:PutPublicAccessBlock")?;
    if !exposure.grants.is_empty() {
        let kept: Vec<Grant> = bucket
            .grants
            .iter()
            .filter(|g| public_grant(g).is_none())
            .cloned()
            .collect();
        let policy = AccessControlPolicy::builder()
            .set_owner(bucket.owner.clone())
            .set_grants(Some(kept))
            .build();
        s3.put_bucket_acl()
            .bucket(&bucket.name)
            .expected_bucket_owner(&bucket.account)
            .access_control_policy(policy)
            .send()
            .await
            .described("s3:PutBucketAcl")?;
    }
    if let (false, Some(policy)) = (exposure.statements.is_empty(), &bucket.policy) {
        let (_, kept) = split_policy(policy);
        if kept.is_empty() {
            s3.delete_bucket_policy()
                .bucket(&bucket.name)
                .expected_bucket_owner(&bucket.account)
                .send()
                .await
                .described("s3:DeleteBucketPolicy")?;
        } else {
            let mut rewritten = policy.clone();
            rewritten["Statement"] = Value::Array(kept);
            s3.put_bucket_policy()
                .bucket(&bucket.name)
                .expected_bucket_owner(&bucket.account)
                .policy(rewritten.to_string())
                .send()
                .await
                .described("s3:PutBucketPolicy")?;
        }
    }
    Ok(())
}

/// Every bucket the account owns, by name.
pub async fn list(s3: &aws_sdk_s3::Client) -> Result<Vec<String>, CallError> {
    let mut names = Vec::new();
    let mut pages = s3.list_buckets().into_paginator().send();
    while let Some(page) = pages.next().await {
        names.extend(
            page.described("s3:ListBuckets")?
                .buckets()
                .iter()
                .filter_map(|b| b.name().map(str::to_owned)),
        );
    }
    Ok(names)
}

/// Grantee of a grant, for tests that build ACLs.
pub fn group_grantee(uri: &str) -> Grantee {
    Grantee::builder()
        .r#type(Type::Group)
        .uri(uri)
        .build()
        .expect("a group grantee has a type")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statements_open_to_anyone_are_public_unless_a_condition_narrows_them() {
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
            {"Sid": "OpenAws", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::111122223333:root", "*"]}, "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"},
            {"Sid": "Vpce", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
             "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1a2b"}}},
            {"Sid": "Partner", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
            {"Sid": "DenyHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "Referer", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*",
             "Condition": {"StringLike": {"aws:Referer": "https://example.com/*"}}}
        ]});
        let (public, kept) = split_policy(&policy);
        let sids = |v: &[Value]| {
            v.iter()
                .map(|s| s["Sid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(sids(&public), ["Open", "OpenAws", "Referer"]);
        assert_eq!(sids(&kept), ["Vpce", "Partner", "DenyHttp"]);
    }

    #[test]
    fn a_single_statement_object_is_read_too() {
        let policy = json!({"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:*"}});
        assert_eq!(split_policy(&policy).0.len(), 1);
    }

    #[test]
    fn grants_to_all_users_and_authenticated_users_are_public_and_named() {
        let grant = |uri: &str, p: aws_sdk_s3::types::Permission| {
            Grant::builder()
                .grantee(group_grantee(uri))
                .permission(p)
                .build()
        };
        let bucket = Bucket {
            name: "b".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            tags: HashMap::new(),
            owner: None,
            grants: vec![
                grant(ALL_USERS, aws_sdk_s3::types::Permission::Read),
                grant(AUTHENTICATED_USERS, aws_sdk_s3::types::Permission::Write),
                grant(
                    "http://acs.amazonaws.com/groups/s3/LogDelivery",
                    aws_sdk_s3::types::Permission::Write,
                ),
            ],
            policy: None,
            block: [true, true, false, true],
        };
        let e = bucket.exposure();
        assert!(e.is_public());
        assert!(!bucket.blocked());
        assert_eq!(
            e.describe(),
            "ACL grant READ to AllUsers, ACL grant WRITE to AuthenticatedUsers"
        );
    }
}
