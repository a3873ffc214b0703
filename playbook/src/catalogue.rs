//! The actions a playbook step may name. Each declares its typed parameters, its outputs, what
//! undoes it (what a release runs), whether it writes, and the IAM actions it needs in a member
//! account, so that render can show the member role's policy a playbook implies. Nothing outside
//! this list runs: a playbook chooses among Quell's actions, it never brings its own.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    Text,
    Texts,
    Boolean,
    Number,
    Duration,
    /// A mapping of text to text (tags).
    TextMap,
    /// One of the listed values.
    OneOf(&'static [&'static str]),
    /// IAM principal ARN patterns.
    Principals,
    /// A condition tree.
    Condition,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Param {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: Type,
    pub required: bool,
    /// Whether `${{ }}` may fill it. Never for what shapes a policy or a command.
    pub templated: bool,
}

const fn param(name: &'static str, kind: Type, required: bool) -> Param {
    Param {
        name,
        kind,
        required,
        templated: true,
    }
}

const fn fixed(name: &'static str, kind: Type, required: bool) -> Param {
    Param {
        name,
        kind,
        required,
        templated: false,
    }
}

/// What an action is, as the catalogue declares it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Action {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    pub outputs: &'static [&'static str],
    /// The action that undoes it on release; `None` when nothing does (evidence, notices).
    pub inverse: Option<&'static str>,
    /// Changes something in an account (checked against exemptions right before it runs).
    pub writes: bool,
    /// IAM actions the member role needs for it.
    pub iam: &'static [&'static str],
    /// Resource types it acts on (`any` for those that take no target).
    pub targets: &'static [&'static str],
}

/// Control steps: the run's own flow, not AWS calls.
pub const CONTROL: &[&str] = &["approval", "wait", "wait_for", "release", "end", "fail"];

/// Control steps that must say how long they may last and what happens then.
pub const BOUNDED: &[&str] = &["approval", "wait_for"];

pub const INSTANCE: &[&str] = &["AWS::EC2::Instance"];

