//! Runs that no forwarded event starts: a Security Hub custom action chosen in the security
//! account, and a `schedule` playbook's own rule firing there. Each is taken only from the one
//! ARN install made for its playbook; the runs themselves start as any other
//! (`Responder::start_run`). Manual runs are requests: `manual`.

use futures::StreamExt;
use serde_json::{json, Value};

use super::runs::{skipped, Origin};
use super::{Outcome, Responder};
use crate::aws_error::CallError;
use crate::error::ResponderError;
use crate::ledger::Status;
use crate::playbooks::language::definition::Playbook;
use crate::runs::document::Library;
use crate::runs::resource::SweptPlace;

/// What a scheduled sweep found in one account and Region: (account, Region, (id, ARN) each).
type Listed = (String, String, Result<Vec<(String, String)>, CallError>);

/// Whether the event's `resources` are `arn` and nothing else: what EventBridge sets for a rule's
/// firing and Security Hub for a custom action.
fn names_only(event: &Value, arn: &str) -> bool {
    event["resources"]
        .as_array()
        .is_some_and(|r| r.len() == 1 && r[0].as_str() == Some(arn))
}

impl Responder {
    /// A Security Hub custom action chosen in the security account starts a run for each
    /// finding it was chosen on, in that finding's account: the security account's Security Hub
    /// holds the organization's findings, and only its own principals choose its actions.
    pub(super) async fn start_from_custom_action(
        &self,
        message_id: &str,
        library: &Library,
        playbook: &Playbook,
        event: &Value,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let label = format!("run:{}", playbook.id);
        let (id, _) = playbook
            .trigger
            .custom_action()
            .expect("filtered on custom actions");
        let home = &self.settings.home_region;
        let security = &self.settings.security_account;
        let ours = format!(
            "arn:{}:securityhub:{home}:{security}:action/custom/{id}",
            super::remediate::partition_of(home)
        );
        let what = format!("the custom action of {}", playbook.id);
        if let Err(refused) = self.origin.sent_by(event, security, &what) {
            return Ok(vec![skipped(&label, refused.message().to_owned())]);
        }
        if event["region"].as_str() != Some(home.as_str()) {
            return Ok(vec![skipped(
                &label,
                format!(
                    "a custom action event from {}: only the security account's Security Hub in {home} starts {}",
                    event["region"], playbook.id
                ),
            )]);
        }
        if !names_only(event, &ours) {
            return Ok(vec![skipped(
                &label,
                format!(
                    "the event names the action {}, not {ours}, which install made for {}",
                    event["resources"], playbook.id
                ),
            )]);
        }
        let mut outcomes = Vec::new();
        let findings = crate::playbooks::language::finding::findings(event);
        let most = usize::try_from(playbook.limits.max_targets).unwrap_or(usize::MAX);
        if findings.len() > most {
            outcomes.push(skipped(
                &label,
                format!(
                    "the action was chosen on {} findings; {} acts on the first {most} (limits.max_targets)",
                    findings.len(),
                    playbook.id
                ),
            ));
        }
        for finding in findings.into_iter().take(most) {
            let origin = self
                .checked_origin(
                    event,
                    Some(&finding),
                    finding.account.clone(),
                    finding.region.clone(),
                )
                .await;
            outcomes.push(match origin {
                Ok(origin) => {
                    Box::pin(self.start_run(
                        message_id,
                        library,
                        playbook,
                        event,
                        Some(finding),
                        &origin,
                        None,
                    ))
                    .await?
                }
                Err(why) => skipped(&label, why),
            });
        }
        Ok(outcomes)
    }

