//! Plain stacks (security, artifacts, management): create or update, then wait for the end and
//! name the resources that failed, with CloudFormation's reasons.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use quell_responder::aws_error::Described;

use crate::deployment::stack_outputs;
use crate::printer::Printer;

pub struct StackSpec<'a> {
    pub name: &'a str,
    pub template: &'a str,
    pub parameters: Vec<(&'a str, String)>,
    pub named_iam: bool,
    /// Where, for messages: "security account 222233334444 in us-east-1".
    pub place: String,
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

pub async fn deploy(
    config: &SdkConfig,
    spec: &StackSpec<'_>,
    printer: &Printer,
) -> anyhow::Result<(Change, HashMap<String, String>)> {
    let cfn = aws_sdk_cloudformation::Client::new(config);
    let params: Vec<Parameter> = spec
        .parameters
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(v)
                .build()
        })
        .collect();
    let caps = if spec.named_iam {
        vec![Capability::CapabilityNamedIam]
    } else {
        vec![]
    };
    let exists = stack_outputs(config, spec.name).await?.is_some();
    let task = printer.task(&format!(
        "{} stack {} in {}",
        if exists { "updating" } else { "creating" },
        spec.name,
        spec.place
    ));
    let change = if exists {
        let result = cfn
            .update_stack()
            .stack_name(spec.name)
            .template_body(spec.template)
            .set_parameters(Some(params))
            .set_capabilities(Some(caps))
            .send()
            .await
            .described("cloudformation:UpdateStack");
        match result {
            Ok(_) => Change::Updated,
            Err(e) if e.failure.message.contains("No updates are to be performed") => {
                Change::Unchanged
            }
            Err(e) => {
                task.fail();
                return Err(e.into());
            }
        }
    } else {
        let created = cfn
            .create_stack()
            .stack_name(spec.name)
            .template_body(spec.template)
            .set_parameters(Some(params))
            .set_capabilities(Some(caps))
            .on_failure(aws_sdk_cloudformation::types::OnFailure::Rollback)
            // The same token on a retry: CloudFormation creates the stack once.
            .client_request_token(format!("quell-create-{}", uuid::Uuid::new_v4()))
            .send()
            .await
            .described("cloudformation:CreateStack");
        if let Err(e) = created {
            // An answer lost on the way back (a dropped connection, a gateway error) after the
            // request was accepted: the stack is there, so follow it instead of failing.
            if stack_outputs(config, spec.name).await?.is_none() {
                task.fail();
                return Err(e.into());
            }
            tracing::warn!(stack = spec.name, error = %e, "CreateStack answered with an error, but the stack exists; following it");
        }
        Change::Created
    };
    if change != Change::Unchanged {
        if let Err(e) = wait(&cfn, spec.name).await {
            task.fail();
            return Err(e);
        }
    }
    let outputs = stack_outputs(config, spec.name).await?.unwrap_or_default();
    task.done(&format!(
        "stack {} {}",
        spec.name,
        match change {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    ));
    Ok((change, outputs))
}

async fn wait(cfn: &aws_sdk_cloudformation::Client, name: &str) -> anyhow::Result<()> {
    loop {
        let out = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .described("cloudformation:DescribeStacks")?;
        let status = out
            .stacks()
            .first()
            .and_then(|s| s.stack_status().cloned())
            .unwrap_or(StackStatus::CreateInProgress);
        let text = status.as_str();
        if text.ends_with("_IN_PROGRESS") {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if matches!(
            status,
            StackStatus::CreateComplete | StackStatus::UpdateComplete
        ) {
            return Ok(());
        }
        let reasons = failure_reasons(cfn, name).await.unwrap_or_default();
        bail!(
            "stack {name} ended in {text}{}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!(":\n  {}", reasons.join("\n  "))
            }
        );
    }
}

async fn failure_reasons(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let events = cfn
        .describe_stack_events()
        .stack_name(name)
        .send()
        .await
        .described("cloudformation:DescribeStackEvents")?;
    Ok(events
        .stack_events()
        .iter()
        .filter(|e| {
            e.resource_status()
                .is_some_and(|s| s.as_str().ends_with("_FAILED"))
        })
        .take(10)
        .map(|e| {
            format!(
                "{}: {}",
                e.logical_resource_id().unwrap_or("?"),
                e.resource_status_reason().unwrap_or("no reason given")
            )
        })
        .collect())
}
