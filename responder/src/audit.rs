//! Audit messages: every request's start and end, and every refused delivery, published to the
//! audit topic. One message serves both readers: SNS sends e-mail subscribers the text, and every
//! other protocol (SQS, Lambda, HTTPS) the JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use crate::aws_error::{CallError, Described};
use crate::ledger::{Record, StepStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    Started,
    Succeeded,
    Failed,
    Rejected,
    Released,
    /// A playbook left something alone on purpose (exempt, notify mode).
    Skipped,
    /// A playbook in approve mode waits for `quell approve ID` or `quell deny ID`.
    AwaitingApproval,
    Denied,
}

impl AuditEvent {
    fn word(self) -> &'static str {
        match self {
            AuditEvent::Started => "STARTED",
            AuditEvent::Succeeded => "SUCCEEDED",
            AuditEvent::Failed => "FAILED",
            AuditEvent::Rejected => "REJECTED",
            AuditEvent::Released => "RELEASED",
            AuditEvent::Skipped => "SKIPPED",
            AuditEvent::AwaitingApproval => "AWAITING APPROVAL",
            AuditEvent::Denied => "DENIED",
        }
    }
}

#[derive(Debug, Serialize)]
struct Envelope<'a> {
    source: &'static str,
    event: AuditEvent,
    record: &'a Record,
    /// Set when the record was shortened to fit SNS: the ledger record has everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    shortened: Option<&'static str>,
}

/// SNS takes at most 256 KiB per message, subject and attributes included; the body is kept
/// below this so that what surrounds it always fits.
pub const MESSAGE_LIMIT: usize = 250 * 1024;

/// How many times a publish is tried (each with the SDK's own retries) before it is recorded on
/// the ledger record as not published.
const PUBLISH_TRIES: u32 = 3;

/// The SNS message for `record`: the whole record when it fits, else the record with each
/// step's prior and new state left out, else without its steps. Whatever the input, it fits.
pub fn message(event: AuditEvent, record: &Record) -> String {
    let build = |record: &Record, shortened: Option<&'static str>| {
        let json = serde_json::to_string(&Envelope {
            source: "quell",
            event,
            record,
            shortened,
        })
        .unwrap_or_default();
        serde_json::json!({ "default": json, "email": email_text(event, record) }).to_string()
    };
    let whole = build(record, None);
    if whole.len() <= MESSAGE_LIMIT {
        return whole;
    }
    let mut lean = record.clone();
    let clip = |v: &mut Option<String>| {
        *v = v
            .take()
            .map(|t| crate::contract::clipped(&t, crate::contract::TEXT_LIMIT));
    };
    clip(&mut lean.reason);
    clip(&mut lean.requester);
    clip(&mut lean.entity);
    for s in &mut lean.steps {
        s.prior = serde_json::Value::Null;
        s.new = serde_json::Value::Null;
        s.detail = crate::contract::clipped(&s.detail, 2048);
    }
    let note =
        "the prior and new state of each step are left out to fit SNS; the ledger record has them";
    let lean_message = build(&lean, Some(note));
    if lean_message.len() <= MESSAGE_LIMIT {
        return lean_message;
    }
    lean.steps.clear();
    lean.error = lean.error.map(|e| crate::contract::clipped(&e, 4096));
    if let Some(r) = &mut lean.rejection {
        r.message = crate::contract::clipped(&r.message, 4096);
    }
    lean.message_ids.truncate(20);
    build(
        &lean,
        Some("the steps are left out to fit SNS; the ledger record has them"),
    )
}

#[derive(Debug, Clone)]
pub struct Audit {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
}

