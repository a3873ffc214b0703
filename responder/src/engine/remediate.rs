//! Remediation: an EventBridge event from the central bus (through the events queue) becomes
//! triggers; each is checked (membership, exemptions), the matching playbook runs in its mode, and
//! the outcome is recorded and audited like a containment's. Every skip says why.

use chrono::Utc;
use serde_json::{json, Value};

use super::{is_transient, refuse, Outcome, Refusal, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::CallError;
use crate::clients::MemberClients;
use crate::contract::Action;
use crate::error::ResponderError;
use crate::inbound::QueueDelivery;
use crate::ledger::{Claim, Record, Rejection, Status, Step, StepStatus};
use crate::playbooks::event::{self, Parsed, Refused, Resource, Trigger};
use crate::playbooks::{bucket, security_group, snapshot, Mode, TagExemption};

pub(super) use crate::entity::partition_of;

/// How a fix was asked for: whether the playbook's mode applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    /// An event or the sweep found it: the playbook's mode decides.
    Found,
    /// A person asked for it (a Security Hub custom action): fixed whatever the mode, except what
    /// always waits for approval (deleting an original snapshot).
    Requested,
    /// `quell approve` on a pending fix: everything it waited for is done.
    Approved,
}

/// How one trigger ended, before it is recorded.
pub(super) enum Ending {
    /// Fixed, and the fix read back as in place.
    Fixed(String),
    /// Read, and nothing is exposed (any more).
    Clean(String),
    /// Left alone on purpose: exempt, notify mode.
    Skipped(String),
    AwaitingApproval(String),
    Refused(Refusal),
    Failed {
        message: String,
        transient: bool,
    },
}

impl Ending {
    /// Several playbooks on one resource end as the most pressing of their endings.
    fn rank(&self) -> u8 {
        match self {
            Ending::Clean(_) => 0,
            Ending::Skipped(_) => 1,
            Ending::Fixed(_) => 2,
            Ending::AwaitingApproval(_) => 3,
            Ending::Refused(_) => 4,
            Ending::Failed { .. } => 5,
        }
    }

    fn message(&self) -> &str {
        match self {
            Ending::Fixed(m)
            | Ending::Clean(m)
            | Ending::Skipped(m)
            | Ending::AwaitingApproval(m)
            | Ending::Failed { message: m, .. } => m,
            Ending::Refused(r) => &r.message,
        }
    }

    fn combine(endings: Vec<Ending>) -> Ending {
        let message = endings
            .iter()
            .map(Ending::message)
            .collect::<Vec<_>>()
            .join("; ");
        let worst = endings
            .into_iter()
            .max_by_key(Ending::rank)
            .expect("at least one playbook ran");
        match worst {
            Ending::Fixed(_) => Ending::Fixed(message),
            Ending::Clean(_) => Ending::Clean(message),
            Ending::Skipped(_) => Ending::Skipped(message),
            Ending::AwaitingApproval(_) => Ending::AwaitingApproval(message),
            Ending::Refused(r) => Ending::Refused(r),
            Ending::Failed { transient, .. } => Ending::Failed { message, transient },
        }
    }
}

impl Responder {
    pub(super) async fn remediate(
        &self,
        q: &QueueDelivery,
    ) -> Result<Vec<Outcome>, ResponderError> {
        // Declared playbooks see every event first: their triggers are their own.
        let runs = match serde_json::from_str::<Value>(&q.body) {
            Ok(event) if event.is_object() => {
                Box::pin(self.start_runs(&q.message_id, &event)).await?
            }
            _ => Vec::new(),
        };
        let mut built_in = Box::pin(self.remediate_built_in(q, !runs.is_empty())).await?;
        built_in.extend(runs);
        Ok(built_in)
    }

