//! Every AWS operation the responder and the `quell` CLI can call, with the identity each runs
//! as. For the responder's roles, a render test checks that each role's policy in the templates
//! grants each action; the end-to-end suite fails on any operation the responder or the CLI
//! called that is not listed here: a permission cannot go missing unseen again (moto enforces
//! none of them in normal use). An admin reads here what each CLI command needs, and
//! `QUELL_CALL_LOG=FILE` records what a run of the CLI called.

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

/// One operation: `service:Operation` as the SDK names it, an IAM action it needs. An operation
/// that also needs a dependent action (`iam:PassRole` for a schedule's role) has an entry for each.
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
    // A sweep's tally, counted into by each place.
    op("dynamodb:UpdateItem", Execution),
    op("dynamodb:Query", Execution),
    op("dynamodb:DeleteItem", Execution),
    op("sns:Publish", Execution),
    op("sqs:SendMessage", Execution),
    // A sweep's places, ten to a call.
    op_as("sqs:SendMessageBatch", "sqs:SendMessage", Execution),
    // A run's waits beyond 15 minutes, delivered as the timer role the responder passes.
    op("scheduler:CreateSchedule", Execution),
    op_as("scheduler:CreateSchedule", "iam:PassRole", Execution),
    op("secretsmanager:GetSecretValue", Execution),
    op("securityhub:BatchUpdateFindings", Execution),
    op("sts:AssumeRole", Execution),
    // The declared playbooks' document, in the artifacts bucket.
    op("s3:GetObject", Execution),
    op("iam:GetRole", Execution),
    op("iam:GetUser", Execution),
    // Member accounts: containment.
    op("iam:GetUser", Member),
    op("iam:GetRole", Member),
    op("iam:GetInstanceProfile", Member),
    // Scheduled playbooks over users and roles.
    op("iam:ListUsers", Member),
    op("iam:ListRoles", Member),
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
    op("lambda:ListTags", Member),
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
    op("ec2:DeleteTags", Member),
    op("ssm:SendCommand", Member),
    op("ssm:GetCommandInvocation", Member),
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

/// `service:Operation` with IAM's service prefix, from the SDK's own names (`Secrets Manager`,
/// `AttachUserPolicy`).
pub fn call_name(service: &str, operation: &str) -> String {
    let squeezed: String = service
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    // Where the SDK's service id is not IAM's prefix.
    let prefix = match squeezed.as_str() {
        "configservice" => "config",
        "eventbridge" => "events",
        "cloudwatchlogs" => "logs",
        other => other,
    };
    format!("{prefix}:{operation}")
}

/// Whether `call` under `runs_as` is listed.
pub fn listed(call: &str, runs_as: RunsAs) -> bool {
    OPERATIONS
        .iter()
        .any(|o| o.call == call && o.runs_as == runs_as)
}

/// The identity a CLI call runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliAs {
    /// Whoever runs quell: the management account, or a StackSets delegated administrator.
    Caller,
    /// `security_account_role` assumed in the security account (or the caller, already there).
    Security,
    /// The caller in the management account, or `management_account_role` there.
    Management,
    /// The analyst sending a request: the caller's own identity.
    Operator,
    /// Only `quell sandbox`, against the local emulator: never sent to AWS.
    Sandbox,
}

use CliAs::{Caller, Operator, Sandbox, Security};

