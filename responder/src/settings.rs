//! The responder's settings, read once at cold start from the function's environment (set by the
//! security stack template).

use crate::authorization::Authorization;
use crate::error::ResponderError;
use crate::playbooks::PlaybookSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub ledger_table: String,
    pub audit_topic_arn: String,
    /// Secrets Manager secret holding the ExternalIds (never the value itself: an environment
    /// variable is readable by anyone who can read the function's configuration).
    pub secret_id: String,
    /// Name of the role the responder assumes in member accounts.
    pub member_role_name: String,
    /// Role in the management account that answers "is this account in the organization?".
    pub org_reader_role_arn: String,
    pub organization_id: String,
    /// Prefix of every Quell resource name: roles named `<prefix>-*` are Quell's own and protected.
    pub name_prefix: String,
    /// ARN patterns (`*` wildcards) that must never be contained.
    pub protected_principals: Vec<String>,
    /// Queue that brings EC2 phase 2 back after the connection-tracking wait.
    pub isolation_queue_url: String,
    pub isolation_queue_arn: String,
    pub isolation_wait_seconds: i32,
    /// Dead-letter queue: every failed request is sent here as well as to the audit topic.
    pub dead_letter_queue_url: String,
    /// The same queue, where EventBridge Scheduler puts a timer it could not deliver.
    pub dead_letter_queue_arn: String,
    /// Quell's EventBridge Scheduler group, and the role its schedules deliver timers as: waits
    /// beyond SQS's 15-minute delay are one-time schedules there.
    pub timer_group: String,
    pub timer_role_arn: String,
    /// The function's timeout: how long a claim in the ledger holds (`Ledger::with_function_timeout`).
    pub function_timeout_seconds: u32,
    /// How long one try of an AWS call may take (`responder.call_timeout_seconds`).
    pub call_timeout_seconds: u32,
    /// How many steps of one containment run at once; 0 means all of them. 1 is gentler on API
    /// rate limits, and is what the benchmark compares against.
    pub step_concurrency: usize,
    /// Queue the central bus's remediation rule delivers to (an event source of the function).
    pub events_queue_arn: Option<String>,
    /// Queue of a sweep's places, one message per account x Region (an event source of the
    /// function, at most `sweep.concurrency` at once).
    pub sweep_queue_url: String,
    pub sweep_queue_arn: String,
    pub playbooks: PlaybookSettings,
    /// `s3://BUCKET/declared-playbooks/SHA256.json`: the declared playbooks (`runs::document`).
    pub declared_playbooks: Option<String>,
    /// SSM documents a playbook may run besides the patch baselines (the configuration's
    /// `ssm_documents`).
    pub ssm_documents: Vec<String>,
    /// Ticket systems and notice receivers, by the name playbooks use.
    pub webhooks: crate::runs::webhook::Webhooks,
    /// The account the responder runs in: custom actions and the sweep come from here alone.
    pub security_account: String,
    /// The Region the responder runs in; its partition is the only one Quell acts in.
    pub home_region: String,
    /// Every Region Quell is installed in: events and findings from any other are refused.
    pub regions: Vec<String>,
    /// The local sandbox's emulator sends EventBridge events without the envelope's `account`;
    /// only the sandbox host sets this (see `playbooks::event::Origin`).
    pub envelope_may_lack_account: bool,
    /// Who may ask for what (`authorization::Authorization`).
    pub authorization: Authorization,
    /// The local sandbox's emulator stamps every SQS message with one made-up sender id, which
    /// its host removes; only the host sets this, and requests are then recorded as unverified.
    pub requests_may_lack_sender_id: bool,
}

/// One try of an AWS call, when the function's configuration does not say.
pub const DEFAULT_CALL_TIMEOUT_SECONDS: u32 = 10;

/// Set by the sandbox host alone: moto's SQS has no real `SenderId`.
pub const SANDBOX_REQUESTS_WITHOUT_SENDER_ID: &str = "QUELL_SANDBOX_REQUESTS_WITHOUT_SENDER_ID";

/// Set by the sandbox host alone: moto's EventBridge omits the envelope's `account` field.
pub const SANDBOX_ENVELOPES_WITHOUT_ACCOUNT: &str = "QUELL_SANDBOX_ENVELOPES_WITHOUT_ACCOUNT";

