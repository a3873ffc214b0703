//! The organization-wide sweep, for what events missed. No invocation walks the organization:
//! the one that takes a sweep lists the target accounts, records them as the sweep's plan and
//! queues one message per account x Region on the sweep queue. Invocations take the places,
//! `sweep.concurrency` at once (the queue's event source mapping), each under a record of its
//! own (`sweep_place`). Each place counts itself into the sweep's tally once, atomically, and
//! whichever place completes the count writes the sweep's summary. A sweep of thousands of places
//! therefore never depends on one invocation's 15 minutes, and a place that fails is tried again
//! on its own.

use std::collections::HashSet;
use std::fmt::Write as _;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};

use super::sweep_place::SweepRun;
use super::{is_transient, Outcome, Responder};
use crate::audit::AuditEvent;
use crate::aws_error::{AwsFailure, CallError, Described};
use crate::contract::{Action, Options, SweepPlaceMessage, MESSAGE_VERSION, SWEEP_ENTITY};
use crate::error::ResponderError;
use crate::inbound::QueueDelivery;
use crate::ledger::{place_key, Claim, Record, Status, Step, StepStatus, SweepPlan, Tally};
use crate::playbooks::event::Source;

/// How many times a place is tried: the sweep queue's `maxReceiveCount`. A place that still fails
/// on its last try is counted as not swept, so that its sweep ends rather than waiting for a place
/// the queue has given up on.
pub const PLACE_ATTEMPTS: u32 = 3;

/// `SendMessageBatch` calls in flight at once when a sweep queues its places.
const BATCHES_AT_ONCE: usize = 8;

/// Places not swept that the sweep's summary names; each has its own record either way.
const FAILED_PLACES_NAMED: usize = 20;

fn ledger_error(what: &str) -> impl FnOnce(CallError) -> ResponderError + '_ {
    move |e| ResponderError::Aws(format!("{what}: {e}"))
}

impl Responder {
    /// Takes a sweep under `key` (a request id, or `sweep:<event id>` for the schedule): records
    /// its plan and queues its places. The sweep is still in progress when this returns.
    pub(super) async fn sweep(
        &self,
        key: &str,
        message_id: &str,
        requester: &str,
        caller: &crate::authorization::Caller,
        options: &Options,
    ) -> Result<Outcome, ResponderError> {
        let mut fresh = Record::new(key.to_owned(), Utc::now(), message_id);
        fresh.request_id = Some(key.to_owned());
        fresh.action = Action::Sweep;
        fresh.options = options.clone();
        fresh.entity = Some(SWEEP_ENTITY.into());
        fresh.entity_kind = Some("organization".into());
        fresh.requester = Some(requester.to_owned());
        fresh.caller = Some(caller.clone());
        fresh.reason = Some(if options.dry_run {
            "sweep, dry run: find and record, change nothing".into()
        } else {
            "sweep: run the playbooks over every target account and Region".into()
        });
        let claim = self
            .ledger
            .claim(fresh, Utc::now())
            .await
            .map_err(ledger_error(&format!("cannot claim {key} in the ledger")))?;
        if let Some(held) = self.held_elsewhere(&claim, message_id) {
            return Ok(held);
        }
        let mut record = match claim {
            Claim::Fresh(r) | Claim::Resumed(r) => r,
            Claim::Busy(r) | Claim::Finished(r) => {
                return Ok(Outcome {
                    key: key.to_owned(),
                    status: r.status,
                    code: Some("duplicate".into()),
                    message: "this sweep is running or ran already".into(),
                    transient: false,
                })
            }
        };
        // A sweep taken up again keeps the places it began with: the count it ends on is theirs.
        let plan = if let Some(plan) = record.sweep_plan.clone() {
            plan
        } else {
            self.audit_or_log(AuditEvent::Started, &mut record).await;
            let accounts = match self.swept_accounts().await {
                Ok(a) => a,
                Err(e) => {
                    return self
                        .finish_failed(
                            &mut record,
                            format!("cannot list the target accounts: {e}"),
                            is_transient(&e),
                        )
                        .await
                }
            };
            let plan = SweepPlan {
                accounts,
                regions: self.settings.playbooks.sweep.regions.clone(),
            };
            record.sweep_plan = Some(plan.clone());
            record.updated_at = Utc::now();
            self.ledger
                .save(&record)
                .await
                .map_err(ledger_error("cannot record the sweep's places"))?;
            plan
        };
        let total = plan.total();
        if total == 0 {
            self.finish_sweep(key, &plan, &Tally::default()).await?;
            return Ok(Outcome {
                key: key.to_owned(),
                status: Status::Succeeded,
                code: None,
                message: "no target account to sweep".into(),
                transient: false,
            });
        }
        let started = Utc::now();
        if let Err(e) = self.queue_places(key, &plan).await {
            return self
                .finish_failed(
                    &mut record,
                    format!("cannot queue the sweep's places: {e}"),
                    is_transient(&e),
                )
                .await;
        }
        let seen = record.updated_at;
        let now = Utc::now();
        record.steps.push(Step {
            name: "queue places".into(),
            status: StepStatus::Done,
            detail: format!(
                "{total} places ({} accounts x {} Regions) queued, {} swept at once",
                plan.accounts.len(),
                plan.regions.len(),
                self.settings.playbooks.sweep.concurrency
            ),
            prior: Value::Null,
            new: json!({ "places": total }),
            started_at: started,
            finished_at: now,
        });
        record.updated_at = now;
        // The places may all be done already: then the summary stands, and this step is left out.
        self.ledger
            .save_if_unchanged(&record, seen)
            .await
            .map_err(ledger_error("cannot record the queued places"))?;
        Ok(Outcome {
            key: key.to_owned(),
            status: Status::InProgress,
            code: Some("queued".into()),
            message: format!(
                "{total} places queued; each is swept under its own record, and this sweep's record sums them up when the last is done"
            ),
            transient: false,
        })
    }

