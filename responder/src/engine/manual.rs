//! `quell run PLAYBOOK --target ARN`: a declared playbook with a `manual` trigger, started by a
//! person on the contain queue (where SQS authenticates the sender and the configuration's
//! `authorization.contain` admits it). The request is a ledger record of its own that names the
//! run it started; the run records who started it, and that person may not approve it.

use serde_json::json;

use super::runs::{Origin, Starter};
use super::{refuse, Outcome, Responder};
use crate::audit::AuditEvent;
use crate::contract::ContainmentMessage;
use crate::entity::Entity;
use crate::error::ResponderError;
use crate::inbound::SnsDelivery;
use crate::ledger::Status;
use crate::playbooks::language::trigger::{self, Trigger};

/// The CloudFormation type a run's target has for each entity a request can name.
fn resource_type(entity: &Entity) -> &'static str {
    match entity {
        Entity::IamUser(_) => "AWS::IAM::User",
        Entity::IamRole(_) => "AWS::IAM::Role",
        Entity::Function(_) => "AWS::Lambda::Function",
        Entity::Instance(_) => "AWS::EC2::Instance",
    }
}

impl Responder {
    pub(super) async fn run_manual(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        entity: &Entity,
    ) -> Result<Outcome, ResponderError> {
        let mut request = match self.claim_decision(d, message, "run request").await? {
            Ok(r) => r,
            Err(refused) => return Ok(refused),
        };
        request.account = Some(entity.account().to_owned());
        // `handle_request` refused a run request that names no playbook.
        let id = message.options.playbook.as_deref().unwrap_or_default();
        let library = match self.library().await? {
            Some(l) if l.refused.is_none() => l,
            Some(l) => {
                let why = l.refused.clone().unwrap_or_default();
                return self
                    .finish_rejected(&mut request, refuse("declared_playbooks_refused", why))
                    .await;
            }
            None => {
                let why = "no declared playbooks are installed; add one to the configuration and run `quell upgrade`";
                return self
                    .finish_rejected(&mut request, refuse("unknown_playbook", why))
                    .await;
            }
        };
        let manual: Vec<&str> = library
            .playbooks
            .iter()
            .filter(|p| p.trigger == Trigger::Manual)
            .map(|p| p.id.as_str())
            .collect();
        let Some(playbook) = library.playbooks.iter().find(|p| p.id == id) else {
            let why = format!(
                "no declared playbook {id:?}; those started by hand are: {}",
                if manual.is_empty() {
                    "none".to_owned()
                } else {
                    manual.join(", ")
                }
            );
            return self
                .finish_rejected(&mut request, refuse("unknown_playbook", why))
                .await;
        };
        if playbook.trigger != Trigger::Manual {
            let why = format!(
                "playbook {id} starts from its own trigger, not by hand; only playbooks with `trigger: {{manual: {{}}}}` are run with `quell run`"
            );
            return self
                .finish_rejected(&mut request, refuse("not_manual", why))
                .await;
        }
        let kind = resource_type(entity);
        if playbook.target.kind != kind {
            let why = format!(
                "playbook {id} acts on a {}, and {} is a {kind}",
                playbook.target.kind, message.entity
            );
            return self
                .finish_rejected(&mut request, refuse("wrong_target", why))
                .await;
        }
        let region = entity
            .region()
            .unwrap_or(&self.settings.home_region)
            .to_owned();
        if !self.settings.regions.contains(&region) {
            let why = format!(
                "{} is in {region}, where Quell is not installed",
                message.entity
            );
            return self
                .finish_rejected(&mut request, refuse("outside_regions", why))
                .await;
        }
        // What the playbook's templates see under `event`: the request, as the responder
        // checked it. `target` is written by no one but the responder.
        let event = json!({
            "source": trigger::MANUAL_SOURCE,
            "detail-type": trigger::MANUAL_DETAIL_TYPE,
            "id": message.request_id,
            "account": entity.account(),
            "region": region,
            "detail": {
                "target": {"arn": message.entity, "id": entity.name(), "type": kind},
                "requester": message.requester,
                "reason": message.reason,
            },
        });
        let origin = Origin {
            partition: super::remediate::partition_of(&region),
            account: entity.account().to_owned(),
            region,
        };
        let starter = Starter {
            person: d.caller.sender_id().map(str::to_owned),
            requester: message.requester.clone(),
            caller: d.caller.clone(),
            arn: message.entity.clone(),
        };
        let run = Box::pin(self.start_run(
            &d.message_id,
            &library,
            playbook,
            &event,
            None,
            &origin,
            Some(&starter),
        ))
        .await?;
        request.reason = Some(format!("{}; {}: {}", message.reason, run.key, run.message));
        let (status, audit) = match run.status {
            Status::Failed => (Status::Failed, AuditEvent::Failed),
            Status::Skipped | Status::Rejected => (Status::Skipped, AuditEvent::Skipped),
            _ => (Status::Succeeded, AuditEvent::Succeeded),
        };
        request.error = (status == Status::Failed).then(|| run.message.clone());
        self.finish(&mut request, status, audit).await?;
        Ok(Outcome {
            key: request.key.clone(),
            ..run
        })
    }
}
