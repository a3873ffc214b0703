//! Runs of declared playbooks: an event on the events queue starts them, the isolation queue
//! brings their timers and second phases back, `quell approve RUN --step S` decides their
//! approvals. A run is one ledger record (`run:<playbook>:<dedup hash>:<window>`) holding the
//! `quell_playbook::run::Run` state machine, pinned to the playbook's id, version and the document
//! it came from, and a ledger step for every change with the state before it.
//!
//! Every input is claimed by a conditional write of the record before anything is acted on, so a
//! timer or a phase delivered twice, or late, changes nothing. One run at a time per playbook and
//! target (a `lock:` item held until the run finishes).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Outcome, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::{CallError, Described};
use crate::clients::MemberClients;
use crate::contract::Action;
use crate::entities::StepOutcome;
use crate::error::ResponderError;
use crate::ledger::{Claim, Record, Status, Step, StepStatus};
use crate::playbooks::event::FindingRef;
use crate::playbooks::language::definition::Playbook;
use crate::playbooks::language::finding::Finding;
use crate::playbooks::language::run::{Effect, Input, Run, Status as RunStatus};
use crate::playbooks::language::template::Template;
use crate::runs::actions::{self, Place};
use crate::runs::document::{self, Library};

/// How long an SQS message may be delayed: a timer due later is an EventBridge Scheduler schedule.
const LONGEST_DELAY_SECONDS: i64 = 900;

/// How long a run's hold on its target lasts when the run never finishes (a lost record): longer
/// than any approval or wait a playbook may declare.
const TARGET_HOLD_DAYS: i64 = 31;

/// A dedup window when the playbook declares none.
const DEFAULT_DEDUP_SECONDS: u64 = 24 * 3600;

/// How a phase of a step went.
enum Acting {
    Done(Input),
    Later(Wake),
}

/// What the isolation queue brings back to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Wake {
    pub quell_run: String,
    pub step: String,
    /// A timer (a wait, an approval's or a `wait_for`'s timeout), or the next phase of the step's
    /// action at this attempt.
    #[serde(flatten)]
    pub what: WakeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "wake", rename_all = "snake_case")]
pub(crate) enum WakeKind {
    Timer {
        at: DateTime<Utc>,
    },
    Phase {
        attempt: u32,
        phase: u8,
        /// Seconds from sending until it is due.
        after: i64,
    },
}

/// A timer's schedule name: Scheduler allows 64 letters, digits, `-`, `_` and `.`.
fn timer_name(body: &str) -> String {
    format!(
        "run-{}",
        hex::encode(&Sha256::digest(body.as_bytes())[..24])
    )
}

