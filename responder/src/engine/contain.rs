//! Containment, including the EC2 second phase that comes back through the isolation queue.

use chrono::{Duration, Utc};

use super::{is_transient, refuse, Outcome, Refusal, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::{CallError, Described};
use crate::contract::{ContainmentMessage, IsolationMessage, RetryMessage, MESSAGE_VERSION};
use crate::entities::{instance, StepOutcome, Target, SCHEDULE_ISOLATION};
use crate::entity::Entity;
use crate::error::ResponderError;
use crate::inbound::{QueueDelivery, SnsDelivery};
use crate::ledger::{Claim, Record, Status};

/// Why a containment ends before its first step.
enum Stop {
    Refused(Refusal),
    /// The entity could not be read; whether a later attempt may.
    Unreadable(String, bool),
}

/// How long an entity lock outlives its request's last sign of life.
const LOCK_MINUTES: i64 = 16;

impl Responder {
    /// Claims the request and the entity; `Err(outcome)` when either is someone else's. The
    /// request's record and the entity's lock are written side by side: both are bookkeeping,
    /// and nothing is done to the entity until both are this request's.
    pub(super) async fn claim(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        entity: &Entity,
    ) -> Result<Result<Record, Outcome>, ResponderError> {
        let now = Utc::now();
        let fresh = Self::request_record(d, message, entity);
        let wait = i64::from(self.settings.isolation_wait_seconds);
        let entity_key = entity.to_string();
        let (claim, holder) = tokio::join!(
            self.ledger.claim(fresh, now),
            self.ledger.lock(
                &entity_key,
                &message.request_id,
                now,
                now + Duration::minutes(LOCK_MINUTES) + Duration::seconds(wait),
            )
        );
        let claim = claim.map_err(|e| {
            ResponderError::Aws(format!("cannot claim the request in the ledger: {e}"))
        })?;
        if let Some(later) = self.held_elsewhere(&claim, &d.message_id) {
            return Ok(Err(later));
        }
        let mut record = match claim {
            Claim::Fresh(r) | Claim::Resumed(r) => r,
            Claim::Busy(existing) | Claim::Finished(existing) => {
                // The lock names this request: taken again for one that finished, it is let go;
                // one still running keeps it.
                if existing.status.is_final() && matches!(holder, Ok(None)) {
                    if let Err(e) = self.ledger.unlock(&entity_key, &existing.key).await {
                        tracing::error!(key = %existing.key, error = %e, "entity lock not released; it expires by itself");
                    }
                }
                let why = format!(
                    "request {} was already received (status {}, first message {}); it is not acted on twice",
                    message.request_id,
                    existing.status.as_str(),
                    existing.message_ids.first().map_or("?", String::as_str)
                );
                return Ok(Err(self
                    .reject_delivery(d, Some(message), refuse("duplicate", why))
                    .await?));
            }
        };
        let holder =
            holder.map_err(|e| ResponderError::Aws(format!("cannot lock {entity}: {e}")))?;
        if let Some(holder) = holder {
            let why = format!("request {holder} is already working on {entity}; wait for it to finish (`quell history {entity}`)");
            // Not ours: finish the record without touching the other request's lock.
            record.entity = None;
            let mut outcome = self
                .finish_rejected(&mut record, refuse("in_progress", why))
                .await?;
            outcome.code = Some("in_progress".into());
            return Ok(Err(outcome));
        }
        Ok(Ok(record))
    }

    /// The entity as its account has it, read while the request is claimed: a read changes
    /// nothing, so it need not wait for the claim. The session, and the real ARN or `None`.
    async fn read_entity<'a>(
        &'a self,
        entity: &'a Entity,
        request_id: &'a str,
    ) -> Result<(Target<'a>, Option<String>), (String, CallError)> {
        let clients = self
            .member_session(entity)
            .await
            .map_err(|e| (format!("cannot act in {}", entity.account()), e))?;
        let target = Target::new(entity, clients, request_id, &self.settings.name_prefix);
        let real = target
            .real_arn()
            .await
            .map_err(|e| (format!("cannot read {entity}"), e))?;
        Ok((target, real))
    }

    pub(super) async fn contain(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        entity: &Entity,
    ) -> Result<Outcome, ResponderError> {
        let (claimed, looked) = tokio::join!(
            Box::pin(self.claim(d, message, entity)),
            self.read_entity(entity, &message.request_id)
        );
        let mut record = match claimed? {
            Ok(r) => r,
            Err(outcome) => return Ok(outcome),
        };
        // Refused on what the account holds, or not readable: nothing is done, and the record
        // and the audit say why.
        let checked = match looked {
            Ok((target, Some(real))) => match self.refusal_for_real(entity, &real) {
                Some(refusal) => Err(Stop::Refused(refusal)),
                None => Ok(target),
            },
            Ok((_, None)) => Err(Stop::Refused(refuse(
                "entity_not_found",
                format!(
                    "{} {} does not exist in account {}",
                    entity.kind(),
                    entity.name(),
                    entity.account()
                ),
            ))),
            Err((what, e)) => Err(Stop::Unreadable(format!("{what}: {e}"), is_transient(&e))),
        };
        let target = match checked {
            Ok(target) => target,
            Err(stopped) => {
                self.audit_or_log(AuditEvent::Started, &mut record).await;
                return match stopped {
                    Stop::Refused(refusal) => self.finish_rejected(&mut record, refusal).await,
                    Stop::Unreadable(why, transient) => {
                        self.finish_failed(&mut record, why, transient).await
                    }
                };
            }
        };
        let steps = target.plan(&record.options);
        // The protective writes do not wait for the news that they are starting: the record is
        // already the evidence, and the audit message goes out beside them.
        let mut announced = record.clone();
        let known = announced.audit_failures.len();
        let (failures, ()) = tokio::join!(
            self.run_steps(&mut record, &target, &steps),
            self.audit_or_log(AuditEvent::Started, &mut announced)
        );
        let failures = failures?;
        record
            .audit_failures
            .extend(announced.audit_failures.into_iter().skip(known));
        if matches!(entity, Entity::Instance(_)) {
            if !record.completed("untracked_groups") {
                let transient = failures.iter().all(is_transient);
                return self.finish_failed(&mut record, "phase 1 did not move the instance to the untracked group, so isolation was not scheduled".into(), transient).await;
            }
            if !record.completed(SCHEDULE_ISOLATION) {
                return self.schedule_isolation(&mut record, &target).await;
            }
            // Taken up again after isolation was scheduled (the invocation that scheduled it
            // stopped before its message went out, or the message was lost): once due, isolated
            // now rather than waiting for a message that may never come.
            if instance::PHASE_TWO.iter().any(|s| !record.completed(s)) {
                if record.isolation_due_at.is_some_and(|due| due > Utc::now()) {
                    return Ok(Outcome {
                        key: record.key.clone(),
                        status: Status::InProgress,
                        code: None,
                        message: "phase 1 done; isolation is scheduled and not due yet".into(),
                        transient: false,
                    });
                }
                let failures = self
                    .run_steps(&mut record, &target, instance::PHASE_TWO)
                    .await?;
                return self.finish_phase_two(&mut record, &target, &failures).await;
            }
        }
        self.conclude(&mut record, &target, &failures).await
    }

    /// Protection decided on the entity as AWS has it, not as the request spells it: IAM names are
    /// unique whatever their case, and act on the name alone, so `role/Admin` and
    /// `role/other/path/admin` would otherwise reach a protected `role/admin`.
    fn refusal_for_real(&self, entity: &Entity, real: &str) -> Option<Refusal> {
        let requested = entity.to_string();
        if real != requested {
            return Some(refuse(
                "arn_mismatch",
                format!(
                    "the request names {requested}, but the entity of that name is {real}; path and letter case must match exactly, so send that ARN if it is the one meant"
                ),
            ));
        }
        self.protection.protecting(real).map(|pattern| {
            refuse(
                "protected_principal",
                format!(
                    "{real} is protected (matches {pattern}); Quell never contains its own roles or the configured protected principals"
                ),
            )
        })
    }

    /// Verifies and finishes: succeeded only when every step completed and the read-back agrees.
    async fn conclude(
        &self,
        record: &mut Record,
        target: &Target<'_>,
        failures: &[crate::aws_error::CallError],
    ) -> Result<Outcome, ResponderError> {
        if !failures.is_empty() {
            let not_done: Vec<&str> = record
                .steps
                .iter()
                .filter(|s| s.status == crate::ledger::StepStatus::Failed)
                .map(|s| s.name.as_str())
                .collect();
            let error = format!(
                "not done: {}; the steps listed as done are in place",
                not_done.join(", ")
            );
            let transient = failures.iter().all(is_transient);
            return self.finish_failed(record, error, transient).await;
        }
        match target.verify(record).await {
            Ok(problems) if problems.is_empty() => {
                self.finish_succeeded(record, AuditEvent::Succeeded).await
            }
            Ok(problems) => {
                self.finish_failed(
                    record,
                    format!("read back after containment: {}", problems.join("; ")),
                    false,
                )
                .await
            }
            Err(e) => {
                self.finish_failed(record, format!("read back: {e}"), is_transient(&e))
                    .await
            }
        }
    }

    /// Sends phase 2 to the isolation queue with the connection-tracking wait as its delay. When
    /// the queue will not take it, phase 2 runs at once: an instance is never left in the
    /// all-open untracked group with nothing to follow.
    async fn schedule_isolation(
        &self,
        record: &mut Record,
        target: &Target<'_>,
    ) -> Result<Outcome, ResponderError> {
        let wait = self.settings.isolation_wait_seconds;
        let due = Utc::now() + Duration::seconds(i64::from(wait));
        let body = serde_json::to_string(&IsolationMessage {
            version: MESSAGE_VERSION.into(),
            request_id: record.key.clone(),
        })
        .unwrap_or_default();
        let started = Utc::now();
        // Recorded before the message goes out: phase 2 may start in another environment the
        // moment it does, and must find the record waiting for it, and this invocation must not
        // write the record after it.
        record.isolation_due_at = Some(due);
        let scheduled = Ok(StepOutcome::done(
            format!("isolation scheduled in {wait} s, once tracked connections have aged out"),
            serde_json::Value::Null,
            serde_json::json!({ "due_at": due.to_rfc3339() }),
        ));
        self.record_step(record, SCHEDULE_ISOLATION, started, scheduled)
            .await?;
        let sent = self
            .sqs
            .send_message()
            .queue_url(&self.settings.isolation_queue_url)
            .message_body(body)
            .delay_seconds(wait)
            .send()
            .await
            .described("sqs:SendMessage (isolation)");
        if let Err(e) = sent {
            let now = StepOutcome::done(
                format!("could not schedule isolation ({e}): isolating at once instead, without waiting for tracked connections to age out"),
                serde_json::Value::Null,
                serde_json::json!({ "scheduled": false }),
            );
            self.record_step(record, SCHEDULE_ISOLATION, started, Ok(now))
                .await?;
            let failures = self.run_steps(record, target, instance::PHASE_TWO).await?;
            return self.finish_phase_two(record, target, &failures).await;
        }
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::InProgress,
            code: None,
            message: format!("phase 1 done; isolation due at {}", due.to_rfc3339()),
            transient: false,
        })
    }

    /// Phase 2 of an EC2 containment, from the isolation queue.
    pub(super) async fn isolate(&self, q: &QueueDelivery) -> Result<Outcome, ResponderError> {
        let ignore = |message: String| Ok(Outcome::ignored(q, message));
        if q.queue_arn != self.settings.isolation_queue_arn {
            return ignore(format!(
                "message from {}, which is not the isolation queue",
                q.queue_arn
            ));
        }
        if let Ok(wake) = serde_json::from_str::<super::runs::Wake>(&q.body) {
            return self.wake(&q.message_id, &wake).await;
        }
        let Ok(message) = serde_json::from_str::<IsolationMessage>(&q.body) else {
            return match serde_json::from_str::<RetryMessage>(&q.body) {
                Ok(retry) if retry.version == MESSAGE_VERSION => {
                    Box::pin(self.retry(q, &retry)).await
                }
                _ => ignore("not an isolation or retry message".into()),
            };
        };
        let Some(mut record) = self
            .ledger
            .get(&message.request_id)
            .await
            .map_err(|e| ResponderError::Aws(e.to_string()))?
        else {
            return ignore(format!("no request {} in the ledger", message.request_id));
        };
        if record.status != Status::InProgress || record.isolation_due_at.is_none() {
            return ignore(format!(
                "request {} is {} and not waiting for isolation",
                record.key,
                record.status.as_str()
            ));
        }
        let entity_arn = record.entity.clone().unwrap_or_default();
        let Ok(entity) = Entity::parse(&entity_arn) else {
            return ignore(format!("request {} names no instance", record.key));
        };
        let request_id = record.key.clone();
        let target = match self.open_target(&mut record, &entity, &request_id).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(outcome),
        };
        let failures = self
            .run_steps(&mut record, &target, instance::PHASE_TWO)
            .await?;
        self.finish_phase_two(&mut record, &target, &failures).await
    }

    /// After phase 2: concluded when the interfaces are isolated; otherwise those still in the
    /// all-open untracked group go back to their groups from before containment, and phase 1 is
    /// marked undone so that sending the request again starts over.
    async fn finish_phase_two(
        &self,
        record: &mut Record,
        target: &Target<'_>,
        failures: &[crate::aws_error::CallError],
    ) -> Result<Outcome, ResponderError> {
        if !record.completed("isolation_groups") {
            if let Some(result) = target.leave_untracked(record).await {
                let undone = result.is_ok();
                self.record_step(record, "untracked_groups_undone", Utc::now(), result)
                    .await?;
                if undone {
                    for s in record
                        .steps
                        .iter_mut()
                        .filter(|s| s.name == "untracked_groups" || s.name == SCHEDULE_ISOLATION)
                    {
                        s.status = crate::ledger::StepStatus::Failed;
                        s.detail.push_str(" (undone: isolation did not complete)");
                    }
                }
            }
        }
        self.conclude(record, target, failures).await
    }
}
