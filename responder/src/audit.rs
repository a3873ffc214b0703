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

    pub async fn publish(&self, event: AuditEvent, record: &Record) -> Result<(), CallError> {
        let json = serde_json::to_string(&Envelope {
            source: "quell",
            event,
            record,
        })
        .unwrap_or_default();
        let message = serde_json::json!({ "default": json, "email": email_text(event, record) });
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject(event, record))
            .message_structure("json")
            .message(message.to_string())
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
            let _ = writeln!(t, "{label:<11} {v}");
        }
    };
    field(&mut t, "Entity:", record.entity.as_deref());
    field(&mut t, "Type:", record.entity_kind.as_deref());
    field(&mut t, "Account:", record.account.as_deref());
    field(&mut t, "Requester:", record.requester.as_deref());
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
}
