//! Service-managed StackSets: create or update the stack set, add stack instances for the targets,
//! and follow each operation to its end per account and Region.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use aws_sdk_cloudformation::types::{
    AccountFilterType, AutoDeployment, CallAs, Capability, DeploymentTargets, Parameter,
    PermissionModels, RegionConcurrencyType, StackSetOperationPreferences, StackSetOperationStatus,
};
use aws_sdk_cloudformation::Client;
use quell_responder::aws_error::Described;
use serde::Serialize;

use crate::config::{ConcurrencyMode, OperationPreferences, RegionConcurrency};
use crate::printer::{Printer, Tone};
use crate::render::StackSetDefinition;

pub struct StackSetSpec<'a> {
    pub name: String,
    pub definition: &'a StackSetDefinition,
    pub template: &'a str,
    pub parameters: Vec<(String, String)>,
    pub regions: Vec<String>,
    pub call_as: Option<CallAs>,
    pub preferences: &'a OperationPreferences,
}

/// Where stack instances go: whole OUs, and single accounts (each within its parent OU).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub organizational_units: Vec<String>,
    /// Account id and its parent OU (or root) id.
    pub accounts: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub account: String,
    pub region: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub fn preferences(p: &OperationPreferences) -> StackSetOperationPreferences {
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
    let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    b = match (p.max_concurrent_count, p.max_concurrent_percentage) {
        (Some(c), _) => b.max_concurrent_count(to_i32(c)),
        (None, Some(pct)) => b.max_concurrent_percentage(to_i32(pct)),
        (None, None) => b.max_concurrent_percentage(100),
    };
    b = match (p.failure_tolerance_count, p.failure_tolerance_percentage) {
        (Some(c), _) => b.failure_tolerance_count(to_i32(c)),
        (None, Some(pct)) => b.failure_tolerance_percentage(to_i32(pct)),
        // Soft tolerance needs a tolerance to keep going past a failed account.
        (None, None) => b.failure_tolerance_percentage(10),
    };
    b.build()
}

