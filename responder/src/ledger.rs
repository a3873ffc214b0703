//! The ledger: one DynamoDB item per request, holding everything an analyst or a release needs:
//! who asked, what, every step with the state before and after, and how it ended.
//!
//! The item keeps a few top-level attributes for conditions and queries and the full record as one
//! JSON document, so the record's shape can grow without a table migration.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::aws_error::{AwsFailure, CallError, Described};
use crate::contract::{Action, Options};

/// A request still marked in progress after this long was cut off (Lambda's limit is 15 minutes)
/// and may be taken up again, when the function's own timeout is not known.
pub const STALE_AFTER_MINUTES: i64 = 16;

/// Beyond the function's timeout, how long before a record in progress counts as cut off: room
/// for clocks that differ a little between execution environments.
pub const LEASE_MARGIN_SECONDS: i64 = 30;

/// The table's time-to-live attribute (epoch seconds): DynamoDB deletes an item some time after
/// it. Only lock and counter items carry it, so they do not pile up; a record never does, because
/// records are evidence.
pub const EXPIRES_ATTRIBUTE: &str = "expires_ttl";

/// How long after its own expiry a lock or counter item is left for DynamoDB to delete.
const KEPT_AFTER_EXPIRY: Duration = Duration::days(1);

fn ttl(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N((at + KEPT_AFTER_EXPIRY).timestamp().to_string())
}

/// Global secondary index on `entity` (hash) and `received_at` (range).
pub const ENTITY_INDEX: &str = "entity-index";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Succeeded,
    Failed,
    Rejected,
    /// Nothing done, on purpose (an exemption, notify mode, nothing exposed); the record says why.
    Skipped,
    /// A playbook in approve mode found something: `pending` says what, and `quell approve` or
    /// `quell deny` decides.
    AwaitingApproval,
    /// Someone ran `quell deny` on a pending fix: nothing more will be done.
    Denied,
    /// A run of a declared playbook holds for a timer, an approval or an event.
    Waiting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Skipped => "skipped",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Denied => "denied",
            Status::Waiting => "waiting",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Done,
    /// Nothing to do (for example no console login to delete); recorded so the record is complete.
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    pub detail: String,
    /// State before the step, as read from AWS: what a release restores.
    pub prior: serde_json::Value,
    /// State after the step.
    pub new: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Why a request or a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable, machine-readable reason, e.g. `external_id_wrong`.
    pub code: String,
    pub message: String,
}

/// Prefix of the entity locks' keys: the only items the responder may delete (the security
/// stack's policy allows DeleteItem on keys with this prefix alone).
pub const LOCK_PREFIX: &str = "lock:";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The request id, or `delivery:<SNS message id>` for a delivery refused before it could be
    /// trusted as a request.
    pub key: String,
    pub request_id: Option<String>,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub options: Options,
    pub status: Status,
    pub entity: Option<String>,
    pub entity_kind: Option<String>,
    pub account: Option<String>,
    pub requester: Option<String>,
    /// Who asked, as far as AWS vouches for it (`requester` is what the request says). For a fix
    /// a sweep found: who asked for the sweep, who may then not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<crate::authorization::Caller>,
    pub reason: Option<String>,
    /// SNS message ids of every delivery of this request, first one first.
    pub message_ids: Vec<String>,
    pub attempts: u32,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    pub rejection: Option<Rejection>,
    /// EC2: when the second phase (isolation) is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_due_at: Option<DateTime<Utc>>,
    /// A containment: the release request that undid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// A release: the containment request it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<String>,
    /// A remediation awaiting approval: the trigger to act on when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<crate::playbooks::event::Trigger>,
    /// An approval or denial: who decided, and the request that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Audit messages that could not be published after retries: which event, and why. The
    /// record is the evidence; the audit topic is only the news.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_failures: Vec<String>,
    /// A run of a declared playbook: where it stands, pinned to its playbook's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<quell_playbook::run::Run>>,
    /// A sweep: the places it covers, fixed when they were queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_plan: Option<SweepPlan>,
    /// A remediation: when its event says it happened (reported, never acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_at: Option<DateTime<Utc>>,
}