/// (`service:Operation`, as, commands that call it).
pub const CLI_OPERATIONS: &[(&str, CliAs, &str)] = &[
    ("sts:GetCallerIdentity", Caller, "every command"),
    (
        "sts:AssumeRole",
        Caller,
        "every command reaching another account",
    ),
    (
        "organizations:DescribeOrganization",
        Caller,
        "install, upgrade, status, uninstall, doctor",
    ),
    (
        "organizations:ListRoots",
        Caller,
        "install, upgrade, status, uninstall, doctor",
    ),
    (
        "organizations:ListOrganizationalUnitsForParent",
        Caller,
        "install, upgrade, status, uninstall, doctor",
    ),
    (
        "organizations:ListAccountsForParent",
        Caller,
        "install, upgrade, status, uninstall, doctor",
    ),
    ("organizations:DescribeAccount", Caller, "doctor"),
    (
        "organizations:DescribeOrganizationalUnit",
        Caller,
        "install, upgrade",
    ),
    ("organizations:ListParents", Caller, "install, upgrade"),
    (
        "organizations:ListDelegatedAdministrators",
        Caller,
        "doctor",
    ),
    (
        "organizations:ListAWSServiceAccessForOrganization",
        Caller,
        "install, doctor",
    ),
    (
        "organizations:EnableAWSServiceAccess",
        Caller,
        "install (trusted access)",
    ),
    (
        "cloudformation:ActivateOrganizationsAccess",
        Caller,
        "install (trusted access)",
    ),
    ("cloudformation:CreateStackSet", Caller, "install"),
    ("cloudformation:UpdateStackSet", Caller, "upgrade"),
    ("cloudformation:DeleteStackSet", Caller, "uninstall"),
    (
        "cloudformation:DescribeStackSet",
        Caller,
        "install, upgrade, status, uninstall",
    ),
    (
        "cloudformation:CreateStackInstances",
        Caller,
        "install, upgrade",
    ),
    (
        "cloudformation:UpdateStackInstances",
        Caller,
        "upgrade --retry-failed",
    ),
    (
        "cloudformation:DeleteStackInstances",
        Caller,
        "upgrade, uninstall",
    ),
    (
        "cloudformation:ListStackInstances",
        Caller,
        "install, upgrade, status, uninstall",
    ),
    (
        "cloudformation:DescribeStackSetOperation",
        Caller,
        "install, upgrade, uninstall",
    ),
    (
        "cloudformation:ListStackSetOperations",
        Caller,
        "install, upgrade, uninstall",
    ),
    (
        "cloudformation:ListStackSetOperationResults",
        Caller,
        "install, upgrade, uninstall",
    ),
    (
        "cloudformation:DetectStackSetDrift",
        Caller,
        "status --drift",
    ),
    (
        "cloudformation:CreateStack",
        Security,
        "install (also Management)",
    ),
    (
        "cloudformation:UpdateStack",
        Security,
        "upgrade (also Management)",
    ),
    (
        "cloudformation:DeleteStack",
        Security,
        "uninstall (also Management)",
    ),
    (
        "cloudformation:DescribeStacks",
        Security,
        "every command that finds the deployment",
    ),
    (
        "cloudformation:DescribeStackEvents",
        Security,
        "install, upgrade (failure reasons)",
    ),
    ("cloudformation:GetTemplate", Security, "upgrade, status"),
    ("cloudformation:ListStacks", Security, "uninstall"),
    (
        "s3:HeadObject",
        Security,
        "install, upgrade (package already there?)",
    ),
    (
        "s3:PutObject",
        Security,
        "install, upgrade (responder package)",
    ),
    ("s3:ListObjectVersions", Security, "uninstall"),
    ("s3:DeleteObjects", Security, "uninstall"),
    ("s3:DeleteBucket", Security, "uninstall"),
    ("secretsmanager:CreateSecret", Security, "install"),
    (
        "secretsmanager:DescribeSecret",
        Security,
        "install, upgrade",
    ),
    (
        "secretsmanager:GetSecretValue",
        Security,
        "install, upgrade, rotate-external-id",
    ),
    (
        "secretsmanager:PutSecretValue",
        Security,
        "rotate-external-id",
    ),
    ("secretsmanager:DeleteSecret", Security, "uninstall"),
    (
        "securityhub:CreateActionTarget",
        Security,
        "install, upgrade",
    ),
    (
        "securityhub:DeleteActionTarget",
        Security,
        "upgrade, uninstall",
    ),
    (
        "securityhub:DescribeActionTargets",
        Security,
        "install, upgrade, doctor",
    ),
    (
        "securityhub:DescribeOrganizationConfiguration",
        Security,
        "doctor",
    ),
    ("dynamodb:DescribeTable", Security, "uninstall"),
    (
        "dynamodb:UpdateTable",
        Security,
        "uninstall --delete-ledger",
    ),
    (
        "dynamodb:DeleteTable",
        Security,
        "uninstall --delete-ledger",
    ),
    ("dynamodb:Scan", Security, "history, status, uninstall"),
    ("dynamodb:Query", Security, "history ARN, uninstall"),
    (
        "dynamodb:GetItem",
        Operator,
        "contain, release, approve, deny, sweep (the outcome; a sweep's progress)",
    ),
    (
        "dynamodb:BatchGetItem",
        Operator,
        "sweep (each place's record)",
    ),
    (
        "sqs:GetQueueUrl",
        Operator,
        "contain, release, approve, deny, sweep",
    ),
    (
        "sqs:SendMessage",
        Operator,
        "contain, release, approve, deny, sweep",
    ),
    (
        "ec2:DescribeSecurityGroups",
        Caller,
        "uninstall (Quell's groups, through the member role)",
    ),
    (
        "ec2:DescribeNetworkInterfaces",
        Caller,
        "uninstall (groups in use)",
    ),
    (
        "ec2:DeleteSecurityGroup",
        Caller,
        "uninstall (unused isolation groups)",
    ),
    (
        "config:DescribeConfigurationRecorderStatus",
        Caller,
        "doctor (through each account's role)",
    ),
    ("config:DescribeConfigurationRecorders", Caller, "doctor"),
    ("cloudtrail:DescribeTrails", Caller, "doctor"),
    ("cloudtrail:GetTrailStatus", Caller, "doctor"),
    ("securityhub:DescribeHub", Caller, "doctor"),
    ("lambda:GetFunctionConfiguration", Sandbox, "sandbox host"),
    ("iam:CreateUser", Sandbox, "sandbox up (seed)"),
    ("iam:CreateAccessKey", Sandbox, "sandbox up (seed)"),
    ("iam:CreateLoginProfile", Sandbox, "sandbox up (seed)"),
    ("iam:AttachUserPolicy", Sandbox, "sandbox up (seed)"),
    ("iam:AttachRolePolicy", Sandbox, "sandbox up (seed)"),
    ("iam:CreateRole", Sandbox, "sandbox up (seed)"),
    ("iam:CreateInstanceProfile", Sandbox, "sandbox up (seed)"),
    ("iam:AddRoleToInstanceProfile", Sandbox, "sandbox up (seed)"),
    ("organizations:CreateOrganization", Sandbox, "sandbox up"),
    (
        "organizations:CreateOrganizationalUnit",
        Sandbox,
        "sandbox up",
    ),
    ("organizations:CreateAccount", Sandbox, "sandbox up"),
    ("organizations:MoveAccount", Sandbox, "sandbox up"),
    ("ec2:DescribeVpcs", Sandbox, "sandbox up (seed)"),
    ("ec2:CreateSecurityGroup", Sandbox, "sandbox up (seed)"),
    (
        "ec2:AuthorizeSecurityGroupIngress",
        Sandbox,
        "sandbox up (seed), sandbox demo",
    ),
    ("ec2:RunInstances", Sandbox, "sandbox up (seed)"),
    ("ec2:CreateVolume", Sandbox, "sandbox up (seed)"),
    ("ec2:CreateSnapshot", Sandbox, "sandbox up (seed)"),
    ("ec2:ModifySnapshotAttribute", Sandbox, "sandbox up (seed)"),
    ("lambda:CreateFunction", Sandbox, "sandbox up (seed)"),
    ("s3:CreateBucket", Sandbox, "sandbox up (seed)"),
    (
        "s3:PutBucketAcl",
        Sandbox,
        "sandbox up (seed), sandbox demo",
    ),
    ("s3:PutBucketPolicy", Sandbox, "sandbox up (seed)"),
    (
        "s3:GetObject",
        Sandbox,
        "sandbox host (the responder package)",
    ),
    ("sns:Subscribe", Sandbox, "sandbox host (the inbox queue)"),
    (
        "lambda:ListEventSourceMappings",
        Sandbox,
        "install --sandbox (the emulator's own mappings, disabled)",
    ),
    (
        "lambda:UpdateEventSourceMapping",
        Sandbox,
        "install --sandbox (the emulator's own mappings, disabled)",
    ),
    (
        "scheduler:GetScheduleGroup",
        Sandbox,
        "install --sandbox (the timer group)",
    ),
    (
        "scheduler:CreateScheduleGroup",
        Sandbox,
        "install --sandbox (the timer group)",
    ),
    ("sns:ListSubscriptionsByTopic", Sandbox, "sandbox host"),
    ("sqs:CreateQueue", Sandbox, "sandbox host (the inbox queue)"),
    (
        "sqs:DeleteQueue",
        Sandbox,
        "uninstall in the sandbox (the inbox queue)",
    ),
    ("sqs:GetQueueAttributes", Sandbox, "sandbox host"),
    (
        "sqs:ReceiveMessage",
        Sandbox,
        "sandbox host (standing in for Lambda)",
    ),
    ("sqs:DeleteMessage", Sandbox, "sandbox host"),
    ("sqs:GetQueueUrl", Security, "dlq"),
    ("sqs:ReceiveMessage", Security, "dlq"),
    (
        "sqs:ChangeMessageVisibility",
        Security,
        "dlq (what it does not send back is visible again at once)",
    ),
    (
        "sqs:SendMessage",
        Security,
        "dlq redrive (to the events queue)",
    ),
    ("sqs:DeleteMessage", Security, "dlq redrive"),
];

