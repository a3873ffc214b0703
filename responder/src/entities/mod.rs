//! One module per entity type: the steps that contain it, each reading the state it changes first
//! so the ledger holds what a release must restore.

pub mod iam_user;

use crate::ledger::StepStatus;

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub detail: String,
    pub prior: serde_json::Value,
    pub new: serde_json::Value,
}

impl StepOutcome {
    pub fn done(
        detail: impl Into<String>,
        prior: serde_json::Value,
        new: serde_json::Value,
    ) -> Self {
        StepOutcome {
            status: StepStatus::Done,
            detail: detail.into(),
            prior,
            new,
        }
    }

    pub fn skipped(detail: impl Into<String>, prior: serde_json::Value) -> Self {
        StepOutcome {
            status: StepStatus::Skipped,
            new: prior.clone(),
            detail: detail.into(),
            prior,
        }
    }
}

/// Name of the inline policy that denies sessions issued before containment. The IAM console's
/// "Revoke active sessions" uses the same name, so operators recognise it.
pub const REVOKE_POLICY_NAME: &str = "AWSRevokeOlderSessions";

pub fn deny_all_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/AWSDenyAll")
}

/// The `aws:TokenIssueTime` deny: every session issued before `cutoff` is refused.
pub fn revoke_older_sessions_policy(cutoff: &chrono::DateTime<chrono::Utc>) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "QuellRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}
        }]
    })
    .to_string()
}
