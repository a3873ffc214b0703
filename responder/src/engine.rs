//! The engine: from one delivery to a recorded outcome.
//!
//! Order matters: everything that can refuse a request (authentication, shape, target, protection,
//! membership) runs before anything is written in a member account, and a refusal is recorded and
//! audited like any other outcome.

use aws_config::SdkConfig;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::audit::{Audit, AuditEvent};
use crate::aws_error::CallError;
use crate::contract::{self, ContainmentMessage, EXTERNAL_ID_ATTRIBUTE, MESSAGE_VERSION};
use crate::entities::{iam_user, StepOutcome};
use crate::entity::{Entity, IamUser};
use crate::error::ResponderError;
use crate::inbound::{self, SnsDelivery};
use crate::ledger::{Claim, Ledger, Record, Rejection, Status, Step, StepStatus};
use crate::membership::Membership;
use crate::protection::Protection;
use crate::secret::ExternalIds;
use crate::sessions::Sessions;
use crate::settings::Settings;

/// What happened to one delivery, returned to the caller of the function.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub key: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug)]
pub struct Responder {
    settings: Settings,
    ledger: Ledger,
    audit: Audit,
    secrets: aws_sdk_secretsmanager::Client,
    external_ids: OnceCell<ExternalIds>,
    sessions: Sessions,
    membership: Membership,
    protection: Protection,
}