    /// One message per place, in batches of ten, a few batches at once.
    async fn queue_places(&self, key: &str, plan: &SweepPlan) -> Result<(), CallError> {
        let bodies: Vec<String> = plan
            .places()
            .map(|(account, region)| {
                json!(SweepPlaceMessage {
                    version: MESSAGE_VERSION.into(),
                    sweep: key.to_owned(),
                    account: account.to_owned(),
                    region: region.to_owned(),
                })
                .to_string()
            })
            .collect();
        let sent: Vec<Result<(), CallError>> = futures::stream::iter(bodies.chunks(10))
            .map(|batch| self.send_places(batch))
            .buffer_unordered(BATCHES_AT_ONCE)
            .collect()
            .await;
        sent.into_iter().collect()
    }

    /// SQS may take part of a batch and fail the rest: what failed is sent again, twice at most.
    async fn send_places(&self, bodies: &[String]) -> Result<(), CallError> {
        let mut left: Vec<usize> = (0..bodies.len()).collect();
        let mut why = String::new();
        for _ in 0..3 {
            let entries = left
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CallError {
                    call: "sqs:SendMessageBatch".into(),
                    failure: AwsFailure {
                        code: None,
                        message: e.to_string(),
                    },
                })?;
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.settings.sweep_queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .described("sqs:SendMessageBatch")?;
            let failed: HashSet<&str> = out
                .failed()
                .iter()
                .map(aws_sdk_sqs::types::BatchResultErrorEntry::id)
                .collect();
            if let Some(f) = out.failed().first() {
                why = format!("{}: {}", f.code(), f.message().unwrap_or_default());
            }
            left.retain(|i| failed.contains(i.to_string().as_str()));
            if left.is_empty() {
                return Ok(());
            }
        }
        Err(CallError {
            call: "sqs:SendMessageBatch".into(),
            failure: AwsFailure {
                code: Some("Quell.PlacesNotQueued".into()),
                message: format!(
                    "{} of {} places not taken by the sweep queue after three tries ({why})",
                    left.len(),
                    bodies.len()
                ),
            },
        })
    }

    /// One place of a sweep, from the sweep queue. The message only names the sweep and the
    /// place: what to do there, and for whom, is read from the sweep's record, and a place its
    /// plan does not list is not swept.
    pub(super) async fn sweep_place_delivery(
        &self,
        q: &QueueDelivery,
    ) -> Result<Outcome, ResponderError> {
        let ignore = |message: String| Ok(Outcome::ignored(q, message));
        let m = match serde_json::from_str::<SweepPlaceMessage>(&q.body) {
            Ok(m) if m.version == MESSAGE_VERSION => m,
            _ => return ignore("not a place of a sweep".into()),
        };
        let parent = self
            .ledger
            .get(&m.sweep)
            .await
            .map_err(ledger_error(&format!("cannot read sweep {}", m.sweep)))?;
        let Some(parent) = parent.filter(|p| p.action == Action::Sweep) else {
            return ignore(format!("no sweep {} in the ledger", m.sweep));
        };
        let Some(plan) = parent.sweep_plan.as_ref() else {
            return ignore(format!("sweep {} has recorded no places", m.sweep));
        };
        let Some(index) = plan.index_of(&m.account, &m.region) else {
            return ignore(format!(
                "{} in {} is not a place of sweep {}",
                m.account, m.region, m.sweep
            ));
        };
        let key = place_key(&parent.key, &m.account, &m.region);
        let mut fresh = Record::new(key.clone(), Utc::now(), &q.message_id);
        fresh.request_id = Some(parent.key.clone());
        fresh.action = Action::Sweep;
        fresh.options = parent.options.clone();
        fresh.entity_kind = Some("sweep place".into());
        fresh.account = Some(m.account.clone());
        fresh.requester.clone_from(&parent.requester);
        fresh.caller.clone_from(&parent.caller);
        fresh.reason = Some(format!(
            "sweep {}: {} in {}",
            parent.key, m.account, m.region
        ));
        let claim = self
            .ledger
            .claim(fresh, Utc::now())
            .await
            .map_err(ledger_error(&format!("cannot claim {key} in the ledger")))?;
        if let Some(held) = self.held_elsewhere(&claim, &q.message_id) {
            return Ok(held);
        }
        let mut record = match claim {
            Claim::Fresh(r) | Claim::Resumed(r) => r,
            // Swept before: counted again, which counts it once (the delivery may have ended
            // between the record and the count).
            Claim::Finished(r) => return self.count_place(&parent, index, &r).await,
            Claim::Busy(r) => {
                return Ok(Outcome {
                    key: r.key,
                    status: r.status,
                    code: Some("duplicate".into()),
                    message: "another delivery is sweeping this place".into(),
                    transient: false,
                })
            }
        };
        let started = Utc::now();
        let run = SweepRun {
            key: &parent.key,
            message_id: &q.message_id,
            options: &parent.options,
            bucket_region: plan.regions.first().map(String::as_str),
            source: Source::Sweep {
                sweep: parent.key.clone(),
            },
            public_only: false,
            caller: parent.caller.as_ref(),
        };
        let place = self
            .sweep_place(m.account.clone(), m.region.clone(), &run)
            .await;
        let step = place.step(started);
        let now = Utc::now();
        record.updated_at = now;
        record.error.clone_from(&place.error);
        record.status = match (&place.error, step.status) {
            (Some(_), _) => Status::Failed,
            (None, StepStatus::Skipped) => Status::Skipped,
            (None, _) => Status::Succeeded,
        };
        let detail = step.detail.clone();
        record.steps.push(step);
        if place.error.is_some() && place.transient && q.receive_count < PLACE_ATTEMPTS {
            self.ledger
                .save(&record)
                .await
                .map_err(ledger_error("cannot record the place"))?;
            return Ok(Outcome {
                key,
                status: Status::Failed,
                code: None,
                message: format!("{detail}; tried again"),
                transient: true,
            });
        }
        record.finished_at = Some(now);
        self.ledger
            .save(&record)
            .await
            .map_err(ledger_error("cannot record the place"))?;
        self.count_place(&parent, index, &record).await
    }

    /// Counts a place that ended into its sweep, and sums the sweep up when it was the last.
    async fn count_place(
        &self,
        parent: &Record,
        index: usize,
        place: &Record,
    ) -> Result<Outcome, ResponderError> {
        let tally = self
            .ledger
            .count_place(&parent.key, index, &tally_of(place))
            .await
            .map_err(ledger_error(&format!(
                "cannot count {} into its sweep",
                place.key
            )))?;
        if let Some(plan) = &parent.sweep_plan {
            if tally.done >= plan.total() as u64 {
                self.finish_sweep(&parent.key, plan, &tally).await?;
            }
        }
        Ok(Outcome {
            key: place.key.clone(),
            status: place.status,
            code: None,
            message: place
                .steps
                .last()
                .map(|s| s.detail.clone())
                .unwrap_or_default(),
            transient: false,
        })
    }

    /// Writes the sweep's summary from its tally, once: a sweep no longer in progress is left as
    /// it is.
    async fn finish_sweep(
        &self,
        key: &str,
        plan: &SweepPlan,
        tally: &Tally,
    ) -> Result<(), ResponderError> {
        for _ in 0..3 {
            let Some(mut record) = self
                .ledger
                .get(key)
                .await
                .map_err(ledger_error(&format!("cannot read sweep {key}")))?
            else {
                return Ok(());
            };
            if record.status != Status::InProgress {
                return Ok(());
            }
            let seen = record.updated_at;
            let summary = summary(plan, tally);
            let failed = tally.failed > 0;
            let now = Utc::now();
            record.steps.push(Step {
                name: "places".into(),
                status: if failed {
                    StepStatus::Failed
                } else {
                    StepStatus::Done
                },
                detail: summary.clone(),
                prior: Value::Null,
                new: json!(tally),
                started_at: record.received_at,
                finished_at: now,
            });
            record.status = if failed {
                Status::Failed
            } else {
                Status::Succeeded
            };
            if failed {
                record.error = Some(summary);
            } else {
                record.reason = Some(format!(
                    "{}; {summary}",
                    record.reason.clone().unwrap_or_default()
                ));
            }
            record.finished_at = Some(now);
            record.updated_at = now;
            let saved = self
                .ledger
                .save_if_unchanged(&record, seen)
                .await
                .map_err(ledger_error("cannot record the sweep's summary"))?;
            if saved {
                if failed {
                    self.audit_or_log(AuditEvent::Failed, &mut record).await;
                    self.dead_letter(&record).await;
                } else {
                    self.audit_or_log(AuditEvent::Succeeded, &mut record).await;
                }
                return Ok(());
            }
        }
        Err(ResponderError::Aws(format!(
            "sweep {key} changed under three attempts to sum it up; the place is delivered again and sums it up then"
        )))
    }
}

