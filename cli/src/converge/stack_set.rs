//! One service-managed StackSet: read what is deployed, create it, and run its operations (update,
//! add, remove and retry stack instances) to their end, one at a time. An operation somebody else
//! started is waited for, never fought.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use aws_sdk_cloudformation::types::{
    AccountFilterType, AutoDeployment, CallAs, Capability, DeploymentTargets, ManagedExecution,
    Parameter, PermissionModels, RegionConcurrencyType, StackSetOperationPreferences,
    StackSetOperationStatus,
};
use aws_sdk_cloudformation::Client;
use quell_responder::aws_error::Described;
use serde::Serialize;

use crate::config::{ConcurrencyMode, OperationPreferences, RegionConcurrency};
use crate::printer::{Printer, Tone};
use crate::render::StackSetDefinition;

/// How many times a write is retried after OperationInProgressException before giving up.
const BUSY_RETRIES: usize = 20;

/// A stack instance as CloudFormation lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Instance {
    pub account: String,
    pub region: String,
    /// CURRENT, OUTDATED or INOPERABLE.
    pub status: String,
    /// What the last operation did to it: SUCCEEDED, FAILED, CANCELLED, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detailed_status: Option<String>,
    /// The OU the instance was deployed through (AWS reports it; the sandbox does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// IN_SYNC, DRIFTED, UNKNOWN or NOT_CHECKED, after drift detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

/// What StackSet drift detection found.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub operation_id: String,
    /// DRIFTED, IN_SYNC or NOT_CHECKED for the stack set as a whole.
    pub status: String,
    pub drifted_instances: Vec<Instance>,
    pub in_sync: usize,
    pub failed_checks: usize,
}

impl Instance {
    pub fn failed(&self) -> bool {
        self.status == "INOPERABLE"
            || matches!(
                self.detailed_status.as_deref(),
                Some("FAILED" | "FAILED_IMPORT" | "INOPERABLE")
            )
    }

    /// The status to show: the detailed one when CloudFormation gives it.
    pub fn shown_status(&self) -> &str {
        self.detailed_status.as_deref().unwrap_or(&self.status)
    }
}

/// A stack set as deployed.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub template: String,
    pub parameters: BTreeMap<String, String>,
    pub instances: Vec<Instance>,
    /// The OUs its operations have named, which auto-deployment follows; `None` where this is not
    /// known (the sandbox does not keep them).
    pub organizational_units: Option<BTreeSet<String>>,
}

/// Stack instances one operation creates, updates or deletes: accounts reached through one OU.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceCall {
    pub organizational_unit: String,
    /// Every account of the OU, including accounts that join it later (auto-deployment).
    pub whole_ou: bool,
    /// The accounts concerned (all of the OU's today when `whole_ou`).
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
}

impl InstanceCall {
    fn targets(&self) -> DeploymentTargets {
        let b = DeploymentTargets::builder().organizational_unit_ids(&self.organizational_unit);
        if self.whole_ou {
            b.build()
        } else {
            b.set_accounts(Some(self.accounts.clone()))
                .account_filter_type(AccountFilterType::Intersection)
                .build()
        }
    }