pub const ACTIONS: &[Action] = &[
    Action {
        name: "tag",
        summary: "Add tags to the target",
        params: &[param("tags", Type::TextMap, true)],
        outputs: &[],
        inverse: Some("untag"),
        writes: true,
        iam: &["ec2:CreateTags", "ec2:DescribeTags"],
        targets: INSTANCE,
    },
    Action {
        name: "untag",
        summary: "Remove tags from the target",
        params: &[param("keys", Type::Texts, true)],
        outputs: &[],
        inverse: Some("tag"),
        writes: true,
        iam: &["ec2:DeleteTags", "ec2:DescribeTags"],
        targets: INSTANCE,
    },
    Action {
        name: "ec2.snapshot_volumes",
        summary: "Snapshot every attached volume, as evidence",
        params: &[param("description", Type::Text, false)],
        outputs: &["snapshot_ids"],
        inverse: None,
        writes: true,
        iam: &["ec2:DescribeInstances", "ec2:CreateSnapshot", "ec2:CreateTags"],
        targets: INSTANCE,
    },
    Action {
        name: "ec2.quarantine",
        summary: "Isolate the instance: deny_all (all traffic, two-phase) or patch_egress (HTTPS to SSM and the package repositories only)",
        params: &[fixed("profile", Type::OneOf(&["deny_all", "patch_egress"]), true)],
        outputs: &["isolation_group", "previous_groups"],
        inverse: Some("ec2.release_quarantine"),
        writes: true,
        iam: &[
            "ec2:DescribeInstances",
            "ec2:DescribeSecurityGroups",
            "ec2:CreateSecurityGroup",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:CreateTags",
        ],
        targets: INSTANCE,
    },
    Action {
        name: "ec2.release_quarantine",
        summary: "Put the instance's recorded security groups back",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["ec2:DescribeInstances", "ec2:ModifyNetworkInterfaceAttribute"],
        targets: INSTANCE,
    },
    Action {
        name: "iam.contain_user",
        summary: "Deactivate the user's keys, delete its console password, deny all",
        params: &[],
        outputs: &["deactivated_keys"],
        inverse: Some("iam.release_user"),
        writes: true,
        iam: &[
            "iam:GetUser",
            "iam:ListAccessKeys",
            "iam:UpdateAccessKey",
            "iam:DeleteLoginProfile",
            "iam:AttachUserPolicy",
            "iam:PutUserPolicy",
        ],
        targets: &["AWS::IAM::User"],
    },
    Action {
        name: "iam.release_user",
        summary: "Remove the deny; keys stay inactive unless reactivate_keys",
        params: &[fixed("reactivate_keys", Type::Boolean, false)],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["iam:DetachUserPolicy", "iam:DeleteUserPolicy", "iam:UpdateAccessKey"],
        targets: &["AWS::IAM::User"],
    },
    Action {
        name: "iam.contain_role",
        summary: "Deny all to the role and to its sessions issued before now",
        params: &[],
        outputs: &[],
        inverse: Some("iam.release_role"),
        writes: true,
        iam: &["iam:GetRole", "iam:AttachRolePolicy", "iam:PutRolePolicy"],
        targets: &["AWS::IAM::Role"],
    },
    Action {
        name: "iam.release_role",
        summary: "Remove the role's deny",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["iam:DetachRolePolicy", "iam:DeleteRolePolicy"],
        targets: &["AWS::IAM::Role"],
    },
    Action {
        name: "iam.revoke_sessions",
        summary: "Deny the role's sessions issued before the run started; new sessions still work",
        params: &[],
        outputs: &[],
        inverse: Some("iam.restore_sessions"),
        writes: true,
        iam: &["iam:GetRole", "iam:PutRolePolicy"],
        targets: &["AWS::IAM::Role"],
    },
    Action {
        name: "iam.restore_sessions",
        summary: "Remove the session revocation",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["iam:DeleteRolePolicy"],
        targets: &["AWS::IAM::Role"],
    },
    Action {
        name: "iam.session_instance",
        summary: "The EC2 instance whose instance-profile credentials a session used (its session name), read back to exist in the account",
        params: &[param("principal_id", Type::Text, true)],
        outputs: &["instance_id"],
        inverse: None,
        writes: false,
        iam: &["ec2:DescribeInstances"],
        targets: &["any"],
    },
    Action {
        name: "lambda.contain",
        summary: "Stop the function: reserved concurrency 0 and a deny on its role",
        params: &[],
        outputs: &[],
        inverse: Some("lambda.release"),
        writes: true,
        iam: &["lambda:GetFunctionConfiguration", "lambda:ListTags", "lambda:PutFunctionConcurrency", "iam:PutRolePolicy"],
        targets: &["AWS::Lambda::Function"],
    },
    Action {
        name: "lambda.release",
        summary: "Restore the function's recorded concurrency and its role",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency", "iam:DeleteRolePolicy"],
        targets: &["AWS::Lambda::Function"],
    },
    Action {
        name: "sg.revoke_open_ingress",
        summary: "Revoke the group's rules open to the world on the configured ports",
        params: &[],
        outputs: &["revoked"],
        inverse: None,
        writes: true,
        iam: &["ec2:DescribeSecurityGroupRules", "ec2:RevokeSecurityGroupIngress"],
        targets: &["AWS::EC2::SecurityGroup"],
    },
    Action {
        name: "s3.make_private",
        summary: "Block public access, remove public ACL grants and public policy statements",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["s3:GetBucketAcl", "s3:PutBucketAcl", "s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutBucketPublicAccessBlock"],
        targets: &["AWS::S3::Bucket"],
    },
    Action {
        name: "ebs.snapshot_make_private",
        summary: "Remove the everyone permission from a snapshot",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["ec2:DescribeSnapshotAttribute", "ec2:ModifySnapshotAttribute"],
        targets: &["AWS::EC2::Snapshot"],
    },
    Action {
        name: "ebs.snapshot_encrypt_copy",
        summary: "Make an encrypted copy of an unencrypted snapshot (the configured KMS key), both tagged with the other's id, and wait until it is completed",
        params: &[],
        outputs: &["copy_id"],
        inverse: None,
        writes: true,
        iam: &[
            "ec2:DescribeSnapshots",
            "ec2:DescribeSnapshotAttribute",
            "ec2:CopySnapshot",
            "ec2:CreateTags",
            "kms:CreateGrant",
            "kms:GenerateDataKeyWithoutPlaintext",
        ],
        targets: &["AWS::EC2::Snapshot"],
    },
    Action {
        name: "ebs.snapshot_delete_original",
        summary: "Delete an unencrypted snapshot once its encrypted copy reads back completed (irreversible: put an approval before it)",
        params: &[],
        outputs: &[],
        inverse: None,
        writes: true,
        iam: &["ec2:DescribeSnapshots", "ec2:DescribeSnapshotAttribute", "ec2:DeleteSnapshot"],
        targets: &["AWS::EC2::Snapshot"],
    },
    Action {
        name: "ssm.run_document",
        summary: "Run an allow-listed SSM document on the instance and wait for its result",
        params: &[fixed("document", Type::Text, true), param("parameters", Type::TextMap, false)],
        outputs: &["command_id", "status"],
        inverse: None,
        writes: true,
        iam: &["ssm:SendCommand", "ssm:GetCommandInvocation", "ssm:DescribeInstanceInformation"],
        targets: INSTANCE,
    },
    Action {
        name: "patch.scan",
        summary: "AWS-RunPatchBaseline with Operation=Scan",
        params: &[],
        outputs: &["command_id", "status", "missing"],
        inverse: None,
        writes: false,
        iam: &["ssm:SendCommand", "ssm:GetCommandInvocation", "ssm:DescribeInstanceInformation"],
        targets: INSTANCE,
    },
    Action {
        name: "patch.install",
        summary: "AWS-RunPatchBaseline with Operation=Install",
        params: &[fixed("reboot", Type::OneOf(&["if_needed", "never"]), false)],
        outputs: &["command_id", "status"],
        inverse: None,
        writes: true,
        iam: &["ssm:SendCommand", "ssm:GetCommandInvocation", "ssm:DescribeInstanceInformation"],
        targets: INSTANCE,
    },
    Action {
        name: "ticket.open",
        summary: "Open a ticket through a configured webhook (generic JSON, Jira or ServiceNow)",
        params: &[fixed("webhook", Type::Text, true), param("title", Type::Text, true), param("body", Type::Text, false)],
        outputs: &["ticket_id"],
        inverse: Some("ticket.close"),
        writes: false,
        iam: &[],
        targets: &["any"],
    },
    Action {
        name: "ticket.comment",
        summary: "Comment on the run's ticket",
        params: &[fixed("webhook", Type::Text, true), param("ticket_id", Type::Text, true), param("body", Type::Text, true)],
        outputs: &[],
        inverse: None,
        writes: false,
        iam: &[],
        targets: &["any"],
    },
    Action {
        name: "ticket.close",
        summary: "Close the run's ticket",
        params: &[fixed("webhook", Type::Text, true), param("ticket_id", Type::Text, true), param("body", Type::Text, false)],
        outputs: &[],
        inverse: None,
        writes: false,
        iam: &[],
        targets: &["any"],
    },
    Action {
        name: "notify",
        summary: "Publish a message to the audit topic (and a configured webhook)",
        params: &[param("message", Type::Text, true), fixed("webhook", Type::Text, false)],
        outputs: &[],
        inverse: None,
        writes: false,
        iam: &[],
        targets: &["any"],
    },
    Action {
        name: "finding.update",
        summary: "Set the Security Hub finding's workflow status and add a note",
        params: &[fixed("workflow", Type::OneOf(&["NEW", "NOTIFIED", "RESOLVED", "SUPPRESSED"]), false), param("note", Type::Text, false)],
        outputs: &[],
        inverse: None,
        writes: false,
        iam: &[],
        targets: &["any"],
    },
    Action {
        name: "verify",
        summary: "Read the target again and fail unless the condition holds",
        params: &[fixed("when", Type::Condition, true)],
        outputs: &[],
        inverse: None,
        writes: false,
        iam: &[],
        targets: &["any"],
    },
];

