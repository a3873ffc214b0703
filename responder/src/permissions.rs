//! Every AWS operation the responder can call, with the IAM action it needs and the role it runs
//! under. A render test checks that each role's policy in the templates grants each action, and
//! the end-to-end suite fails on any operation the responder called that is not listed here: a
//! permission cannot go missing unseen again (moto enforces none of them in normal use).

use serde::Serialize;

/// The identity a call is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunsAs {
    /// `<prefix>-responder-execution`, in the security account.
    Execution,
    /// `<prefix>-responder`, assumed in a member account.
    Member,
    /// `<prefix>-org-reader`, assumed in the management account.
    OrgReader,
}

impl RunsAs {
    pub fn as_str(self) -> &'static str {
        match self {
            RunsAs::Execution => "execution",
            RunsAs::Member => "member",
            RunsAs::OrgReader => "org_reader",
        }
    }
}

/// One operation: `service:Operation` as the SDK names it, the IAM action it needs.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub call: &'static str,
    pub action: &'static str,
    pub runs_as: RunsAs,
}

const fn op(call: &'static str, runs_as: RunsAs) -> Operation {
    Operation {
        call,
        action: call,
        runs_as,
    }
}

/// An operation whose IAM action is named differently from the API (S3 mostly).
const fn op_as(call: &'static str, action: &'static str, runs_as: RunsAs) -> Operation {
    Operation {
        call,
        action,
        runs_as,
    }
}

use RunsAs::{Execution, Member, OrgReader};

pub const OPERATIONS: &[Operation] = &[
    // The security account: ledger, audit, queues, secret, findings, sessions, requesters.
    op("dynamodb:GetItem", Execution),
    op("dynamodb:PutItem", Execution),
    op("dynamodb:Query", Execution),
    op("dynamodb:DeleteItem", Execution),
    op("sns:Publish", Execution),
    op("sqs:SendMessage", Execution),
    op("secretsmanager:GetSecretValue", Execution),
    op("securityhub:BatchUpdateFindings", Execution),
    op("sts:AssumeRole", Execution),
    op("iam:GetRole", Execution),
    op("iam:GetUser", Execution),
    // Member accounts: containment.
    op("iam:GetUser", Member),
    op("iam:GetRole", Member),
    op("iam:GetInstanceProfile", Member),
    op("iam:ListAttachedUserPolicies", Member),
    op("iam:ListAttachedRolePolicies", Member),
    op("iam:AttachUserPolicy", Member),
    op("iam:AttachRolePolicy", Member),
    op("iam:DetachUserPolicy", Member),
    op("iam:DetachRolePolicy", Member),
    op("iam:GetUserPolicy", Member),
    op("iam:GetRolePolicy", Member),
    op("iam:PutUserPolicy", Member),
    op("iam:PutRolePolicy", Member),
    op("iam:DeleteUserPolicy", Member),
    op("iam:DeleteRolePolicy", Member),
    op("iam:ListAccessKeys", Member),
    op("iam:UpdateAccessKey", Member),
    op("iam:GetLoginProfile", Member),
    op("iam:DeleteLoginProfile", Member),
    op("lambda:GetFunctionConfiguration", Member),
    op("lambda:ListFunctions", Member),
    op("lambda:GetFunctionConcurrency", Member),
    op("lambda:PutFunctionConcurrency", Member),
    op("lambda:DeleteFunctionConcurrency", Member),
    op("ec2:DescribeInstances", Member),
    op("ec2:DescribeInstanceAttribute", Member),
    op("ec2:ModifyInstanceAttribute", Member),
    op("ec2:DescribeNetworkInterfaces", Member),
    op("ec2:ModifyNetworkInterfaceAttribute", Member),
    op("ec2:DescribeSecurityGroups", Member),
    op("ec2:DescribeSecurityGroupRules", Member),
    op("ec2:CreateSecurityGroup", Member),
    op("ec2:AuthorizeSecurityGroupIngress", Member),
    op("ec2:AuthorizeSecurityGroupEgress", Member),
    op("ec2:RevokeSecurityGroupIngress", Member),
    op("ec2:RevokeSecurityGroupEgress", Member),
    op("ec2:CreateTags", Member),
    op("ec2:DescribeTags", Member),
    op("ec2:CreateSnapshot", Member),
    op("ec2:CopySnapshot", Member),
    op("ec2:DeleteSnapshot", Member),
    op("ec2:DescribeSnapshots", Member),
    op("ec2:DescribeSnapshotAttribute", Member),
    op("ec2:ModifySnapshotAttribute", Member),
    // Member accounts: remediation of buckets.
    op_as("s3:ListBuckets", "s3:ListAllMyBuckets", Member),
    op("s3:GetBucketLocation", Member),
    op("s3:GetBucketTagging", Member),
    op("s3:GetBucketAcl", Member),
    op("s3:PutBucketAcl", Member),
    op("s3:GetBucketPolicy", Member),
    op("s3:PutBucketPolicy", Member),
    op("s3:DeleteBucketPolicy", Member),
    op_as(
        "s3:GetPublicAccessBlock",
        "s3:GetBucketPublicAccessBlock",
        Member,
    ),
    op_as(
        "s3:PutPublicAccessBlock",
        "s3:PutBucketPublicAccessBlock",
        Member,
    ),
    // The management account: organization membership and OU paths.
    op("organizations:DescribeAccount", OrgReader),
    op("organizations:ListParents", OrgReader),
    op("organizations:ListAccountsForParent", OrgReader),
    op("organizations:ListOrganizationalUnitsForParent", OrgReader),
];

/// `service:Operation` from the SDK's own names (`Secrets Manager`, `AttachUserPolicy`).
pub fn call_name(service: &str, operation: &str) -> String {
    let service: String = service
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    format!("{service}:{operation}")
}

/// Whether `call` under `runs_as` is listed.
pub fn listed(call: &str, runs_as: RunsAs) -> bool {
    OPERATIONS
        .iter()
        .any(|o| o.call == call && o.runs_as == runs_as)
}
