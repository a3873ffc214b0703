//! One module per entity type: the steps that contain it, each reading the state it changes first
//! so the ledger holds what a release must restore.

pub mod function;
pub mod iam;
pub mod instance;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::aws_error::{AwsFailure, CallError};
use crate::clients::MemberClients;
use crate::contract::Options;
use crate::entity::Entity;
use crate::ledger::{Record, Step, StepStatus};

/// Step that schedules an EC2 instance's second phase; run by the engine, which owns the queue.
pub const SCHEDULE_ISOLATION: &str = "schedule_isolation";

/// An entity and a session in its account and Region: everything a step needs.
pub struct Target<'a> {
    pub entity: &'a Entity,
    pub clients: MemberClients,
    pub request_id: &'a str,
    pub name_prefix: &'a str,
    instance_facts: OnceCell<Option<instance::Facts>>,
    /// Quell's groups in an instance's Region, read beside the instance; `None` when that read
    /// failed (the steps then ask EC2 themselves).
    quell_groups: OnceCell<Option<Vec<aws_sdk_ec2::types::SecurityGroup>>>,
}

impl<'a> Target<'a> {
    pub fn new(
        entity: &'a Entity,
        clients: MemberClients,
        request_id: &'a str,
        name_prefix: &'a str,
    ) -> Target<'a> {
        Target {
            entity,
            clients,
            request_id,
            name_prefix,
            instance_facts: OnceCell::new(),
            quell_groups: OnceCell::new(),
        }
    }

    fn iam(&self) -> aws_sdk_iam::Client {
        self.clients.iam.clone()
    }

    fn lambda(&self) -> aws_sdk_lambda::Client {
        self.clients.lambda.clone()
    }

    fn ec2(&self) -> aws_sdk_ec2::Client {
        self.clients.ec2.clone()
    }

    fn principal(&self) -> Option<iam::Principal<'_>> {
        match self.entity {
            Entity::IamUser(who) => Some(iam::Principal {
                kind: iam::Kind::User,
                who,
            }),
            Entity::IamRole(who) => Some(iam::Principal {
                kind: iam::Kind::Role,
                who,
            }),
            _ => None,
        }
    }

    async fn facts(&self) -> Result<Option<&instance::Facts>, CallError> {
        let Entity::Instance(i) = self.entity else {
            return Ok(None);
        };
        let ec2 = self.ec2();
        let facts = self
            .instance_facts
            .get_or_try_init(|| instance::facts(&ec2, i))
            .await?;
        Ok(facts.as_ref())
    }

    fn instance_ctx<'b>(
        &'b self,
        ec2: &'b aws_sdk_ec2::Client,
        iam: &'b aws_sdk_iam::Client,
        i: &'b crate::entity::Instance,
    ) -> instance::Ctx<'b> {
        instance::Ctx {
            ec2,
            iam,
            instance: i,
            request_id: self.request_id,
            name_prefix: self.name_prefix,
            known_groups: self.quell_groups.get().and_then(Option::as_deref),
        }
    }

    /// The entity's ARN as AWS returns it (path and letter case as IAM stores them), read before
    /// anything is written; `None` when it does not exist. The roles an entity runs with are
    /// matched by the steps that write to them.
    pub async fn real_arn(&self) -> Result<Option<String>, CallError> {
        match self.entity {
            Entity::IamUser(_) | Entity::IamRole(_) => {
                self.principal()
                    .expect("an IAM entity")
                    .real_arn(&self.iam())
                    .await
            }
            Entity::Function(f) => function::real_arn(&self.lambda(), f).await,
            Entity::Instance(i) => {
                // The group the first step moves the instance into is looked up beside the
                // instance: that lookup needs no VPC to start, and saves the round trip after it.
                let ec2 = self.ec2();
                let (facts, _) = tokio::join!(
                    self.facts(),
                    self.quell_groups
                        .get_or_init(|| async { instance::quell_groups(&ec2).await.ok() })
                );
                Ok(facts?.map(|_| instance::instance_arn(i)))
            }
        }
    }

    /// The first (for most entities the only) phase's steps, in order.
    pub fn plan(&self, options: &Options) -> Vec<&'static str> {
        match self.entity {
            Entity::IamUser(_) => iam::USER_STEPS.to_vec(),
            Entity::IamRole(_) => iam::ROLE_STEPS.to_vec(),
            Entity::Function(_) => function::STEPS.to_vec(),
            Entity::Instance(_) => {
                let mut steps = instance::PHASE_ONE.to_vec();
                if options.snapshot {
                    steps.insert(steps.len() - 1, instance::SNAPSHOT_STEP);
                }
                steps
            }
        }
    }

    pub async fn run(
        &self,
        step: &str,
        now: DateTime<Utc>,
        protected: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StepOutcome, CallError> {
        match self.entity {
            Entity::IamUser(_) | Entity::IamRole(_) => {
                iam::run(
                    &self.iam(),
                    self.principal().expect("an IAM entity"),
                    step,
                    now,
                )
                .await
            }
            Entity::Function(f) => {
                function::run(&self.lambda(), &self.iam(), f, step, protected).await
            }
            Entity::Instance(i) => {
                let facts = self.facts().await?.ok_or_else(|| gone(self.entity))?;
                let (ec2, iam) = (self.ec2(), self.iam());
                instance::run(&self.instance_ctx(&ec2, &iam, i), facts, step, protected).await
            }
        }
    }

    /// An instance whose isolation did not complete after phase 1: its interfaces leave the
    /// all-open untracked group for their earlier groups. `None` for anything else.
    pub async fn leave_untracked(&self, record: &Record) -> Option<Result<StepOutcome, CallError>> {
        let Entity::Instance(i) = self.entity else {
            return None;
        };
        let phase_one = record.steps.iter().find(|s| {
            s.name == "untracked_groups" && s.status == crate::ledger::StepStatus::Done
        })?;
        let (ec2, iam) = (self.ec2(), self.iam());
        Some(instance::leave_untracked(&self.instance_ctx(&ec2, &iam, i), phase_one).await)
    }

    /// Reads the entity back; the problems found, none when contained as the record says.
    pub async fn verify(&self, record: &Record) -> Result<Vec<String>, CallError> {
        let done: Vec<&str> = record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Done)
            .map(|s| s.name.as_str())
            .collect();
        match self.entity {
            Entity::IamUser(_) | Entity::IamRole(_) => {
                iam::verify(&self.iam(), self.principal().expect("an IAM entity")).await
            }
            Entity::Function(f) => function::verify(&self.lambda(), &self.iam(), f, &done).await,
            Entity::Instance(i) => {
                let (ec2, iam) = (self.ec2(), self.iam());
                instance::verify(
                    &self.instance_ctx(&ec2, &iam, i),
                    record.completed("isolation_groups"),
                )
                .await
            }
        }
    }

    /// Undoes what `containment` recorded as done, newest step first.
    pub async fn release(
        &self,
        containment: &Record,
        options: &Options,
    ) -> Vec<(String, Result<StepOutcome, CallError>)> {
        let mut done: Vec<&Step> = containment
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Done)
            .collect();
        done.reverse();
        match self.entity {
            Entity::IamUser(_) | Entity::IamRole(_) => {
                iam::release(
                    &self.iam(),
                    self.principal().expect("an IAM entity"),
                    &done,
                    options.reactivate_keys,
                )
                .await
            }
            Entity::Function(f) => function::release(&self.lambda(), &self.iam(), f, &done).await,
            Entity::Instance(i) => {
                let (ec2, iam) = (self.ec2(), self.iam());
                instance::release(&self.instance_ctx(&ec2, &iam, i), &done).await
            }
        }
    }
}

