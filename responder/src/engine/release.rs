//! Release: undo a containment from the prior state the ledger recorded, and nothing else.

use super::{is_transient, refuse, Outcome, Responder};
use crate::audit::AuditEvent;
use crate::contract::{Action, ContainmentMessage};
use crate::entity::Entity;
use crate::error::ResponderError;
use crate::inbound::SnsDelivery;
use crate::ledger::Status;

impl Responder {
    pub(super) async fn release(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        entity: &Entity,
    ) -> Result<Outcome, ResponderError> {
        let mut record = match Box::pin(self.claim(d, message, entity)).await? {
            Ok(r) => r,
            Err(outcome) => return Ok(outcome),
        };
        let history = self
            .ledger
            .for_entity(&entity.to_string())
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot read the ledger: {e}")))?;
        let containment = history.into_iter().find(|r| {
            r.action == Action::Contain && r.status == Status::Succeeded && r.released_by.is_none()
        });
        let Some(mut containment) = containment else {
            let why = format!("{entity} is not contained by Quell: the ledger has no succeeded containment of it that was not released already");
            return self
                .finish_rejected(&mut record, refuse("not_contained", why))
                .await;
        };
        record.releases = Some(containment.key.clone());
        if let Some(refusal) =
            self.self_decision(&containment, &d.caller, &message.requester, "release")
        {
            return self.finish_rejected(&mut record, refusal).await;
        }
        self.audit_or_log(AuditEvent::Started, &mut record).await;
        let target = match self
            .open_target(&mut record, entity, &message.request_id)
            .await?
        {
            Ok(t) => t,
            Err(outcome) => return Ok(outcome),
        };
        let mut failures = Vec::new();
        for (name, result) in target.release(&containment, &record.options).await {
            if let Err(e) = &result {
                failures.push(e.clone());
            }
            self.record_step(&mut record, &name, chrono::Utc::now(), result)
                .await?;
        }
        if !failures.is_empty() {
            let error = format!(
                "not released: {}",
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return self
                .finish_failed(&mut record, error, failures.iter().all(is_transient))
                .await;
        }
        containment.released_by = Some(record.key.clone());
        containment.updated_at = chrono::Utc::now();
        self.ledger.save(&containment).await.map_err(|e| {
            ResponderError::Aws(format!("cannot mark the containment released: {e}"))
        })?;
        self.finish_succeeded(&mut record, AuditEvent::Released)
            .await
    }
}