    /// The built-in playbooks. An event they do not know is refused, unless a declared
    /// playbook took it (`declared`).
    async fn remediate_built_in(
        &self,
        q: &QueueDelivery,
        declared: bool,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let parsed = serde_json::from_str::<Value>(&q.body)
            .map_err(|e| {
                Refused::Malformed(format!("the message is not an EventBridge event: {e}"))
            })
            .and_then(|v| event::parse(&v, &self.origin).map(|p| (v, p)));
        let (raw, parsed) = match parsed {
            Ok(p) => p,
            Err(_) if declared => return Ok(Vec::new()),
            Err(refused) => {
                return Ok(vec![
                    self.reject_event(q, refused.code(), refused.message().to_owned())
                        .await?,
                ])
            }
        };
        match parsed {
            Parsed::Sweep { event_id } => {
                let options = crate::contract::Options::default();
                Ok(vec![
                    self.sweep(
                        &format!("sweep-{event_id}"),
                        &q.message_id,
                        "the sweep schedule",
                        &crate::authorization::Caller::Quell,
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
            Parsed::Place {
                event_id,
                account,
                region,
                kind,
                rule,
            } => {
                match self.is_member(&account).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let why = format!(
                            "account {account} is not in organization {}",
                            self.settings.organization_id
                        );
                        return Ok(vec![
                            self.reject_event(q, "outside_organization", why).await?,
                        ]);
                    }
                    Err(e) => {
                        return Err(ResponderError::Aws(format!(
                            "cannot check organization membership: {e}"
                        )))
                    }
                }
                let source = event::Source::Config { rule };
                Ok(vec![
                    self.check_place(&q.message_id, &event_id, account, region, kind, source)
                        .await,
                ])
            }
            Parsed::Contain(requests) => {
                let mut out = Vec::new();
                for r in &requests {
                    out.push(Box::pin(self.contain_finding(q, r)).await?);
                }
                Ok(out)
            }
            Parsed::Triggers(triggers) => {
                let mut out = Vec::new();
                for t in &triggers {
                    let intent = if t.source.is_request() {
                        Intent::Requested
                    } else {
                        Intent::Found
                    };
                    out.push(self.remediate_one(&q.message_id, t, intent, None).await?);
                }
                Ok(out)
            }
        }
    }

    async fn reject_event(
        &self,
        q: &QueueDelivery,
        code: &str,
        why: String,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        let mut record = Record::new(format!("event:{}", q.message_id), now, &q.message_id);
        record.action = Action::Remediate;
        record.status = Status::Rejected;
        record.finished_at = Some(now);
        record.rejection = Some(Rejection {
            code: code.into(),
            message: why.clone(),
        });
        tracing::warn!(message_id = %q.message_id, code, reason = %why, "event refused");
        self.ledger
            .record_rejection(&record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the refusal: {e}")))?;
        self.audit_or_log(AuditEvent::Rejected, &mut record).await;
        Ok(Outcome {
            key: record.key,
            status: Status::Rejected,
            code: Some(code.into()),
            message: why,
            transient: false,
        })
    }

    /// One trigger under its own ledger record: claimed once, run, recorded, audited.
    pub(super) async fn remediate_one(
        &self,
        message_id: &str,
        t: &Trigger,
        intent: Intent,
        asked_by: Option<&crate::authorization::Caller>,
    ) -> Result<Outcome, ResponderError> {
        let key = format!("remediation:{}:{}", t.event_id, t.resource.id());
        let partition = partition_of(&t.region);
        let mut fresh = Record::new(key.clone(), Utc::now(), message_id);
        fresh.action = Action::Remediate;
        fresh.entity = Some(t.resource.arn(partition, &t.account, &t.region));
        fresh.entity_kind = Some(t.resource.kind().into());
        fresh.account = Some(t.account.clone());
        fresh.requester = Some(t.source.describe());
        fresh.caller = asked_by.cloned();
        fresh.event_at = t.time;
        fresh.reason = Some(serde_json::to_string(&t.source).unwrap_or_default());
        // The same event delivered twice (EventBridge and SQS deliver at least once) acts once.
        let claim =
            self.ledger.claim(fresh, Utc::now()).await.map_err(|e| {
                ResponderError::Aws(format!("cannot claim {key} in the ledger: {e}"))
            })?;
        if let Some(later) = self.held_elsewhere(&claim, message_id) {
            return Ok(later);
        }
        let mut record =
            match claim {
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
        let ending = self.run_playbook(t, &mut record, intent).await;
        self.finish_remediation(&mut record, t, ending).await
    }

    /// Records how a remediation ended, tells the finding it came from, and audits it.
    pub(super) async fn finish_remediation(
        &self,
        record: &mut Record,
        t: &Trigger,
        ending: Ending,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        record.updated_at = now;
        record.finished_at = Some(now);
        record.pending = None;
        let resolved = matches!(ending, Ending::Fixed(_) | Ending::Clean(_));
        let (status, event, code, message, transient) = match ending {
            Ending::Fixed(m) => (Status::Succeeded, AuditEvent::Succeeded, None, m, false),
            Ending::Clean(m) | Ending::Skipped(m) => {
                (Status::Skipped, AuditEvent::Skipped, None, m, false)
            }
            Ending::AwaitingApproval(m) => {
                record.pending = Some(t.clone());
                (
                    Status::AwaitingApproval,
                    AuditEvent::AwaitingApproval,
                    None,
                    m,
                    false,
                )
            }
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
        if matches!(status, Status::Skipped | Status::AwaitingApproval) {
            record.reason = Some(message.clone());
        }
        if let Some(finding) = t.source.finding() {
            let note = format!(
                "Quell {}: {message} (ledger {})",
                status.as_str(),
                record.key
            );
            let step = self.update_finding(finding, &note, resolved).await;
            record.steps.push(step);
        }
        self.ledger
            .save(record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the remediation: {e}")))?;
        self.audit_or_log(event, record).await;
        if status == Status::AwaitingApproval {
            self.supersede_pending(record).await;
        }
        Ok(Outcome {
            key: record.key.clone(),
            status,
            code,
            message,
            transient,
        })
    }

    /// One pending approval per resource: an older one (an earlier event, the last sweep) is
    /// closed as superseded by `newer`, which replays everything still to do when approved.
    async fn supersede_pending(&self, newer: &Record) {
        let Some(entity) = &newer.entity else { return };
        let older = match self.ledger.for_entity(entity).await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(key = %newer.key, error = %e, "older approvals not looked up");
                return;
            }
        };
        for mut old in older
            .into_iter()
            .filter(|r| r.key != newer.key && r.status == Status::AwaitingApproval)
        {
            let seen = old.updated_at;
            old.status = Status::Skipped;
            old.pending = None;
            old.updated_at = Utc::now();
            old.reason = Some(format!(
                "superseded by {}: approve or deny that one",
                newer.key
            ));
            // Someone deciding on it at this moment wins; nothing to undo then.
            match self.ledger.save_if_unchanged(&old, seen).await {
                Ok(true) => self.audit_or_log(AuditEvent::Skipped, &mut old).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(key = %old.key, error = %e, "older approval not superseded");
                }
            }
        }
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

    pub(super) async fn run_playbook(
        &self,
        t: &Trigger,
        record: &mut Record,
        intent: Intent,
    ) -> Ending {
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
        let clients = match self
            .session_in(partition_of(&t.region), &t.account, Some(&t.region))
            .await
        {
            Ok(c) => c,
            Err(e) => return failed(&e),
        };
        let run = Run {
            t,
            clients: &clients,
            intent,
            exemptions: &self.settings.playbooks.exemptions,
        };
        match &t.resource {
            Resource::SecurityGroup { group_id } => self.fix_group(&run, group_id, record).await,
            Resource::Bucket { name } => self.fix_bucket(&run, name, record).await,
            Resource::Snapshot { snapshot_id } => {
                self.fix_snapshot(&run, snapshot_id, record).await
            }
        }
    }

    async fn fix_group(&self, run: &Run<'_>, group_id: &str, record: &mut Record) -> Ending {
        let settings = &self.settings.playbooks.open_security_group;
        let ec2 = &run.clients.ec2;
        let prefix = &self.settings.name_prefix;
        let group = match security_group::read(ec2, group_id, prefix).await {
            Ok(Some(g)) => g,
            Ok(None) => return run.gone(),
            Err(e) => return failed(&e),
        };
        if group.quell_untracked {
            return Ending::Skipped(format!(
                "{group_id} is Quell's own untracked containment group (verified by name, tag and exact rules): open on purpose while an instance passes through it, left alone"
            ));
        }
        if let Some(skip) = run.tag_gate(&group.tags, record) {
            return skip;
        }
        let offending = group.offending(&settings.ports);
        if offending.is_empty() {
            return Ending::Clean(format!(
                "{group_id} has no ingress rule open to the world on ports {:?}",
                settings.ports
            ));
        }
        let described = offending
            .iter()
            .map(crate::playbooks::exposure::Rule::describe)
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(wait) = run.mode_gate(
            settings.mode,
            "revoke_ingress",
            &format!("revoke {described} on {group_id}"),
            json!(offending),
            record,
        ) {
            return wait;
        }
        let started = Utc::now();
        if let Err(e) = security_group::revoke(ec2, group_id, &offending).await {
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
        let after = match security_group::read(ec2, group_id, prefix).await {
            Ok(Some(g)) => g,
            Ok(None) => return vanished(group_id),
            Err(e) => return failed(&e),
        };
        let still = after.offending(&settings.ports);
        let mut done = step(
            "revoke_ingress",
            done_if(still.is_empty()),
            format!(
                "revoked {described}; {} other ingress rules kept",
                after.ingress.len()
            ),
            json!(offending),
            json!(after.ingress),
        );
        done.started_at = started;
        record.steps.push(done);
        if still.is_empty() {
            Ending::Fixed(format!("revoked {described} on {group_id}"))
        } else {
            Ending::Failed {
                message: format!(
                    "{group_id} is still open after the revoke: {}",
                    still
                        .iter()
                        .map(crate::playbooks::exposure::Rule::describe)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                transient: true,
            }
        }
    }

    async fn fix_bucket(&self, run: &Run<'_>, name: &str, record: &mut Record) -> Ending {
        let mode = self.settings.playbooks.public_bucket.mode;
        let s3 = &run.clients.s3;
        let found = match bucket::read(s3, name, &run.t.account).await {
            Ok(Some(b)) => b,
            Ok(None) => return run.gone(),
            Err(e) => return failed(&e),
        };
        if let Some(skip) = run.tag_gate(&found.tags, record) {
            return skip;
        }
        let exposure = found.exposure();
        if !exposure.is_public() {
            return Ending::Clean(format!(
                "bucket {name} has no public ACL grant or policy statement"
            ));
        }
        let described = exposure.describe();
        if let Some(wait) = run.mode_gate(
            mode,
            "make_bucket_private",
            &format!("block public access to {name} and remove {described}"),
            json!(exposure),
            record,
        ) {
            return wait;
        }
        let started = Utc::now();
        let fixed = bucket::make_private(s3, &found, &exposure).await;
        let after = match fixed {
            Ok(()) => bucket::read(s3, name, &run.t.account).await,
            Err(e) => Err(e),
        };
        let after = match after {
            Ok(Some(b)) => b,
            Ok(None) => return vanished(name),
            Err(e) => {
                let mut s = step(
                    "make_bucket_private",
                    StepStatus::Failed,
                    e.to_string(),
                    json!(exposure),
                    Value::Null,
                );
                s.started_at = started;
                record.steps.push(s);
                return failed(&e);
            }
        };
        let still = after.exposure();
        let private = !still.is_public() && after.blocked();
        let mut s = step(
            "make_bucket_private",
            done_if(private),
            format!("public access block on; removed {described}"),
            json!(exposure),
            json!({"block": after.block, "policy": after.policy, "still_public": still}),
        );
        s.started_at = started;
        record.steps.push(s);
        if private {
            Ending::Fixed(format!(
                "bucket {name} made private: public access block on, removed {described}"
            ))
        } else {
            Ending::Failed {
                message: format!(
                    "bucket {name} still reads back public ({}) or without its public access block",
                    still.describe()
                ),
                transient: true,
            }
        }
    }

    async fn fix_snapshot(&self, run: &Run<'_>, id: &str, record: &mut Record) -> Ending {
        let ec2 = &run.clients.ec2;
        let found = match snapshot::read(ec2, id).await {
            Ok(Some(s)) => s,
            Ok(None) => return run.gone(),
            Err(e) => return failed(&e),
        };
        if let Some(skip) = run.tag_gate(&found.tags, record) {
            return skip;
        }
        let mut endings = Vec::new();
        if found.public {
            endings.push(self.make_snapshot_private(run, id, record).await);
        }
        if !found.encrypted {
            endings.push(self.encrypt_snapshot(run, &found, record).await);
        }
        if endings.is_empty() {
            return Ending::Clean(format!("snapshot {id} is private and encrypted"));
        }
        Ending::combine(endings)
    }

    async fn make_snapshot_private(&self, run: &Run<'_>, id: &str, record: &mut Record) -> Ending {
        let mode = self.settings.playbooks.public_snapshot.mode;
        let what = format!("remove the create-volume permission for everyone from {id}");
        if let Some(wait) = run.mode_gate(
            mode,
            "make_snapshot_private",
            &what,
            json!({"group": "all"}),
            record,
        ) {
            return wait;
        }
        let ec2 = &run.clients.ec2;
        let after = match snapshot::make_private(ec2, id).await {
            Ok(()) => snapshot::read(ec2, id).await,
            Err(e) => Err(e),
        };
        let after = match after {
            Ok(Some(s)) => s,
            Ok(None) => return vanished(id),
            Err(e) => {
                record.steps.push(step(
                    "make_snapshot_private",
                    StepStatus::Failed,
                    e.to_string(),
                    json!({"group": "all"}),
                    Value::Null,
                ));
                return failed(&e);
            }
        };
        record.steps.push(step(
            "make_snapshot_private",
            done_if(!after.public),
            format!("removed the create-volume permission for all from {id}; other shares kept"),
            json!({"public": true}),
            json!({"public": after.public}),
        ));
        if after.public {
            Ending::Failed {
                message: format!("snapshot {id} is still restorable by everyone after the change"),
                transient: true,
            }
        } else {
            Ending::Fixed(format!("snapshot {id} is no longer public"))
        }
    }

    /// The encrypted copy in `auto` mode (or on request); the original's deletion only on approval.
    async fn encrypt_snapshot(
        &self,
        run: &Run<'_>,
        original: &snapshot::Snapshot,
        record: &mut Record,
    ) -> Ending {
        let settings = &self.settings.playbooks.unencrypted_snapshot;
        let id = &original.id;
        let what = format!("make an encrypted copy of {id}, then delete {id} once approved");
        if let Some(wait) =
            run.mode_gate(settings.mode, "encrypted_copy", &what, Value::Null, record)
        {
            return wait;
        }
        if !original.completed() {
            return Ending::Failed {
                message: format!(
                    "snapshot {id} is still {}; it is copied once completed (the event is retried)",
                    original.state
                ),
                transient: true,
            };
        }
        let ec2 = &run.clients.ec2;
        let copy_id = if let Some(copy) = original.copy_id() {
            copy.to_owned()
        } else {
            match snapshot::encrypted_copy(
                ec2,
                original,
                &run.t.region,
                settings.kms_key_id.as_deref(),
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    record.steps.push(step(
                        "encrypted_copy",
                        StepStatus::Failed,
                        e.to_string(),
                        Value::Null,
                        Value::Null,
                    ));
                    return failed(&e);
                }
            }
        };
        let copy = match snapshot::read(ec2, &copy_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Ending::Failed {
                    message: format!("the encrypted copy {copy_id} of {id} is gone; remove tag {} from {id} to copy again", snapshot::COPY_TAG),
                    transient: false,
                }
            }
            Err(e) => return failed(&e),
        };
        record.steps.push(step(
            "encrypted_copy",
            done_if(copy.encrypted),
            format!(
                "{copy_id} ({}{}), tagged {}={id}; {id} tagged {}={copy_id}",
                if copy.encrypted {
                    "encrypted"
                } else {
                    "NOT encrypted"
                },
                if copy.completed() {
                    ", completed"
                } else {
                    ", copying"
                },
                snapshot::ORIGINAL_TAG,
                snapshot::COPY_TAG
            ),
            json!({"snapshot": id, "encrypted": false}),
            json!({"snapshot": copy_id, "encrypted": copy.encrypted, "state": copy.state}),
        ));
        if !copy.encrypted {
            return Ending::Failed {
                message: format!("the copy {copy_id} of {id} reads back unencrypted; {id} is kept"),
                transient: false,
            };
        }
        if run.intent != Intent::Approved {
            return Ending::AwaitingApproval(format!(
                "encrypted copy {copy_id} made; deleting the unencrypted original {id} waits for approval"
            ));
        }
        if !copy.completed() {
            return Ending::AwaitingApproval(format!(
                "the encrypted copy {copy_id} is still {}; approve again once it is completed to delete {id}",
                copy.state
            ));
        }
        let gone = match snapshot::delete(ec2, id).await {
            Ok(()) => snapshot::read(ec2, id).await.map(|s| s.is_none()),
            Err(e) => Err(e),
        };
        match gone {
            Ok(true) => {
                record.steps.push(step(
                    "delete_original",
                    StepStatus::Done,
                    format!("deleted the unencrypted {id}; {copy_id} replaces it"),
                    json!({"snapshot": id}),
                    Value::Null,
                ));
                Ending::Fixed(format!("{id} replaced by its encrypted copy {copy_id}"))
            }
            Ok(false) => Ending::Failed {
                message: format!("{id} still exists after its deletion"),
                transient: true,
            },
            Err(e) => {
                record.steps.push(step(
                    "delete_original",
                    StepStatus::Failed,
                    e.to_string(),
                    json!({"snapshot": id}),
                    Value::Null,
                ));
                failed(&e)
            }
        }
    }
}

/// One playbook run: the trigger, a session where its resource is, and why it runs.
pub(super) struct Run<'a> {
    t: &'a Trigger,
    clients: &'a MemberClients,
    intent: Intent,
    exemptions: &'a crate::playbooks::Exemptions,
}

impl Run<'_> {
    fn gone(&self) -> Ending {
        Ending::Refused(refuse(
            "resource_gone",
            format!(
                "{} {} no longer exists in {} {}; nothing to do",
                self.t.resource.kind(),
                self.t.resource.id(),
                self.t.account,
                self.t.region
            ),
        ))
    }

    /// The resource's exemption tag: `Some` ending when it is exempt.
    fn tag_gate(
        &self,
        tags: &std::collections::HashMap<String, String>,
        record: &mut Record,
    ) -> Option<Ending> {
        let id = self.t.resource.id();
        match self.exemptions.for_tags(tags) {
            TagExemption::Exempt(why) => Some(Ending::Skipped(format!("{id}: {why}"))),
            TagExemption::Unexplained => {
                record.steps.push(step(
                    "exemption",
                    StepStatus::Skipped,
                    format!(
                        "tag {} has no reason, so it does not exempt {id}",
                        self.exemptions.tag
                    ),
                    Value::Null,
                    Value::Null,
                ));
                None
            }
            TagExemption::None => None,
        }
    }

    /// Whether the fix happens now: `Some` ending when the mode says only tell, or wait.
    fn mode_gate(
        &self,
        mode: Mode,
        step_name: &str,
        what: &str,
        prior: Value,
        record: &mut Record,
    ) -> Option<Ending> {
        let mode = match self.intent {
            Intent::Found => mode,
            Intent::Requested | Intent::Approved => Mode::Auto,
        };
        match mode {
            Mode::Auto => None,
            Mode::Notify => {
                record.steps.push(step(
                    step_name,
                    StepStatus::Skipped,
                    format!("notify mode: would {what}"),
                    prior,
                    Value::Null,
                ));
                Some(Ending::Skipped(format!(
                    "notify mode: would {what}; nothing changed"
                )))
            }
            Mode::Approve => {
                record.steps.push(step(
                    step_name,
                    StepStatus::Skipped,
                    format!("approve mode: will {what} once approved"),
                    prior,
                    Value::Null,
                ));
                Some(Ending::AwaitingApproval(format!(
                    "approve mode: will {what} once approved"
                )))
            }
        }
    }
}

fn done_if(ok: bool) -> StepStatus {
    if ok {
        StepStatus::Done
    } else {
        StepStatus::Failed
    }
}

fn vanished(id: &str) -> Ending {
    Ending::Failed {
        message: format!("{id} vanished while it was being fixed"),
        transient: false,
    }
}

pub(super) fn failed(e: &CallError) -> Ending {
    Ending::Failed {
        message: e.to_string(),
        transient: is_transient(e),
    }
}

pub(super) fn step(
    name: &str,
    status: StepStatus,
    detail: String,
    prior: Value,
    new: Value,
) -> Step {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_playbooks_on_one_resource_end_as_the_most_pressing_and_say_everything() {
        let e = Ending::combine(vec![
            Ending::Fixed("snap-1 is no longer public".into()),
            Ending::AwaitingApproval("deleting snap-1 waits for approval".into()),
        ]);
        let Ending::AwaitingApproval(m) = e else {
            panic!("awaiting approval")
        };
        assert_eq!(
            m,
            "snap-1 is no longer public; deleting snap-1 waits for approval"
        );
        let e = Ending::combine(vec![
            Ending::Failed {
                message: "copy failed".into(),
                transient: true,
            },
            Ending::Fixed("private".into()),
        ]);
        assert!(
            matches!(e, Ending::Failed { transient: true, ref message } if message == "copy failed; private")
        );
        assert!(matches!(
            Ending::combine(vec![Ending::Clean("fine".into())]),
            Ending::Clean(_)
        ));
    }
}
