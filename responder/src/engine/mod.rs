//! The engine: from one delivery to a recorded outcome.
//!
//! Order matters: everything that can refuse a request (authentication, shape, protection, target,
//! membership) runs before anything is written in a member account, and a refusal is recorded and
//! audited like any other outcome.

mod approval;
mod contain;
mod findings;
mod manual;
mod release;
mod remediate;
mod requests;
mod run_sources;
mod runs;
mod sweep;
mod sweep_place;

use aws_config::{Region, SdkConfig};
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::audit::{Audit, AuditEvent};
use crate::aws_error::{CallError, Described};
use crate::clients::{Clients, MemberClients, MemberFactory};
use crate::contract::{self, Action, ContainmentMessage, EXTERNAL_ID_ATTRIBUTE, MESSAGE_VERSION};
use crate::entities::{StepOutcome, Target};
use crate::entity::{Entity, EntityError};
use crate::error::ResponderError;
use crate::inbound::{self, Delivery, QueueDelivery, SnsDelivery};
use crate::ledger::{Claim, Ledger, Record, Rejection, Status, Step, StepStatus};
use crate::membership::Membership;
use crate::protection::Protection;
use crate::secret::{CachedIds, ExternalIds};
use crate::sessions::Sessions;
use crate::settings::Settings;

/// SQS's longest `DelaySeconds`.
const MAX_QUEUE_DELAY: i32 = 900;

/// What happened to one delivery, returned to the caller of the function.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub key: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
    /// A failure that a later attempt can fix (throttling, a service error): the platform retries.
    #[serde(skip)]
    pub transient: bool,
}

impl Outcome {
    /// A failure a later attempt can fix: the delivery is tried again (the queue's redelivery,
    /// Lambda's retry, or the responder's own queue), never dropped.
    fn to_try_again(&self) -> bool {
        self.status == Status::Failed && self.transient
    }

    /// A message of the responder's own queues that is about nothing it can act on: logged, and
    /// settled (trying it again would not change that).
    fn ignored(q: &QueueDelivery, message: String) -> Outcome {
        tracing::warn!(queue = %q.queue_arn, message_id = %q.message_id, %message, "queue message ignored");
        Outcome {
            key: format!("queue:{}", q.message_id),
            status: Status::Rejected,
            code: Some("ignored".into()),
            message,
            transient: false,
        }
    }
}

pub struct Responder {
    settings: Settings,
    ledger: Ledger,
    audit: Audit,
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    external_ids: CachedIds,
    sessions: Sessions,
    membership: Membership,
    protection: Protection,
    member_clients: MemberFactory,
    security_hub: aws_sdk_securityhub::Client,
    /// IAM in the security account: confirms who sent a request from there.
    iam: aws_sdk_iam::Client,
    calls: crate::clients::CallCounter,
    /// Where events may come from, from the settings.
    origin: crate::playbooks::event::Origin,
    /// The security account's S3: the declared playbooks' document.
    s3: aws_sdk_s3::Client,
    /// The declared playbooks, read at the first event that needs them.
    library: tokio::sync::OnceCell<Arc<crate::runs::document::Library>>,
    /// Webhook calls, and the secrets that authorize them.
    http: reqwest::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A refusal: what the ledger and the audit message will say.
pub(crate) struct Refusal {
    code: &'static str,
    message: String,
}

pub(crate) fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

impl Responder {
    /// Builds every client once per execution environment.
    pub fn new(config: &SdkConfig, settings: Settings) -> Responder {
        Self::with_clients(Clients::from_config(config), settings)
    }

