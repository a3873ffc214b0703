//! What `quell install --sandbox` (and `upgrade`) does after CloudFormation, where moto's
//! CloudFormation or its own emulation differs from AWS. Each difference is named here once.
//!
//! - moto's CloudFormation ignores `AWS::Scheduler::ScheduleGroup`, so the responder's first wait
//!   beyond 15 minutes (an approval's timeout, a long `wait`) could not be scheduled: the group is
//!   created through the API instead. moto keeps schedules but never fires them; in the sandbox a
//!   long timer is scheduled and can be read back, and its delivery is shown against the mocks.
//! - moto runs SQS event source mappings itself: every message sent to a mapped queue makes it
//!   receive up to a batch of that queue's messages and try to run the function in Docker, which
//!   fails here, and make them visible again. Each try counts as a receive, so in a burst the
//!   first message reaches the queue's `maxReceiveCount` (3) before anything has run, and moto
//!   moves it to the dead-letter queue: an event lost, in the sandbox only. The local Lambda host
//!   (`host`) is the sandbox's event source mapping, so moto's own are disabled.

use aws_config::SdkConfig;
use quell_responder::aws_error::Described;

use crate::deployment::Deployment;

/// The timer group's name, as the security stack names it.
fn timer_group_name(prefix: &str) -> String {
    format!("{prefix}-timers")
}

/// Brings the sandbox's security account in line with what the stack means.
pub async fn apply(
    security: &SdkConfig,
    deployment: &Deployment,
    prefix: &str,
) -> anyhow::Result<()> {
    create_timer_group(security, prefix).await?;
    disable_emulated_event_source_mappings(security, deployment).await
}

async fn create_timer_group(security: &SdkConfig, prefix: &str) -> anyhow::Result<()> {
    let scheduler = crate::calls::client!(aws_sdk_scheduler, security);
    let name = timer_group_name(prefix);
    if scheduler
        .get_schedule_group()
        .name(&name)
        .send()
        .await
        .is_ok()
    {
        return Ok(());
    }
    scheduler
        .create_schedule_group()
        .name(&name)
        .send()
        .await
        .described("scheduler:CreateScheduleGroup")?;
    Ok(())
}

async fn disable_emulated_event_source_mappings(
    security: &SdkConfig,
    deployment: &Deployment,
) -> anyhow::Result<()> {
    let lambda = crate::calls::client!(aws_sdk_lambda, security);
    let listed = lambda
        .list_event_source_mappings()
        .function_name(&deployment.function_name)
        .send()
        .await
        .described("lambda:ListEventSourceMappings")?;
    for mapping in listed.event_source_mappings() {
        let (Some(uuid), Some("Enabled")) = (mapping.uuid(), mapping.state()) else {
            continue;
        };
        lambda
            .update_event_source_mapping()
            .uuid(uuid)
            .enabled(false)
            .send()
            .await
            .described("lambda:UpdateEventSourceMapping")?;
    }
    Ok(())
}