/// The places of one sweep: every account as the organization listed it when the sweep began,
/// in every Region. A place is known by its index, `account * regions + region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPlan {
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
}

impl SweepPlan {
    pub fn total(&self) -> usize {
        self.accounts.len() * self.regions.len()
    }

    /// Every place, in index order.
    pub fn places(&self) -> impl Iterator<Item = (&str, &str)> {
        self.accounts
            .iter()
            .flat_map(move |a| self.regions.iter().map(move |r| (a.as_str(), r.as_str())))
    }

    /// The place's index, when the plan covers it.
    pub fn index_of(&self, account: &str, region: &str) -> Option<usize> {
        let a = self.accounts.iter().position(|x| x == account)?;
        let r = self.regions.iter().position(|x| x == region)?;
        Some(a * self.regions.len() + r)
    }

    /// The place at `index`.
    pub fn place(&self, index: usize) -> Option<(&str, &str)> {
        let n = self.regions.len();
        let account = self.accounts.get(index.checked_div(n)?)?;
        Some((account.as_str(), self.regions[index % n].as_str()))
    }
}

/// The key of one place's record within a sweep.
pub fn place_key(sweep: &str, account: &str, region: &str) -> String {
    format!("{sweep}/{account}/{region}")
}

/// Prefix of a sweep's tally: an item of its own beside the sweep's record, which each place
/// counts into once, atomically, however many invocations finish places at the same moment.
pub const TALLY_PREFIX: &str = "tally:";

/// What the places of a sweep came to, counted once per place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Places counted, and of those, places that could not be swept.
    pub done: u64,
    pub failed: u64,
    /// Groups open to the world on a sensitive port, and of those, fixed.
    pub open_found: u64,
    pub open_fixed: u64,
    /// Public buckets, public or unencrypted snapshots, and of those, fixed.
    pub exposed_found: u64,
    pub exposed_fixed: u64,
    /// Indexes of the places that could not be swept (`SweepPlan::place`).
    pub failed_places: Vec<usize>,
}

impl Record {
    /// A record of a request before anything happened to it.
    pub fn new(key: String, now: DateTime<Utc>, message_id: &str) -> Record {
        Record {
            key,
            request_id: None,
            action: Action::Contain,
            options: Options::default(),
            status: Status::InProgress,
            entity: None,
            entity_kind: None,
            account: None,
            requester: None,
            caller: None,
            reason: None,
            message_ids: vec![message_id.to_owned()],
            attempts: 1,
            received_at: now,
            updated_at: now,
            finished_at: None,
            steps: Vec::new(),
            error: None,
            rejection: None,
            isolation_due_at: None,
            released_by: None,
            pending: None,
            decided_by: None,
            releases: None,
            audit_failures: Vec::new(),
            run: None,
            sweep_plan: None,
            event_at: None,
        }
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.name == name)
    }

    /// Steps that completed (done or skipped): a resumed request does not repeat them.
    pub fn completed(&self, name: &str) -> bool {
        self.step(name)
            .is_some_and(|s| matches!(s.status, StepStatus::Done | StepStatus::Skipped))
    }
}

/// What claiming a request in the ledger found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// First time this request is seen: it is ours.
    Fresh(Record),
    /// Seen before and left failed or cut off: it is ours again, with the earlier steps kept.
    Resumed(Record),
    /// Another delivery is working on it right now.
    Busy(Record),
    /// Already finished.
    Finished(Record),
}

#[derive(Debug, Clone)]
pub struct Ledger {
    client: Client,
    table: String,
    /// How long a claim holds: a record in progress is taken over only after it.
    lease: Duration,
}

impl Ledger {
    pub fn new(client: Client, table: &str) -> Ledger {
        Ledger {
            client,
            table: table.to_owned(),
            lease: Duration::minutes(STALE_AFTER_MINUTES),
        }
    }

