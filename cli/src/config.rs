//! The Quell configuration file: read, checked, and every problem reported with the file, the key
//! and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use quell_responder::entity::is_account_id;
use quell_responder::playbooks::{
    EncryptionPlaybook, Exemptions, ModeOnly, PlaybookSettings, SecurityGroupPlaybook,
    SweepSettings,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Prefix of every resource Quell creates (stacks, StackSets, roles, topics).
    #[serde(default = "default_name")]
    pub name: String,
    /// Region of the security stack, the responder and the StackSet administration.
    pub home_region: String,
    /// Account that hosts the responder, the topics and the ledger.
    pub security_account: String,
    /// Role in the security account that the installing identity assumes.
    #[serde(default = "default_security_role")]
    pub security_account_role: String,
    /// Role in the management account that a StackSets delegated administrator assumes to deploy
    /// the organization reader there (Organizations creates no role in the management account).
    /// Not needed when quell runs in the management account.
    #[serde(default)]
    pub management_account_role: Option<String>,
    /// Every Region the regional StackSet covers (the home Region is always included).
    pub regions: Vec<String>,
    pub targets: Targets,
    /// ARN patterns (`*` wildcards) that Quell must never contain.
    #[serde(default)]
    pub protected_principals: Vec<String>,
    #[serde(default)]
    pub operation_preferences: OperationPreferences,
    #[serde(default)]
    pub responder: ResponderConfig,
    #[serde(default)]
    pub containment: ContainmentConfig,
    /// Deploy the AWS Config managed rules (needs a Config recorder in every target account and Region).
    #[serde(default = "yes")]
    pub config_rules: bool,
    /// Auto-remediation playbooks and their modes.
    #[serde(default)]
    pub playbooks: Playbooks,
    /// What no playbook touches.
    #[serde(default)]
    pub exemptions: Exemptions,
    #[serde(default)]
    pub sweep: SweepConfig,
    /// Who may send each kind of request.
    #[serde(default)]
    pub authorization: crate::authorization::AuthorizationConfig,
    /// Playbooks declared in Quell's playbook language, inline or `include: FILE`; read and
    /// checked by `crate::declared`, which keeps each key's line and column.
    #[serde(default)]
    pub declared_playbooks: Vec<serde_json::Value>,
    /// SSM documents the declared playbooks may run with `ssm.run_document`, besides the patch
    /// baselines: your own reviewed documents, by name.
    #[serde(default)]
    pub ssm_documents: Vec<String>,
    /// Ticket systems and notice receivers the declared playbooks name (`webhook: NAME`).
    #[serde(default)]
    pub webhooks: quell_responder::runs::webhook::Webhooks,
    /// The declared playbooks, checked, as the responder is given them; set by `load`.
    #[serde(skip)]
    pub playbook_document: Option<crate::playbook_document::PlaybookDocument>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// EventBridge schedule of the organization-wide sweep.
    #[serde(default = "default_sweep_schedule")]
    pub schedule: String,
    /// Accounts x Regions swept at once.
    #[serde(default = "default_sweep_concurrency")]
    pub concurrency: usize,
}

fn default_sweep_schedule() -> String {
    "rate(12 hours)".into()
}

