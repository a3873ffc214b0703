//! `quell approve ID` and `quell deny ID`: a fix a playbook left awaiting approval is carried out or
//! dropped. The decision is a request of its own (recorded, audited, acted on once); the
//! remediation's record says who decided and what was done.

use chrono::Utc;

use super::remediate::Intent;
use super::{refuse, Outcome, Responder};
use crate::audit::AuditEvent;
use crate::contract::{Action, ContainmentMessage};
use crate::error::ResponderError;
use crate::inbound::SnsDelivery;
use crate::ledger::{Claim, Record, Status};

impl Responder {
    /// A decision or a run's release is a request of its own: recorded, and acted on once. The
    /// request's record, or the outcome of refusing a second delivery.
    pub(super) async fn claim_decision(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        kind: &str,
    ) -> Result<Result<Record, Outcome>, ResponderError> {
        let mut fresh = Record::new(message.request_id.clone(), Utc::now(), &d.message_id);
        fresh.request_id = Some(message.request_id.clone());
        fresh.action = message.action;
        fresh.entity = Some(message.entity.clone());
        fresh.entity_kind = Some(kind.into());
        fresh.requester = Some(message.requester.clone());
        fresh.caller = Some(d.caller.clone());
        fresh.reason = Some(message.reason.clone());
        let claim = self.ledger.claim(fresh, Utc::now()).await.map_err(|e| {
            ResponderError::Aws(format!("cannot claim the request in the ledger: {e}"))
        })?;
        if let Some(later) = self.held_elsewhere(&claim, &d.message_id) {
            return Ok(Err(later));
        }
        match claim {
            Claim::Fresh(r) | Claim::Resumed(r) => Ok(Ok(r)),
            Claim::Busy(existing) | Claim::Finished(existing) => {
                let why = format!(
                    "request {} was already received (status {}); it is not acted on twice",
                    message.request_id,
                    existing.status.as_str()
                );
                self.reject_delivery(d, Some(message), refuse("duplicate", why))
                    .await
                    .map(Err)
            }
        }
    }

    pub(super) async fn decide(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
    ) -> Result<Outcome, ResponderError> {
        let mut request = match self.claim_decision(d, message, "remediation").await? {
            Ok(r) => r,
            Err(refused) => return Ok(refused),
        };
        let key = &message.entity;
        let target =
            self.ledger.get(key).await.map_err(|e| {
                ResponderError::Aws(format!("cannot read {key} from the ledger: {e}"))
            })?;
        if let Some(run) = target.clone().filter(|r| r.run.is_some()) {
            return Box::pin(self.decide_declared(d, message, &mut request, run)).await;
        }
        let Some(mut target) = target.filter(|r| r.action == Action::Remediate) else {
            let why = format!(
                "no remediation {key} in the ledger; `quell history` lists them with their ids"
            );
            return self
                .finish_rejected(&mut request, refuse("unknown_remediation", why))
                .await;
        };
        let Some(trigger) = target
            .pending
            .clone()
            .filter(|_| target.status == Status::AwaitingApproval)
        else {
            let why = format!(
                "remediation {key} is {}, not awaiting approval; nothing to {}",
                target.status.as_str(),
                message.action.as_str()
            );
            return self
                .finish_rejected(&mut request, refuse("not_awaiting_approval", why))
                .await;
        };
        request.account = target.account.clone();
        if let Some(refusal) = self.self_decision(
            &target,
            &d.caller,
            &message.requester,
            message.action.as_str(),
        ) {
            return self.finish_rejected(&mut request, refusal).await;
        }
        // Taken from "awaiting approval" in one conditional write: of two decisions sent at once,
        // one acts and the other is refused.
        let seen = target.updated_at;
        let now = Utc::now();
        target.status = Status::InProgress;
        target.updated_at = now;
        target.decided_by = Some(format!(
            "{} by {} (request {})",
            message.action.as_str(),
            d.caller.describe(&message.requester),
            message.request_id
        ));
        target.message_ids.push(d.message_id.clone());
        let taken = self
            .ledger
            .save_if_unchanged(&target, seen)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot take {key} from the ledger: {e}")))?;
        if !taken {
            let why = format!("remediation {key} was decided by someone else a moment ago");
            return self
                .finish_rejected(&mut request, refuse("not_awaiting_approval", why))
                .await;
        }
        if message.action == Action::Deny {
            target.status = Status::Denied;
            target.pending = None;
            target.finished_at = Some(now);
            target.reason = Some(format!(
                "denied by {}: {}",
                d.caller.describe(&message.requester),
                message.reason
            ));
            self.ledger
                .save(&target)
                .await
                .map_err(|e| ResponderError::Aws(format!("cannot record the denial: {e}")))?;
            self.audit_or_log(AuditEvent::Denied, &mut target).await;
            request.reason = Some(format!("{}; {key} will not be fixed", message.reason));
            return self
                .finish_succeeded(&mut request, AuditEvent::Succeeded)
                .await;
        }
        let already = target.steps.len();
        let ending = self
            .run_playbook(&trigger, &mut target, Intent::Approved)
            .await;
        let outcome = self
            .finish_remediation(&mut target, &trigger, ending)
            .await?;
        // The approval's own record shows what the approval did.
        request.steps = target.steps[already..].to_vec();
        let now = Utc::now();
        request.status = outcome.status;
        request.updated_at = now;
        request.finished_at = Some(now);
        request.error = (outcome.status == Status::Failed).then(|| outcome.message.clone());
        request.reason = Some(format!("{}; {}", message.reason, outcome.message));
        self.ledger
            .save(&request)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the approval: {e}")))?;
        Ok(Outcome {
            key: request.key.clone(),
            ..outcome
        })
    }
}