    /// With clients made elsewhere: tests hand in aws-smithy-mocks clients.
    pub fn with_clients(clients: Clients, settings: Settings) -> Responder {
        let session_name = format!("{}-responder", settings.name_prefix);
        Responder {
            ledger: Ledger::new(clients.dynamodb, &settings.ledger_table)
                .with_function_timeout(settings.function_timeout_seconds),
            audit: Audit::new(clients.sns, &settings.audit_topic_arn),
            sqs: clients.sqs,
            scheduler: clients.scheduler,
            external_ids: CachedIds::new(
                clients.secrets.clone(),
                &settings.secret_id,
                crate::secret::CACHE_LIFETIME,
            ),
            sessions: Sessions::with_client(&clients.base, clients.sts, &session_name),
            membership: Membership::new(&settings.org_reader_role_arn),
            protection: Protection::new(&settings.protected_principals, &settings.name_prefix),
            member_clients: clients.member,
            security_hub: clients.security_hub,
            iam: clients.iam,
            calls: clients.counter,
            origin: origin_of(&settings),
            s3: clients.s3,
            library: tokio::sync::OnceCell::new(),
            http: reqwest::Client::new(),
            secrets: clients.secrets.clone(),
            settings,
        }
    }

    pub async fn from_env() -> Result<Responder, ResponderError> {
        let settings = Settings::from_env()?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(call_timeouts(settings.call_timeout_seconds))
            .load()
            .await;
        Ok(Responder::new(&config, settings))
    }