fn default_sweep_concurrency() -> usize {
    8
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            schedule: default_sweep_schedule(),
            concurrency: default_sweep_concurrency(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbooks {
    #[serde(default)]
    pub open_security_group: SecurityGroupPlaybook,
    #[serde(default)]
    pub public_bucket: ModeOnly,
    #[serde(default)]
    pub public_snapshot: ModeOnly,
    #[serde(default)]
    pub unencrypted_snapshot: EncryptionPlaybook,
}

impl Config {
    /// Who may ask for what, with the defaults filled in.
    pub fn authorization(&self) -> quell_responder::authorization::Authorization {
        self.authorization.resolve(
            quell_responder::entity::partition_of(&self.home_region),
            &self.security_account,
        )
    }

    /// The responder's playbook settings, as the security stack hands them over.
    pub fn playbook_settings(&self) -> PlaybookSettings {
        PlaybookSettings {
            open_security_group: self.playbooks.open_security_group.clone(),
            public_bucket: self.playbooks.public_bucket.clone(),
            public_snapshot: self.playbooks.public_snapshot.clone(),
            unencrypted_snapshot: self.playbooks.unencrypted_snapshot.clone(),
            exemptions: self.exemptions.clone(),
            sweep: SweepSettings {
                organizational_units: self.targets.organizational_units.clone(),
                accounts: self.targets.accounts.clone(),
                regions: self.all_regions(),
                concurrency: self.sweep.concurrency,
            },
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub organizational_units: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionConcurrency {
    Sequential,
    Parallel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyMode {
    StrictFailureTolerance,
    SoftFailureTolerance,
}

/// StackSet operation preferences. Defaults: Regions in parallel, all accounts at once, and soft
/// failure tolerance, so one broken account does not hold the organization back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationPreferences {
    #[serde(default = "parallel")]
    pub region_concurrency: RegionConcurrency,
    #[serde(default)]
    pub max_concurrent_count: Option<u32>,
    #[serde(default)]
    pub max_concurrent_percentage: Option<u32>,
    #[serde(default)]
    pub failure_tolerance_count: Option<u32>,
    #[serde(default)]
    pub failure_tolerance_percentage: Option<u32>,
    #[serde(default = "soft")]
    pub concurrency_mode: ConcurrencyMode,
}

impl Default for OperationPreferences {
    fn default() -> Self {
        OperationPreferences {
            region_concurrency: RegionConcurrency::Parallel,
            max_concurrent_count: None,
            max_concurrent_percentage: None,
            failure_tolerance_count: None,
            failure_tolerance_percentage: None,
            concurrency_mode: ConcurrencyMode::SoftFailureTolerance,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainmentConfig {
    /// EC2: seconds between phase 1 (untracked group) and phase 2 (isolation group), for tracked
    /// connections to age out. SQS delays messages by at most 900 s.
    #[serde(default = "isolation_wait")]
    pub isolation_wait_seconds: u32,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        ContainmentConfig {
            isolation_wait_seconds: isolation_wait(),
        }
    }
}

fn isolation_wait() -> u32 {
    60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    Arm64,
    X86_64,
}

impl Architecture {
    pub fn lambda_name(self) -> &'static str {
        match self {
            Architecture::Arm64 => "arm64",
            Architecture::X86_64 => "x86_64",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderConfig {
    #[serde(default = "arm64")]
    pub architecture: Architecture,
    #[serde(default = "memory")]
    pub memory_mb: u32,
    #[serde(default = "timeout")]
    pub timeout_seconds: u32,
    #[serde(default = "retention")]
    pub log_retention_days: u32,
    /// At most this many invocations work on the events queue at once (its event source
    /// mapping's `MaximumConcurrency`): a flood of findings never takes every execution
    /// environment from containment requests, which come through their own queues and the topic.
    #[serde(default = "events_concurrency")]
    pub events_concurrency: u32,
    /// The function's reserved concurrency, when set: what Quell may use at most, and has whatever
    /// the account's other functions do.
    #[serde(default)]
    pub reserved_concurrency: Option<u32>,
    /// How long one try of one AWS call may take before it is abandoned and tried again (the
    /// SDK sets no such limit: a connection that stops answering would hold the invocation
    /// until the function's timeout). Three tries, with backoff, make the call's own limit.
    #[serde(default = "call_timeout")]
    pub call_timeout_seconds: u32,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            architecture: arm64(),
            memory_mb: memory(),
            timeout_seconds: timeout(),
            log_retention_days: retention(),
            events_concurrency: events_concurrency(),
            reserved_concurrency: None,
            call_timeout_seconds: call_timeout(),
        }
    }
}

fn default_name() -> String {
    "quell".into()
}
fn default_security_role() -> String {
    "OrganizationAccountAccessRole".into()
}
fn yes() -> bool {
    true
}
fn parallel() -> RegionConcurrency {
    RegionConcurrency::Parallel
}
fn soft() -> ConcurrencyMode {
    ConcurrencyMode::SoftFailureTolerance
}
fn arm64() -> Architecture {
    Architecture::Arm64
}
fn events_concurrency() -> u32 {
    5
}
fn call_timeout() -> u32 {
    10
}
fn memory() -> u32 {
    256
}
fn timeout() -> u32 {
    120
}
fn retention() -> u32 {
    90
}

/// A problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the key, e.g. `targets.accounts[1]`; empty when the file itself is the problem.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Retention periods CloudWatch Logs accepts, in days.
const RETENTIONS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Regions a configuration may name. A typo is caught here, not by a failed StackSet operation.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
];

impl Config {
    /// The configuration at `path` with its declared playbooks, every one checked: a broken
    /// playbook stops every command here, before anything is rendered or deployed.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: String::new(),
            problem: format!("cannot read it: {e}"),
        })?;
        let mut config = Config::parse(&text, path)?;
        let declared = crate::declared::load(path)?;
        config.playbook_document = crate::playbook_document::PlaybookDocument::of(
            &declared,
            &config.ssm_documents,
            &config.webhooks,
        )?;
        Ok(config)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            problem: e.to_string(),
        })?;
        config.check(file)?;
        Ok(config)
    }

    /// Every Region the regional StackSet covers, home Region first.
    pub fn all_regions(&self) -> Vec<String> {
        let mut regions = vec![self.home_region.clone()];
        regions.extend(
            self.regions
                .iter()
                .filter(|r| **r != self.home_region)
                .cloned(),
        );
        regions
    }

    fn check(&self, file: &Path) -> Result<(), ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.to_owned(),
            key,
            problem,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 20
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(err("name".into(), format!("'{}' is not usable as a resource prefix; expected 1-20 lowercase letters, digits and '-', starting with a letter", self.name)));
        }
        check_region(&self.home_region).map_err(|p| err("home_region".into(), p))?;
        for (name, hook) in &self.webhooks {
            let key = format!("webhooks.{name}");
            let named = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !named {
                return Err(err(
                    key,
                    "a webhook's name is 1-32 letters, digits, '-' and '_'".into(),
                ));
            }
            quell_responder::runs::webhook::acceptable_url(&hook.url)
                .map_err(|p| err(format!("{key}.url"), p))?;
            if let Some(secret) = &hook.secret {
                if !secret.starts_with("arn:") || !secret.contains(":secretsmanager:") {
                    return Err(err(format!("{key}.secret"), format!("{secret:?} is not a Secrets Manager secret ARN; the secret's value is the Authorization header, and never appears here")));
                }
            }
            let jira = hook.shape == quell_responder::runs::webhook::Shape::Jira;
            if jira && (hook.project.is_none() || hook.close_transition.is_none()) {
                return Err(err(key, "a jira webhook needs `project` (the key tickets open in) and `close_transition` (the transition id that closes one)".into()));
            }
        }
        for (i, d) in self.ssm_documents.iter().enumerate() {
            let shaped = (3..=128).contains(&d.len())
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !shaped {
                return Err(err(
                    format!("ssm_documents[{i}]"),
                    format!(
                        "{d:?} is not an SSM document name (3-128 letters, digits, '_', '-', '.')"
                    ),
                ));
            }
            if matches!(d.as_str(), "AWS-RunShellScript" | "AWS-RunPowerShellScript") {
                return Err(err(format!("ssm_documents[{i}]"), format!("{d} runs any command line a playbook would hand it; allow-list a reviewed document of your own that takes no command")));
            }
        }
        if self.regions.is_empty() {
            return Err(err(
                "regions".into(),
                "the list is empty; expected at least one Region, e.g. [us-east-1]".into(),
            ));
        }
        let partition = quell_responder::entity::partition_of(&self.home_region);
        for (i, r) in self.regions.iter().enumerate() {
            check_region(r).map_err(|p| err(format!("regions[{i}]"), p))?;
            // One installation lives in one partition: its roles, ARNs and StackSets do not
            // cross from commercial Regions into China or GovCloud.
            let other = quell_responder::entity::partition_of(r);
            if other != partition {
                return Err(err(format!("regions[{i}]"), format!("{r} is in partition {other}, the home Region {} in {partition}; one installation covers one partition: install separately there", self.home_region)));
            }
        }
        check_account(&self.security_account).map_err(|p| err("security_account".into(), p))?;
        let t = &self.targets;
        if t.organizational_units.is_empty() && t.accounts.is_empty() {
            return Err(err("targets".into(), "no organizational_units and no accounts; expected at least one OU id (ou-xxxx-xxxxxxxx or r-xxxx) or account id".into()));
        }
        for (i, ou) in t.organizational_units.iter().enumerate() {
            if !is_ou_id(ou) {
                return Err(err(
                    format!("targets.organizational_units[{i}]"),
                    format!(
                        "'{ou}' is not an OU id; expected ou-xxxx-xxxxxxxx or a root id r-xxxx"
                    ),
                ));
            }
        }
        for (i, a) in t.accounts.iter().enumerate() {
            check_account(a).map_err(|p| err(format!("targets.accounts[{i}]"), p))?;
        }
        for (i, p) in self.protected_principals.iter().enumerate() {
            if !p.starts_with("arn:") {
                return Err(err(
                    format!("protected_principals[{i}]"),
                    format!(
                        "'{p}' is not an ARN pattern; expected e.g. arn:aws:iam::*:role/BreakGlass"
                    ),
                ));
            }
        }
        let sg = &self.playbooks.open_security_group;
        if sg.ports.is_empty() || sg.ports.contains(&0) {
            return Err(err(
                "playbooks.open_security_group.ports".into(),
                "expected a list of ports from 1 to 65535, e.g. [22, 3389]".into(),
            ));
        }
        if let Some(key) = &self.playbooks.unencrypted_snapshot.kms_key_id {
            let ok = key.starts_with("arn:")
                || key.starts_with("alias/")
                || (key.len() == 36 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
            if !ok {
                return Err(err(
                    "playbooks.unencrypted_snapshot.kms_key_id".into(),
                    format!("'{key}' is not a KMS key; expected a key id, a key ARN or alias/NAME"),
                ));
            }
        }
        self.authorization
            .check()
            .map_err(|(key, problem)| err(key, problem))?;
        let sw = &self.sweep;
        let schedule_ok = (sw.schedule.starts_with("rate(") || sw.schedule.starts_with("cron("))
            && sw.schedule.ends_with(')');
        if !schedule_ok {
            return Err(err("sweep.schedule".into(), format!("'{}' is not an EventBridge schedule; expected e.g. rate(12 hours) or cron(0 3 * * ? *)", sw.schedule)));
        }
        if !(2..=1000).contains(&sw.concurrency) {
            return Err(err(
                "sweep.concurrency".into(),
                format!(
                    "{} is outside what the sweep queue's event source mapping takes as MaximumConcurrency; expected 2 to 1000 accounts x Regions at once",
                    sw.concurrency
                ),
            ));
        }
        let ex = &self.exemptions;
        if ex.tag.trim().is_empty() {
            return Err(err(
                "exemptions.tag".into(),
                "is empty; expected a tag key such as quell:exempt".into(),
            ));
        }
        for (i, a) in ex.accounts.iter().enumerate() {
            check_account(a).map_err(|p| err(format!("exemptions.accounts[{i}]"), p))?;
        }
        for (i, ou) in ex.organizational_units.iter().enumerate() {
            if !is_ou_id(ou) {
                return Err(err(
                    format!("exemptions.organizational_units[{i}]"),
                    format!(
                        "'{ou}' is not an OU id; expected ou-xxxx-xxxxxxxx or a root id r-xxxx"
                    ),
                ));
            }
        }
        let op = &self.operation_preferences;
        if op.max_concurrent_count.is_some() && op.max_concurrent_percentage.is_some() {
            return Err(err("operation_preferences".into(), "max_concurrent_count and max_concurrent_percentage are both set; expected at most one".into()));
        }
        if op.failure_tolerance_count.is_some() && op.failure_tolerance_percentage.is_some() {
            return Err(err("operation_preferences".into(), "failure_tolerance_count and failure_tolerance_percentage are both set; expected at most one".into()));
        }
        for (key, value) in [
            ("max_concurrent_percentage", op.max_concurrent_percentage),
            (
                "failure_tolerance_percentage",
                op.failure_tolerance_percentage,
            ),
        ] {
            if value.is_some_and(|v| v > 100) {
                return Err(err(
                    format!("operation_preferences.{key}"),
                    "is over 100; expected a percentage from 0 to 100".into(),
                ));
            }
        }
        if op.max_concurrent_count == Some(0) {
            return Err(err(
                "operation_preferences.max_concurrent_count".into(),
                "is 0; expected at least 1".into(),
            ));
        }
        if self.containment.isolation_wait_seconds > 900 {
            return Err(err(
                "containment.isolation_wait_seconds".into(),
                format!(
                    "{} is longer than SQS can delay a message; expected 0 to 900",
                    self.containment.isolation_wait_seconds
                ),
            ));
        }
        let r = &self.responder;
        let sweep_concurrency = u32::try_from(self.sweep.concurrency).unwrap_or(u32::MAX);
        if !(128..=10240).contains(&r.memory_mb) {
            return Err(err(
                "responder.memory_mb".into(),
                format!(
                    "{} is outside Lambda's range; expected 128 to 10240",
                    r.memory_mb
                ),
            ));
        }
        if !(1..=900).contains(&r.timeout_seconds) {
            return Err(err(
                "responder.timeout_seconds".into(),
                format!(
                    "{} is outside Lambda's range; expected 1 to 900",
                    r.timeout_seconds
                ),
            ));
        }
        if !(2..=1000).contains(&r.events_concurrency) {
            return Err(err(
                "responder.events_concurrency".into(),
                format!(
                    "{} is outside what an event source mapping's MaximumConcurrency takes; expected 2 to 1000",
                    r.events_concurrency
                ),
            ));
        }
        if let Some(reserved) = r.reserved_concurrency {
            // Two environments stay for containment requests however many events arrive and
            // however large a sweep is.
            let taken = r.events_concurrency + sweep_concurrency;
            if reserved < taken + 2 {
                return Err(err(
                    "responder.reserved_concurrency".into(),
                    format!(
                        "{reserved} leaves no room for containment requests beside the {} invocations the events queue (responder.events_concurrency) and the {} the sweep (sweep.concurrency) may take; expected at least {}, or leave it out",
                        r.events_concurrency,
                        sweep_concurrency,
                        taken + 2
                    ),
                ));
            }
        }
        // Three tries must fit well inside the function's own timeout.
        let most = (r.timeout_seconds / 4).clamp(1, 60);
        if !(1..=most).contains(&r.call_timeout_seconds) {
            return Err(err(
                "responder.call_timeout_seconds".into(),
                format!(
                    "{} does not leave three tries of a call inside the function's timeout of {} s; expected 1 to {most}",
                    r.call_timeout_seconds, r.timeout_seconds
                ),
            ));
        }
        if !RETENTIONS.contains(&r.log_retention_days) {
            return Err(err(
                "responder.log_retention_days".into(),
                format!(
                    "{} is not a CloudWatch Logs retention; expected one of {RETENTIONS:?}",
                    r.log_retention_days
                ),
            ));
        }
        Ok(())
    }
}