impl Settings {
    pub fn from_env() -> Result<Settings, ResponderError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ResponderError> {
        let need = |k: &str| {
            get(k).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                ResponderError::Settings(format!(
                    "environment variable {k} is not set; the security stack sets it"
                ))
            })
        };
        let protected_raw = get("QUELL_PROTECTED_PRINCIPALS").unwrap_or_else(|| "[]".into());
        let protected_principals: Vec<String> =
            serde_json::from_str(&protected_raw).map_err(|e| {
                ResponderError::Settings(format!(
                    "QUELL_PROTECTED_PRINCIPALS is not a JSON array of ARN patterns: {e}"
                ))
            })?;
        let regions_raw = need("QUELL_REGIONS")?;
        let regions: Vec<String> = serde_json::from_str(&regions_raw)
            .ok()
            .filter(|r: &Vec<String>| !r.is_empty())
            .ok_or_else(|| {
                ResponderError::Settings(format!(
                    "QUELL_REGIONS is {regions_raw:?}; expected a JSON array of the Regions Quell is installed in"
                ))
            })?;
        let security_account = need("QUELL_SECURITY_ACCOUNT")?;
        if security_account.len() != 12 || !security_account.chars().all(|c| c.is_ascii_digit()) {
            return Err(ResponderError::Settings(format!(
                "QUELL_SECURITY_ACCOUNT is {security_account:?}; expected a 12-digit account id"
            )));
        }
        let authorization_raw = need("QUELL_AUTHORIZATION")?;
        let authorization: Authorization =
            serde_json::from_str(&authorization_raw).map_err(|e| {
                ResponderError::Settings(format!(
                    "QUELL_AUTHORIZATION is not the authorization the security stack renders: {e}"
                ))
            })?;
        Ok(Settings {
            authorization,
            requests_may_lack_sender_id: get(SANDBOX_REQUESTS_WITHOUT_SENDER_ID).as_deref()
                == Some("1"),
            security_account,
            home_region: need("QUELL_HOME_REGION")?,
            regions,
            envelope_may_lack_account: get(SANDBOX_ENVELOPES_WITHOUT_ACCOUNT).as_deref()
                == Some("1"),
            ledger_table: need("QUELL_LEDGER_TABLE")?,
            audit_topic_arn: need("QUELL_AUDIT_TOPIC_ARN")?,
            secret_id: need("QUELL_SECRET_ARN")?,
            member_role_name: need("QUELL_MEMBER_ROLE_NAME")?,
            org_reader_role_arn: need("QUELL_ORG_READER_ROLE_ARN")?,
            organization_id: need("QUELL_ORGANIZATION_ID")?,
            name_prefix: need("QUELL_NAME_PREFIX")?,
            protected_principals,
            isolation_queue_url: need("QUELL_ISOLATION_QUEUE_URL")?,
            isolation_queue_arn: need("QUELL_ISOLATION_QUEUE_ARN")?,
            isolation_wait_seconds: need("QUELL_ISOLATION_WAIT_SECONDS")?
                .parse()
                .ok()
                .filter(|s| (0..=900).contains(s))
                .ok_or_else(|| {
                    ResponderError::Settings(
                        "QUELL_ISOLATION_WAIT_SECONDS must be 0 to 900 (SQS's longest delay)"
                            .into(),
                    )
                })?,
            dead_letter_queue_url: need("QUELL_DLQ_URL")?,
            dead_letter_queue_arn: need("QUELL_DLQ_ARN")?,
            timer_group: need("QUELL_TIMER_GROUP")?,
            timer_role_arn: need("QUELL_TIMER_ROLE_ARN")?,
            function_timeout_seconds: need("QUELL_FUNCTION_TIMEOUT_SECONDS")?
                .parse()
                .ok()
                .filter(|s| (1..=900).contains(s))
                .ok_or_else(|| {
                    ResponderError::Settings(
                        "QUELL_FUNCTION_TIMEOUT_SECONDS must be the function's timeout, 1 to 900"
                            .into(),
                    )
                })?,
            call_timeout_seconds: match get("QUELL_CALL_TIMEOUT_SECONDS") {
                None => DEFAULT_CALL_TIMEOUT_SECONDS,
                Some(v) => v.parse().ok().filter(|s| (1..=60).contains(s)).ok_or_else(|| {
                    ResponderError::Settings(
                        "QUELL_CALL_TIMEOUT_SECONDS must be 1 to 60 seconds".into(),
                    )
                })?,
            },
            events_queue_arn: get("QUELL_EVENTS_QUEUE_ARN").filter(|v| !v.trim().is_empty()),
            sweep_queue_url: need("QUELL_SWEEP_QUEUE_URL")?,
            sweep_queue_arn: need("QUELL_SWEEP_QUEUE_ARN")?,
            declared_playbooks: get("QUELL_DECLARED_PLAYBOOKS").filter(|v| !v.trim().is_empty()),
            webhooks: match get("QUELL_WEBHOOKS") {
                Some(json) if !json.trim().is_empty() => serde_json::from_str(&json).map_err(|e| {
                    ResponderError::Settings(format!(
                        "QUELL_WEBHOOKS is not the webhooks the security stack renders: {e}"
                    ))
                })?,
                _ => crate::runs::webhook::Webhooks::new(),
            },
            ssm_documents: match get("QUELL_SSM_DOCUMENTS") {
                Some(json) if !json.trim().is_empty() => serde_json::from_str(&json).map_err(|e| {
                    ResponderError::Settings(format!(
                        "QUELL_SSM_DOCUMENTS is not a JSON array of document names: {e}"
                    ))
                })?,
                _ => Vec::new(),
            },
            playbooks: match get("QUELL_PLAYBOOKS") {
                Some(json) if !json.trim().is_empty() => PlaybookSettings::parse(&json)?,
                _ => PlaybookSettings::default(),
            },
            step_concurrency: match get("QUELL_STEP_CONCURRENCY") {
                None => 0,
                Some(v) => v
                    .parse()
                    .map_err(|_| ResponderError::Settings(format!("QUELL_STEP_CONCURRENCY is '{v}'; expected a whole number (0 = all steps at once)")))?,
            },
        })
    }
}
