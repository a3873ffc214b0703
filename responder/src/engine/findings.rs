//! Security Hub: containments asked for with the "Quell: contain" custom action, and the note and
//! workflow status every finding Quell acted on gets back.

use aws_sdk_securityhub::types::{
    AwsSecurityFindingIdentifier, NoteUpdate, WorkflowStatus, WorkflowUpdate,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::remediate::step;
use super::{Outcome, Responder};
use crate::aws_error::Described;
use crate::contract::{Action, ContainmentMessage, Options, MESSAGE_VERSION};
use crate::error::ResponderError;
use crate::inbound::{QueueDelivery, SnsDelivery};
use crate::ledger::{Step, StepStatus};
use crate::playbooks::event::{ContainRequest, FindingRef, CONTAIN_ACTION};

/// Security Hub keeps notes to 512 characters.
const NOTE_LIMIT: usize = 512;

/// The request id of a containment asked for on a finding: the same event and entity always give
/// the same id, so a redelivered event is acted on once.
pub(super) fn request_id(event_id: &str, entity: &str) -> String {
    let digest = Sha256::digest(format!("{event_id}\n{entity}").as_bytes());
    format!("securityhub-{}", &hex::encode(digest)[..24])
}

fn truncated(note: &str) -> String {
    if note.chars().count() <= NOTE_LIMIT {
        return note.to_owned();
    }
    let mut t: String = note.chars().take(NOTE_LIMIT - 3).collect();
    t.push_str("...");
    t
}

impl Responder {
    /// "Quell: contain" on a finding: the same path as a containment message, with the finding as
    /// requester and reason; the finding gets the outcome as a note.
    pub(super) async fn contain_finding(
        &self,
        q: &QueueDelivery,
        r: &ContainRequest,
    ) -> Result<Outcome, ResponderError> {
        let message = ContainmentMessage {
            version: MESSAGE_VERSION.into(),
            request_id: request_id(&r.event_id, &r.entity),
            action: Action::Contain,
            entity: r.entity.clone(),
            reason: format!(
                "Security Hub finding {} (custom action {:?})",
                r.finding.id, CONTAIN_ACTION.1
            ),
            requester: format!("Security Hub custom action {:?}", CONTAIN_ACTION.1),
            options: Options::default(),
        };
        // The queue message stands in for the SNS delivery. One event can carry several findings,
        // so each request gets its own delivery id: a refusal of one never hides another's.
        let delivery = SnsDelivery {
            message_id: format!("{}/{}", q.message_id, message.request_id),
            topic_arn: q.queue_arn.clone(),
            body: String::new(),
            attributes: std::collections::HashMap::new(),
            caller: crate::authorization::Caller::CustomAction,
        };
        let outcome = Box::pin(self.handle_request(&delivery, &message)).await?;
        let note = format!(
            "Quell contain {}: {} (request {})",
            outcome.status.as_str(),
            outcome.message,
            message.request_id
        );
        // A contained principal is not a resolved finding: somebody still has to investigate.
        let step = self.update_finding(&r.finding, &note, false).await;
        if let Ok(Some(mut record)) = self.ledger.get(&message.request_id).await {
            if record.message_ids.contains(&delivery.message_id) {
                record.steps.push(step);
                if let Err(e) = self.ledger.save(&record).await {
                    tracing::error!(key = %record.key, error = %e, "finding update not recorded");
                }
            }
        }
        Ok(outcome)
    }

    /// Puts a note on the finding, with workflow status RESOLVED when the fix was read back as in
    /// place and NOTIFIED otherwise. Returns the step to record; a failure here never undoes the
    /// fix, it is recorded.
    pub(super) async fn update_finding(&self, f: &FindingRef, note: &str, resolved: bool) -> Step {
        let status = if resolved {
            WorkflowStatus::Resolved
        } else {
            WorkflowStatus::Notified
        };
        let prior = json!({"finding": f.id, "product": f.product_arn});
        let sent = self
            .security_hub
            .batch_update_findings()
            .finding_identifiers(
                AwsSecurityFindingIdentifier::builder()
                    .id(&f.id)
                    .product_arn(&f.product_arn)
                    .build(),
            )
            .note(
                NoteUpdate::builder()
                    .text(truncated(note))
                    .updated_by(format!("{}-responder", self.settings.name_prefix))
                    .build(),
            )
            .workflow(WorkflowUpdate::builder().status(status.clone()).build())
            .customize()
            .config_override(
                aws_sdk_securityhub::config::Builder::default()
                    .region(aws_config::Region::new(f.region.clone())),
            )
            .send()
            .await
            .described("securityhub:BatchUpdateFindings");
        let (state, detail) = match sent {
            Ok(out) => match out.unprocessed_findings().first() {
                None => (
                    StepStatus::Done,
                    format!("finding {} noted, workflow {}", f.id, status.as_str()),
                ),
                Some(u) => (
                    StepStatus::Failed,
                    format!(
                        "finding {} not updated: {} ({})",
                        f.id,
                        u.error_message().unwrap_or("no message"),
                        u.error_code().unwrap_or("no code")
                    ),
                ),
            },
            Err(e) => (
                StepStatus::Failed,
                format!("finding {} not updated: {e}", f.id),
            ),
        };
        if state == StepStatus::Failed {
            tracing::error!(finding = %f.id, %detail, "finding update failed");
        }
        step(
            "update_finding",
            state,
            detail,
            prior,
            json!({"workflow": status.as_str(), "note": truncated(note)}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_valid_and_distinct_per_entity() {
        let a = request_id("ev-1", "arn:aws:iam::111122223333:user/alice");
        assert_eq!(
            a,
            request_id("ev-1", "arn:aws:iam::111122223333:user/alice")
        );
        assert_ne!(a, request_id("ev-1", "arn:aws:iam::111122223333:user/bob"));
        assert!(ContainmentMessage::request_id_is_valid(&a), "{a}");
    }

    #[test]
    fn notes_are_cut_to_what_security_hub_keeps() {
        let long = "x".repeat(600);
        assert_eq!(truncated(&long).chars().count(), NOTE_LIMIT);
        assert_eq!(truncated("short"), "short");
    }
}
