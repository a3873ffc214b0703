//! Plain stacks (artifacts, security, management): read what is deployed, then create, update or
//! delete and wait for the end, naming the resources that failed with CloudFormation's reasons.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::bail;
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::{Capability, OnFailure, Parameter, StackStatus, TemplateStage};
use aws_sdk_cloudformation::Client;
use quell_responder::aws_error::Described;

use crate::calls::client;
use crate::printer::Printer;

/// A stack as deployed.
#[derive(Debug, Clone)]
pub struct DeployedStack {
    pub status: String,
    pub template: String,
    pub parameters: BTreeMap<String, String>,
    pub outputs: HashMap<String, String>,
}

impl DeployedStack {
    /// A creation that failed and rolled back: CloudFormation cannot update it, only delete it.
    pub fn failed_creation(&self) -> bool {
        matches!(
            self.status.as_str(),
            "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED"
        )
    }
}

/// One stack in one account and Region.
pub struct Stack<'a> {
    pub config: &'a SdkConfig,
    pub name: String,
    /// Where, for messages: "security account 222233334444 in us-east-1".
    pub place: String,
    pub poll: Duration,
    /// How long an operation may stay in progress before Quell stops following it.
    pub deadline: Duration,
}

impl Stack<'_> {
    fn cfn(&self) -> Client {
        client!(aws_sdk_cloudformation, self.config)
    }

    pub async fn read(&self) -> anyhow::Result<Option<DeployedStack>> {
        let cfn = self.cfn();
        let described = match cfn
            .describe_stacks()
            .stack_name(&self.name)
            .send()
            .await
            .described("cloudformation:DescribeStacks")
        {
            Ok(out) => out,
            Err(e) if e.failure.message.contains("does not exist") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(stack) = described.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        if status == "DELETE_COMPLETE" {
            return Ok(None);
        }
        let template = cfn
            .get_template()
            .stack_name(&self.name)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .described("cloudformation:GetTemplate")?
            .template_body
            .unwrap_or_default();
        Ok(Some(DeployedStack {
            status,
            template,
            parameters: stack
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_owned(),
                        p.parameter_value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect(),
            outputs: stack
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect(),
        }))
    }

    /// Creates or updates the stack and waits for the end; returns its outputs.
    pub async fn apply(
        &self,
        exists: bool,
        template: &str,
        values: &BTreeMap<String, String>,
        named_iam: bool,
        printer: &Printer,
    ) -> anyhow::Result<HashMap<String, String>> {
        let cfn = self.cfn();
        let params: Vec<Parameter> = values
            .iter()
            .map(|(k, v)| {
                Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build()
            })
            .collect();
        let caps = if named_iam {
            vec![Capability::CapabilityNamedIam]
        } else {
            vec![]
        };
        let task = printer.task(&format!(
            "{} stack {} in {}",
            if exists { "updating" } else { "creating" },
            self.name,
            self.place
        ));
        let sent = if exists {
            cfn.update_stack()
                .stack_name(&self.name)
                .template_body(template)
                .set_parameters(Some(params))
                .set_capabilities(Some(caps))
                .send()
                .await
                .described("cloudformation:UpdateStack")
                .map(|_| ())
        } else {
            cfn.create_stack()
                .stack_name(&self.name)
                .template_body(template)
                .set_parameters(Some(params))
                .set_capabilities(Some(caps))
                .on_failure(OnFailure::Rollback)
                .client_request_token(format!("quell-create-{}", uuid::Uuid::new_v4()))
                .send()
                .await
                .described("cloudformation:CreateStack")
                .map(|_| ())
        };
        if let Err(e) = &sent {
            if exists && is_no_op_update(e) {
                task.done(&format!(
                    "stack {} unchanged: CloudFormation found nothing to update (the templates differ only in text it ignores, such as comments)",
                    self.name
                ));
                return Ok(self.read().await?.map(|s| s.outputs).unwrap_or_default());
            }
        }
        if let Err(e) = sent {
            // An answer lost on the way back after the request was accepted: the stack is there,
            // so follow it instead of failing.
            if exists || self.read().await?.is_none() {
                task.fail();
                return Err(e.into());
            }
            tracing::warn!(stack = %self.name, error = %e, "CreateStack answered with an error, but the stack exists; following it");
        }
        if let Err(e) = self.wait(&cfn).await {
            task.fail();
            return Err(e);
        }
        task.done(&format!(
            "stack {} {}",
            self.name,
            if exists { "updated" } else { "created" }
        ));
        Ok(self.read().await?.map(|s| s.outputs).unwrap_or_default())
    }

    /// Deletes the stack and waits until it is gone.
    pub async fn delete(&self, printer: &Printer) -> anyhow::Result<()> {
        let cfn = self.cfn();
        let task = printer.task(&format!("deleting stack {} in {}", self.name, self.place));
        cfn.delete_stack()
            .stack_name(&self.name)
            .send()
            .await
            .described("cloudformation:DeleteStack")?;
        loop {
            match self.read().await? {
                None => break,
                Some(s) if s.status == "DELETE_FAILED" => {
                    task.fail();
                    let reasons = failure_reasons(&cfn, &self.name).await.unwrap_or_default();
                    bail!(
                        "stack {} could not be deleted:\n  {}\nfix or retain those resources, then run the command again",
                        self.name,
                        reasons.join("\n  ")
                    );
                }
                Some(_) => tokio::time::sleep(self.poll).await,
            }
        }
        task.done(&format!("stack {} deleted", self.name));
        Ok(())
    }

    async fn wait(&self, cfn: &Client) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            let out = cfn
                .describe_stacks()
                .stack_name(&self.name)
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
                if started.elapsed() > self.deadline {
                    bail!(
                        "stack {} is still {text} after {} s: see its events in the CloudFormation console; run the command again once it has ended",
                        self.name,
                        self.deadline.as_secs()
                    );
                }
                tokio::time::sleep(self.poll).await;
                continue;
            }
            if matches!(
                status,
                StackStatus::CreateComplete | StackStatus::UpdateComplete
            ) {
                return Ok(());
            }
            let reasons = failure_reasons(cfn, &self.name).await.unwrap_or_default();
            bail!(
                "stack {} ended in {text}{}",
                self.name,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(":\n  {}", reasons.join("\n  "))
                }
            );
        }
    }
}

async fn failure_reasons(cfn: &Client, name: &str) -> anyhow::Result<Vec<String>> {
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

/// CloudFormation's answer to an update whose template differs only in what it ignores
/// (comments, formatting): a ValidationError, though nothing is wrong and nothing changes.
fn is_no_op_update(e: &quell_responder::aws_error::CallError) -> bool {
    e.is_code("ValidationError") && e.failure.message.contains("No updates are to be performed")
}

#[cfg(test)]
mod tests {
    use super::is_no_op_update;
    use quell_responder::aws_error::{AwsFailure, CallError};

    fn error(code: &str, message: &str) -> CallError {
        CallError {
            call: "cloudformation:UpdateStack".into(),
            failure: AwsFailure {
                code: Some(code.into()),
                message: message.into(),
            },
        }
    }

    #[test]
    fn an_update_with_nothing_to_do_is_not_a_failure_but_other_validation_errors_are() {
        assert!(is_no_op_update(&error(
            "ValidationError",
            "No updates are to be performed."
        )));
        assert!(!is_no_op_update(&error(
            "ValidationError",
            "Template format error: unresolved resource dependencies"
        )));
        assert!(!is_no_op_update(&error(
            "AccessDenied",
            "No updates are to be performed."
        )));
    }
}