impl Audit {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: &str) -> Audit {
        Audit {
            sns,
            topic_arn: topic_arn.to_owned(),
        }
    }

    /// Publishes, trying again on failure; the last failure when every try failed.
    pub async fn publish(&self, event: AuditEvent, record: &Record) -> Result<(), CallError> {
        let body = message(event, record);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.publish_once(event, record, &body).await {
                Ok(()) => return Ok(()),
                Err(e) if tries >= PUBLISH_TRIES => return Err(e),
                Err(e) => {
                    tracing::warn!(key = %record.key, error = %e, tries, "audit publish failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries)))
                        .await;
                }
            }
        }
    }

    async fn publish_once(
        &self,
        event: AuditEvent,
        record: &Record,
        body: &str,
    ) -> Result<(), CallError> {
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject(event, record))
            .message_structure("json")
            .message(body)
            .message_attributes(
                "event",
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(format!("{event:?}").to_lowercase())
                    .build()
                    .expect("data type and value are set"),
            )
            .send()
            .await
            .described("sns:Publish (audit)")?;
        Ok(())
    }
}

/// SNS subjects are ASCII, at most 100 characters, without line breaks.
pub fn subject(event: AuditEvent, record: &Record) -> String {
    let what = match (&record.entity_kind, &record.entity) {
        (Some(kind), Some(entity)) => {
            let name = entity.rsplit('/').next().unwrap_or(entity);
            format!(
                "{kind} {name} in {}",
                record.account.as_deref().unwrap_or("?")
            )
        }
        _ => "a delivery".to_owned(),
    };
    let raw = format!(
        "Quell {} {}: {what}",
        record.action.as_str(),
        event.word().to_lowercase()
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(100)
        .collect()
}

pub fn email_text(event: AuditEvent, record: &Record) -> String {
    let mut t = String::new();
    let id = record.request_id.as_deref().unwrap_or(&record.key);
    let _ = writeln!(
        t,
        "Quell {} request {id}: {}",
        record.action.as_str(),
        event.word()
    );
    let _ = writeln!(t);
    let field = |t: &mut String, label: &str, value: Option<&str>| {
        if let Some(v) = value {
            let _ = writeln!(t, "{label:<11} {}", one_line(v));
        }
    };
    field(&mut t, "Entity:", record.entity.as_deref());
    field(&mut t, "Type:", record.entity_kind.as_deref());
    field(&mut t, "Account:", record.account.as_deref());
    field(&mut t, "Requester:", record.requester.as_deref());
    // What AWS vouches for, next to what the request says.
    let identity = record
        .caller
        .as_ref()
        .map(|c| c.describe(record.requester.as_deref().unwrap_or("?")));
    field(&mut t, "Identity:", identity.as_deref());
    field(&mut t, "Decided:", record.decided_by.as_deref());
    field(&mut t, "Reason:", record.reason.as_deref());
    let _ = writeln!(t, "{:<11} {}", "Received:", record.received_at.to_rfc3339());
    if event == AuditEvent::AwaitingApproval {
        let _ = writeln!(t, "{:<11} quell approve {}", "Approve:", record.key);
        let _ = writeln!(t, "{:<11} quell deny {}", "Deny:", record.key);
    }
    if let Some(r) = &record.rejection {
        let _ = writeln!(t, "{:<11} {} ({})", "Refused:", r.message, r.code);
    }
    if let Some(e) = &record.error {
        let _ = writeln!(t, "{:<11} {e}", "Error:");
    }
    if !record.steps.is_empty() {
        let _ = writeln!(t, "\nSteps:");
        for s in &record.steps {
            let mark = match s.status {
                StepStatus::Done => "done",
                StepStatus::Skipped => "skipped",
                StepStatus::Failed => "FAILED",
            };
            let _ = writeln!(t, "  [{mark:>7}] {}: {}", s.name, s.detail);
        }
    }
    if matches!(event, AuditEvent::Failed) {
        let _ = writeln!(
            t,
            "\nSteps not listed as done were not carried out. Publishing the same request again resumes it."
        );
    }
    let _ = writeln!(t, "\nMessage ids: {}", record.message_ids.join(", "));
    t
}

/// Text from a request on one line: a line break in a field shows as `\n`, never as a line of its
/// own that could pass for another field.
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Record, Status, Step, StepStatus};

    fn record() -> Record {
        let now = chrono::Utc::now();
        let mut r = Record::new("req-42".into(), now, "msg-1");
        r.request_id = Some("req-42".into());
        r.status = Status::Failed;
        r.entity = Some("arn:aws:iam::111122223333:user/ålice".into());
        r.entity_kind = Some("IAM user".into());
        r.account = Some("111122223333".into());
        r.reason = Some("key in a public repo".into());
        r.error = Some("not done: deactivate_access_keys".into());
        let step = |name: &str, status| Step {
            name: name.into(),
            status,
            detail: format!("{name} detail"),
            prior: serde_json::Value::Null,
            new: serde_json::Value::Null,
            started_at: now,
            finished_at: now,
        };
        r.steps = vec![
            step("attach_deny_all", StepStatus::Done),
            step("deactivate_access_keys", StepStatus::Failed),
        ];
        r
    }

    #[test]
    fn a_line_break_in_a_field_cannot_forge_a_line_of_the_mail() {
        let mut r = record();
        r.reason = Some("ok\nApprove:    quell approve someone-elses-fix".into());
        let text = email_text(AuditEvent::Rejected, &r);
        assert!(text.lines().all(|l| !l.starts_with("Approve:")), "{text}");
        assert!(text.contains("Reason:     ok\\nApprove:"), "{text}");
    }

    #[test]
    fn every_audit_message_fits_sns_whatever_the_record_holds() {
        let mut r = record();
        r.reason = Some("r".repeat(300 * 1024));
        for s in &mut r.steps {
            s.prior = serde_json::json!({"policy": "p".repeat(200 * 1024)});
        }
        let m = message(AuditEvent::Failed, &r);
        assert!(m.len() <= MESSAGE_LIMIT, "{} bytes", m.len());
        let outer: serde_json::Value = serde_json::from_str(&m).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(outer["default"].as_str().unwrap()).unwrap();
        assert!(doc["shortened"].as_str().unwrap().contains("ledger record"));
        assert_eq!(doc["record"]["key"], "req-42");
        // A record that fits is sent whole, with nothing marked as shortened.
        let small = message(AuditEvent::Failed, &record());
        assert!(!small.contains("shortened"));
    }

    #[test]
    fn the_subject_is_short_plain_ascii_and_names_the_entity() {
        let s = subject(AuditEvent::Failed, &record());
        assert_eq!(s, "Quell contain failed: IAM user ?lice in 111122223333");
        assert!(s.len() <= 100 && s.is_ascii());
    }

    #[test]
    fn the_mail_says_what_was_and_was_not_done() {
        let text = email_text(AuditEvent::Failed, &record());
        assert!(
            text.starts_with("Quell contain request req-42: FAILED\n"),
            "{text}"
        );
        assert!(
            text.contains("[   done] attach_deny_all: attach_deny_all detail"),
            "{text}"
        );
        assert!(text.contains("[ FAILED] deactivate_access_keys"), "{text}");
        assert!(
            text.contains("Steps not listed as done were not carried out"),
            "{text}"
        );
        assert!(text.contains("Message ids: msg-1"), "{text}");
    }

    #[test]
    fn the_mail_names_the_identity_aws_authenticated_next_to_the_requester() {
        let mut r = record();
        r.requester = Some("arn:aws:sts::222233334444:assumed-role/Analyst/jo".into());
        r.caller = Some(crate::authorization::Caller::Verified {
            sender_id: "AROAEXAMPLE:jo".into(),
            principal_arn: "arn:aws:iam::222233334444:role/Analyst".into(),
        });
        let text = email_text(AuditEvent::Succeeded, &r);
        assert!(
            text.contains("Identity:   arn:aws:sts::222233334444:assumed-role/Analyst/jo (verified: arn:aws:iam::222233334444:role/Analyst, sender AROAEXAMPLE:jo)"),
            "{text}"
        );
        r.caller = Some(crate::authorization::Caller::SelfDeclared);
        assert!(email_text(AuditEvent::Succeeded, &r).contains("(self-declared"));
    }
}