    pub fn describe(&self) -> String {
        let who = if self.whole_ou {
            format!(
                "OU {} ({} account{} today)",
                self.organizational_unit,
                self.accounts.len(),
                if self.accounts.len() == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "account{} {} (OU {})",
                if self.accounts.len() == 1 { "" } else { "s" },
                self.accounts.join(", "),
                self.organizational_unit
            )
        };
        format!("{who} in {}", self.regions.join(", "))
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub operation_id: String,
    pub status: String,
    /// Instances the operation left failed, with CloudFormation's reasons.
    pub failed: Vec<Instance>,
}

impl Outcome {
    pub fn ended_badly(&self) -> bool {
        self.status == "FAILED" || self.status == "STOPPED"
    }
}

/// The operation preferences for an organization of `accounts` target accounts (per Region).
/// A tolerance given as a percentage is sent as a count: CloudFormation rounds a percentage down,
/// so 10 % of fewer than ten accounts would tolerate none, and one account without a Config
/// recorder would stop the install everywhere.
pub fn preferences(p: &OperationPreferences, accounts: usize) -> StackSetOperationPreferences {
    let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let mut b = StackSetOperationPreferences::builder()
        .region_concurrency_type(match p.region_concurrency {
            RegionConcurrency::Parallel => RegionConcurrencyType::Parallel,
            RegionConcurrency::Sequential => RegionConcurrencyType::Sequential,
        })
        .concurrency_mode(match p.concurrency_mode {
            ConcurrencyMode::SoftFailureTolerance => {
                aws_sdk_cloudformation::types::ConcurrencyMode::SoftFailureTolerance
            }
            ConcurrencyMode::StrictFailureTolerance => {
                aws_sdk_cloudformation::types::ConcurrencyMode::StrictFailureTolerance
            }
        });
    b = match (p.max_concurrent_count, p.max_concurrent_percentage) {
        (Some(c), _) => b.max_concurrent_count(to_i32(c)),
        (None, Some(pct)) => b.max_concurrent_percentage(to_i32(pct)),
        (None, None) => b.max_concurrent_percentage(100),
    };
    b = match (p.failure_tolerance_count, p.failure_tolerance_percentage) {
        (Some(c), _) => b.failure_tolerance_count(to_i32(c)),
        // Soft tolerance needs a tolerance to keep going past a failed account (10 % unless
        // configured).
        (None, pct) => b.failure_tolerance_count(to_i32(tolerated(pct.unwrap_or(10), accounts))),
    };
    b.build()
}

/// `pct` % of `accounts`, rounded up, and at least one account when `pct` is above zero.
fn tolerated(pct: u32, accounts: usize) -> u32 {
    if pct == 0 {
        return 0;
    }
    let accounts = u32::try_from(accounts).unwrap_or(u32::MAX);
    (pct.saturating_mul(accounts).div_ceil(100)).max(1)
}

/// Parameter values as CloudFormation takes them.
pub(super) fn parameters(values: &BTreeMap<String, String>) -> Vec<Parameter> {
    values
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect()
}

/// One stack set and how to talk to it.
pub struct StackSet<'a> {
    pub cfn: &'a Client,
    pub name: String,
    pub call_as: Option<CallAs>,
    pub preferences: StackSetOperationPreferences,
    /// Between two looks at a running operation.
    pub poll: Duration,
    /// The sandbox deletes stack instances only when they are named by account (it ignores
    /// deployment targets on delete), so there the accounts are sent instead; and it keeps no
    /// record of the OUs a stack set deploys to, so there they are not read.
    pub sandbox: bool,
}

