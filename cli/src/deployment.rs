//! What an installed Quell looks like from outside: stack names and the security stack's outputs.

use std::collections::HashMap;

use anyhow::Context;
use aws_config::SdkConfig;
use quell_responder::aws_error::Described;

pub fn security_stack(prefix: &str) -> String {
    format!("{prefix}-security")
}
pub fn artifacts_stack(prefix: &str) -> String {
    format!("{prefix}-artifacts")
}
pub fn management_stack(prefix: &str) -> String {
    format!("{prefix}-management")
}
/// The URL of the queue `name` in the account `sqs` acts in.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    Ok(sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .described("sqs:GetQueueUrl")?
        .queue_url()
        .unwrap_or_default()
        .to_owned())
}

/// The events queue's name, as the security template sets it.
pub fn events_queue(prefix: &str) -> String {
    format!("{prefix}-events")
}

/// The sweep queue's name, as the security template sets it.
pub fn sweep_queue(prefix: &str) -> String {
    format!("{prefix}-sweep")
}

/// The ledger table's name, as the security template sets it.
pub fn ledger_table(prefix: &str) -> String {
    format!("{prefix}-ledger")
}

/// Whether the ledger table exists. It outlives the security stack (it is evidence), so it can
/// be there without a deployment.
pub async fn ledger_exists(security: &SdkConfig, prefix: &str) -> anyhow::Result<bool> {
    match crate::calls::client!(aws_sdk_dynamodb, security)
        .describe_table()
        .table_name(ledger_table(prefix))
        .send()
        .await
        .described("dynamodb:DescribeTable")
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_code("ResourceNotFoundException") => Ok(false),
        Err(e) => Err(e.into()),
    }
}
pub fn secret_name(prefix: &str) -> String {
    format!("{prefix}/external-ids")
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub containment_topic_arn: String,
    pub audit_topic_arn: String,
    pub ledger_table: String,
    pub function_name: String,
    pub dead_letter_queue: String,
    pub artifact_key: String,
}

/// Outputs of a stack, or `None` when the stack does not exist.
pub async fn stack_outputs(
    config: &SdkConfig,
    stack: &str,
) -> anyhow::Result<Option<HashMap<String, String>>> {
    let cfn = crate::calls::client!(aws_sdk_cloudformation, config);
    match cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .described("cloudformation:DescribeStacks")
    {
        Ok(out) => Ok(out.stacks().first().map(|s| {
            s.outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                .collect()
        })),
        Err(e) if e.failure.message.contains("does not exist") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Deployment {
    /// Reads the security stack in the security account's home Region.
    pub async fn find(config: &SdkConfig, prefix: &str) -> anyhow::Result<Option<Deployment>> {
        let Some(outputs) = stack_outputs(config, &security_stack(prefix)).await? else {
            return Ok(None);
        };
        let get = |k: &str| {
            outputs.get(k).cloned().with_context(|| {
                format!(
                    "stack {} has no output {k}: run `quell install` to repair it",
                    security_stack(prefix)
                )
            })
        };
        Ok(Some(Deployment {
            containment_topic_arn: get("ContainmentTopicArn")?,
            audit_topic_arn: get("AuditTopicArn")?,
            ledger_table: get("LedgerTableName")?,
            function_name: get("ResponderFunctionName")?,
            dead_letter_queue: get("DeadLetterQueueName")?,
            artifact_key: get("ArtifactKey")?,
        }))
    }
}