/// The run's record status for the ledger, which `quell history` and the claim read.
fn ledger_status(status: &RunStatus) -> Status {
    match status {
        RunStatus::Running { .. } => Status::InProgress,
        RunStatus::Waiting { .. } => Status::Waiting,
        RunStatus::Succeeded | RunStatus::Ended { .. } => Status::Succeeded,
        RunStatus::Failed { .. } | RunStatus::RolledBack { .. } => Status::Failed,
    }
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// The Security Hub copy of a native finding (GuardDuty and Inspector send theirs there under the
/// native ARN), or the Security Hub finding itself.
fn finding_ref(finding: &Finding, event: &Value, partition: &str) -> Option<FindingRef> {
    let product = match finding.product.as_str() {
        "GuardDuty" => "aws/guardduty",
        "Inspector" => "aws/inspector",
        _ => {
            let raw = event["detail"]["findings"]
                .as_array()?
                .iter()
                .find(|f| f["Id"].as_str() == Some(finding.id.as_str()))?;
            return Some(FindingRef {
                id: finding.id.clone(),
                product_arn: raw["ProductArn"].as_str()?.to_owned(),
                region: finding.region.clone(),
            });
        }
    };
    Some(FindingRef {
        id: finding.arn.clone(),
        product_arn: format!(
            "arn:{partition}:securityhub:{}::product/{product}",
            finding.region
        ),
        region: finding.region.clone(),
    })
}

/// What a run was started with and acts within: the account and Region that produced the event.
pub(super) struct Origin {
    pub account: String,
    pub region: String,
    pub partition: &'static str,
}

/// Who started a run by hand (`quell run`), as far as AWS vouched for them.
pub(super) struct Starter {
    /// The unique id SQS stamped on the request: that person may not approve the run.
    pub person: Option<String>,
    pub requester: String,
    pub caller: crate::authorization::Caller,
    /// The ARN the request named: the run acts only if the entity read back is this one.
    pub arn: String,
}

impl Responder {
    /// The declared playbooks, read once per execution environment. `None` when none are
    /// configured.
    pub(super) async fn library(&self) -> Result<Option<Arc<Library>>, ResponderError> {
        let Some(uri) = self.settings.declared_playbooks.as_deref() else {
            return Ok(None);
        };
        let library = self
            .library
            .get_or_try_init(|| async {
                let (bucket, key) = document::location(uri).map_err(ResponderError::Settings)?;
                let body = self
                    .s3
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| {
                        ResponderError::Aws(format!(
                            "cannot read the declared playbooks at {uri}: {}",
                            aws_smithy_types::error::display::DisplayErrorContext(&e)
                        ))
                    })?
                    .body
                    .collect()
                    .await
                    .map_err(|e| {
                        ResponderError::Aws(format!(
                            "cannot read the declared playbooks at {uri}: {e}"
                        ))
                    })?
                    .into_bytes();
                // A refused document is kept as refused: reading it again would refuse it again.
                Ok::<_, ResponderError>(Arc::new(Library::parse(&key, &body).unwrap_or_else(
                    |why| {
                        tracing::error!(document = %key, reason = %why, declared_playbooks_refused = 1_u8, "declared playbooks refused");
                        Library {
                            key: key.clone(),
                            playbooks: Vec::new(),
                            refused: Some(why),
                        }
                    },
                )))
            })
            .await?;
        Ok(Some(library.clone()))
    }

    /// Starts a run of every declared playbook whose trigger matches `event`. The event names
    /// the account and Region it came from; a run acts there and nowhere else.
    pub(super) async fn start_runs(
        &self,
        message_id: &str,
        event: &Value,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let Some(library) = self.library().await? else {
            return Ok(Vec::new());
        };
        if let Some(why) = &library.refused {
            return Ok(vec![Outcome {
                key: format!("event:{message_id}"),
                status: Status::Rejected,
                code: Some("declared_playbooks_refused".into()),
                message: why.clone(),
                transient: false,
            }]);
        }
        let mut outcomes = self.deliver_to_waiting_runs(event, &library).await?;
        for playbook in library
            .playbooks
            .iter()
            .filter(|p| p.trigger.custom_action().is_some() && p.trigger.matches(event).is_some())
        {
            outcomes.extend(
                Box::pin(self.start_from_custom_action(message_id, &library, playbook, event))
                    .await?,
            );
        }
        for playbook in library
            .playbooks
            .iter()
            .filter(|p| p.trigger.schedule().is_some() && p.trigger.matches(event).is_some())
        {
            outcomes.extend(
                Box::pin(self.start_scheduled(message_id, &library, playbook, event)).await?,
            );
        }
        let matches: Vec<(&Playbook, Option<Finding>)> = library
            .playbooks
            .iter()
            .filter(|p| p.trigger.forwarding_pattern().is_some())
            .filter_map(|p| p.trigger.matches(event).map(|m| (p, m.finding)))
            .collect();
        if matches.is_empty() && !outcomes.is_empty() {
            return Ok(outcomes);
        }
        if matches.is_empty() {
            // An event of a kind the playbooks take (forwarded for them) that none matches is
            // theirs to skip, not an unknown event.
            let theirs = library.playbooks.iter().any(|p| {
                p.trigger.forwarding_pattern().is_some_and(|pattern| {
                    pattern["source"]
                        .as_array()
                        .is_some_and(|s| s.contains(&event["source"]))
                        && pattern["detail-type"]
                            .as_array()
                            .is_some_and(|d| d.contains(&event["detail-type"]))
                })
            });
            if !theirs {
                return Ok(Vec::new());
            }
            let why = if event["detail"]["service"]["additionalInfo"]["sample"] == true {
                "a GuardDuty sample finding describes nothing real; no run starts"
            } else {
                "no declared playbook's trigger matches this event"
            };
            return Ok(vec![skipped(&format!("event:{message_id}"), why.into())]);
        }
        for (playbook, finding) in matches {
            let outcome = match self.origin_of(event, finding.as_ref()).await {
                Ok(origin) => {
                    Box::pin(self.start_run(
                        message_id, &library, playbook, event, finding, &origin, None,
                    ))
                    .await?
                }
                Err(why) => skipped(&format!("run:{}", playbook.id), why),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Events about a finding a run waits for (`wait_for`) move that run on. The event must
    /// come from the run's own account, like any event a run acts on.
    async fn deliver_to_waiting_runs(
        &self,
        event: &Value,
        library: &Library,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let mut outcomes = Vec::new();
        for finding in quell_playbook::finding::findings(event) {
            let pointer = pointer_for(&finding.arn);
            let Some(key) = self
                .ledger
                .holder(&pointer, Utc::now())
                .await
                .map_err(|e| ResponderError::Aws(e.to_string()))?
            else {
                continue;
            };
            let Some(mut record) = self
                .ledger
                .get(&key)
                .await
                .map_err(|e| ResponderError::Aws(e.to_string()))?
            else {
                continue;
            };
            let Some(run) = record.run.as_deref().cloned() else {
                continue;
            };
            if let Err(why) = self.origin_of(event, Some(&finding)).await {
                outcomes.push(skipped(&key, why));
                continue;
            }
            if record.account.as_deref() != Some(finding.account.as_str()) {
                outcomes.push(skipped(
                    &key,
                    "the finding is not in the run's account".into(),
                ));
                continue;
            }
            let Some(playbook) = library
                .playbook(&run.playbook)
                .filter(|p| p.version == run.version)
                .cloned()
            else {
                continue;
            };
            let seen = record.updated_at;
            let mut run = run;
            let effects = run
                .advance(
                    &playbook,
                    Input::Event {
                        finding: serde_json::to_value(&finding).unwrap_or_default(),
                    },
                    Utc::now(),
                )
                .unwrap_or_default();
            if effects.is_empty() {
                continue;
            }
            record.run = Some(Box::new(run));
            record.updated_at = Utc::now();
            if !self
                .ledger
                .save_if_unchanged(&record, seen)
                .await
                .map_err(|e| ResponderError::Aws(e.to_string()))?
            {
                continue;
            }
            if let Some(run) = record.run.as_deref() {
                let _ = self.ledger.unlock(&wait_pointer(run), &record.key).await;
            }
            outcomes.push(Box::pin(self.drive(&mut record, &playbook, effects, None)).await?);
        }
        Ok(outcomes)
    }

    /// The account and Region a run may act in, or why none.
    async fn origin_of(&self, event: &Value, finding: Option<&Finding>) -> Result<Origin, String> {
        let envelope = event["account"].as_str().filter(|a| !a.is_empty());
        let account = match (envelope, finding) {
            (Some(a), Some(f)) if f.account != a => {
                return Err(format!(
                    "the finding names account {} but came from {a}: a run acts only in the account that produced its event",
                    f.account
                ))
            }
            (Some(a), _) => a.to_owned(),
            (None, Some(f)) if self.settings.envelope_may_lack_account => f.account.clone(),
            // The sandbox's emulator drops the envelope's account: the account the event speaks
            // for is then the one its detail names, as the built-in playbooks take it there.
            (None, None) if self.settings.envelope_may_lack_account => ["/detail/recipientAccountId", "/detail/awsAccountId"]
                .iter()
                .find_map(|p| event.pointer(p).and_then(Value::as_str))
                .filter(|a| crate::entity::is_account_id(a))
                .ok_or("the event names no account")?
                .to_owned(),
            (None, _) => return Err("the event names no account".into()),
        };
        let region = event["region"].as_str().unwrap_or_default().to_owned();
        self.checked_origin(event, finding, account, region).await
    }

    /// The account and Region a run would act in, if Quell acts there at all.
    pub(super) async fn checked_origin(
        &self,
        event: &Value,
        finding: Option<&Finding>,
        account: String,
        region: String,
    ) -> Result<Origin, String> {
        if !self.settings.regions.contains(&region) {
            return Err(format!(
                "the event comes from {region:?}, where Quell is not installed"
            ));
        }
        if finding.is_some_and(|f| f.region != region) {
            return Err("the finding's Region is not the event's".into());
        }
        if finding.is_some_and(|f| f.sample) {
            return Err("a GuardDuty sample finding describes nothing real; no run starts".into());
        }
        let quell_role = format!(":assumed-role/{}-", self.settings.name_prefix);
        if event["detail"]["userIdentity"]["arn"]
            .as_str()
            .is_some_and(|arn| arn.contains(&quell_role))
        {
            return Err("Quell's own roles made this change; no run starts (loop guard)".into());
        }
        match self.is_member(&account).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "account {account} is not in organization {}",
                    self.settings.organization_id
                ))
            }
            Err(e) => return Err(format!("cannot check organization membership: {e}")),
        }
        Ok(Origin {
            partition: super::remediate::partition_of(&region),
            account,
            region,
        })
    }

    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    pub(super) async fn start_run(
        &self,
        message_id: &str,
        library: &Library,
        playbook: &Playbook,
        event: &Value,
        finding: Option<Finding>,
        origin: &Origin,
        starter: Option<&Starter>,
    ) -> Result<Outcome, ResponderError> {
        let now = Utc::now();
        let finding_value = finding
            .as_ref()
            .map_or(Value::Null, |f| serde_json::to_value(f).unwrap_or_default());
        let mut context = json!({
            "event": event,
            "finding": finding_value,
            "account": { "id": origin.account },
            "vars": {},
        });
        let label = format!("run:{}", playbook.id);
        let named = match Template::parse(&playbook.target.id).and_then(|t| t.fill(&context)) {
            Ok(Value::String(id)) if crate::playbooks::language::usable_id(&id) => id,
            _ => return Ok(skipped(&label, "the event names no usable target".into())),
        };
        let clients = match self
            .session_in(origin.partition, &origin.account, Some(&origin.region))
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(ResponderError::Aws(e.to_string())),
        };
        // Conditions and exemptions see the resource as AWS has it, under AWS's spelling.
        let resource = match crate::runs::resource::read(
            &clients,
            &origin.account,
            &self.settings.name_prefix,
            &playbook.target.kind,
            &named,
        )
        .await
        {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Ok(skipped(
                    &label,
                    format!(
                        "{} {named} does not exist in {}",
                        playbook.target.kind, origin.account
                    ),
                ))
            }
            Err(e) if super::is_transient(&e) => return Err(ResponderError::Aws(e.to_string())),
            Err(e) => return Ok(skipped(&label, format!("cannot read {named}: {e}"))),
        };
        let target = resource["id"].as_str().unwrap_or(&named).to_owned();
        if let Some(asked) = starter.map(|s| s.arn.as_str()) {
            // IAM finds a name in any letter case and under any path: the request must name the
            // entity exactly as it is, or it names another one.
            if resource["arn"].as_str().is_some_and(|real| real != asked) {
                return Ok(skipped(
                    &label,
                    format!(
                        "{asked} names {}, which is not that entity (path or letter case differ); nothing was done",
                        resource["arn"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(arn) = resource["arn"].as_str() {
            if let Some(pattern) = self.protection.protecting(arn) {
                return Ok(skipped(
                    &label,
                    format!("{arn} is protected ({pattern}); no run acts on it"),
                ));
            }
        }
        context["resource"] = resource.clone();
        if let Some(why) = self.exemption(playbook, &origin.account, &resource).await {
            return Ok(skipped(&label, why));
        }
        if let Some(when) = &playbook.when {
            if !when.evaluate(&context, now).matched {
                return Ok(skipped(
                    &label,
                    format!("the conditions of {} do not hold", playbook.id),
                ));
            }
        }
        let dedup_value = playbook
            .dedup
            .as_ref()
            .and_then(|d| Template::parse(&d.key).and_then(|t| t.fill(&context)).ok())
            .map_or_else(
                || target.clone(),
                |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        let window = playbook
            .dedup
            .as_ref()
            .and_then(|d| d.window)
            .unwrap_or(DEFAULT_DEDUP_SECONDS)
            .max(1);
        let slot = u64::try_from(now.timestamp()).unwrap_or_default() / window;
        let key = format!("run:{}:{}:{slot}", playbook.id, short_hash(&dedup_value));
        let mut fresh = Record::new(key.clone(), now, message_id);
        fresh.action = Action::Remediate;
        fresh.entity = Some(entity_of(
            &origin.account,
            &origin.region,
            &playbook.target.kind,
            &target,
        ));
        fresh.entity_kind = Some("run".into());
        fresh.account = Some(origin.account.clone());
        fresh.requester = Some(match starter {
            Some(s) => format!(
                "{}, running playbook {} v{}",
                s.caller.describe(&s.requester),
                playbook.id,
                playbook.version
            ),
            None => format!("playbook {} v{}", playbook.id, playbook.version),
        });
        fresh.caller =
            Some(starter.map_or(crate::authorization::Caller::Quell, |s| s.caller.clone()));
        fresh.reason = Some(format!(
            "{}; document {}",
            playbook.description, library.key
        ));
        let claim =
            self.ledger.claim(fresh, now).await.map_err(|e| {
                ResponderError::Aws(format!("cannot claim {key} in the ledger: {e}"))
            })?;
        if let Some(later) = self.held_elsewhere(&claim, message_id) {
            return Ok(later);
        }
        let mut record = match claim {
            Claim::Fresh(r) => r,
            // Cut off mid-step: the run record says where; the step is carried out again.
            Claim::Resumed(r) if r.run.as_ref().is_some_and(|run| !run.status.finished()) => {
                return self.resume(r).await;
            }
            // The ledger's claim takes a failed record up again; a failed run stays failed.
            Claim::Resumed(mut r) => {
                r.status = r
                    .run
                    .as_ref()
                    .map_or(Status::Failed, |run| ledger_status(&run.status));
                r.finished_at = Some(r.updated_at);
                self.save_run(&r).await?;
                return Ok(Outcome {
                        key,
                        status: r.status,
                        code: Some("duplicate".into()),
                        message: "this finding's run of this playbook in its dedup window has ended; nothing was done again".into(),
                        transient: false,
                    });
            }
            Claim::Busy(r) | Claim::Finished(r) => {
                return Ok(Outcome {
                    key,
                    status: r.status,
                    code: Some("duplicate".into()),
                    message: "this finding already has a run of this playbook in its dedup window"
                        .into(),
                    transient: false,
                })
            }
        };
        // Counted once a run is sure to be new: a finding delivered twice is one run, not two.
        let hour = now.timestamp() / 3600;
        match self
            .ledger
            .count_up(
                &format!("rate:{}:{hour}", playbook.id),
                playbook.limits.max_runs_per_hour,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                record.status = Status::Skipped;
                record.finished_at = Some(now);
                record.error = Some(format!(
                    "{} runs of {} started this hour already (limits.max_runs_per_hour); this one did not start",
                    playbook.limits.max_runs_per_hour, playbook.id
                ));
                self.save_run(&record).await?;
                self.audit_or_log(AuditEvent::Skipped, &mut record).await;
                return Ok(outcome_of(&record));
            }
            Err(e) => {
                return Err(ResponderError::Aws(format!(
                    "cannot count the runs of {} this hour: {e}",
                    playbook.id
                )))
            }
        }
        let hold = format!(
            "run:{}:{}:{}:{target}",
            playbook.id, origin.account, origin.region
        );
        match self
            .ledger
            .lock(&hold, &key, now, now + Duration::days(TARGET_HOLD_DAYS))
            .await
        {
            Ok(None) => {}
            Ok(Some(other)) => {
                record.status = Status::Skipped;
                record.finished_at = Some(now);
                record.error = Some(format!(
                    "run {other} of {} is active on {target}; one run at a time",
                    playbook.id
                ));
                self.save_run(&record).await?;
                return Ok(outcome_of(&record));
            }
            Err(e) => {
                return Err(ResponderError::Aws(format!(
                    "cannot hold {target} for the run: {e}"
                )))
            }
        }
        let person = starter.and_then(|s| s.person.clone());
        let mut run = Run::new(&key, playbook, &target, context, person, now);
        if playbook.mode == "approve" {
            run.mode_approvers
                .clone_from(&self.settings.authorization.decide);
        }
        let effects = run.start(playbook, now);
        record.run = Some(Box::new(run));
        self.save_run(&record).await?;
        self.audit_or_log(AuditEvent::Started, &mut record).await;
        self.drive(&mut record, playbook, effects, Some(clients))
            .await
    }

    /// Why the playbook's scope or Quell's exemptions leave this alone, if they do; checked at the
    /// start and again right before every writing step (an exemption added meanwhile wins).
    async fn exemption(
        &self,
        playbook: &Playbook,
        account: &str,
        resource: &Value,
    ) -> Option<String> {
        match self.account_exemption(account).await {
            Ok(Some(why)) => return Some(why),
            Ok(None) => {}
            Err(e) => {
                return Some(format!(
                    "cannot check Quell's exemptions, so nothing is written: {e}"
                ))
            }
        }
        let ancestors = if playbook.scope.exempt_organizational_units.is_empty() {
            Vec::new()
        } else {
            match self.ancestors(account).await {
                Ok(a) => a,
                Err(e) => {
                    return Some(format!(
                        "cannot read {account}'s OUs, so nothing is written: {e}"
                    ))
                }
            }
        };
        let path: Vec<&str> = ancestors.iter().map(String::as_str).collect();
        playbook.scope.exemption(account, &path, resource)
    }

    async fn save_run(&self, record: &Record) -> Result<(), ResponderError> {
        self.ledger
            .save(record)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot save run {}: {e}", record.key)))
    }

    /// Carries out `effects` and what they lead to, until the run waits for the outside world or
    /// ends; saves the record after every step.
    #[allow(clippy::too_many_lines)]
    async fn drive(
        &self,
        record: &mut Record,
        playbook: &Playbook,
        effects: Vec<Effect>,
        clients: Option<MemberClients>,
    ) -> Result<Outcome, ResponderError> {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        let mut clients = clients;
        while let Some(effect) = queue.pop_front() {
            let now = Utc::now();
            let Some(run) = record.run.as_deref().cloned() else {
                break;
            };
            let (account, region) = place_of(record);
            let partition = super::remediate::partition_of(&region);
            match effect {
                Effect::Act {
                    step,
                    action,
                    attempt,
                    parameters,
                    target,
                } => {
                    let input = self
                        .act(
                            record,
                            playbook,
                            &run,
                            &step,
                            &action,
                            attempt,
                            &parameters,
                            &target,
                            1,
                            &mut clients,
                        )
                        .await?;
                    match input {
                        Acting::Done(input) => {
                            let mut run = run;
                            let more = run.advance(playbook, input, now).unwrap_or_default();
                            record.run = Some(Box::new(run));
                            queue.extend(more);
                        }
                        // Saved before the wake is sent, so that the wake finds this record;
                        // the run stays on the step until then.
                        Acting::Later(wake) => {
                            record.updated_at = Utc::now();
                            self.save_run(record).await?;
                            self.wake_later(&wake).await?;
                            return Ok(outcome_of(record));
                        }
                    }
                }
                Effect::Timer { step, at } => {
                    // The record holds the wait before the timer can fire.
                    record.status = ledger_status(&run.status);
                    record.updated_at = Utc::now();
                    self.save_run(record).await?;
                    if is_wait_for(playbook, &step) {
                        // Events about the run's finding find the run through this pointer.
                        let pointer = wait_pointer(&run);
                        if let Err(e) = self.ledger.lock(&pointer, &record.key, now, at).await {
                            return Err(ResponderError::Aws(format!(
                                "cannot let events about the finding reach run {}: {e}",
                                record.key
                            )));
                        }
                    }
                    let timer = Wake {
                        quell_run: record.key.clone(),
                        step,
                        what: WakeKind::Timer { at },
                    };
                    if let Err(e) = self.wake_later(&timer).await {
                        // Without its timer the run would wait for ever: the record says so, and
                        // this delivery fails, so that the platform's retry schedules it (`resume`).
                        record.status = Status::Failed;
                        record.error = Some(format!("{e}; a redelivery schedules it again"));
                        self.save_run(record).await?;
                        return Err(e);
                    }
                }
                Effect::AskApproval {
                    step,
                    approvers,
                    min,
                    summary,
                } => {
                    record.error = None;
                    record.reason = Some(format!(
                        "{summary} (approvers: {}; {min} needed) `quell approve {} --step {step}` or `quell deny {} --step {step}`",
                        approvers.join(", "),
                        record.key,
                        record.key
                    ));
                    self.audit_or_log(AuditEvent::AwaitingApproval, record)
                        .await;
                }
                Effect::Release { steps } => {
                    let protected = self.protected();
                    let run_key = record.key.clone();
                    let place = self.place(partition, &account, &region, &run_key, &protected);
                    for (step, inverse) in steps {
                        let parts: Vec<Step> = record
                            .steps
                            .iter()
                            .filter(|s| s.name.starts_with(&format!("{step}.")))
                            .cloned()
                            .collect();
                        if inverse.starts_with("ticket.") {
                            // A ticket the run opened is closed through the webhook that opened it.
                            let opened = parts.iter().find(|p| p.name.ends_with(".ticket"));
                            let name = opened
                                .and_then(|p| p.new["webhook"].as_str())
                                .unwrap_or_default()
                                .to_owned();
                            let with = json!({
                                "ticket_id": opened.map(|p| p.new["ticket_id"].clone()),
                                "body": format!("Released by Quell run {}", record.key),
                            });
                            let started = Utc::now();
                            let called =
                                self.call_webhook(&name, &inverse, &with, &record.key).await;
                            record.steps.push(ledger_step(
                                &format!("release.{step}"),
                                called.map(|(d, new, _)| StepOutcome::done(d, Value::Null, new)),
                                started,
                            ));
                            continue;
                        }
                        let target = run_target(&run, playbook, &step, &parts);
                        let started = Utc::now();
                        let member = self
                            .member_for(&mut clients, partition, &account, &region)
                            .await;
                        let result = match member {
                            Ok(m) => actions::undo(&m, &place, &inverse, &target, &parts).await,
                            Err(e) => Err(e),
                        };
                        record
                            .steps
                            .push(ledger_step(&format!("release.{step}"), result, started));
                    }
                }
                Effect::Finished { status } => {
                    record.status = ledger_status(&status);
                    record.finished_at = Some(now);
                    record.error = match &status {
                        RunStatus::Failed { reason } | RunStatus::RolledBack { reason } => {
                            Some(reason.clone())
                        }
                        _ => None,
                    };
                    if let RunStatus::Ended { reason } = &status {
                        record.reason = Some(reason.clone());
                    }
                    let hold = format!("run:{}:{account}:{region}:{}", playbook.id, run.target);
                    for lock in [hold, wait_pointer(&run)] {
                        if let Err(e) = self.ledger.unlock(&lock, &record.key).await {
                            tracing::warn!(run = %record.key, error = %e, "a lock of the run stays until it expires");
                        }
                    }
                }
            }
            record.status = record
                .run
                .as_ref()
                .map_or(record.status, |r| ledger_status(&r.status));
            record.updated_at = Utc::now();
            self.save_run(record).await?;
        }
        let finished = record.run.as_ref().is_some_and(|r| r.status.finished());
        if finished {
            let event = if record.status == Status::Failed {
                AuditEvent::Failed
            } else {
                AuditEvent::Succeeded
            };
            self.audit_or_log(event, record).await;
            self.save_run(record).await?;
        }
        Ok(outcome_of(record))
    }

    async fn member_for(
        &self,
        cache: &mut Option<MemberClients>,
        partition: &str,
        account: &str,
        region: &str,
    ) -> Result<MemberClients, CallError> {
        if let Some(c) = cache {
            return Ok(c.clone());
        }
        let c = self.session_in(partition, account, Some(region)).await?;
        *cache = Some(c.clone());
        Ok(c)
    }

    /// Carries out one phase of a step: the input that tells the run how the step went, or the
    /// wake that brings its next phase.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        record: &mut Record,
        playbook: &Playbook,
        run: &Run,
        step: &str,
        action: &str,
        attempt: u32,
        parameters: &Value,
        target: &str,
        phase: u8,
        clients: &mut Option<MemberClients>,
    ) -> Result<Acting, ResponderError> {
        let (account, region) = place_of(record);
        let partition = super::remediate::partition_of(&region);
        let started = Utc::now();
        let failed = |error: String, transient: bool| {
            Ok(Acting::Done(Input::StepFailed {
                step: step.to_owned(),
                attempt,
                error,
                transient,
            }))
        };
        let writes = quell_playbook::catalogue::action(action).is_some_and(|a| a.writes);
        if writes {
            let member = match self.member_for(clients, partition, &account, &region).await {
                Ok(m) => m,
                Err(e) => return failed(e.to_string(), super::is_transient(&e)),
            };
            let resource = match crate::runs::resource::read(
                &member,
                &account,
                &self.settings.name_prefix,
                &playbook.target.kind,
                &run.target,
            )
            .await
            {
                Ok(Some(r)) => r,
                Ok(None) => return failed(format!("{} no longer exists", run.target), false),
                Err(e) => return failed(e.to_string(), super::is_transient(&e)),
            };
            if let Some(why) = self.exemption(playbook, &account, &resource).await {
                return failed(format!("not written: {why}"), false);
            }
        }
        let outputs = match action {
            "notify" => {
                let text = parameters["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                record.steps.push(ledger_step(
                    &format!("{step}.notify"),
                    Ok(StepOutcome::done(text, Value::Null, Value::Null)),
                    started,
                ));
                self.audit_or_log(AuditEvent::Started, record).await;
                if let Some(name) = parameters["webhook"].as_str() {
                    let called = self
                        .call_webhook(name, action, parameters, &record.key)
                        .await;
                    let ok = called.is_ok();
                    let detail = called.as_ref().err().map(ToString::to_string);
                    record.steps.push(ledger_step(
                        &format!("{step}.webhook"),
                        called.map(|(d, new, _)| StepOutcome::done(d, Value::Null, new)),
                        started,
                    ));
                    if !ok {
                        return failed(detail.unwrap_or_default(), true);
                    }
                }
                Map::new()
            }
            "ticket.open" | "ticket.comment" | "ticket.close" => {
                let name = parameters["webhook"].as_str().unwrap_or_default();
                match self
                    .call_webhook(name, action, parameters, &record.key)
                    .await
                {
                    Ok((detail, new, outputs)) => {
                        record.steps.push(ledger_step(
                            &format!("{step}.ticket"),
                            Ok(StepOutcome::done(detail, Value::Null, new)),
                            started,
                        ));
                        outputs
                    }
                    Err(e) => {
                        record.steps.push(ledger_step(
                            &format!("{step}.ticket"),
                            Err(e.clone()),
                            started,
                        ));
                        // A ticket system down for a moment is worth the step's retries.
                        return failed(e.to_string(), true);
                    }
                }
            }
            "finding.update" => {
                let finding = run.context["finding"].clone();
                let parsed: Option<Finding> = serde_json::from_value::<FindingFields>(finding)
                    .ok()
                    .map(FindingFields::into_finding);
                let Some(f) =
                    parsed.and_then(|f| finding_ref(&f, &run.context["event"], partition))
                else {
                    return failed(
                        "the run has no Security Hub finding to update".into(),
                        false,
                    );
                };
                let note = parameters["note"].as_str().unwrap_or_default();
                let resolved = parameters["workflow"].as_str() == Some("RESOLVED");
                let mut done = self.update_finding(&f, note, resolved).await;
                done.name = format!("{step}.finding_update");
                let ok = done.status != StepStatus::Failed;
                let detail = done.detail.clone();
                record.steps.push(done);
                if !ok {
                    return failed(detail, false);
                }
                Map::new()
            }
            "verify" => {
                let member = match self.member_for(clients, partition, &account, &region).await {
                    Ok(m) => m,
                    Err(e) => return failed(e.to_string(), super::is_transient(&e)),
                };
                let resource = match crate::runs::resource::read(
                    &member,
                    &account,
                    &self.settings.name_prefix,
                    &playbook.target.kind,
                    target,
                )
                .await
                {
                    Ok(r) => r.unwrap_or(Value::Null),
                    Err(e) => return failed(e.to_string(), super::is_transient(&e)),
                };
                let Some(condition) = parameters.get("condition").and_then(|c| {
                    quell_playbook::condition::Condition::parse(quell_playbook::Node::new(c, ""))
                        .ok()
                }) else {
                    return failed("verify has no condition".into(), false);
                };
                let mut context = run.context.clone();
                context["resource"] = resource;
                let evaluation = condition.evaluate(&context, Utc::now());
                let detail = serde_json::to_value(&evaluation).unwrap_or_default();
                if !evaluation.matched {
                    record.steps.push(ledger_step(
                        &format!("{step}.verify"),
                        Err(CallError::local(
                            "verify",
                            format!("the condition does not hold: {detail}"),
                        )),
                        started,
                    ));
                    return failed(
                        "verify: the condition does not hold on the resource read back".into(),
                        false,
                    );
                }
                record.steps.push(ledger_step(
                    &format!("{step}.verify"),
                    Ok(StepOutcome::done(
                        "the condition holds on the resource read back",
                        Value::Null,
                        detail,
                    )),
                    started,
                ));
                Map::new()
            }
            _ => {
                let member = match self.member_for(clients, partition, &account, &region).await {
                    Ok(m) => m,
                    Err(e) => return failed(e.to_string(), super::is_transient(&e)),
                };
                let protected = self.protected();
                let run_key = record.key.clone();
                let place = self.place(partition, &account, &region, &run_key, &protected);
                let earlier: Vec<Step> = record
                    .steps
                    .iter()
                    .filter(|s| s.name.starts_with(&format!("{step}.")))
                    .cloned()
                    .collect();
                let acted = actions::carry_out(
                    &member,
                    &place,
                    action,
                    parameters,
                    target,
                    phase,
                    self.settings.isolation_wait_seconds,
                    &earlier,
                )
                .await;
                let acted = match acted {
                    Ok(a) => a,
                    Err(e) => {
                        let transient = super::is_transient(&e);
                        record.steps.push(ledger_step(
                            &format!("{step}.{action}"),
                            Err(e.clone()),
                            started,
                        ));
                        return failed(e.to_string(), transient);
                    }
                };
                // A part that failed ends the step; the parts before it stay recorded, with the
                // state a release puts back.
                let broke = acted
                    .parts
                    .iter()
                    .find(|(_, o)| o.status == StepStatus::Failed)
                    .map(|(part, o)| format!("{part}: {}", o.detail));
                for (part, outcome) in acted.parts {
                    record
                        .steps
                        .push(ledger_step(&format!("{step}.{part}"), Ok(outcome), started));
                }
                if let Some(why) = broke {
                    return failed(why, false);
                }
                if let Some((next, after)) = acted.next_phase {
                    return Ok(Acting::Later(Wake {
                        quell_run: record.key.clone(),
                        step: step.to_owned(),
                        what: WakeKind::Phase {
                            attempt,
                            phase: next,
                            after,
                        },
                    }));
                }
                let mut outputs = acted.outputs;
                // A two-phase action's first outputs are on its first ledger step.
                for s in record
                    .steps
                    .iter()
                    .filter(|s| s.name == format!("{step}.untracked_groups"))
                {
                    outputs
                        .entry("previous_groups")
                        .or_insert_with(|| s.prior["interfaces"].clone());
                }
                outputs
            }
        };
        Ok(Acting::Done(Input::StepDone {
            step: step.to_owned(),
            attempt,
            outputs,
        }))
    }

    /// Calls webhook `name`, with its credential read from Secrets Manager for this call only.
    async fn call_webhook(
        &self,
        name: &str,
        action: &str,
        with: &Value,
        run: &str,
    ) -> Result<(String, Value, Map<String, Value>), CallError> {
        let secret = self
            .settings
            .webhooks
            .get(name)
            .and_then(|h| h.secret.clone());
        let authorization = match secret {
            Some(arn) => Some(
                self.secrets
                    .get_secret_value()
                    .secret_id(&arn)
                    .send()
                    .await
                    .described("secretsmanager:GetSecretValue (webhook)")?
                    .secret_string()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            None => None,
        };
        crate::runs::webhook::call(
            &self.http,
            &self.settings.webhooks,
            name,
            action,
            with,
            run,
            authorization.as_deref(),
        )
        .await
    }

    /// Sends `wake` to the isolation queue when it is due, never through a sleeping function: an
    /// SQS delay for 15 minutes or less, a one-time schedule for a timer due later.
    async fn wake_later(&self, wake: &Wake) -> Result<(), ResponderError> {
        let body = serde_json::to_string(wake).unwrap_or_default();
        let delay = match &wake.what {
            WakeKind::Timer { at } => {
                let due_in = (*at - Utc::now()).num_seconds();
                if due_in > LONGEST_DELAY_SECONDS {
                    return self.schedule_timer(wake, *at, body).await;
                }
                due_in.max(0)
            }
            WakeKind::Phase { after, .. } => (*after).clamp(0, LONGEST_DELAY_SECONDS),
        };
        self.sqs
            .send_message()
            .queue_url(&self.settings.isolation_queue_url)
            .message_body(body)
            .delay_seconds(i32::try_from(delay).unwrap_or(900))
            .send()
            .await
            .map_err(|e| {
                ResponderError::Aws(format!(
                    "cannot schedule the run's {} (sqs:SendMessage): {}",
                    wake.step,
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ))
            })?;
        Ok(())
    }

    /// A timer beyond SQS's longest delay: a one-time schedule in Quell's group that EventBridge
    /// Scheduler delivers to the isolation queue as the timer role, retries for a day, dead-letters
    /// after that, and deletes once it has fired. Its name is the hash of the wake, so the same
    /// timer scheduled twice (a redelivered step) is one schedule. Scheduler fires on the second or
    /// later, never earlier; a wake that still arrives early is sent on as a delay.
    async fn schedule_timer(
        &self,
        wake: &Wake,
        at: DateTime<Utc>,
        body: String,
    ) -> Result<(), ResponderError> {
        use aws_sdk_scheduler::types::{
            ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode,
            Target,
        };
        let failed = |what: String| {
            ResponderError::Aws(format!(
                "cannot schedule the run's {} (scheduler:CreateSchedule): {what}",
                wake.step
            ))
        };
        let whole_second = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
        let fire = DateTime::from_timestamp(whole_second, 0).unwrap_or(at);
        let target = Target::builder()
            .arn(&self.settings.isolation_queue_arn)
            .role_arn(&self.settings.timer_role_arn)
            .input(&body)
            .dead_letter_config(
                DeadLetterConfig::builder()
                    .arn(&self.settings.dead_letter_queue_arn)
                    .build(),
            )
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let sent = self
            .scheduler
            .create_schedule()
            .group_name(&self.settings.timer_group)
            .name(timer_name(&body))
            .description(format!("Quell {}: {}", wake.quell_run, wake.step))
            .schedule_expression(format!("at({})", fire.format("%Y-%m-%dT%H:%M:%S")))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Already scheduled by an earlier delivery of the same step.
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_scheduler::operation::create_schedule::CreateScheduleError::is_conflict_exception) =>
            {
                Ok(())
            }
            Err(e) => Err(failed(
                aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            )),
        }
    }

    /// Where a run's actions act, with the settings they read.
    fn place<'a>(
        &'a self,
        partition: &'a str,
        account: &'a str,
        region: &'a str,
        run: &'a str,
        protected: &'a dyn Fn(&str) -> Option<String>,
    ) -> Place<'a> {
        let playbooks = &self.settings.playbooks;
        Place {
            partition,
            account,
            region,
            name_prefix: &self.settings.name_prefix,
            run,
            ssm_documents: &self.settings.ssm_documents,
            ports: &playbooks.open_security_group.ports,
            protected,
            kms_key_id: playbooks.unencrypted_snapshot.kms_key_id.as_deref(),
        }
    }

    /// Claims the run for the delivery `message_id` before anything is acted on: a second delivery
    /// of the same wake finds the record changed and is told so (the `Err`).
    async fn claim_for(
        &self,
        mut record: Record,
        message_id: &str,
    ) -> Result<Result<Record, Outcome>, ResponderError> {
        let seen = record.updated_at;
        record.updated_at = Utc::now();
        record.message_ids.push(message_id.to_owned());
        let taken = self
            .ledger
            .save_if_unchanged(&record, seen)
            .await
            .map_err(|e| ResponderError::Aws(e.to_string()))?;
        Ok(if taken {
            Ok(record)
        } else {
            Err(skipped(
                &record.key,
                "another delivery is moving this run on".into(),
            ))
        })
    }

    /// A timer or a second phase, from the isolation queue.
    pub(super) async fn wake(
        &self,
        message_id: &str,
        wake: &Wake,
    ) -> Result<Outcome, ResponderError> {
        let Some(record) = self
            .ledger
            .get(&wake.quell_run)
            .await
            .map_err(|e| ResponderError::Aws(e.to_string()))?
        else {
            return Ok(skipped(&wake.quell_run, "no such run in the ledger".into()));
        };
        let Some(run) = record.run.as_deref().cloned() else {
            return Ok(skipped(&record.key, "the record is not a run".into()));
        };
        let Some(playbook) = self.pinned(&run, &record).await? else {
            return Ok(skipped(
                &record.key,
                "its playbook is no longer declared in this version".into(),
            ));
        };
        if record.status == Status::Failed && matches!(run.status, RunStatus::Waiting { .. }) {
            // A timer that could not be scheduled after this wake's step: this redelivery does.
            return match self.claim_for(record, message_id).await? {
                Ok(record) => Box::pin(self.resume(record)).await,
                Err(taken) => Ok(taken),
            };
        }
        let now = Utc::now();
        let input = match &wake.what {
            WakeKind::Timer { at } if *at > now => {
                // Early (a delay that ran out, a redelivery): sent on until it is due.
                self.wake_later(wake).await?;
                return Ok(outcome_of(&record));
            }
            WakeKind::Timer { .. } => Some(Input::TimerFired {
                step: wake.step.clone(),
            }),
            WakeKind::Phase { .. } => None,
        };
        let mut record = match self.claim_for(record, message_id).await? {
            Ok(record) => record,
            Err(taken) => return Ok(taken),
        };
        if let Some(input) = input {
            let mut run = run;
            let effects = run.advance(&playbook, input, now).unwrap_or_default();
            record.run = Some(Box::new(run));
            return self.drive(&mut record, &playbook, effects, None).await;
        }
        let WakeKind::Phase { attempt, phase, .. } = wake.what else {
            unreachable!("timers are handled above")
        };
        let RunStatus::Running {
            step: at,
            attempt: current,
        } = run.status
        else {
            return Ok(skipped(
                &record.key,
                "the run is not carrying out a step".into(),
            ));
        };
        let Some(definition) = playbook
            .steps
            .get(at)
            .filter(|s| s.id == wake.step && current == attempt)
        else {
            return Ok(skipped(
                &record.key,
                "a late phase of an earlier step or attempt".into(),
            ));
        };
        let parameters = quell_playbook::template::fill_all(
            &Value::Object(definition.with.clone()),
            &run.context,
        )
        .unwrap_or_default();
        let target = run_target(&run, &playbook, &wake.step, &[]);
        let mut clients = None;
        let acting = self
            .act(
                &mut record,
                &playbook,
                &run,
                &wake.step,
                &definition.action,
                attempt,
                &parameters,
                &target,
                phase,
                &mut clients,
            )
            .await?;
        let input = match acting {
            Acting::Done(input) => input,
            Acting::Later(next) => {
                self.save_run(&record).await?;
                self.wake_later(&next).await?;
                return Ok(outcome_of(&record));
            }
        };
        let mut run = run;
        let effects = run.advance(&playbook, input, now).unwrap_or_default();
        record.run = Some(Box::new(run));
        self.drive(&mut record, &playbook, effects, clients).await
    }

    /// A run cut off in the middle of a step: the step is carried out again (the actions read
    /// before they write, so a repeat changes nothing that was done).
    async fn resume(&self, mut record: Record) -> Result<Outcome, ResponderError> {
        let Some(run) = record.run.as_deref().cloned() else {
            return Ok(outcome_of(&record));
        };
        let Some(playbook) = self.pinned(&run, &record).await? else {
            return Ok(skipped(
                &record.key,
                "its playbook is no longer declared in this version".into(),
            ));
        };
        let (step, attempt) = match run.status {
            RunStatus::Running { step, attempt } => (step, attempt),
            // Its timer could not be scheduled: scheduled now, and the run waits again.
            RunStatus::Waiting { step, until } => {
                self.wake_later(&Wake {
                    quell_run: record.key.clone(),
                    step: playbook.steps[step].id.clone(),
                    what: WakeKind::Timer { at: until },
                })
                .await?;
                record.status = ledger_status(&run.status);
                record.error = None;
                record.updated_at = Utc::now();
                self.save_run(&record).await?;
                return Ok(outcome_of(&record));
            }
            _ => return Ok(outcome_of(&record)),
        };
        let definition = &playbook.steps[step];
        let parameters = quell_playbook::template::fill_all(
            &Value::Object(definition.with.clone()),
            &run.context,
        )
        .unwrap_or_default();
        let effect = Effect::Act {
            step: definition.id.clone(),
            action: definition.action.clone(),
            attempt,
            parameters,
            target: run_target(&run, &playbook, &definition.id, &[]),
        };
        self.drive(&mut record, &playbook, vec![effect], None).await
    }

    /// The playbook a run was started with: the same id and version in the current document, or
    /// none (a run never continues under a changed playbook).
    async fn pinned(&self, run: &Run, record: &Record) -> Result<Option<Playbook>, ResponderError> {
        let Some(library) = self.library().await? else {
            return Ok(None);
        };
        let found = library
            .playbook(&run.playbook)
            .filter(|p| p.version == run.version)
            .cloned();
        if found.is_none() {
            tracing::warn!(run = %record.key, playbook = %run.playbook, version = run.version, "the run's playbook version is gone");
        }
        Ok(found)
    }

    /// Saves a run a person's request changed, unless someone saved it since `seen`: of two
    /// requests sent at once, one counts and the other is refused (and may be sent again).
    async fn take(
        &self,
        target: &Record,
        seen: DateTime<Utc>,
        what: &str,
    ) -> Result<Result<(), String>, ResponderError> {
        let taken = self
            .ledger
            .save_if_unchanged(target, seen)
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot record the {what}: {e}")))?;
        Ok(if taken {
            Ok(())
        } else {
            Err(format!(
                "run {} changed a moment ago; send the {what} again",
                target.key
            ))
        })
    }

    /// Undoes what a finished run changed, as `quell release RUN` asks. The ledger steps of the
    /// release, or why there is nothing to release.
    pub(super) async fn release_run_steps(
        &self,
        mut target: Record,
        request_id: &str,
    ) -> Result<Result<Vec<Step>, String>, ResponderError> {
        let Some(mut run) = target.run.as_deref().cloned() else {
            return Ok(Err(format!("{} is not a run", target.key)));
        };
        if !run.status.finished() {
            return Ok(Err(format!(
                "run {} still goes on; deny its approval or let it end first",
                target.key
            )));
        }
        let Some(playbook) = self.pinned(&run, &target).await? else {
            return Ok(Err(
                "the run's playbook version is no longer declared".into()
            ));
        };
        let undo = run.release_all(&playbook);
        if undo.is_empty() {
            return Ok(Err(format!(
                "run {} left nothing to undo (or it was released already)",
                target.key
            )));
        }
        let seen = target.updated_at;
        let before = target.steps.len();
        target.run = Some(Box::new(run));
        target.released_by = Some(request_id.to_owned());
        target.updated_at = Utc::now();
        if let Err(why) = self.take(&target, seen, "release").await? {
            return Ok(Err(why));
        }
        let status = target.status;
        self.drive(
            &mut target,
            &playbook,
            vec![Effect::Release { steps: undo }],
            None,
        )
        .await?;
        // The run ended as it ended; the release is recorded on it and on the request.
        target.status = status;
        self.save_run(&target).await?;
        Ok(Ok(target.steps[before..].to_vec()))
    }

    /// `quell approve RUN --step S` or `quell deny`: a decision by a sender AWS authenticated.
    pub(super) async fn decide_run(
        &self,
        mut target: Record,
        step: &str,
        caller: &crate::authorization::Caller,
        approve: bool,
    ) -> Result<Result<Record, String>, ResponderError> {
        let Some(run) = target.run.as_deref().cloned() else {
            return Ok(Err(format!("{} is not a run", target.key)));
        };
        let crate::authorization::Caller::Verified {
            sender_id,
            principal_arn,
        } = caller
        else {
            return Ok(Err(
                "a run's approval needs a sender IAM confirmed (the decide queue): nobody else can approve"
                    .into(),
            ));
        };
        let Some(playbook) = self.pinned(&run, &target).await? else {
            return Ok(Err(
                "the run's playbook version is no longer declared".into()
            ));
        };
        let mut run = run;
        let input = Input::Decision {
            step: step.to_owned(),
            principal: principal_arn.clone(),
            person: sender_id.clone(),
            approve,
        };
        let effects = match run.advance(&playbook, input, Utc::now()) {
            Ok(e) => e,
            Err(refused) => return Ok(Err(refused.0)),
        };
        // Taken in one conditional write: of two decisions sent at once, one counts and the
        // other is refused (and may be sent again).
        let seen = target.updated_at;
        target.run = Some(Box::new(run));
        target.decided_by = Some(principal_arn.clone());
        target.updated_at = Utc::now();
        if let Err(why) = self.take(&target, seen, "decision").await? {
            return Ok(Err(why));
        }
        self.drive(&mut target, &playbook, effects, None).await?;
        Ok(Ok(target))
    }
}

