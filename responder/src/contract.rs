//! Messages the responder accepts. The containment message is a public contract: fields are only
//! ever added.

use serde::{Deserialize, Serialize};

/// SNS message attribute that carries the ExternalId. Kept out of the body so that a body logged or
/// forwarded somewhere never carries the secret along with it.
pub const EXTERNAL_ID_ATTRIBUTE: &str = "ExternalId";

/// Version of the message body this responder understands.
pub const MESSAGE_VERSION: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Contain,
    /// Undo a containment from the ledger's recorded prior state.
    Release,
    /// A playbook's fix of a misconfiguration. Recorded by the responder itself; a containment
    /// message asking for it is refused.
    Remediate,
    /// Run the playbooks over every target account and Region (`entity` is `organization`).
    Sweep,
    /// Carry out a fix awaiting approval (`entity` is the remediation's ledger key).
    Approve,
    /// Drop a fix awaiting approval (`entity` is the remediation's ledger key).
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Contain => "contain",
            Action::Release => "release",
            Action::Remediate => "remediate",
            Action::Sweep => "sweep",
            Action::Approve => "approve",
            Action::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// EC2: take tagged snapshots of the instance's volumes for forensics.
    #[serde(default)]
    pub snapshot: bool,
    /// Release of an IAM user: make the access keys Quell deactivated active again.
    #[serde(default)]
    pub reactivate_keys: bool,
    /// Sweep: find and record, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Sweep: only these kinds of resource (`SWEEP_KINDS`); every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
}

/// The kinds of resource a sweep can be limited to.
pub const SWEEP_KINDS: &[&str] = &["security_group", "s3_bucket", "ebs_snapshot"];

impl Options {
    /// Whether a sweep with these options covers `kind`.
    pub fn sweeps(&self, kind: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|k| k == kind)
    }
}

/// Body of a containment message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainmentMessage {
    pub version: String,
    /// Chosen by the sender; the idempotency key. The same id sent twice is acted on once.
    pub request_id: String,
    pub action: Action,
    /// ARN of the entity to contain.
    pub entity: String,
    pub reason: String,
    /// Who asked, as the sender knows itself (the CLI puts the caller's ARN here).
    pub requester: String,
    #[serde(default)]
    pub options: Options,
}

impl ContainmentMessage {
    /// Request ids become ledger keys and appear in audit mail: keep them short and printable.
    pub fn request_id_is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }
}

/// The responder's note to itself that an EC2 containment's second phase is due (sent with a delay
/// to its own queue, so the wait costs no running Lambda).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationMessage {
    pub version: String,
    pub request_id: String,
}

/// Ledger key under which a rejected delivery is recorded: the SNS message id, which the
/// publisher learns from `Publish` even when the body was unreadable.
pub fn rejection_key(sns_message_id: &str) -> String {
    format!("delivery:{sns_message_id}")
}

/// The `entity` of a sweep request: the whole organization.
pub const SWEEP_ENTITY: &str = "organization";