/// What one place's record adds to its sweep's tally (its last step says what it found).
fn tally_of(place: &Record) -> Tally {
    let new = place.steps.last().map(|s| &s.new);
    let list = |k: &str| {
        new.and_then(|n| n[k].as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let count = |k: &str, ended: fn(&str) -> bool| {
        list(k)
            .iter()
            .filter(|e| e["outcome"].as_str().is_some_and(ended))
            .count() as u64
    };
    Tally {
        done: 1,
        failed: u64::from(place.status == Status::Failed),
        open_found: list("open_groups").len() as u64,
        open_fixed: count("open_groups", |o| o == "fixed"),
        exposed_found: list("exposed").len() as u64,
        exposed_fixed: count("exposed", |o| o.starts_with("succeeded")),
        failed_places: Vec::new(),
    }
}

fn summary(plan: &SweepPlan, t: &Tally) -> String {
    let mut text = format!(
        "{} places ({} accounts x {} Regions) swept: {} open groups found, {} fixed; {} public or unencrypted buckets and snapshots found, {} fixed; {} places not swept",
        plan.total(),
        plan.accounts.len(),
        plan.regions.len(),
        t.open_found,
        t.open_fixed,
        t.exposed_found,
        t.exposed_fixed,
        t.failed
    );
    if !t.failed_places.is_empty() {
        let named: Vec<String> = t
            .failed_places
            .iter()
            .take(FAILED_PLACES_NAMED)
            .filter_map(|&i| plan.place(i))
            .map(|(a, r)| format!("{a} {r}"))
            .collect();
        let _ = write!(text, ": {}", named.join(", "));
        if t.failed_places.len() > FAILED_PLACES_NAMED {
            let _ = write!(
                text,
                " and {} more",
                t.failed_places.len() - FAILED_PLACES_NAMED
            );
        }
        text.push_str(" (each place's record says why)");
    }
    text
}