impl Responder {
    /// `quell release RUN`: what a finished run changed is undone from its ledger steps, newest
    /// first (each inverse refuses what changed since). The release is a request of its own.
    pub(super) async fn release_run(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
    ) -> Result<Outcome, ResponderError> {
        let mut request = match self.claim_decision(d, message, "run").await? {
            Ok(r) => r,
            Err(refused) => return Ok(refused),
        };
        let key = &message.entity;
        let run = self
            .ledger
            .get(key)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot read {key} from the ledger: {e}")))?
            .filter(|r| r.run.is_some());
        let Some(run) = run else {
            let why = format!("no run {key} in the ledger; `quell runs` lists them");
            return self
                .finish_rejected(&mut request, refuse("unknown_run", why))
                .await;
        };
        request.account.clone_from(&run.account);
        match self.release_run_steps(run, &message.request_id).await? {
            Err(why) => {
                self.finish_rejected(&mut request, refuse("not_releasable", why))
                    .await
            }
            Ok(released) => {
                request.steps = released;
                let failed = request
                    .steps
                    .iter()
                    .any(|s| s.status == crate::ledger::StepStatus::Failed);
                if failed {
                    let why = "some of the run's changes could not be undone; the steps say which"
                        .to_owned();
                    request.error = Some(why.clone());
                    return self
                        .finish_rejected(&mut request, refuse("release_incomplete", why))
                        .await;
                }
                self.finish_succeeded(&mut request, AuditEvent::Released)
                    .await
            }
        }
    }

    /// A decision on a declared playbook's run: the run's own checks decide who may approve.
    async fn decide_declared(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        request: &mut Record,
        run: Record,
    ) -> Result<Outcome, ResponderError> {
        let Some(step) = message.options.step.clone() else {
            let why = format!(
                "{} is a playbook run: name the approval with `--step STEP`",
                run.key
            );
            return self.finish_rejected(request, refuse("no_step", why)).await;
        };
        request.account.clone_from(&run.account);
        let approve = message.action == Action::Approve;
        match self.decide_run(run, &step, &d.caller, approve).await? {
            Err(why) => {
                self.finish_rejected(request, refuse("decision_refused", why))
                    .await
            }
            Ok(decided) => {
                request.reason = Some(format!(
                    "{}; run {} is now {}",
                    message.reason,
                    decided.key,
                    decided.status.as_str()
                ));
                self.finish_succeeded(request, AuditEvent::Succeeded).await
            }
        }
    }
}