fn gone(entity: &Entity) -> CallError {
    CallError {
        call: "read".into(),
        failure: AwsFailure {
            code: Some("Quell.Gone".into()),
            message: format!("{entity} no longer exists"),
        },
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub detail: String,
    pub prior: serde_json::Value,
    pub new: serde_json::Value,
}

impl StepOutcome {
    pub fn done(
        detail: impl Into<String>,
        prior: serde_json::Value,
        new: serde_json::Value,
    ) -> Self {
        StepOutcome {
            status: StepStatus::Done,
            detail: detail.into(),
            prior,
            new,
        }
    }

    pub fn skipped(detail: impl Into<String>, prior: serde_json::Value) -> Self {
        StepOutcome {
            status: StepStatus::Skipped,
            new: prior.clone(),
            detail: detail.into(),
            prior,
        }
    }
}

/// Name of the inline policy that denies sessions issued before containment. The IAM console's
/// "Revoke active sessions" uses the same name, so operators recognise it.
pub const REVOKE_POLICY_NAME: &str = "AWSRevokeOlderSessions";

pub fn deny_all_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/AWSDenyAll")
}

/// The `aws:TokenIssueTime` deny: every session issued before `cutoff` is refused.
pub fn revoke_older_sessions_policy(cutoff: &chrono::DateTime<chrono::Utc>) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "QuellRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}
        }]
    })
    .to_string()
}