/// The parameters of the control steps.
pub const CONTROL_PARAMS: &[(&str, &[Param])] = &[
    (
        "approval",
        &[
            fixed("approvers", Type::Principals, true),
            fixed("min", Type::Number, false),
            param("summary", Type::Text, true),
        ],
    ),
    ("wait", &[fixed("for", Type::Duration, true)]),
    ("wait_for", &[fixed("event", Type::Condition, true)]),
    ("release", &[fixed("steps", Type::Texts, true)]),
    ("end", &[]),
    ("fail", &[param("reason", Type::Text, true)]),
];

/// Outputs of control steps.
pub const CONTROL_OUTPUTS: &[(&str, &[&str])] = &[
    ("approval", &["decision", "approvers"]),
    ("wait_for", &["event"]),
];

pub fn action(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name == name)
}

/// Every action name a step may use.
pub fn names() -> Vec<&'static str> {
    ACTIONS
        .iter()
        .map(|a| a.name)
        .chain(CONTROL.iter().copied())
        .collect()
}

/// The SSM documents a playbook may run without the configuration adding any.
pub const DEFAULT_DOCUMENTS: &[&str] = &["AWS-RunPatchBaseline", "AWS-RunPatchBaselineWithHooks"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inverse_is_in_the_catalogue_and_writes() {
        for a in ACTIONS {
            if let Some(inverse) = a.inverse {
                let i = action(inverse).unwrap_or_else(|| panic!("{}: inverse {inverse}", a.name));
                assert!(i.writes || !a.writes, "{} is undone by a write", a.name);
            }
            assert!(
                a.iam
                    .iter()
                    .all(|p| p.split_once(':').is_some_and(|(s, op)| !s.is_empty()
                        && op.chars().next().is_some_and(char::is_uppercase))),
                "{}: IAM actions are service:Operation",
                a.name
            );
        }
    }

    #[test]
    fn nothing_that_shapes_a_policy_or_command_takes_a_template() {
        for a in ACTIONS {
            for p in a.params {
                if matches!(p.name, "document" | "profile" | "webhook" | "when") {
                    assert!(
                        !p.templated,
                        "{}.{} is fixed in the playbook",
                        a.name, p.name
                    );
                }
            }
        }
    }
}