    /// A `schedule` playbook's rule fired: a run for each resource of its target type in every
    /// account and Region the sweep covers (`sweep.accounts`, `sweep.organizational_units`,
    /// `sweep.regions`), at most `limits.max_targets` new runs per firing. Each run reads its
    /// resource back and checks its conditions and exemptions like any other.
    pub(super) async fn start_scheduled(
        &self,
        message_id: &str,
        library: &Library,
        playbook: &Playbook,
        event: &Value,
    ) -> Result<Vec<Outcome>, ResponderError> {
        let label = format!("run:{}", playbook.id);
        let home = &self.settings.home_region;
        let security = &self.settings.security_account;
        let partition = super::remediate::partition_of(home);
        let rule = format!(
            "arn:{partition}:events:{home}:{security}:rule/{}-{}",
            self.settings.name_prefix,
            crate::playbooks::language::trigger::schedule_rule_suffix(&playbook.id)
        );
        if !names_only(event, &rule) {
            // Another rule's schedule (the built-in sweep's, another playbook's): not this one's.
            return Ok(Vec::new());
        }
        let what = format!("the schedule of {}", playbook.id);
        if let Err(refused) = self.origin.sent_by(event, security, &what) {
            return Ok(vec![skipped(&label, refused.message().to_owned())]);
        }
        let sweep = &self.settings.playbooks.sweep;
        let accounts = self
            .swept_accounts()
            .await
            .map_err(|e| ResponderError::Aws(format!("cannot list the accounts to sweep: {e}")))?;
        let places: Vec<(String, String)> = accounts
            .iter()
            .flat_map(|a| sweep.regions.iter().map(move |r| (a.clone(), r.clone())))
            .collect();
        let first_region = sweep.regions.first();
        let kind = playbook.target.kind.as_str();
        let protected = self.protected();
        let protected = &protected;
        let listed: Vec<Listed> = futures::stream::iter(places)
            .map(|(account, region)| async move {
                let place = SweptPlace {
                    partition,
                    account: &account,
                    region: &region,
                    global_here: first_region == Some(&region),
                    protected,
                };
                let found = match self.session_in(partition, &account, Some(&region)).await {
                    Ok(c) => crate::runs::resource::swept(&c, kind, &place).await,
                    Err(e) => Err(e),
                };
                (account, region, found)
            })
            .buffer_unordered(sweep.concurrency.max(1))
            .collect()
            .await;
        let most = usize::try_from(playbook.limits.max_targets).unwrap_or(usize::MAX);
        let (mut outcomes, mut started, mut left) = (Vec::new(), 0_usize, 0_usize);
        for (account, region, found) in listed {
            let targets = match found {
                Ok(t) => t,
                Err(e) => {
                    outcomes.push(skipped(
                        &label,
                        format!("cannot list the {kind} resources in {account} {region}: {e}"),
                    ));
                    continue;
                }
            };
            for (id, arn) in targets {
                if started >= most {
                    left += 1;
                    continue;
                }
                let mut fired = event.clone();
                fired["account"] = json!(account);
                fired["region"] = json!(region);
                fired["detail"]["target"] =
                    json!({"arn": arn, "id": id, "type": playbook.target.kind});
                let origin = Origin {
                    account: account.clone(),
                    region: region.clone(),
                    partition,
                };
                let outcome = Box::pin(
                    self.start_run(message_id, library, playbook, &fired, None, &origin, None),
                )
                .await?;
                // A target whose run is within its dedup window, or left alone, is no new run.
                if outcome.status != Status::Skipped && outcome.code.as_deref() != Some("duplicate")
                {
                    started += 1;
                }
                outcomes.push(outcome);
            }
        }
        let summary = if left > 0 {
            format!(
                "{started} runs started, the most one firing starts (limits.max_targets); {left} more {kind} resources wait for the next"
            )
        } else {
            format!(
                "{started} runs started over {} {kind} resources looked at",
                outcomes.len()
            )
        };
        tracing::info!(key = %label, %summary, "schedule fired");
        // Said even when nothing was found: the firing is this playbook's, not an unknown event.
        outcomes.push(Outcome {
            key: label,
            status: Status::Succeeded,
            code: None,
            message: summary,
            transient: false,
        });
        Ok(outcomes)
    }
}