/// A refusal: what the ledger and the audit message will say.
struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl Responder {
    /// Builds every client once per execution environment.
    pub fn new(config: &SdkConfig, settings: Settings) -> Responder {
        Responder {
            ledger: Ledger::new(
                aws_sdk_dynamodb::Client::new(config),
                &settings.ledger_table,
            ),
            audit: Audit::new(aws_sdk_sns::Client::new(config), &settings.audit_topic_arn),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            external_ids: OnceCell::new(),
            sessions: Sessions::new(config, &format!("{}-responder", settings.name_prefix)),
            membership: Membership::new(&settings.org_reader_role_arn),
            protection: Protection::new(&settings.protected_principals, &settings.name_prefix),
            settings,
        }
    }

    pub async fn from_env() -> Result<Responder, ResponderError> {
        let settings = Settings::from_env()?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Ok(Responder::new(&config, settings))
    }

    /// Handles a Lambda event. An error return makes the platform retry the event and, after its
    /// retries, send it to the dead-letter queue: used only when a retry can help.
    pub async fn handle(&self, payload: Value) -> Result<Value, ResponderError> {
        let deliveries = inbound::parse(payload)?;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut failures = Vec::new();
        for delivery in deliveries {
            let outcome = self.handle_delivery(&delivery).await?;
            if outcome.status == Status::Failed {
                failures.push(outcome.message.clone());
            }
            outcomes.push(outcome);
        }
        if !failures.is_empty() {
            return Err(ResponderError::ContainmentFailed {
                entity: outcomes
                    .iter()
                    .find(|o| o.status == Status::Failed)
                    .map(|o| o.key.clone())
                    .unwrap_or_default(),
                error: failures.join("; "),
            });
        }
        Ok(serde_json::to_value(outcomes).unwrap_or(Value::Null))
    }

    async fn external_ids(&self) -> Result<&ExternalIds, ResponderError> {
        self.external_ids
            .get_or_try_init(|| ExternalIds::load(&self.secrets, &self.settings.secret_id))
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot read the ExternalId secret: {e}")))
    }

    pub async fn handle_delivery(&self, d: &SnsDelivery) -> Result<Outcome, ResponderError> {
        let ids = self.external_ids().await?;
        let message = match Self::authenticate_and_parse(d, ids) {
            Ok(m) => m,
            Err(r) => return self.reject_delivery(d, None, r).await,
        };
        // Protection first, on the ARN as given: Quell's own roles are refused as protected, not
        // merely as a type it does not contain.
        if let Some(pattern) = self.protection.protecting(&message.entity) {
            let why = format!(
                "{} is protected (matches {pattern}); Quell never contains its own roles or the configured protected principals",
                message.entity
            );
            return self
                .reject_delivery(d, Some(&message), refuse("protected_principal", why))
                .await;
        }
        let entity = match Entity::parse(&message.entity) {
            Ok(e) => e,
            Err(e) => {
                let code = match e {
                    crate::entity::EntityError::Unsupported { .. } => "unsupported_entity",
                    _ => "malformed_arn",
                };
                return self
                    .reject_delivery(d, Some(&message), refuse(code, e.to_string()))
                    .await;
            }
        };
        match self
            .membership
            .is_member(&self.sessions, &ids.role_external_id, entity.account())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let why = format!(
                    "account {} is not in organization {}",
                    entity.account(),
                    self.settings.organization_id
                );
                return self
                    .reject_delivery(d, Some(&message), refuse("outside_organization", why))
                    .await;
            }
            Err(e) => {
                return Err(ResponderError::Aws(format!(
                    "cannot check organization membership: {e}"
                )))
            }
        }
        self.contain(d, &message, &entity, ids).await
    }

    fn authenticate_and_parse(
        d: &SnsDelivery,
        ids: &ExternalIds,
    ) -> Result<ContainmentMessage, Refusal> {
        let presented = d.attributes.get(EXTERNAL_ID_ATTRIBUTE).ok_or_else(|| {
            refuse(
                "external_id_missing",
                format!("the message has no {EXTERNAL_ID_ATTRIBUTE} message attribute"),
            )
        })?;
        if !ids.message_matches(presented) {
            return Err(refuse(
                "external_id_wrong",
                format!("the {EXTERNAL_ID_ATTRIBUTE} message attribute does not match"),
            ));
        }
        let message: ContainmentMessage = serde_json::from_str(&d.body).map_err(|e| {
            refuse(
                "malformed_message",
                format!("the message body is not a containment request: {e}"),
            )
        })?;
        if message.version != MESSAGE_VERSION {
            return Err(refuse(
                "unsupported_version",
                format!(
                    "message version {} is not understood; this responder reads version {MESSAGE_VERSION}",
                    message.version
                ),
            ));
        }
        if !ContainmentMessage::request_id_is_valid(&message.request_id) {
            return Err(refuse(
                "malformed_message",
                "request_id must be 1-64 characters of letters, digits, '-' and '_'",
            ));
        }
        Ok(message)
    }

    /// Records and audits a refused delivery. Nothing has been written anywhere else.
    async fn reject_delivery(
        &self,
        d: &SnsDelivery,
        message: Option<&ContainmentMessage>,
        refusal: Refusal,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        let record = Record {
            key: contract::rejection_key(&d.message_id),
            request_id: message.map(|m| m.request_id.clone()),
            status: Status::Rejected,
            entity: message.map(|m| m.entity.clone()),
            entity_kind: None,
            account: None,
            requester: message.map(|m| m.requester.clone()),
            reason: message.map(|m| m.reason.clone()),
            message_ids: vec![d.message_id.clone()],
            attempts: 1,
            received_at: now,
            updated_at: now,
            finished_at: Some(now),
            steps: Vec::new(),
            error: None,
            rejection: Some(Rejection {
                code: refusal.code.into(),
                message: refusal.message.clone(),
            }),
        };
        tracing::warn!(message_id = %d.message_id, code = refusal.code, reason = %refusal.message, "delivery refused");
        self.ledger
            .record_rejection(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the refusal: {e}")))?;
        self.audit_or_log(AuditEvent::Rejected, &record).await;
        Ok(Outcome {
            key: record.key,
            status: Status::Rejected,
            code: Some(refusal.code.into()),
            message: refusal.message,
        })
    }

    async fn audit_or_log(&self, event: AuditEvent, record: &Record) {
        // The audit topic being unreachable must not stop a containment: the ledger still has it all.
        if let Err(e) = self.audit.publish(event, record).await {
            tracing::error!(key = %record.key, error = %e, "audit message not published");
        }
    }

    async fn contain(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        entity: &Entity,
        ids: &ExternalIds,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        let fresh = Record {
            key: message.request_id.clone(),
            request_id: Some(message.request_id.clone()),
            status: Status::InProgress,
            entity: Some(entity.to_string()),
            entity_kind: Some(entity.kind().into()),
            account: Some(entity.account().into()),
            requester: Some(message.requester.clone()),
            reason: Some(message.reason.clone()),
            message_ids: vec![d.message_id.clone()],
            attempts: 1,
            received_at: now,
            updated_at: now,
            finished_at: None,
            steps: Vec::new(),
            error: None,
            rejection: None,
        };
        let claim = self.ledger.claim(fresh, now).await.map_err(|e| {
            ResponderError::Aws(format!("cannot claim the request in the ledger: {e}"))
        })?;
        let mut record = match claim {
            Claim::Fresh(r) | Claim::Resumed(r) => r,
            Claim::Busy(existing) | Claim::Finished(existing) => {
                let why = format!(
                    "request {} was already received (status {}, first message {}); it is not acted on twice",
                    message.request_id,
                    existing.status.as_str(),
                    existing.message_ids.first().map_or("?", String::as_str)
                );
                return self
                    .reject_delivery(d, Some(message), refuse("duplicate", why))
                    .await;
            }
        };
        self.audit_or_log(AuditEvent::Started, &record).await;

        let member_role = format!(
            "arn:{}:iam::{}:role/{}",
            partition(entity),
            entity.account(),
            self.settings.member_role_name
        );
        let config = match self
            .sessions
            .assume(&member_role, Some(&ids.role_external_id))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let error = format!(
                    "cannot assume {member_role}: {e}; is the quell-member-roles stack set deployed to {}?",
                    entity.account()
                );
                return self.finish_failed(&mut record, error).await;
            }
        };
        match entity {
            Entity::IamUser(user) => self.contain_user(&mut record, &config, user).await,
        }
    }

    async fn contain_user(
        &self,
        record: &mut Record,
        config: &SdkConfig,
        user: &IamUser,
    ) -> Result<Outcome, ResponderError> {
        let iam = aws_sdk_iam::Client::new(config);
        match iam_user::exists(&iam, user).await {
            Ok(true) => {}
            Ok(false) => {
                let why = format!(
                    "IAM user {} does not exist in account {}",
                    user.name, user.account
                );
                return self
                    .finish_rejected(record, refuse("entity_not_found", why))
                    .await;
            }
            Err(e) => return self.finish_failed(record, e.to_string()).await,
        }
        for step in iam_user::STEPS {
            if record.completed(step.name()) {
                continue;
            }
            let started = Utc::now();
            let result = iam_user::run(&iam, user, step, started).await;
            if let Err(error) = self.record_step(record, step.name(), started, result).await {
                return self.finish_failed(record, error.to_string()).await;
            }
        }
        match iam_user::verify(&iam, user).await {
            Ok(problems) if problems.is_empty() => self.finish_succeeded(record).await,
            Ok(problems) => {
                let error = format!("read back after containment: {}", problems.join("; "));
                self.finish_failed(record, error).await
            }
            Err(e) => self.finish_failed(record, format!("read back: {e}")).await,
        }
    }

    /// Adds a step's outcome to the record and saves it, so a crash after this point loses nothing.
    async fn record_step(
        &self,
        record: &mut Record,
        name: &str,
        started: chrono::DateTime<Utc>,
        result: Result<StepOutcome, CallError>,
    ) -> Result<(), CallError> {
        let finished = Utc::now();
        let (step, failed) = match result {
            Ok(o) => (
                Step {
                    name: name.into(),
                    status: o.status,
                    detail: o.detail,
                    prior: o.prior,
                    new: o.new,
                    started_at: started,
                    finished_at: finished,
                },
                None,
            ),
            Err(e) => (
                Step {
                    name: name.into(),
                    status: StepStatus::Failed,
                    detail: e.to_string(),
                    prior: Value::Null,
                    new: Value::Null,
                    started_at: started,
                    finished_at: finished,
                },
                Some(e),
            ),
        };
        record.steps.push(step);
        record.updated_at = finished;
        self.ledger.save(record).await?;
        failed.map_or(Ok(()), Err)
    }

    async fn finish_succeeded(&self, record: &mut Record) -> Result<Outcome, ResponderError> {
        self.finish(record, Status::Succeeded, AuditEvent::Succeeded)
            .await?;
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::Succeeded,
            code: None,
            message: format!("{} contained", record.entity.as_deref().unwrap_or_default()),
        })
    }

    async fn finish_failed(
        &self,
        record: &mut Record,
        error: String,
    ) -> Result<Outcome, ResponderError> {
        tracing::error!(key = %record.key, %error, "containment failed");
        record.error = Some(error.clone());
        self.finish(record, Status::Failed, AuditEvent::Failed)
            .await?;
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::Failed,
            code: None,
            message: error,
        })
    }

    async fn finish_rejected(
        &self,
        record: &mut Record,
        refusal: Refusal,
    ) -> Result<Outcome, ResponderError> {
        record.rejection = Some(Rejection {
            code: refusal.code.into(),
            message: refusal.message.clone(),
        });
        self.finish(record, Status::Rejected, AuditEvent::Rejected)
            .await?;
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::Rejected,
            code: Some(refusal.code.into()),
            message: refusal.message,
        })
    }

    async fn finish(
        &self,
        record: &mut Record,
        status: Status,
        event: AuditEvent,
    ) -> Result<(), ResponderError> {
        let now = Utc::now();
        record.status = status;
        record.updated_at = now;
        record.finished_at = Some(now);
        self.ledger
            .save(record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot save the final record: {e}")))?;
        self.audit_or_log(event, record).await;
        Ok(())
    }
}

fn partition(entity: &Entity) -> &str {
    match entity {
        Entity::IamUser(u) => &u.partition,
    }
}