/// Whether the CLI's `call` (`service:Operation`) is listed.
pub fn cli_listed(call: &str) -> bool {
    CLI_OPERATIONS.iter().any(|(c, _, _)| *c == call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_service_ids_become_iam_prefixes() {
        assert_eq!(
            call_name("Secrets Manager", "GetSecretValue"),
            "secretsmanager:GetSecretValue"
        );
        assert_eq!(
            call_name("Config Service", "DescribeConfigurationRecorderStatus"),
            "config:DescribeConfigurationRecorderStatus"
        );
        assert_eq!(call_name("EventBridge", "PutEvents"), "events:PutEvents");
        assert_eq!(call_name("IAM", "GetRole"), "iam:GetRole");
    }

    #[test]
    fn no_operation_is_listed_twice_for_one_identity() {
        let mut seen = std::collections::BTreeSet::new();
        for o in OPERATIONS {
            // One operation may need two actions (CreateSchedule passes a role): one entry each.
            assert!(
                seen.insert((o.call, o.action, o.runs_as.as_str())),
                "{} ({}) twice",
                o.call,
                o.action
            );
        }
        let mut cli = std::collections::BTreeSet::new();
        for (call, runs_as, _) in CLI_OPERATIONS {
            assert!(
                cli.insert((*call, format!("{runs_as:?}"))),
                "{call} twice for {runs_as:?} in CLI_OPERATIONS"
            );
        }
    }
}
