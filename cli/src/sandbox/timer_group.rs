//! The security stack's EventBridge Scheduler group, in the sandbox. moto's CloudFormation ignores
//! `AWS::Scheduler::ScheduleGroup`, so without this the responder's first wait beyond 15 minutes
//! (an approval's timeout, a long `wait`) could not be scheduled there. `quell install --sandbox`
//! creates the group through the API instead, as it subscribes the inbox for the ignored SNS
//! subscription. moto keeps schedules but never fires them: in the sandbox a long timer is
//! scheduled and can be read back, and its delivery is shown against the SDK's mocks instead.

use aws_config::SdkConfig;
use quell_responder::aws_error::Described;

/// The group's name, as the security stack names it.
pub fn timer_group_name(prefix: &str) -> String {
    format!("{prefix}-timers")
}

/// Creates the group unless it is there.
pub async fn create(security: &SdkConfig, prefix: &str) -> anyhow::Result<()> {
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
