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

/// A request still marked in progress after this long was cut off (Lambda's limit is 15 minutes)
/// and may be taken up again.
pub const STALE_AFTER_MINUTES: i64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Succeeded,
    Failed,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The request id, or `delivery:<SNS message id>` for a delivery refused before it could be
    /// trusted as a request.
    pub key: String,
    pub request_id: Option<String>,
    pub status: Status,
    pub entity: Option<String>,
    pub entity_kind: Option<String>,
    pub account: Option<String>,
    pub requester: Option<String>,
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
}

impl Record {
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
#[derive(Debug)]
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
}

impl Ledger {
    pub fn new(client: Client, table: &str) -> Ledger {
        Ledger {
            client,
            table: table.to_owned(),
        }
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
        for _ in 0..2 {
            let Some(existing) = self.get(&fresh.key).await? else {
                match self.put(&fresh, Condition::Absent).await {
                    Ok(()) => return Ok(Claim::Fresh(fresh)),
                    Err(e) if e.is_code("ConditionalCheckFailedException") => continue,
                    Err(e) => return Err(e),
                }
            };
            let stale = existing.updated_at + Duration::minutes(STALE_AFTER_MINUTES) < now;
            match existing.status {
                Status::Succeeded | Status::Rejected => return Ok(Claim::Finished(existing)),
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
                        // Someone else resumed it first: read again.
                        Err(e) if e.is_code("ConditionalCheckFailedException") => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let existing = self.get(&fresh.key).await?;
        Ok(existing.map_or(Claim::Fresh(fresh), Claim::Busy))
    }

    /// Writes the record as it is now (the claimant is the only writer of its request).
    pub async fn save(&self, record: &Record) -> Result<(), CallError> {
        self.put(record, Condition::None).await
    }

    /// Records a refused delivery, unless one is already recorded under the same key.
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
