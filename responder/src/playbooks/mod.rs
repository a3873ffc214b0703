//! Auto-remediation: each playbook a module of its own, saying what it matches, what it changes
//! and what it records. Events are parsed once (`event`) into triggers; the engine checks
//! membership, exemptions and the playbook's mode, then runs the playbook.

pub mod bucket;
pub mod event;
pub mod exposure;
pub mod security_group;
pub mod snapshot;

/// Playbooks declared in the configuration: the language lives in its own crate, which calls no
/// AWS API.
pub use quell_playbook as language;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ResponderError;

/// What a playbook does when it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Fix it.
    #[default]
    Auto,
    /// Record what would be fixed, tell the audit topic, and wait for `quell approve ID` (act) or
    /// `quell deny ID` (drop).
    Approve,
    /// Only tell: record what would be fixed and publish it to the audit topic.
    Notify,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Approve => "approve",
            Mode::Notify => "notify",
        }
    }
}

/// A playbook whose only setting is its mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeOnly {
    #[serde(default)]
    pub mode: Mode,
}

/// Unencrypted EBS snapshots: the encrypted copy is made in `auto` mode; deleting the original
/// always waits for approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionPlaybook {
    #[serde(default)]
    pub mode: Mode,
    /// KMS key (id, ARN or alias) for the copies; the account's default EBS key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupPlaybook {
    #[serde(default)]
    pub mode: Mode,
    /// Ports that must not be open to the internet.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
}

fn default_ports() -> Vec<u16> {
    exposure::DEFAULT_SENSITIVE_PORTS.to_vec()
}

impl Default for SecurityGroupPlaybook {
    fn default() -> Self {
        SecurityGroupPlaybook {
            mode: Mode::Auto,
            ports: default_ports(),
        }
    }
}

/// Resources, accounts and OUs no playbook touches. Every skip is recorded with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exemptions {
    /// A resource with this tag is left alone; the tag's value is the reason, and an empty value
    /// does not count (an exemption must say why).
    #[serde(default = "default_tag")]
    pub tag: String,
    #[serde(default)]
    pub accounts: Vec<String>,
    /// OUs (and their child OUs).
    #[serde(default)]
    pub organizational_units: Vec<String>,
}

fn default_tag() -> String {
    "quell:exempt".into()
}

/// What a resource's tags say about exempting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExemption {
    None,
    /// Exempt, with the reason the tag gives.
    Exempt(String),
    /// The tag is there without a reason: it does not exempt, and the record says so.
    Unexplained,
}

impl Exemptions {
    /// Why `account` is exempt, given the OUs above it; `None` when it is not.
    pub fn for_account(&self, account: &str, ancestors: &[String]) -> Option<String> {
        if self.accounts.iter().any(|a| a == account) {
            return Some(format!(
                "exempt: account {account} is in exemptions.accounts"
            ));
        }
        ancestors
            .iter()
            .find(|a| self.organizational_units.contains(a))
            .map(|ou| {
                format!("exempt: account {account} is in OU {ou} (exemptions.organizational_units)")
            })
    }

    pub fn for_tags(&self, tags: &HashMap<String, String>) -> TagExemption {
        match tags.get(&self.tag).map(|v| v.trim()) {
            Some("") => TagExemption::Unexplained,
            Some(reason) => TagExemption::Exempt(format!("exempt by tag {}: {reason}", self.tag)),
            None => TagExemption::None,
        }
    }
}

impl Default for Exemptions {
    fn default() -> Self {
        Exemptions {
            tag: default_tag(),
            accounts: Vec::new(),
            organizational_units: Vec::new(),
        }
    }
}

/// The organization-wide sweep: where it looks and how many places at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSettings {
    /// The StackSets' targets: OUs (with their child OUs) and single accounts.
    #[serde(default)]
    pub organizational_units: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    /// Accounts x Regions swept at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    8
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            organizational_units: Vec::new(),
            accounts: Vec::new(),
            regions: Vec::new(),
            concurrency: default_concurrency(),
        }
    }
}

/// Everything the playbooks are configured with (`QUELL_PLAYBOOKS`, JSON, set by the security
/// stack from the `playbooks` and `exemptions` sections of the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookSettings {
    #[serde(default)]
    pub open_security_group: SecurityGroupPlaybook,
    #[serde(default)]
    pub public_bucket: ModeOnly,
    #[serde(default)]
    pub public_snapshot: ModeOnly,
    #[serde(default)]
    pub unencrypted_snapshot: EncryptionPlaybook,
    #[serde(default)]
    pub exemptions: Exemptions,
    #[serde(default)]
    pub sweep: SweepSettings,
}

impl PlaybookSettings {
    pub fn parse(json: &str) -> Result<PlaybookSettings, ResponderError> {
        serde_json::from_str(json).map_err(|e| {
            ResponderError::Settings(format!(
                "QUELL_PLAYBOOKS is not the playbook settings the security stack writes: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exemptions_say_why_and_a_tag_without_a_reason_does_not_exempt() {
        let ex = Exemptions {
            accounts: vec!["111122223333".into()],
            organizational_units: vec!["ou-ab12-sandbox1".into()],
            ..Exemptions::default()
        };
        assert!(ex
            .for_account("111122223333", &[])
            .unwrap()
            .contains("exemptions.accounts"));
        let via_ou = ex.for_account(
            "444455556666",
            &["ou-ab12-sandbox1".into(), "r-ab12".into()],
        );
        assert!(via_ou.unwrap().contains("ou-ab12-sandbox1"));
        assert_eq!(ex.for_account("444455556666", &["r-ab12".into()]), None);
        let tags = |v: &str| HashMap::from([("quell:exempt".to_owned(), v.to_owned())]);
        assert_eq!(ex.for_tags(&tags("  ")), TagExemption::Unexplained);
        assert!(
            matches!(ex.for_tags(&tags("drill")), TagExemption::Exempt(r) if r.ends_with(": drill"))
        );
        assert_eq!(ex.for_tags(&HashMap::new()), TagExemption::None);
    }
}