fn is_wait_for(playbook: &Playbook, step: &str) -> bool {
    playbook
        .steps
        .iter()
        .any(|s| s.id == step && s.action == "wait_for")
}

/// The lock item through which events about a finding find the run waiting for them.
fn pointer_for(finding_arn: &str) -> String {
    format!("wait_for:{}", short_hash(finding_arn))
}

fn wait_pointer(run: &Run) -> String {
    pointer_for(run.context["finding"]["arn"].as_str().unwrap_or_default())
}

/// A run's entity in the ledger: where it acts and on what.
fn entity_of(account: &str, region: &str, kind: &str, target: &str) -> String {
    format!("{account}/{region}/{kind}/{target}")
}

/// The account and Region a run acts in, from its record's entity.
fn place_of(record: &Record) -> (String, String) {
    let entity = record.entity.as_deref().unwrap_or_default();
    let mut parts = entity.splitn(3, '/');
    let account = parts.next().unwrap_or_default().to_owned();
    let region = parts.next().unwrap_or_default().to_owned();
    (account, region)
}

/// The resource `step` acts on: its own target when it declares one (filled from the run's
/// context, checked), else the run's.
fn run_target(run: &Run, playbook: &Playbook, step: &str, _parts: &[Step]) -> String {
    let Some(definition) = playbook.steps.iter().find(|s| s.id == step) else {
        return run.target.clone();
    };
    let Some(t) = &definition.target else {
        return run.target.clone();
    };
    let mut context = run.context.clone();
    let outputs: Map<String, Value> = run
        .steps
        .iter()
        .map(|s| (s.id.clone(), json!({ "outputs": s.outputs })))
        .collect();
    context["steps"] = Value::Object(outputs);
    match Template::parse(&t.id).and_then(|t| t.fill(&context)) {
        Ok(Value::String(id)) if crate::playbooks::language::usable_id(&id) => id,
        _ => run.target.clone(),
    }
}