    /// Claims held for the function's timeout and a margin: an invocation cannot outlive its
    /// timeout, so a record in progress for longer was left by one that died, and the platform's
    /// retry takes it over, never earlier.
    #[must_use]
    pub fn with_function_timeout(mut self, seconds: u32) -> Ledger {
        self.lease = Duration::seconds(i64::from(seconds) + LEASE_MARGIN_SECONDS);
        self
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>, CallError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("request_id", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .described("dynamodb:GetItem")?;
        out.item().map(decode).transpose()
    }

    /// Takes ownership of a request, or says who has it.
    pub async fn claim(&self, fresh: Record, now: DateTime<Utc>) -> Result<Claim, CallError> {
        // Two rounds at most: a lost race for a fresh key or for a resume is settled by reading again.
        // A write whose answer was lost (the connection cut after DynamoDB made it) fails its
        // condition when the SDK tries it again: reading back exactly what was written says the
        // claim is this caller's, not another's.
        // Most requests are new: written at once, and read only when the key is already taken.
        match self.put(&fresh, Condition::Absent).await {
            Ok(()) => return Ok(Claim::Fresh(fresh)),
            Err(e) if e.is_code("ConditionalCheckFailedException") => {}
            Err(e) => return Err(e),
        }
        let mut written: Option<Claim> = Some(Claim::Fresh(fresh.clone()));
        for _ in 0..2 {
            let existing = self.get(&fresh.key).await?;
            if let Some(mine) = Self::mine(written.as_ref(), existing.as_ref()) {
                return Ok(mine);
            }
            let Some(existing) = existing else {
                match self.put(&fresh, Condition::Absent).await {
                    Ok(()) => return Ok(Claim::Fresh(fresh)),
                    Err(e) if e.is_code("ConditionalCheckFailedException") => {
                        written = Some(Claim::Fresh(fresh.clone()));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let stale = existing.updated_at + self.lease < now;
            match existing.status {
                Status::Succeeded
                | Status::Rejected
                | Status::Skipped
                | Status::AwaitingApproval
                | Status::Waiting
                | Status::Denied => return Ok(Claim::Finished(existing)),
                Status::InProgress if !stale => return Ok(Claim::Busy(existing)),
                Status::InProgress | Status::Failed => {
                    let mut resumed = existing.clone();
                    resumed.status = Status::InProgress;
                    resumed.attempts += 1;
                    resumed.error = None;
                    resumed.finished_at = None;
                    resumed.updated_at = now;
                    resumed
                        .message_ids
                        .extend(fresh.message_ids.iter().cloned());
                    match self
                        .put(&resumed, Condition::UpdatedAt(existing.updated_at))
                        .await
                    {
                        Ok(()) => return Ok(Claim::Resumed(resumed)),
                        // Someone else resumed it first, or this write's answer was lost: read again.
                        Err(e) if e.is_code("ConditionalCheckFailedException") => {
                            written = Some(Claim::Resumed(resumed));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let existing = self.get(&fresh.key).await?;
        Ok(Self::mine(written.as_ref(), existing.as_ref())
            .unwrap_or_else(|| existing.map_or(Claim::Fresh(fresh), Claim::Busy)))
    }

    /// The claim this caller wrote, when the record read back is exactly it: its own write, whose
    /// answer was lost, rather than another's.
    fn mine(written: Option<&Claim>, found: Option<&Record>) -> Option<Claim> {
        match (written, found) {
            (Some(claim @ (Claim::Fresh(mine) | Claim::Resumed(mine))), Some(found))
                if mine == found =>
            {
                Some(claim.clone())
            }
            _ => None,
        }
    }

    /// Every record about `entity`, newest first.
    pub async fn for_entity(&self, entity: &str) -> Result<Vec<Record>, CallError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ENTITY_INDEX)
            .key_condition_expression("entity = :e")
            .expression_attribute_values(":e", AttributeValue::S(entity.to_owned()))
            .scan_index_forward(false)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.described("dynamodb:Query")?;
            for item in page.items() {
                records.push(decode(item)?);
            }
        }
        Ok(records)
    }

    /// Every record, newest first (for `quell history` without an entity).
    pub async fn recent(&self, limit: usize) -> Result<Vec<Record>, CallError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.described("dynamodb:Scan")?;
            for item in page.items() {
                if item.contains_key("record") {
                    records.push(decode(item)?);
                }
            }
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.received_at));
        records.truncate(limit);
        Ok(records)
    }

    /// Every remediation waiting for `quell approve` or `quell deny`, oldest first.
    pub async fn awaiting_approval(&self) -> Result<Vec<Record>, CallError> {
        let mut records = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("#s = :waiting")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(
                ":waiting",
                AttributeValue::S(Status::AwaitingApproval.as_str().to_owned()),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.described("dynamodb:Scan")?.items() {
                records.push(decode(item)?);
            }
        }
        records.sort_by_key(|r| r.received_at);
        Ok(records)
    }

    /// Takes the entity's lock for `owner` until `expires`. Returns the current holder when taken.
    pub async fn lock(
        &self,
        entity: &str,
        owner: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Option<String>, CallError> {
        let key = format!("{LOCK_PREFIX}{entity}");
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("request_id", AttributeValue::S(key.clone()))
            .item("owner", AttributeValue::S(owner.to_owned()))
            .item("expires_at", AttributeValue::S(expires.to_rfc3339()))
            .item(EXPIRES_ATTRIBUTE, ttl(expires))
            .condition_expression(
                "attribute_not_exists(request_id) OR #o = :me OR expires_at < :now",
            )
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":now", AttributeValue::S(now.to_rfc3339()))
            .send()
            .await
            .described("dynamodb:PutItem (lock)");
        match put {
            Ok(_) => Ok(None),
            Err(e) if e.is_code("ConditionalCheckFailedException") => {
                let held = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("request_id", AttributeValue::S(key))
                    .consistent_read(true)
                    .send()
                    .await
                    .described("dynamodb:GetItem (lock)")?;
                Ok(Some(
                    held.item()
                        .and_then(|i| i.get("owner"))
                        .and_then(|o| o.as_s().ok())
                        .cloned()
                        .unwrap_or_else(|| "another request".into()),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Who holds the entity's lock now, if anyone (an expired lock is held by no one).
    pub async fn holder(
        &self,
        entity: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, CallError> {
        let held = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "request_id",
                AttributeValue::S(format!("{LOCK_PREFIX}{entity}")),
            )
            .consistent_read(true)
            .send()
            .await
            .described("dynamodb:GetItem (lock)")?;
        let text = |k: &str| {
            held.item()
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_s().ok())
                .cloned()
        };
        let live = text("expires_at")
            .and_then(|e| DateTime::parse_from_rfc3339(&e).ok())
            .is_some_and(|e| e > now);
        Ok(text("owner").filter(|_| live))
    }

    pub async fn unlock(&self, entity: &str, owner: &str) -> Result<(), CallError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(
                "request_id",
                AttributeValue::S(format!("{LOCK_PREFIX}{entity}")),
            )
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(owner.to_owned()))
            .send()
            .await
            .described("dynamodb:DeleteItem (lock)");
        match r {
            Err(e) if !e.is_code("ConditionalCheckFailedException") => Err(e),
            _ => Ok(()),
        }
    }

    /// Counts one more use of `key` (a playbook's runs in one hour), unless `limit` are counted
    /// already: `false` then. The counter is an item of its own under the lock prefix, written
    /// with a condition on the count read, so two responders counting at once never both take
    /// the last one.
    pub async fn count_up(&self, key: &str, limit: u64) -> Result<bool, CallError> {
        let key = format!("{LOCK_PREFIX}{key}");
        for _ in 0..8 {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("request_id", AttributeValue::S(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .described("dynamodb:GetItem (counter)")?;
            let seen = out
                .item()
                .and_then(|i| i.get("updated_at"))
                .and_then(|v| v.as_s().ok())
                .cloned();
            let count: u64 = seen.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
            if count >= limit {
                return Ok(false);
            }
            // The count is also the version the next writer's condition names.
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("request_id", AttributeValue::S(key.clone()))
                .item("updated_at", AttributeValue::S((count + 1).to_string()))
                // A counter's key names its hour: it is of no use a day later.
                .item(EXPIRES_ATTRIBUTE, ttl(Utc::now()));
            let put = match seen {
                Some(seen) => put
                    .condition_expression("updated_at = :seen")
                    .expression_attribute_values(":seen", AttributeValue::S(seen)),
                None => put.condition_expression("attribute_not_exists(request_id)"),
            };
            match put.send().await.described("dynamodb:PutItem (counter)") {
                Ok(_) => return Ok(true),
                Err(e) if e.is_code("ConditionalCheckFailedException") => {}
                Err(e) => return Err(e),
            }
        }
        Err(CallError {
            call: "dynamodb:PutItem (counter)".into(),
            failure: AwsFailure {
                code: Some("Quell.Contended".into()),
                message: format!("{key} changed under eight attempts to count on it"),
            },
        })
    }

    /// Counts the place at `index` into the sweep's tally with what it found, unless it was
    /// counted already (a place delivered again after its count): the tally either way.
    pub async fn count_place(
        &self,
        sweep: &str,
        index: usize,
        place: &Tally,
    ) -> Result<Tally, CallError> {
        let number = |n: u64| AttributeValue::N(n.to_string());
        let index_set = AttributeValue::Ns(vec![index.to_string()]);
        // Places are counted as members of sets, not by adding to a number: the set's size is
        // exact however the writes interleave (the local emulator's number ADD loses increments
        // under concurrent writers, which AWS's does not), and a place already in it is refused.
        let mut adds = vec![
            "counted :place",
            "open_found :open_found",
            "open_fixed :open_fixed",
            "exposed_found :exposed_found",
            "exposed_fixed :exposed_fixed",
        ];
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                "request_id",
                AttributeValue::S(format!("{TALLY_PREFIX}{sweep}")),
            )
            .condition_expression("attribute_not_exists(counted) OR NOT contains(counted, :index)")
            .expression_attribute_values(":index", AttributeValue::N(index.to_string()))
            .expression_attribute_values(":place", index_set.clone())
            .expression_attribute_values(":open_found", number(place.open_found))
            .expression_attribute_values(":open_fixed", number(place.open_fixed))
            .expression_attribute_values(":exposed_found", number(place.exposed_found))
            .expression_attribute_values(":exposed_fixed", number(place.exposed_fixed))
            // Kept a month after the sweep: its record holds the summary for good.
            .expression_attribute_values(":expires", ttl(Utc::now() + Duration::days(30)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        if place.failed > 0 {
            adds.push("failed_places :place");
        }
        update = update.update_expression(format!(
            "ADD {} SET {EXPIRES_ATTRIBUTE} = :expires",
            adds.join(", ")
        ));
        match update.send().await.described("dynamodb:UpdateItem (tally)") {
            Ok(out) => Ok(out.attributes().map(tally_of).unwrap_or_default()),
            Err(e) if e.is_code("ConditionalCheckFailedException") => {
                Ok(self.tally(sweep).await?.unwrap_or_default())
            }
            Err(e) => Err(e),
        }
    }

    /// The sweep's tally so far, if any place was counted.
    pub async fn tally(&self, sweep: &str) -> Result<Option<Tally>, CallError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "request_id",
                AttributeValue::S(format!("{TALLY_PREFIX}{sweep}")),
            )
            .consistent_read(true)
            .send()
            .await
            .described("dynamodb:GetItem (tally)")?;
        Ok(out.item().map(tally_of))
    }

    /// The records under `keys` that exist, in no particular order (a sweep's places).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Record>, CallError> {
        let mut records = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut wanted: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|k| HashMap::from([("request_id".to_owned(), AttributeValue::S(k.clone()))]))
                .collect();
            // DynamoDB may hand back part of a batch (UnprocessedKeys): asked again until none is left.
            for _ in 0..8 {
                if wanted.is_empty() {
                    break;
                }
                let keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| CallError {
                        call: "dynamodb:BatchGetItem".into(),
                        failure: AwsFailure {
                            code: None,
                            message: e.to_string(),
                        },
                    })?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .described("dynamodb:BatchGetItem")?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    records.push(decode(item)?);
                }
                if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    wanted = left.keys().to_vec();
                }
            }
        }
        Ok(records)
    }

