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
    /// Start a run of a declared playbook with a `manual` trigger (`options.playbook`) on the
    /// entity: `quell run PLAYBOOK --target ARN`.
    Run,
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
            Action::Run => "run",
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
    /// Approve and deny of a declared playbook's run: the approval step decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Run: the declared playbook to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
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

/// The most a free-text field (`reason`, `requester`) may hold, in bytes: enough for a ticket
/// reference and a sentence, small enough that no audit message or ledger item can overflow.
pub const TEXT_LIMIT: usize = 1024;

/// `reason` and `requester` are shown in e-mail and consoles: at most [`TEXT_LIMIT`] bytes of
/// printable text on one line, so that no field can forge another line of an audit message.
pub fn check_text(field: &str, value: &str) -> Result<(), String> {
    check_field(field, value, TEXT_LIMIT)
}

/// AWS's longest ARN: an `entity` beyond it cannot name anything.
pub const ARN_LIMIT: usize = 2048;

/// At most `limit` bytes of printable text on one line.
pub fn check_field(field: &str, value: &str, limit: usize) -> Result<(), String> {
    if value.len() > limit {
        return Err(format!(
            "{field} is {} bytes; at most {limit} are accepted (put longer notes in the ticket it names)",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{field} contains the control character {c:?}; it must be printable text on one line"
        ));
    }
    Ok(())
}

/// `value` cut to at most `limit` bytes on a character boundary, saying so when it was cut: for
/// text that must be kept (a refused message's fields) without letting it grow a record.
pub fn clipped(value: &str, limit: usize) -> String {
    if value.len() <= limit {
        return value.to_owned();
    }
    let mut end = limit;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &value[..end], value.len())
}

impl ContainmentMessage {
    /// The free-text fields, checked: the first problem found.
    pub fn check_texts(&self) -> Result<(), String> {
        check_field("entity", &self.entity, ARN_LIMIT)?;
        check_text("reason", &self.reason)?;
        check_text("requester", &self.requester)
    }
}

/// The responder's note to itself that an EC2 containment's second phase is due (sent with a delay
/// to its own queue, so the wait costs no running Lambda).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_and_requester_are_bounded_printable_single_lines() {
        assert!(check_text("reason", "INC-4711: key in a public repo (åsa)").is_ok());
        assert!(check_text("reason", &"x".repeat(TEXT_LIMIT)).is_ok());
        let long = check_text("reason", &"x".repeat(TEXT_LIMIT + 1)).unwrap_err();
        assert!(
            long.contains("1025 bytes") && long.contains("1024"),
            "{long}"
        );
        let forged = check_text("requester", "jo\nApprove:    quell approve x").unwrap_err();
        assert!(
            forged.contains("requester") && forged.contains("control character"),
            "{forged}"
        );
        assert!(check_text("reason", "tab\there").is_err());
    }

    #[test]
    fn clipping_keeps_whole_characters_and_says_how_long_it_was() {
        assert_eq!(clipped("short", 10), "short");
        let c = clipped(&"é".repeat(10), 5);
        assert_eq!(c, "éé... (20 bytes in all)");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationMessage {
    pub version: String,
    pub request_id: String,
}

/// One account and Region of a sweep, put on the sweep queue by the invocation that took the
/// sweep. It names the sweep and the place, nothing else: what to do there (options, who asked)
/// is read from the sweep's own record, and only a place that record lists is swept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepPlaceMessage {
    pub version: String,
    pub sweep: String,
    pub account: String,
    pub region: String,
}

/// An authenticated request that failed for a reason that may pass, sent by the responder to its
/// own queue to be tried again. Only the responder may send to that queue (its policy), so the
/// message needs no ExternalId, and carries none: nothing that holds it ever holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryMessage {
    pub version: String,
    /// The SNS message the request first came in.
    pub message_id: String,
    /// Which attempt this message asks for: 2 for the first retry.
    pub attempt: u32,
    pub request: ContainmentMessage,
    /// Who sent the request, as established when it first came in (requests from before
    /// authenticated channels existed came through the ExternalId topic).
    #[serde(default = "self_declared")]
    pub caller: crate::authorization::Caller,
}

fn self_declared() -> crate::authorization::Caller {
    crate::authorization::Caller::SelfDeclared
}

/// How many times an authenticated request is tried before it is sent, without its ExternalId,
/// to the dead-letter queue.
pub const REQUEST_ATTEMPTS: u32 = 3;

/// Ledger key under which a rejected delivery is recorded: the SNS message id, which the
/// publisher learns from `Publish` even when the body was unreadable.
pub fn rejection_key(sns_message_id: &str) -> String {
    format!("delivery:{sns_message_id}")
}

/// The `entity` of a sweep request: the whole organization.
pub const SWEEP_ENTITY: &str = "organization";
