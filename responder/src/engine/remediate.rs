//! Remediation: an EventBridge event from the central bus (through the events queue) becomes
//! triggers; each is checked (membership, exemptions), the matching playbook runs in its mode, and
//! the outcome is recorded and audited like a containment's. Every skip says why.

use chrono::Utc;
use serde_json::{json, Value};

use super::{is_transient, refuse, Outcome, Refusal, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::CallError;
use crate::contract::Action;
use crate::error::ResponderError;
use crate::inbound::QueueDelivery;
use crate::ledger::{Claim, Record, Rejection, Status, Step, StepStatus};
use crate::playbooks::event::{self, Malformed, Parsed, Resource, Trigger};
use crate::playbooks::{security_group, Mode, TagExemption};

pub(super) fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// How one trigger ended, before it is recorded.
enum Ending {
    Fixed(String),
    Skipped(String),
    Refused(Refusal),
    Failed { message: String, transient: bool },
}

impl Responder {
    pub(super) async fn remediate(
        &self,
        q: &QueueDelivery,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let parsed = serde_json::from_str::<Value>(&q.body)
            .map_err(|e| Malformed(format!("the message is not an EventBridge event: {e}")))
            .and_then(|v| event::parse(&v).map(|p| (v, p)));
        let (raw, parsed) = match parsed {
            Ok(p) => p,
            Err(Malformed(why)) => return Ok(vec![self.reject_event(q, why).await?]),
        };
        match parsed {
            Parsed::Sweep { event_id } => {
                let options = crate::contract::Options::default();
                Ok(vec![
                    self.sweep(
                        &format!("sweep-{event_id}"),
                        &q.message_id,
                        "the sweep schedule",
                        &options,
                    )
                    .await?,
                ])
            }
            Parsed::Nothing(why) => {
                // Compliant evaluations and failed calls arrive all day: logged, not recorded.
                tracing::info!(event = %raw["id"], reason = %why, "nothing to remediate");
                Ok(vec![Outcome {
                    key: format!("event:{}", raw["id"].as_str().unwrap_or(&q.message_id)),
                    status: Status::Skipped,
                    code: None,
                    message: why,
                    transient: false,
                }])
            }
            Parsed::Triggers(triggers) => {
                let mut out = Vec::new();
                for t in &triggers {
                    out.push(self.remediate_one(q, t).await?);
                }
                Ok(out)
            }
        }
    }

    async fn reject_event(
        &self,
        q: &QueueDelivery,
        why: String,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        let mut record = Record::new(format!("event:{}", q.message_id), now, &q.message_id);
        record.action = Action::Remediate;
        record.status = Status::Rejected;
        record.finished_at = Some(now);
        record.rejection = Some(Rejection {
            code: "malformed_event".into(),
            message: why.clone(),
        });
        tracing::warn!(message_id = %q.message_id, reason = %why, "event refused");
        self.ledger
            .record_rejection(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the refusal: {e}")))?;
        self.audit_or_log(AuditEvent::Rejected, &record).await;
        Ok(Outcome {
            key: record.key,
            status: Status::Rejected,
            code: Some("malformed_event".into()),
            message: why,
            transient: false,
        })
    }

    async fn remediate_one(
        &self,
        q: &QueueDelivery,
        t: &Trigger,
    ) -> Result<Outcome, ResponderError> {
        let key = format!("remediation:{}:{}", t.event_id, t.resource.id());
        let partition = partition_of(&t.region);
        let mut fresh = Record::new(key.clone(), Utc::now(), &q.message_id);
        fresh.action = Action::Remediate;
        fresh.entity = Some(t.resource.arn(partition, &t.account, &t.region));
        fresh.entity_kind = Some("security_group".into());
        fresh.account = Some(t.account.clone());
        fresh.requester = Some(t.source.describe());
        fresh.reason = Some(serde_json::to_string(&t.source).unwrap_or_default());
        // The same event delivered twice (EventBridge and SQS deliver at least once) acts once.
        let mut record =
            match self.ledger.claim(fresh, Utc::now()).await.map_err(|e| {
                ResponderError::Aws(format!("cannot claim {key} in the ledger: {e}"))
            })? {
                Claim::Fresh(r) | Claim::Resumed(r) => r,
                Claim::Busy(r) | Claim::Finished(r) => return Ok(Outcome {
                    key,
                    status: r.status,
                    code: Some("duplicate".into()),
                    message:
                        "this event is being handled or was handled already; nothing was done again"
                            .into(),
                    transient: false,
                }),
            };
        let ending = self.run_playbook(t, partition, &mut record).await;
        let now = Utc::now();
        record.updated_at = now;
        record.finished_at = Some(now);
        let (status, event, code, message, transient) = match ending {
            Ending::Fixed(m) => (Status::Succeeded, AuditEvent::Succeeded, None, m, false),
            Ending::Skipped(m) => (Status::Skipped, AuditEvent::Skipped, None, m, false),
            Ending::Refused(r) => {
                record.rejection = Some(Rejection {
                    code: r.code.into(),
                    message: r.message.clone(),
                });
                (
                    Status::Rejected,
                    AuditEvent::Rejected,
                    Some(r.code.to_owned()),
                    r.message,
                    false,
                )
            }
            Ending::Failed { message, transient } => {
                record.error = Some(message.clone());
                (Status::Failed, AuditEvent::Failed, None, message, transient)
            }
        };
        record.status = status;
        if status == Status::Skipped {
            record.reason = Some(message.clone());
        }
        self.ledger
            .save(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the remediation: {e}")))?;
        self.audit_or_log(event, &record).await;
        Ok(Outcome {
            key,
            status,
            code,
            message,
            transient,
        })
    }

    /// Why every resource of `account` is left alone, when it is (exempt account or OU).
    pub(super) async fn account_exemption(
        &self,
        account: &str,
    ) -> Result<Option<String>, CallError> {
        let exemptions = &self.settings.playbooks.exemptions;
        let ancestors = if exemptions.organizational_units.is_empty() {
            Vec::new()
        } else {
            self.ancestors(account).await?
        };
        Ok(exemptions.for_account(account, &ancestors))
    }

    async fn run_playbook(&self, t: &Trigger, partition: &str, record: &mut Record) -> Ending {
        let playbooks = &self.settings.playbooks;
        let exemptions = &playbooks.exemptions;
        match self.is_member(&t.account).await {
            Ok(true) => {}
            Ok(false) => {
                return Ending::Refused(refuse(
                    "outside_organization",
                    format!(
                        "account {} is not in organization {}",
                        t.account, self.settings.organization_id
                    ),
                ))
            }
            Err(e) => return failed(&e),
        }
        match self.account_exemption(&t.account).await {
            Ok(Some(why)) => return Ending::Skipped(why),
            Ok(None) => {}
            Err(e) => return failed(&e),
        }
        let Resource::SecurityGroup { group_id } = &t.resource;
        let clients = match self
            .session_in(partition, &t.account, Some(&t.region))
            .await
        {
            Ok(c) => c,
            Err(e) => return failed(&e),
        };
        let group = match security_group::read(&clients.ec2, group_id).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Ending::Refused(refuse(
                    "resource_gone",
                    format!(
                        "security group {group_id} no longer exists in {} {}; nothing to do",
                        t.account, t.region
                    ),
                ))
            }
            Err(e) => return failed(&e),
        };
        match exemptions.for_tags(&group.tags) {
            TagExemption::Exempt(why) => return Ending::Skipped(format!("{group_id}: {why}")),
            TagExemption::Unexplained => record.steps.push(step(
                "exemption",
                StepStatus::Skipped,
                format!(
                    "tag {} has no reason, so it does not exempt {group_id}",
                    exemptions.tag
                ),
                Value::Null,
                Value::Null,
            )),
            TagExemption::None => {}
        }
        let settings = &playbooks.open_security_group;
        let offending = group.offending(&settings.ports);
        if offending.is_empty() {
            return Ending::Skipped(format!(
                "{group_id} has no ingress rule open to the world on ports {:?}",
                settings.ports
            ));
        }
        let described: Vec<String> = offending.iter().map(exposure_text).collect();
        if settings.mode == Mode::Notify {
            record.steps.push(step(
                "revoke_ingress",
                StepStatus::Skipped,
                format!("notify mode: would revoke {}", described.join(", ")),
                json!(offending),
                Value::Null,
            ));
            return Ending::Skipped(format!(
                "notify mode: {group_id} is open ({}); nothing changed",
                described.join(", ")
            ));
        }
        let started = Utc::now();
        if let Err(e) = security_group::revoke(&clients.ec2, group_id, &offending).await {
            record.steps.push(step(
                "revoke_ingress",
                StepStatus::Failed,
                e.to_string(),
                json!(offending),
                Value::Null,
            ));
            record.steps.last_mut().expect("just pushed").started_at = started;
            return failed(&e);
        }
        // Read back: nothing is reported fixed that was not seen fixed.
        let after = match security_group::read(&clients.ec2, group_id).await {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Ending::Failed {
                    message: format!("{group_id} vanished while it was being fixed"),
                    transient: false,
                }
            }
            Err(e) => return failed(&e),
        };
        let still = after.offending(&settings.ports);
        record.steps.push(Step {
            name: "revoke_ingress".into(),
            status: if still.is_empty() {
                StepStatus::Done
            } else {
                StepStatus::Failed
            },
            detail: format!(
                "revoked {}; {} other ingress rules kept",
                described.join(", "),
                after.ingress.len()
            ),
            prior: json!(offending),
            new: json!(after.ingress),
            started_at: started,
            finished_at: Utc::now(),
        });
        if still.is_empty() {
            Ending::Fixed(format!("revoked {} on {group_id}", described.join(", ")))
        } else {
            Ending::Failed {
                message: format!(
                    "{group_id} is still open after the revoke: {}",
                    still
                        .iter()
                        .map(exposure_text)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                transient: true,
            }
        }
    }
}

fn exposure_text(r: &crate::playbooks::exposure::Rule) -> String {
    r.describe()
}

fn failed(e: &CallError) -> Ending {
    Ending::Failed {
        message: e.to_string(),
        transient: is_transient(e),
    }
}

fn step(name: &str, status: StepStatus, detail: String, prior: Value, new: Value) -> Step {
    let now = Utc::now();
    Step {
        name: name.into(),
        status,
        detail,
        prior,
        new,
        started_at: now,
        finished_at: now,
    }
}