    /// Handles a Lambda event. An error return makes the platform retry the event and, after its
    /// retries, send it to the dead-letter queue: used only when a retry can help.
    pub async fn handle(&self, payload: Value) -> Result<Value, ResponderError> {
        let started = std::time::Instant::now();
        let calls_before = self.calls.get();
        let result = self.handle_deliveries(payload).await;
        let keys: Vec<&str> = match &result {
            Ok(out) => out["outcomes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["key"].as_str())
                .collect(),
            Err(_) => Vec::new(),
        };
        let timeline =
            serde_json::to_string(&self.calls.take_timeline(started)).unwrap_or_default();
        tracing::info!(
            handler_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            aws_calls = self.calls.get() - calls_before,
            requests = ?keys,
            operations = ?self.calls.take_operations(),
            timeline = %timeline,
            ok = result.is_ok(),
            "invocation"
        );
        result
    }

    /// SNS delivers one message per invocation: a transient failure fails the invocation, for
    /// Lambda's asynchronous retry. An SQS batch is settled message by message: what failed, and
    /// only that, is named in `batchItemFailures` (the event source mapping reports them), so one
    /// failing account never sends the rest of the batch back to the queue or to the dead-letter
    /// queue. Each message is claimed in the ledger, so one delivered again is acted on once.
    async fn handle_deliveries(&self, payload: Value) -> Result<Value, ResponderError> {
        let mut outcomes = Vec::new();
        let mut redeliver: Vec<String> = Vec::new();
        for delivery in inbound::parse(payload)? {
            match delivery {
                Delivery::Sns(d) => {
                    let outcome = Box::pin(self.handle_sns(&d)).await?;
                    if outcome.to_try_again() {
                        return Err(ResponderError::ContainmentFailed {
                            entity: outcome.key,
                            error: outcome.message,
                        });
                    }
                    outcomes.push(outcome);
                }
                Delivery::Queue(q) => match Box::pin(self.handle_queued(&q)).await {
                    Ok(these) => {
                        if these.iter().any(Outcome::to_try_again) {
                            redeliver.push(q.message_id.clone());
                        }
                        outcomes.extend(these);
                    }
                    Err(e) => {
                        tracing::warn!(message_id = %q.message_id, error = %e, "left on its queue for redelivery");
                        redeliver.push(q.message_id.clone());
                        outcomes.push(Outcome {
                            key: format!("queue:{}", q.message_id),
                            status: Status::Failed,
                            code: Some("redelivered".into()),
                            message: e.to_string(),
                            transient: true,
                        });
                    }
                },
            }
        }
        Ok(json!({
            "batchItemFailures": redeliver
                .iter()
                .map(|id| json!({ "itemIdentifier": id }))
                .collect::<Vec<_>>(),
            "outcomes": outcomes,
        }))
    }

    /// One SQS message: an event from the central bus, a request, or the responder's own work.
    async fn handle_queued(&self, q: &QueueDelivery) -> Result<Vec<Outcome>, ResponderError> {
        if self.settings.events_queue_arn.as_deref() == Some(q.queue_arn.as_str()) {
            return Box::pin(self.remediate(q)).await;
        }
        if q.queue_arn == self.settings.sweep_queue_arn {
            return Ok(vec![Box::pin(self.sweep_place_delivery(q)).await?]);
        }
        Ok(vec![match self.channel_of(q) {
            Some(channel) => Box::pin(self.handle_queued_request(q, channel)).await?,
            None => Box::pin(self.isolate(q)).await?,
        }])
    }

    /// When `record`, which another invocation is working on, is this very delivery again (the
    /// platform delivering it once more after a crash or a timeout): nothing is done now, and the
    /// delivery is tried again later. The live invocation finishes the work by then, or, if it
    /// died, the retry takes the work over once the claim's lease has run out, never earlier.
    /// `None` for another delivery of the same request or event: a duplicate, told so.
    pub(crate) fn held_elsewhere(&self, claim: &Claim, message_id: &str) -> Option<Outcome> {
        let Claim::Busy(record) = claim else {
            return None;
        };
        record
            .message_ids
            .iter()
            .any(|m| m == message_id)
            .then(|| Outcome {
                key: record.key.clone(),
                status: Status::Failed,
                code: Some("in_progress".into()),
                message: format!(
                    "{} is being handled by another invocation since {}; this delivery is tried again later, and takes the work over if that invocation has stopped (a claim holds {} s)",
                    record.key,
                    record.updated_at.to_rfc3339(),
                    self.ledger.lease().num_seconds()
                ),
                transient: true,
            })
    }

    async fn external_ids(&self) -> Result<Arc<ExternalIds>, ResponderError> {
        self.external_ids
            .get()
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot read the ExternalId secret: {e}")))
    }

    pub async fn handle_sns(&self, d: &SnsDelivery) -> Result<Outcome, ResponderError> {
        let mut ids = self.external_ids().await?;
        let presented = d.attributes.get(EXTERNAL_ID_ATTRIBUTE);
        if presented.is_some_and(|p| !ids.message_matches(p)) {
            // The publisher may already use an id rotated since this copy was read.
            ids = self
                .external_ids
                .read_if_older_than(crate::secret::REREAD_ON_MISMATCH)
                .await
                .map_err(|e| {
                    ResponderError::Aws(format!("cannot read the ExternalId secret: {e}"))
                })?;
        }
        let message = match Self::authenticate_and_parse(d, &ids) {
            Ok(m) => m,
            Err(r) => return self.reject_delivery(d, None, r).await,
        };
        // The topic's requester is self-declared: what it may ask for is configured, and the
        // rest must come through the queues where AWS authenticates the sender.
        if !self
            .settings
            .authorization
            .external_id_allows(message.action)
        {
            let why = match crate::authorization::Channel::for_action(message.action) {
                Some(c) => format!(
                    "{} requests are not taken from the ExternalId topic (authorization.external_id_actions); send them to the {} queue, where AWS authenticates the sender (quell {} does)",
                    message.action.as_str(),
                    c.queue_name(&self.settings.name_prefix),
                    message.action.as_str()
                ),
                None => format!("{} requests are not taken from the ExternalId topic", message.action.as_str()),
            };
            return self
                .reject_delivery(d, Some(&message), refuse("channel_not_allowed", why))
                .await;
        }
        Box::pin(self.handle_authenticated(d, &message, 1)).await
    }

    /// Runs an authenticated request. What fails for a reason that may pass is tried again
    /// through the responder's own queue, never handed back to the platform: Lambda's retries of
    /// an SNS invocation end in a dead-letter queue holding the whole event, ExternalId attribute
    /// included. After the last attempt the request, without it, goes to the dead-letter queue.
    async fn handle_authenticated(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        attempt: u32,
    ) -> Result<Outcome, ResponderError> {
        let outcome = Box::pin(self.handle_request(d, message)).await;
        let why = match &outcome {
            Ok(o) if o.to_try_again() => o.message.clone(),
            Err(e) => e.to_string(),
            Ok(_) => return outcome,
        };
        let failed = |message: String| Outcome {
            key: d.message_id.clone(),
            status: Status::Failed,
            code: None,
            message,
            transient: false,
        };
        if attempt >= contract::REQUEST_ATTEMPTS {
            self.dead_letter_request(d, message, attempt, &why).await;
            return Ok(failed(format!(
                "{why}; given up after {attempt} attempts and sent to the dead-letter queue"
            )));
        }
        // A request another invocation holds is tried once that claim's lease has run out: the
        // holder has finished by then, or died, and the retry takes the work over. Sooner would
        // spend an attempt on a claim that cannot be taken yet.
        let held = matches!(&outcome, Ok(o) if o.code.as_deref() == Some("in_progress"));
        let delay = if held {
            i32::try_from(self.ledger.lease().num_seconds() + 1)
                .unwrap_or(MAX_QUEUE_DELAY)
                .min(MAX_QUEUE_DELAY)
        } else {
            30 * i32::try_from(attempt + 1).unwrap_or(1)
        };
        self.retry_later(d, message, attempt + 1, delay).await?;
        Ok(failed(format!(
            "{why}; attempt {} of {} in {delay} s",
            attempt + 1,
            contract::REQUEST_ATTEMPTS
        )))
    }

    /// Sends the request to the responder's own queue, to be tried in a while; the delay.
    async fn retry_later(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        attempt: u32,
        delay: i32,
    ) -> Result<(), ResponderError> {
        let retry = contract::RetryMessage {
            version: MESSAGE_VERSION.into(),
            message_id: d.message_id.clone(),
            attempt,
            request: message.clone(),
            caller: d.caller.clone(),
        };
        self.sqs
            .send_message()
            .queue_url(&self.settings.isolation_queue_url)
            .message_body(serde_json::to_string(&retry).unwrap_or_default())
            .delay_seconds(delay)
            .send()
            .await
            .described("sqs:SendMessage (retry)")
            .map_err(|e| ResponderError::Aws(format!("cannot schedule a retry: {e}")))?;
        Ok(())
    }

    /// A request from the responder's own queue: tried again as it first came in.
    pub(super) async fn retry(
        &self,
        q: &inbound::QueueDelivery,
        retry: &contract::RetryMessage,
    ) -> Result<Outcome, ResponderError> {
        let d = SnsDelivery {
            message_id: retry.message_id.clone(),
            topic_arn: q.queue_arn.clone(),
            body: String::new(),
            attributes: std::collections::HashMap::new(),
            caller: retry.caller.clone(),
        };
        Box::pin(self.handle_authenticated(&d, &retry.request, retry.attempt)).await
    }

    async fn dead_letter_request(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
        attempts: u32,
        why: &str,
    ) {
        let body = serde_json::json!({ "source": "quell", "event": "given_up",
            "message_id": d.message_id, "attempts": attempts, "error": why, "request": message })
        .to_string();
        self.send_dead_letter(&d.message_id, body).await;
    }

    /// An authenticated request, from a containment message or a Security Hub custom action.
    async fn handle_request(
        &self,
        d: &SnsDelivery,
        message: &ContainmentMessage,
    ) -> Result<Outcome, ResponderError> {
        if let Some(kind) = message
            .options
            .only
            .iter()
            .find(|k| !contract::SWEEP_KINDS.contains(&k.as_str()))
        {
            let why = format!(
                "options.only names {kind:?}, which is not a kind of resource the sweep covers ({})",
                contract::SWEEP_KINDS.join(", ")
            );
            return self
                .reject_delivery(d, Some(message), refuse("malformed_message", why))
                .await;
        }
        if message.options.playbook.is_some() != (message.action == Action::Run) {
            let why =
                "options.playbook names the playbook of a run request (action run), and only that";
            return self
                .reject_delivery(d, Some(message), refuse("malformed_message", why))
                .await;
        }
        let sweep_only = message.options.dry_run || !message.options.only.is_empty();
        if sweep_only && message.action != Action::Sweep {
            let why = "options.dry_run and options.only apply to a sweep only; a containment or release is never a dry run";
            return self
                .reject_delivery(d, Some(message), refuse("malformed_message", why))
                .await;
        }
        if message.action == Action::Sweep {
            if message.entity != contract::SWEEP_ENTITY {
                let why = format!(
                    "a sweep covers the whole organization: entity must be \"{}\", not {:?}",
                    contract::SWEEP_ENTITY,
                    message.entity
                );
                return self
                    .reject_delivery(d, Some(message), refuse("malformed_message", why))
                    .await;
            }
            return self
                .sweep(
                    &message.request_id,
                    &d.message_id,
                    &message.requester,
                    &d.caller,
                    &message.options,
                )
                .await;
        }
        if matches!(message.action, Action::Approve | Action::Deny) {
            return Box::pin(self.decide(d, message)).await;
        }
        if message.action == Action::Release && message.entity.starts_with("run:") {
            return Box::pin(self.release_run(d, message)).await;
        }
        // Protection first, on the ARN as given: Quell's own roles are refused as protected, not
        // merely as a type it does not contain.
        if let Some(pattern) = self.protection.protecting(&message.entity) {
            let why = format!(
                "{} is protected (matches {pattern}); Quell never contains its own roles or the configured protected principals",
                message.entity
            );
            return self
                .reject_delivery(d, Some(message), refuse("protected_principal", why))
                .await;
        }
        let entity = match Entity::parse(&message.entity) {
            Ok(e) => e,
            Err(e) => {
                let code = match e {
                    EntityError::Unsupported { .. } => "unsupported_entity",
                    EntityError::Refused { .. } => "cannot_contain",
                    _ => "malformed_arn",
                };
                return self
                    .reject_delivery(d, Some(message), refuse(code, e.to_string()))
                    .await;
            }
        };
        match self.is_member(entity.account()).await {
            Ok(true) => {}
            Ok(false) => {
                let why = format!(
                    "account {} is not in organization {}",
                    entity.account(),
                    self.settings.organization_id
                );
                return self
                    .reject_delivery(d, Some(message), refuse("outside_organization", why))
                    .await;
            }
            Err(e) => {
                return Err(ResponderError::Aws(format!(
                    "cannot check organization membership: {e}"
                )))
            }
        }
        match message.action {
            Action::Contain => self.contain(d, message, &entity).await,
            Action::Release => self.release(d, message, &entity).await,
            Action::Run => Box::pin(self.run_manual(d, message, &entity)).await,
            Action::Remediate | Action::Sweep | Action::Approve | Action::Deny => {
                let why = "remediations come from events, not from containment messages; use action contain or release";
                self.reject_delivery(d, Some(message), refuse("action_not_accepted", why))
                    .await
            }
        }
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
        Self::parse_request(&d.body)
    }

    /// A request body, checked for shape, version, id and bounded text.
    fn parse_request(body: &str) -> Result<ContainmentMessage, Refusal> {
        let message: ContainmentMessage = serde_json::from_str(body).map_err(|e| {
            refuse(
                "malformed_message",
                format!("the message body is not a containment request: {e}"),
            )
        })?;
        if message.version != MESSAGE_VERSION {
            return Err(refuse(
                "unsupported_version",
                format!("message version {} is not understood; this responder reads version {MESSAGE_VERSION}", message.version),
            ));
        }
        if !ContainmentMessage::request_id_is_valid(&message.request_id) {
            return Err(refuse(
                "malformed_message",
                "request_id must be 1-64 characters of letters, digits, '-' and '_'",
            ));
        }
        message
            .check_texts()
            .map_err(|why| refuse("malformed_message", why))?;
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
        let mut record = Record::new(contract::rejection_key(&d.message_id), now, &d.message_id);
        if let Some(m) = message {
            // A refused message's fields are kept as evidence, but never beyond the limit that
            // keeps every record and audit message within its service's size.
            let keep = |v: &str| contract::clipped(v, contract::TEXT_LIMIT);
            record.request_id = Some(m.request_id.clone());
            record.action = m.action;
            record.entity = Some(keep(&m.entity));
            record.requester = Some(keep(&m.requester));
            record.reason = Some(keep(&m.reason));
        }
        record.caller = Some(d.caller.clone());
        record.status = Status::Rejected;
        record.finished_at = Some(now);
        record.rejection = Some(Rejection {
            code: refusal.code.into(),
            message: refusal.message.clone(),
        });
        tracing::warn!(message_id = %d.message_id, code = refusal.code, reason = %refusal.message, "delivery refused");
        self.ledger
            .record_rejection(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the refusal: {e}")))?;
        self.audit_or_log(AuditEvent::Rejected, &mut record).await;
        Ok(Outcome {
            key: record.key,
            status: Status::Rejected,
            code: Some(refusal.code.into()),
            message: refusal.message,
            transient: false,
        })
    }

    /// Publishes the audit message. The audit topic being unreachable must not stop a
    /// containment (the ledger has it all), but it must not pass unseen either: the failure is
    /// added to the record (in memory, so every later save keeps it, and in the ledger now) and
    /// logged with `audit_publish_failed`, which the security stack's metric filter counts and
    /// its alarm watches.
    async fn audit_or_log(&self, event: AuditEvent, record: &mut Record) {
        let Err(e) = self.audit.publish(event, record).await else {
            return;
        };
        tracing::error!(key = %record.key, error = %e, audit_publish_failed = 1_u8, "audit message not published");
        record.audit_failures.push(format!("{event:?}: {e}"));
        // Every caller saved the record just before: written only if nobody saved it since.
        match self
            .ledger
            .save_if_unchanged(record, record.updated_at)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(key = %record.key, "audit failure not recorded: the record changed since");
            }
            Err(e) => {
                tracing::error!(key = %record.key, error = %e, "audit failure not recorded on the ledger record");
            }
        }
    }