/// Creates the stack set, or updates its template and parameters when it exists.
pub async fn ensure(
    cfn: &Client,
    spec: &StackSetSpec<'_>,
    printer: &Printer,
) -> anyhow::Result<bool> {
    let params: Vec<Parameter> = spec
        .parameters
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect();
    let caps: Vec<Capability> = spec
        .definition
        .capabilities
        .iter()
        .map(|c| Capability::from(c.as_str()))
        .collect();
    let existing = cfn
        .describe_stack_set()
        .stack_set_name(&spec.name)
        .set_call_as(spec.call_as.clone())
        .send()
        .await
        .described("cloudformation:DescribeStackSet");
    match existing {
        Ok(_) => {
            let op = cfn
                .update_stack_set()
                .stack_set_name(&spec.name)
                .template_body(spec.template)
                .set_parameters(Some(params))
                .set_capabilities(Some(caps))
                .operation_preferences(preferences(spec.preferences))
                .set_call_as(spec.call_as.clone())
                .send()
                .await
                .described("cloudformation:UpdateStackSet")?;
            if let Some(id) = op.operation_id() {
                follow(cfn, spec, id, printer).await?;
            }
            Ok(false)
        }
        Err(e) if e.is_code("StackSetNotFoundException") => {
            let d = &spec.definition.auto_deployment;
            cfn.create_stack_set()
                .stack_set_name(&spec.name)
                .description(format!("Quell {}", spec.definition.name))
                .template_body(spec.template)
                .set_parameters(Some(params))
                .set_capabilities(Some(caps))
                .permission_model(PermissionModels::ServiceManaged)
                .auto_deployment(
                    AutoDeployment::builder()
                        .enabled(d.enabled)
                        .retain_stacks_on_account_removal(d.retain_stacks_on_account_removal)
                        .build(),
                )
                .managed_execution(
                    aws_sdk_cloudformation::types::ManagedExecution::builder()
                        .active(true)
                        .build(),
                )
                .set_call_as(spec.call_as.clone())
                .send()
                .await
                .described("cloudformation:CreateStackSet")?;
            printer.status(&format!("stack set {} created", spec.name));
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Adds stack instances for every target in every Region of the spec.
pub async fn add_instances(
    cfn: &Client,
    spec: &StackSetSpec<'_>,
    targets: &Targets,
    printer: &Printer,
) -> anyhow::Result<()> {
    let mut calls: Vec<DeploymentTargets> = Vec::new();
    if !targets.organizational_units.is_empty() {
        calls.push(
            DeploymentTargets::builder()
                .set_organizational_unit_ids(Some(targets.organizational_units.clone()))
                .build(),
        );
    }
    // Single accounts: their parent OU intersected with the account list.
    let mut by_parent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (account, parent) in &targets.accounts {
        by_parent
            .entry(parent.as_str())
            .or_default()
            .push(account.clone());
    }
    for (parent, accounts) in by_parent {
        calls.push(
            DeploymentTargets::builder()
                .organizational_unit_ids(parent)
                .set_accounts(Some(accounts))
                .account_filter_type(AccountFilterType::Intersection)
                .build(),
        );
    }
    for targets in calls {
        let op = cfn
            .create_stack_instances()
            .stack_set_name(&spec.name)
            .deployment_targets(targets)
            .set_regions(Some(spec.regions.clone()))
            .operation_preferences(preferences(spec.preferences))
            .set_call_as(spec.call_as.clone())
            .send()
            .await
            .described("cloudformation:CreateStackInstances")?;
        if let Some(id) = op.operation_id() {
            follow(cfn, spec, id, printer).await?;
        }
    }
    Ok(())
}

/// Polls an operation to its end, showing each stack instance as it changes.
pub async fn follow(
    cfn: &Client,
    spec: &StackSetSpec<'_>,
    operation_id: &str,
    printer: &Printer,
) -> anyhow::Result<()> {
    let task = printer.task(&format!("{}: operation {operation_id}", spec.name));
    let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
    loop {
        let op = cfn
            .describe_stack_set_operation()
            .stack_set_name(&spec.name)
            .operation_id(operation_id)
            .set_call_as(spec.call_as.clone())
            .send()
            .await
            .described("cloudformation:DescribeStackSetOperation")?;
        let status = op
            .stack_set_operation()
            .and_then(|o| o.status().cloned())
            .unwrap_or(StackSetOperationStatus::Running);
        let instances = list_instances(cfn, &spec.name, spec.call_as.clone()).await?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in &instances {
            *counts.entry(i.status.clone()).or_default() += 1;
            let key = (i.account.clone(), i.region.clone());
            if shown.get(&key) != Some(&i.status) {
                // Every account and Region as its status changes: live lines above the spinner
                // on a terminal, plain lines in a pipe.
                task.line(&format!(
                    "{} {} {}: {}{}",
                    spec.name,
                    i.account,
                    i.region,
                    paint_status(printer, &i.status),
                    i.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
                shown.insert(key, i.status.clone());
            }
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        task.update(&format!(
            "{}: {} ({})",
            spec.name,
            status.as_str(),
            summary.join(", ")
        ));
        match status {
            StackSetOperationStatus::Succeeded => {
                task.done(&format!(
                    "{}: {} stack instances, {}",
                    spec.name,
                    instances.len(),
                    summary.join(", ")
                ));
                return Ok(());
            }
            StackSetOperationStatus::Failed | StackSetOperationStatus::Stopped => {
                task.fail();
                let failed: Vec<String> = instances
                    .iter()
                    .filter(|i| i.status.contains("FAILED") || i.status == "INOPERABLE")
                    .map(|i| {
                        format!(
                            "{} {}: {}",
                            i.account,
                            i.region,
                            i.reason.as_deref().unwrap_or("no reason given")
                        )
                    })
                    .collect();
                bail!(
                    "stack set {} operation {operation_id} ended {}{}",
                    spec.name,
                    status.as_str(),
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(":\n  {}", failed.join("\n  "))
                    }
                );
            }
            _ => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
}

pub async fn list_instances(
    cfn: &Client,
    name: &str,
    call_as: Option<CallAs>,
) -> anyhow::Result<Vec<Instance>> {
    let mut out = Vec::new();
    let mut pages = cfn
        .list_stack_instances()
        .stack_set_name(name)
        .set_call_as(call_as)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.described("cloudformation:ListStackInstances")?;
        for s in page.summaries() {
            let detailed = s
                .stack_instance_status()
                .and_then(|d| d.detailed_status())
                .map(|d| d.as_str().to_owned());
            out.push(Instance {
                account: s.account().unwrap_or_default().to_owned(),
                region: s.region().unwrap_or_default().to_owned(),
                status: detailed.unwrap_or_else(|| {
                    s.status()
                        .map(|x| x.as_str().to_owned())
                        .unwrap_or_default()
                }),
                reason: s.status_reason().map(str::to_owned),
            });
        }
    }
    out.sort_by(|a, b| (&a.account, &a.region).cmp(&(&b.account, &b.region)));
    Ok(out)
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