impl StackSet<'_> {
    /// The deployed stack set with its instances, or `None` when there is none.
    pub async fn describe(&self) -> anyhow::Result<Option<Deployed>> {
        let found = self
            .cfn
            .describe_stack_set()
            .stack_set_name(&self.name)
            .set_call_as(self.call_as.clone())
            .send()
            .await
            .described("cloudformation:DescribeStackSet");
        let set = match found {
            Ok(out) => match out.stack_set {
                Some(s) if s.status().is_none_or(|st| st.as_str() != "DELETED") => s,
                _ => return Ok(None),
            },
            Err(e) if e.is_code("StackSetNotFoundException") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Deployed {
            template: set.template_body().unwrap_or_default().to_owned(),
            parameters: set
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_owned(),
                        p.parameter_value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect(),
            instances: self.instances().await?,
            organizational_units: (!self.sandbox)
                .then(|| set.organizational_unit_ids().iter().cloned().collect()),
        }))
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<Instance>> {
        let mut out = Vec::new();
        let mut pages = self
            .cfn
            .list_stack_instances()
            .stack_set_name(&self.name)
            .set_call_as(self.call_as.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.described("cloudformation:ListStackInstances")?;
            for s in page.summaries() {
                out.push(Instance {
                    account: s.account().unwrap_or_default().to_owned(),
                    region: s.region().unwrap_or_default().to_owned(),
                    status: s
                        .status()
                        .map(|x| x.as_str().to_owned())
                        .unwrap_or_default(),
                    detailed_status: s
                        .stack_instance_status()
                        .and_then(|d| d.detailed_status())
                        .map(|d| d.as_str().to_owned()),
                    organizational_unit: s.organizational_unit_id().map(str::to_owned),
                    reason: s.status_reason().map(str::to_owned),
                    drift: s.drift_status().map(|d| d.as_str().to_owned()),
                });
            }
        }
        out.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
        Ok(out)
    }

    pub async fn create(
        &self,
        definition: &StackSetDefinition,
        template: &str,
        values: &BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let d = &definition.auto_deployment;
        self.cfn
            .create_stack_set()
            .stack_set_name(&self.name)
            .description(format!("Quell {}", definition.name))
            .template_body(template)
            .set_parameters(Some(parameters(values)))
            .set_capabilities(Some(
                definition
                    .capabilities
                    .iter()
                    .map(|c| Capability::from(c.as_str()))
                    .collect(),
            ))
            .permission_model(PermissionModels::ServiceManaged)
            .auto_deployment(
                AutoDeployment::builder()
                    .enabled(d.enabled)
                    .retain_stacks_on_account_removal(d.retain_stacks_on_account_removal)
                    .build(),
            )
            .managed_execution(ManagedExecution::builder().active(true).build())
            .set_call_as(self.call_as.clone())
            .send()
            .await
            .described("cloudformation:CreateStackSet")?;
        Ok(())
    }

    /// New template and parameters for every instance.
    pub async fn update(
        &self,
        definition: &StackSetDefinition,
        template: &str,
        values: &BTreeMap<String, String>,
        printer: &Printer,
    ) -> anyhow::Result<Outcome> {
        let caps: Vec<Capability> = definition
            .capabilities
            .iter()
            .map(|c| Capability::from(c.as_str()))
            .collect();
        self.run("update", printer, || async {
            let out = self
                .cfn
                .update_stack_set()
                .stack_set_name(&self.name)
                .template_body(template)
                .set_parameters(Some(parameters(values)))
                .set_capabilities(Some(caps.clone()))
                .operation_preferences(self.preferences.clone())
                .set_call_as(self.call_as.clone())
                .send()
                .await
                .described("cloudformation:UpdateStackSet")?;
            Ok(out.operation_id)
        })
        .await
    }

    pub async fn add(&self, call: &InstanceCall, printer: &Printer) -> anyhow::Result<Outcome> {
        self.run(&format!("add {}", call.describe()), printer, || async {
            let out = self
                .cfn
                .create_stack_instances()
                .stack_set_name(&self.name)
                .deployment_targets(call.targets())
                .set_regions(Some(call.regions.clone()))
                .operation_preferences(self.preferences.clone())
                .set_call_as(self.call_as.clone())
                .send()
                .await
                .described("cloudformation:CreateStackInstances")?;
            Ok(out.operation_id)
        })
        .await
    }

    pub async fn remove(&self, call: &InstanceCall, printer: &Printer) -> anyhow::Result<Outcome> {
        self.run(&format!("remove {}", call.describe()), printer, || async {
            let request = self
                .cfn
                .delete_stack_instances()
                .stack_set_name(&self.name)
                .set_regions(Some(call.regions.clone()))
                .retain_stacks(false)
                .operation_preferences(self.preferences.clone())
                .set_call_as(self.call_as.clone());
            let request = if self.sandbox {
                request.set_accounts(Some(call.accounts.clone()))
            } else {
                request.deployment_targets(call.targets())
            };
            let out = request
                .send()
                .await
                .described("cloudformation:DeleteStackInstances")?;
            Ok(out.operation_id)
        })
        .await
    }

    /// Runs the current template again on instances a previous operation left failed.
    pub async fn retry(&self, call: &InstanceCall, printer: &Printer) -> anyhow::Result<Outcome> {
        self.run(&format!("retry {}", call.describe()), printer, || async {
            let out = self
                .cfn
                .update_stack_instances()
                .stack_set_name(&self.name)
                .deployment_targets(call.targets())
                .set_regions(Some(call.regions.clone()))
                .operation_preferences(self.preferences.clone())
                .set_call_as(self.call_as.clone())
                .send()
                .await
                .described("cloudformation:UpdateStackInstances")?;
            Ok(out.operation_id)
        })
        .await
    }

    /// Runs drift detection on every instance and reads what it found.
    pub async fn detect_drift(&self, printer: &Printer) -> anyhow::Result<Drift> {
        let outcome = self
            .run("detect drift", printer, || async {
                let out = self
                    .cfn
                    .detect_stack_set_drift()
                    .stack_set_name(&self.name)
                    .operation_preferences(self.preferences.clone())
                    .set_call_as(self.call_as.clone())
                    .send()
                    .await
                    .described("cloudformation:DetectStackSetDrift")?;
                Ok(out.operation_id)
            })
            .await?;
        let set = self
            .cfn
            .describe_stack_set()
            .stack_set_name(&self.name)
            .set_call_as(self.call_as.clone())
            .send()
            .await
            .described("cloudformation:DescribeStackSet")?;
        let details = set
            .stack_set()
            .and_then(|s| s.stack_set_drift_detection_details());
        let instances = self.instances().await?;
        Ok(Drift {
            operation_id: outcome.operation_id,
            status: details
                .and_then(|d| d.drift_status())
                .map_or_else(|| outcome.status.clone(), |s| s.as_str().to_owned()),
            in_sync: instances
                .iter()
                .filter(|i| i.drift.as_deref() == Some("IN_SYNC"))
                .count(),
            failed_checks: details
                .and_then(aws_sdk_cloudformation::types::StackSetDriftDetectionDetails::failed_stack_instances_count)
                .map_or(0, |n| usize::try_from(n).unwrap_or(0)),
            drifted_instances: instances
                .into_iter()
                .filter(|i| i.drift.as_deref() == Some("DRIFTED"))
                .collect(),
        })
    }

    /// Deletes the (empty) stack set.
    pub async fn delete(&self) -> anyhow::Result<()> {
        match self
            .cfn
            .delete_stack_set()
            .stack_set_name(&self.name)
            .set_call_as(self.call_as.clone())
            .send()
            .await
            .described("cloudformation:DeleteStackSet")
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_code("StackSetNotFoundException") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts an operation once nothing else runs on the stack set, and follows it to its end.
    async fn run<F, Fut>(&self, what: &str, printer: &Printer, start: F) -> anyhow::Result<Outcome>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, anyhow::Error>>,
    {
        for _ in 0..BUSY_RETRIES {
            self.wait_for_others(printer).await?;
            match start().await {
                Ok(Some(id)) => return self.follow(&id, what, printer).await,
                Ok(None) => bail!(
                    "stack set {}: CloudFormation started `{what}` without an operation id",
                    self.name
                ),
                Err(e) if is_busy(&e) => {
                    // Somebody started an operation between our look and our call.
                    tracing::debug!(stack_set = %self.name, "operation in progress; waiting");
                }
                Err(e) => return Err(e),
            }
        }
        bail!(
            "stack set {} stayed busy with other operations through {BUSY_RETRIES} attempts to {what}: see its operations in the CloudFormation console, then run quell upgrade again",
            self.name
        )
    }

    /// Follows every operation that is still running on the stack set.
    async fn wait_for_others(&self, printer: &Printer) -> anyhow::Result<()> {
        let out = self
            .cfn
            .list_stack_set_operations()
            .stack_set_name(&self.name)
            .set_call_as(self.call_as.clone())
            .send()
            .await
            .described("cloudformation:ListStackSetOperations")?;
        let running: Vec<String> = out
            .summaries()
            .iter()
            .filter(|o| {
                matches!(
                    o.status(),
                    Some(
                        StackSetOperationStatus::Running
                            | StackSetOperationStatus::Queued
                            | StackSetOperationStatus::Stopping
                    )
                )
            })
            .filter_map(|o| o.operation_id().map(str::to_owned))
            .collect();
        for id in running {
            printer.status(&format!(
                "stack set {}: operation {id} is already running; waiting for it to end",
                self.name
            ));
            self.follow(&id, "an operation started elsewhere", printer)
                .await?;
        }
        Ok(())
    }

    /// Polls an operation to its end, showing each stack instance as its status changes.
    pub async fn follow(
        &self,
        operation_id: &str,
        what: &str,
        printer: &Printer,
    ) -> anyhow::Result<Outcome> {
        let task = printer.task(&format!("{}: {what}", self.name));
        let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
        loop {
            let op = self
                .cfn
                .describe_stack_set_operation()
                .stack_set_name(&self.name)
                .operation_id(operation_id)
                .set_call_as(self.call_as.clone())
                .send()
                .await
                .described("cloudformation:DescribeStackSetOperation")?;
            let status = op
                .stack_set_operation()
                .and_then(|o| o.status().cloned())
                .unwrap_or(StackSetOperationStatus::Running);
            let instances = self.instances().await?;
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for i in &instances {
                *counts.entry(i.shown_status()).or_default() += 1;
                let key = (i.account.clone(), i.region.clone());
                if shown.get(&key).map(String::as_str) != Some(i.shown_status()) {
                    task.line(&format!(
                        "{} {} {}: {}{}",
                        self.name,
                        i.account,
                        i.region,
                        paint_status(printer, i.shown_status()),
                        i.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ));
                    shown.insert(key, i.shown_status().to_owned());
                }
            }
            let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            task.update(&format!(
                "{}: {what}: {} ({})",
                self.name,
                status.as_str(),
                summary.join(", ")
            ));
            let finished = matches!(
                status,
                StackSetOperationStatus::Succeeded
                    | StackSetOperationStatus::Failed
                    | StackSetOperationStatus::Stopped
            );
            if !finished {
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let failed = self.failed_in(operation_id, &instances).await?;
            let outcome = Outcome {
                operation_id: operation_id.to_owned(),
                status: status.as_str().to_owned(),
                failed,
            };
            if outcome.ended_badly() || !outcome.failed.is_empty() {
                task.fail();
                for f in &outcome.failed {
                    printer.warn(&format!(
                        "{} {} {}: {} ({})",
                        self.name,
                        f.account,
                        f.region,
                        f.shown_status(),
                        f.reason.as_deref().unwrap_or("no reason given")
                    ));
                }
            } else {
                task.done(&format!(
                    "{}: {what}: {} stack instances, {}",
                    self.name,
                    instances.len(),
                    summary.join(", ")
                ));
            }
            return Ok(outcome);
        }
    }

    /// Failed instances with the reasons the operation's results give (more precise than the
    /// instance summaries, which keep only the last reason).
    async fn failed_in(
        &self,
        operation_id: &str,
        instances: &[Instance],
    ) -> anyhow::Result<Vec<Instance>> {
        let mut reasons: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut failed_results: Vec<(String, String)> = Vec::new();
        let mut pages = self
            .cfn
            .list_stack_set_operation_results()
            .stack_set_name(&self.name)
            .operation_id(operation_id)
            .set_call_as(self.call_as.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.described("cloudformation:ListStackSetOperationResults")?;
            for r in page.summaries() {
                let key = (
                    r.account().unwrap_or_default().to_owned(),
                    r.region().unwrap_or_default().to_owned(),
                );
                if r.status().is_some_and(|s| s.as_str() == "FAILED") {
                    failed_results.push(key.clone());
                }
                if let Some(reason) = r.status_reason() {
                    reasons.insert(key, reason.to_owned());
                }
            }
        }
        let mut failed: Vec<Instance> = instances
            .iter()
            .filter(|i| {
                i.failed() || failed_results.contains(&(i.account.clone(), i.region.clone()))
            })
            .cloned()
            .collect();
        for f in &mut failed {
            if let Some(r) = reasons.get(&(f.account.clone(), f.region.clone())) {
                f.reason = Some(r.clone());
            }
        }
        Ok(failed)
    }
}

fn is_busy(e: &anyhow::Error) -> bool {
    e.downcast_ref::<quell_responder::aws_error::CallError>()
        .is_some_and(|c| c.is_code("OperationInProgressException"))
}

pub fn paint_status(printer: &Printer, status: &str) -> String {
    let tone = if status == "SUCCEEDED" || status == "CURRENT" {
        Tone::Good
    } else if status.contains("FAILED") || status == "INOPERABLE" {
        Tone::Bad
    } else {
        Tone::Change
    };
    printer.paint(status, tone)
}

#[cfg(test)]
mod tolerance_tests {
    use super::*;

    #[test]
    fn a_percentage_tolerates_at_least_one_account_where_cloudformation_would_round_to_none() {
        assert_eq!(tolerated(10, 3), 1, "10 % of 3 is 0 to CloudFormation");
        assert_eq!(tolerated(10, 25), 3);
        assert_eq!(tolerated(10, 100), 10);
        assert_eq!(tolerated(0, 50), 0, "0 % stays strict");
        let p = preferences(&OperationPreferences::default(), 4);
        assert_eq!(p.failure_tolerance_count(), Some(1));
        assert_eq!(p.failure_tolerance_percentage(), None);
        let counted = OperationPreferences {
            failure_tolerance_count: Some(2),
            ..OperationPreferences::default()
        };
        assert_eq!(preferences(&counted, 4).failure_tolerance_count(), Some(2));
    }
}