    /// Writes the record as it is now (the claimant is the only writer of its request).
    pub async fn save(&self, record: &Record) -> Result<(), CallError> {
        self.put(record, Condition::None).await
    }

    /// Records a refused delivery, unless one is already recorded under the same key.
    /// Saves `record` only if nobody saved it since `seen` (its `updated_at` when read): `false`
    /// when someone did, and this caller must not act on it.
    pub async fn save_if_unchanged(
        &self,
        record: &Record,
        seen: DateTime<Utc>,
    ) -> Result<bool, CallError> {
        match self.put(record, Condition::UpdatedAt(seen)).await {
            Ok(()) => Ok(true),
            // This very write, made but its answer lost and the SDK's retry refused, or another's.
            Err(e) if e.is_code("ConditionalCheckFailedException") => {
                Ok(self.get(&record.key).await?.as_ref() == Some(record))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn record_rejection(&self, record: &Record) -> Result<(), CallError> {
        match self.put(record, Condition::Absent).await {
            Err(e) if e.is_code("ConditionalCheckFailedException") => Ok(()),
            other => other,
        }
    }

    async fn put(&self, record: &Record, condition: Condition) -> Result<(), CallError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(record)?));
        match condition {
            Condition::None => {}
            Condition::Absent => {
                req = req.condition_expression("attribute_not_exists(request_id)");
            }
            Condition::UpdatedAt(seen) => {
                req = req
                    .condition_expression("updated_at = :seen")
                    .expression_attribute_values(":seen", AttributeValue::S(seen.to_rfc3339()));
            }
        }
        req.send().await.described("dynamodb:PutItem")?;
        Ok(())
    }
}