    /// A fresh record for an authenticated request.
    fn request_record(d: &SnsDelivery, message: &ContainmentMessage, entity: &Entity) -> Record {
        let mut record = Record::new(message.request_id.clone(), Utc::now(), &d.message_id);
        record.request_id = Some(message.request_id.clone());
        record.action = message.action;
        record.options = message.options.clone();
        record.entity = Some(entity.to_string());
        record.entity_kind = Some(entity.kind().into());
        record.account = Some(entity.account().into());
        record.requester = Some(message.requester.clone());
        record.caller = Some(d.caller.clone());
        record.reason = Some(message.reason.clone());
        record
    }

    /// A session in the entity's account, in its Region (IAM: the responder's own Region).
    async fn member_session(&self, entity: &Entity) -> Result<MemberClients, CallError> {
        self.session_in(entity.partition(), entity.account(), entity.region())
            .await
    }

    /// A session through the member role in `account`, in `region` when given.
    async fn session_in(
        &self,
        partition: &str,
        account: &str,
        region: Option<&str>,
    ) -> Result<MemberClients, CallError> {
        let ids = self.ids_for_calls().await?;
        let role = format!(
            "arn:{partition}:iam::{account}:role/{}",
            self.settings.member_role_name
        );
        let config = self
            .sessions
            .assume(&role, Some(&ids.role_external_id))
            .await
            .map_err(|mut e| {
                e.failure.message = format!(
                    "{}; is the quell-member-roles stack set deployed to {account}?",
                    e.failure.message
                );
                e
            })?;
        let config = match region {
            Some(r) => config
                .to_builder()
                .region(Region::new(r.to_owned()))
                .build(),
            None => config,
        };
        Ok((self.member_clients)(&config))
    }