fn check_region(region: &str) -> Result<(), String> {
    if KNOWN_REGIONS.contains(&region) {
        return Ok(());
    }
    let nearest = KNOWN_REGIONS
        .iter()
        .min_by_key(|known| strsim::levenshtein(known, region))
        .filter(|known| strsim::levenshtein(known, region) <= 3);
    Err(match nearest {
        Some(n) => format!("'{region}' is not an AWS Region; did you mean {n}?"),
        None => {
            format!("'{region}' is not an AWS Region; expected a Region code such as us-east-1")
        }
    })
}

fn check_account(account: &str) -> Result<(), String> {
    if is_account_id(account) {
        Ok(())
    } else {
        Err(format!(
            "'{account}' is not an account id; expected 12 digits, quoted, e.g. \"111122223333\""
        ))
    }
}

fn is_ou_id(id: &str) -> bool {
    let ok = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if let Some(rest) = id.strip_prefix("ou-") {
        return rest
            .split_once('-')
            .is_some_and(|(a, b)| ok(a, 4, 32) && ok(b, 8, 32));
    }
    id.strip_prefix("r-").is_some_and(|rest| ok(rest, 4, 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
home_region: us-east-1
security_account: "222233334444"
regions: [us-east-1, eu-west-1]
targets:
  organizational_units: [ou-ab12-cdef3456]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("quell.yaml"))
    }

    #[test]
    fn a_webhook_over_plain_http_a_jira_one_without_its_project_or_a_secret_that_is_not_an_arn_is_refused(
    ) {
        for (hook, key, words) in [
            (
                "{url: 'http://tickets.example.com', shape: generic}",
                "webhooks.t.url",
                "use https",
            ),
            (
                "{url: 'https://x.atlassian.net', shape: jira}",
                "webhooks.t",
                "needs `project`",
            ),
            (
                "{url: 'https://x.example', shape: generic, secret: 'Bearer abc'}",
                "webhooks.t.secret",
                "not a Secrets Manager secret ARN",
            ),
        ] {
            let e = parse(&format!("{GOOD}webhooks:\n  t: {hook}\n")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.problem.contains(words), "{e}");
        }
        let ok = parse(&format!(
            "{GOOD}webhooks:\n  t: {{url: 'https://x.example/hook', shape: generic}}\n"
        ))
        .unwrap();
        assert!(ok.webhooks.contains_key("t"));
    }

    #[test]
    fn an_ssm_document_that_runs_any_command_or_is_not_a_name_is_refused() {
        for (doc, words) in [
            ("AWS-RunShellScript", "runs any command line"),
            ("team doc", "is not an SSM document name"),
        ] {
            let e = parse(&format!("{GOOD}ssm_documents: [\"{doc}\"]\n")).unwrap_err();
            assert_eq!(e.key, "ssm_documents[0]");
            assert!(e.problem.contains(words), "{e}");
        }
        assert_eq!(
            parse(&format!("{GOOD}ssm_documents: [Team-Harden]\n"))
                .unwrap()
                .ssm_documents,
            ["Team-Harden"]
        );
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "quell");
        assert_eq!(c.security_account_role, "OrganizationAccountAccessRole");
        assert_eq!(c.responder.architecture, Architecture::Arm64);
        assert_eq!(
            c.operation_preferences.region_concurrency,
            RegionConcurrency::Parallel
        );
        assert_eq!(
            c.operation_preferences.concurrency_mode,
            ConcurrencyMode::SoftFailureTolerance
        );
        assert_eq!(c.all_regions(), ["us-east-1", "eu-west-1"]);
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../quell.example.yaml");
        parse(text).unwrap();
    }

    #[test]
    fn an_unknown_key_is_named_with_what_is_expected() {
        let e = parse(&format!("{GOOD}regoins: [us-west-2]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("quell.yaml: "), "{e}");
        assert!(e.contains("regoins"), "{e}");
        assert!(e.contains("regions"), "names the expected keys: {e}");
    }

    #[test]
    fn a_bad_account_id_is_named() {
        let e = parse(&GOOD.replace("\"222233334444\"", "\"2222-3333\"")).unwrap_err();
        assert_eq!(e.key, "security_account");
        assert!(e.to_string().contains("expected 12 digits"), "{e}");
        let e = parse(&format!("{GOOD}  accounts: [\"111122223333\", \"12\"]\n")).unwrap_err();
        assert_eq!(e.key, "targets.accounts[1]");
    }

    #[test]
    fn a_region_typo_gets_a_suggestion() {
        let e =
            parse(&GOOD.replace("[us-east-1, eu-west-1]", "[us-east-1, eu-wset-1]")).unwrap_err();
        assert_eq!(e.key, "regions[1]");
        assert!(e.problem.contains("did you mean eu-west-1?"), "{e}");
        let e = parse(&GOOD.replace("home_region: us-east-1", "home_region: mars-1")).unwrap_err();
        assert_eq!(e.key, "home_region");
    }

    #[test]
    fn regions_of_another_partition_are_refused() {
        for other in ["cn-north-1", "us-gov-west-1"] {
            let e =
                parse(&GOOD.replace("[us-east-1, eu-west-1]", &format!("[us-east-1, {other}]")))
                    .unwrap_err();
            assert_eq!(e.key, "regions[1]");
            assert!(
                e.problem.contains("one installation covers one partition"),
                "{e}"
            );
        }
    }

    #[test]
    fn empty_targets_and_regions_are_refused() {
        let e = parse(&GOOD.replace(
            "  organizational_units: [ou-ab12-cdef3456]",
            "  organizational_units: []",
        ))
        .unwrap_err();
        assert_eq!(e.key, "targets");
        assert!(e.problem.contains("expected at least one"), "{e}");
        let e = parse(&GOOD.replace("[us-east-1, eu-west-1]", "[]")).unwrap_err();
        assert_eq!(e.key, "regions");
    }

    #[test]
    fn bad_playbook_exemption_and_sweep_settings_are_refused() {
        let e = parse(&format!(
            "{GOOD}playbooks:\n  open_security_group:\n    ports: [22, 0]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "playbooks.open_security_group.ports");
        let e = parse(&format!(
            "{GOOD}playbooks:\n  open_security_group:\n    mode: sometimes\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = parse(&format!("{GOOD}exemptions:\n  accounts: [\"12345\"]\n")).unwrap_err();
        assert_eq!(e.key, "exemptions.accounts[0]");
        let e = parse(&format!("{GOOD}exemptions:\n  tag: \"  \"\n")).unwrap_err();
        assert_eq!(e.key, "exemptions.tag");
        let e = parse(&format!("{GOOD}sweep:\n  schedule: every day\n")).unwrap_err();
        assert_eq!(e.key, "sweep.schedule");
        assert!(e.problem.contains("rate(12 hours)"), "{e}");
        let e = parse(&format!("{GOOD}sweep:\n  concurrency: 1\n")).unwrap_err();
        assert_eq!(e.key, "sweep.concurrency");
        assert!(e.problem.contains("expected 2 to 1000"), "{}", e.problem);
        let ok = parse(&format!(
            "{GOOD}playbooks:\n  open_security_group:\n    mode: notify\n    ports: [8080]\nsweep:\n  schedule: cron(0 3 * * ? *)\n"
        ))
        .unwrap();
        let settings = ok.playbook_settings();
        assert_eq!(settings.open_security_group.ports, [8080]);
        assert_eq!(settings.sweep.regions, ok.all_regions());
    }

    #[test]
    fn storage_playbooks_take_a_mode_and_a_kms_key() {
        let e = parse(&format!(
            "{GOOD}playbooks:\n  unencrypted_snapshot:\n    kms_key_id: my key\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "playbooks.unencrypted_snapshot.kms_key_id");
        assert!(e.problem.contains("alias/NAME"), "{e}");
        let e = parse(&format!(
            "{GOOD}playbooks:\n  public_bucket:\n    mode: auto\n    ports: [22]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("ports"), "{e}");
        let ok = parse(&format!(
            "{GOOD}playbooks:\n  public_bucket:\n    mode: approve\n  unencrypted_snapshot:\n    kms_key_id: alias/backups\n"
        ))
        .unwrap();
        let settings = ok.playbook_settings();
        assert_eq!(
            settings.public_bucket.mode,
            quell_responder::playbooks::Mode::Approve
        );
        assert_eq!(
            settings.public_snapshot.mode,
            quell_responder::playbooks::Mode::Auto
        );
        assert_eq!(
            settings.unencrypted_snapshot.kms_key_id.as_deref(),
            Some("alias/backups")
        );
    }

    #[test]
    fn bad_ou_ids_and_preferences_are_refused() {
        let e = parse(&GOOD.replace("ou-ab12-cdef3456", "Workloads")).unwrap_err();
        assert_eq!(e.key, "targets.organizational_units[0]");
        let e = parse(&format!(
            "{GOOD}operation_preferences:\n  max_concurrent_percentage: 150\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "operation_preferences.max_concurrent_percentage");
        let e = parse(&format!("{GOOD}responder:\n  memory_mb: 64\n")).unwrap_err();
        assert_eq!(e.key, "responder.memory_mb");
        let e = parse(&format!(
            "{GOOD}responder:\n  timeout_seconds: 30\n  call_timeout_seconds: 10\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "responder.call_timeout_seconds");
        assert!(e.problem.contains("expected 1 to 7"), "{}", e.problem);
        let e = parse(&format!("{GOOD}responder:\n  events_concurrency: 1\n")).unwrap_err();
        assert_eq!(e.key, "responder.events_concurrency");
        let e = parse(&format!(
            "{GOOD}responder:\n  events_concurrency: 10\n  reserved_concurrency: 19\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "responder.reserved_concurrency");
        // The sweep's default 8 counts beside the events' 10.
        assert!(e.problem.contains("at least 20"), "{}", e.problem);
        parse(&format!(
            "{GOOD}responder:\n  events_concurrency: 10\n  reserved_concurrency: 20\n"
        ))
        .unwrap();
    }

    #[test]
    fn unreadable_yaml_names_the_file() {
        let e = parse("home_region: [unclosed").unwrap_err();
        assert!(e.to_string().starts_with("quell.yaml: "), "{e}");
    }
}