enum Condition {
    None,
    Absent,
    UpdatedAt(DateTime<Utc>),
}

fn encode(record: &Record) -> Result<HashMap<String, AttributeValue>, CallError> {
    let document = serde_json::to_string(record).map_err(|e| CallError {
        call: "ledger encode".into(),
        failure: AwsFailure {
            code: None,
            message: e.to_string(),
        },
    })?;
    let mut item = HashMap::from([
        (
            "request_id".to_owned(),
            AttributeValue::S(record.key.clone()),
        ),
        (
            "status".to_owned(),
            AttributeValue::S(record.status.as_str().to_owned()),
        ),
        (
            "updated_at".to_owned(),
            AttributeValue::S(record.updated_at.to_rfc3339()),
        ),
        (
            "received_at".to_owned(),
            AttributeValue::S(record.received_at.to_rfc3339()),
        ),
        ("record".to_owned(), AttributeValue::S(document)),
    ]);
    if let Some(entity) = &record.entity {
        item.insert("entity".to_owned(), AttributeValue::S(entity.clone()));
    }
    Ok(item)
}

fn tally_of(item: &HashMap<String, AttributeValue>) -> Tally {
    let number = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut failed_places: Vec<usize> = item
        .get("failed_places")
        .and_then(|v| v.as_ns().ok())
        .map(|ns| ns.iter().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    failed_places.sort_unstable();
    let places = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_ns().ok())
            .map_or(0, |ns| ns.len() as u64)
    };
    Tally {
        done: places("counted"),
        failed: places("failed_places"),
        open_found: number("open_found"),
        open_fixed: number("open_fixed"),
        exposed_found: number("exposed_found"),
        exposed_fixed: number("exposed_fixed"),
        failed_places,
    }
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<Record, CallError> {
    let bad = |message: String| CallError {
        call: "ledger decode".into(),
        failure: AwsFailure {
            code: Some("Quell.LedgerRecord".into()),
            message,
        },
    };
    let document = item
        .get("record")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| bad("ledger item has no record document".into()))?;
    serde_json::from_str(document).map_err(|e| bad(format!("ledger record is not readable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweeps_places_are_counted_by_the_sets_they_are_in_not_by_a_number() {
        let ns = |v: &[&str]| AttributeValue::Ns(v.iter().map(|s| (*s).to_owned()).collect());
        // A number left behind by lost increments says 1 place; the sets say 3, one failed.
        let item = HashMap::from([
            ("counted".to_owned(), ns(&["0", "1", "2"])),
            ("failed_places".to_owned(), ns(&["2"])),
            ("done".to_owned(), AttributeValue::N("1".into())),
            ("open_found".to_owned(), AttributeValue::N("4".into())),
        ]);
        let tally = tally_of(&item);
        assert_eq!((tally.done, tally.failed), (3, 1));
        assert_eq!(tally.failed_places, [2]);
        assert_eq!(tally.open_found, 4);
        assert_eq!(tally_of(&HashMap::new()).done, 0);
    }
}