fn ledger_step(name: &str, result: Result<StepOutcome, CallError>, started: DateTime<Utc>) -> Step {
    let finished = Utc::now();
    match result {
        Ok(o) => Step {
            name: name.to_owned(),
            status: o.status,
            detail: o.detail,
            prior: o.prior,
            new: o.new,
            started_at: started,
            finished_at: finished,
        },
        Err(e) => Step {
            name: name.to_owned(),
            status: StepStatus::Failed,
            detail: e.to_string(),
            prior: Value::Null,
            new: Value::Null,
            started_at: started,
            finished_at: finished,
        },
    }
}

pub(super) fn skipped(key: &str, why: String) -> Outcome {
    tracing::info!(key, reason = %why, "no run");
    Outcome {
        key: key.to_owned(),
        status: Status::Skipped,
        code: None,
        message: why,
        transient: false,
    }
}

fn outcome_of(record: &Record) -> Outcome {
    let message = match record.run.as_deref().map(|r| &r.status) {
        Some(RunStatus::Waiting { step, until }) => format!(
            "waiting at step {} until {}",
            record
                .run
                .as_ref()
                .map_or("", |r| r.steps[*step].id.as_str()),
            until.to_rfc3339()
        ),
        Some(RunStatus::Running { step, .. }) => format!(
            "carrying out step {}",
            record
                .run
                .as_ref()
                .map_or("", |r| r.steps[*step].id.as_str())
        ),
        Some(s) => serde_json::to_string(s).unwrap_or_default(),
        None => record.error.clone().unwrap_or_default(),
    };
    Outcome {
        key: record.key.clone(),
        status: record.status,
        code: None,
        message,
        transient: false,
    }
}

/// The normalised finding as a run's context keeps it, read back into a `Finding`.
#[derive(Debug, Deserialize)]
struct FindingFields {
    arn: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    severity: f64,
    product: String,
    account: String,
    region: String,
    #[serde(default)]
    resource_type: String,
    #[serde(default)]
    resource_id: String,
}

impl FindingFields {
    fn into_finding(self) -> Finding {
        Finding {
            arn: self.arn,
            id: self.id,
            kind: self.kind,
            title: self.title,
            severity: self.severity,
            product: self.product,
            account: self.account,
            region: self.region,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            sample: false,
            fix_available: None,
            status: None,
            workflow: None,
        }
    }
}