    /// The ExternalIds, with a failure to read them shaped like any failed call.
    async fn ids_for_calls(&self) -> Result<Arc<ExternalIds>, CallError> {
        self.external_ids().await.map_err(|e| CallError {
            call: "secretsmanager:GetSecretValue".into(),
            failure: crate::aws_error::AwsFailure {
                code: None,
                message: e.to_string(),
            },
        })
    }

    /// Whether `account` belongs to the organization (through the org reader role).
    async fn is_member(&self, account: &str) -> Result<bool, CallError> {
        let ids = self.ids_for_calls().await?;
        self.membership
            .is_member(
                &self.sessions,
                &self.member_clients,
                &ids.role_external_id,
                account,
            )
            .await
    }

    /// The OUs (and root) above `account`, nearest first.
    async fn ancestors(&self, account: &str) -> Result<Vec<String>, CallError> {
        let ids = self.ids_for_calls().await?;
        self.membership
            .ancestors(
                &self.sessions,
                &self.member_clients,
                &ids.role_external_id,
                account,
            )
            .await
    }

    /// The entity with a session in its account, or the failed outcome when none can be had.
    async fn open_target<'a>(
        &'a self,
        record: &mut Record,
        entity: &'a Entity,
        request_id: &'a str,
    ) -> Result<Result<Target<'a>, Outcome>, ResponderError> {
        match self.member_session(entity).await {
            Ok(clients) => Ok(Ok(Target::new(
                entity,
                clients,
                request_id,
                &self.settings.name_prefix,
            ))),
            Err(e) => {
                let error = format!("cannot act in {}: {e}", entity.account());
                Ok(Err(self
                    .finish_failed(record, error, is_transient(&e))
                    .await?))
            }
        }
    }

    fn protected(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |arn: &str| self.protection.protecting(arn).map(str::to_owned)
    }

    /// Runs the steps a previous attempt did not complete, all at once: they are independent, so
    /// the containment takes as long as its slowest step, not the sum of them. Each outcome is saved
    /// as it arrives (a crash loses nothing), and a failed step does not stop the others: in the
    /// worst hour, every control that can be put in place is.
    async fn run_steps(
        &self,
        record: &mut Record,
        target: &Target<'_>,
        steps: &[&'static str],
    ) -> Result<Vec<CallError>, ResponderError> {
        let pending: Vec<&'static str> = steps
            .iter()
            .copied()
            .filter(|s| !record.completed(s))
            .collect();
        let already = record.steps.len();
        let shared = tokio::sync::Mutex::new(std::mem::replace(
            record,
            Record::new(String::new(), Utc::now(), ""),
        ));
        let protected = self.protected();
        let limit = match self.settings.step_concurrency {
            0 => pending.len().max(1),
            n => n,
        };
        let results: Vec<Result<Option<CallError>, ResponderError>> =
            futures::stream::iter(pending.iter().map(|step| {
                let shared = &shared;
                let protected = &protected;
                async move {
                    let started = Utc::now();
                    let result = Box::pin(target.run(step, started, protected)).await;
                    let failure = result.as_ref().err().cloned();
                    let mut r = shared.lock().await;
                    self.record_step(&mut r, step, started, result)
                        .await
                        .map(|()| failure)
                }
            }))
            .buffer_unordered(limit)
            .collect()
            .await;
        *record = shared.into_inner();
        // The record lists steps in plan order, whatever order they finished in.
        let position = |name: &str| steps.iter().position(|s| *s == name).unwrap_or(usize::MAX);
        record.steps[already..].sort_by_key(|s| position(&s.name));
        let mut failures = Vec::new();
        for r in results {
            if let Some(e) = r? {
                failures.push(e);
            }
        }
        Ok(failures)
    }

    /// Adds a step's outcome to the record and saves it, so a crash after this point loses nothing.
    async fn record_step(
        &self,
        record: &mut Record,
        name: &str,
        started: chrono::DateTime<Utc>,
        result: Result<StepOutcome, CallError>,
    ) -> Result<(), ResponderError> {
        let finished = Utc::now();
        let step = match result {
            Ok(o) => Step {
                name: name.into(),
                status: o.status,
                detail: o.detail,
                prior: o.prior,
                new: o.new,
                started_at: started,
                finished_at: finished,
            },
            Err(e) => Step {
                name: name.into(),
                status: StepStatus::Failed,
                detail: e.to_string(),
                prior: Value::Null,
                new: Value::Null,
                started_at: started,
                finished_at: finished,
            },
        };
        record.steps.push(step);
        record.updated_at = finished;
        self.ledger
            .save(record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot save the ledger record: {e}")))
    }

    async fn finish_succeeded(
        &self,
        record: &mut Record,
        event: AuditEvent,
    ) -> Result<Outcome, ResponderError> {
        self.finish(record, Status::Succeeded, event).await?;
        let verb = match record.action {
            Action::Release => "released",
            Action::Approve => "approved",
            Action::Deny => "denied",
            Action::Contain | Action::Remediate | Action::Sweep => "contained",
            Action::Run => "started",
        };
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::Succeeded,
            code: None,
            message: format!("{} {verb}", record.entity.as_deref().unwrap_or_default()),
            transient: false,
        })
    }

    async fn finish_failed(
        &self,
        record: &mut Record,
        error: String,
        transient: bool,
    ) -> Result<Outcome, ResponderError> {
        tracing::error!(key = %record.key, %error, transient, "request failed");
        record.error = Some(error.clone());
        self.finish(record, Status::Failed, AuditEvent::Failed)
            .await?;
        if !transient {
            // A retry cannot help, so the platform will not send it to the dead-letter queue: we do.
            self.dead_letter(record).await;
        }
        Ok(Outcome {
            key: record.key.clone(),
            status: Status::Failed,
            code: None,
            message: error,
            transient,
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
            transient: false,
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
        record.isolation_due_at = None;
        self.ledger
            .save(record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot save the final record: {e}")))?;
        if let Some(entity) = &record.entity {
            if let Err(e) = self.ledger.unlock(entity, &record.key).await {
                tracing::error!(key = %record.key, error = %e, "entity lock not released; it expires by itself");
            }
        }
        self.audit_or_log(event, record).await;
        Ok(())
    }

    async fn dead_letter(&self, record: &Record) {
        let body = serde_json::json!({ "source": "quell", "event": "failed", "record": record })
            .to_string();
        self.send_dead_letter(&record.key, body).await;
    }

    async fn send_dead_letter(&self, key: &str, body: String) {
        let sent = self
            .sqs
            .send_message()
            .queue_url(&self.settings.dead_letter_queue_url)
            .message_body(body)
            .send()
            .await
            .described("sqs:SendMessage (dead-letter queue)");
        if let Err(e) = sent {
            tracing::error!(key, error = %e, "failure not sent to the dead-letter queue");
        }
    }
}

/// The deployment's own facts that every event is checked against.
fn origin_of(s: &Settings) -> crate::playbooks::event::Origin {
    let partition = remediate::partition_of(&s.home_region);
    let home = &s.home_region;
    let account = &s.security_account;
    crate::playbooks::event::Origin {
        security_account: account.clone(),
        partition: partition.to_owned(),
        regions: s.regions.clone(),
        custom_actions: [
            crate::playbooks::event::CONTAIN_ACTION.0,
            crate::playbooks::event::REMEDIATE_ACTION.0,
        ]
        .iter()
        .map(|id| format!("arn:{partition}:securityhub:{home}:{account}:action/custom/{id}"))
        .collect(),
        sweep_rule: format!(
            "arn:{partition}:events:{home}:{account}:rule/{}-sweep",
            s.name_prefix
        ),
        config_rules: crate::playbooks::event::CONFIG_RULES
            .iter()
            .map(|r| format!("{}-{r}", s.name_prefix))
            .collect(),
        envelope_may_lack_account: s.envelope_may_lack_account,
    }
}

/// Throttling and service-side errors can pass; everything else (denied, not found, invalid) will
/// fail the same way again.
/// Every call's limits: the SDK has none by default, so a connection that stops answering would
/// hold the invocation until the function's timeout. Each try gets `seconds`; the call as a whole
/// its three tries and the backoff between them. Member sessions inherit them (`Sessions`).
pub fn call_timeouts(seconds: u32) -> aws_config::timeout::TimeoutConfig {
    let attempt = std::time::Duration::from_secs(u64::from(seconds));
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 3 + std::time::Duration::from_secs(5))
        .build()
}

pub fn is_transient(e: &CallError) -> bool {
    match e.failure.code.as_deref() {
        None => true,
        Some(code) => matches!(
            code,
            "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "RequestThrottled"
                | "SlowDown"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
                | "InternalError"
                | "InternalFailure"
                | "InternalServerError"
                | "ProvisionedThroughputExceededException"
        ),
    }
}
