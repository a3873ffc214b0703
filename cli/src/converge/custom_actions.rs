//! Security Hub custom actions "Quell: contain" and "Quell: remediate", and one for each declared
//! playbook's `securityhub_action` trigger, in the security account's home Region. CloudFormation
//! has no resource for them, so install creates them and uninstall deletes them; the security
//! stack's rule sends their events to the responder.

/// The Security Hub client for the security account's home Region.
pub fn client(security: &aws_config::SdkConfig) -> aws_sdk_securityhub::Client {
    crate::calls::client!(aws_sdk_securityhub, security)
}

use aws_sdk_securityhub::error::SdkError;
use quell_responder::aws_error::Described;
use quell_responder::playbooks::event::{CONTAIN_ACTION, REMEDIATE_ACTION};
use serde::Serialize;

use crate::playbook_document::PlaybookDocument;

/// Every custom action Quell makes has an id that starts so: what uninstall deletes.
const OWNED_PREFIX: &str = "Quell";

/// One custom action Quell owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomAction {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// The actions this configuration needs: Quell's two, and each declared playbook's.
pub fn wanted(document: Option<&PlaybookDocument>) -> Vec<CustomAction> {
    let built_in = [CONTAIN_ACTION, REMEDIATE_ACTION]
        .into_iter()
        .map(|(id, name, description)| CustomAction {
            id: id.into(),
            name: name.into(),
            description: description.into(),
        });
    let declared = document
        .into_iter()
        .flat_map(|d| d.custom_actions.iter())
        .map(|(id, name, playbook)| CustomAction {
            id: id.clone(),
            name: name.clone(),
            description: format!("Starts Quell's declared playbook {playbook}"),
        });
    built_in.chain(declared).collect()
}

/// What the security account has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Observed {
    /// Quell's actions there now: (id, ARN).
    Available { present: Vec<(String, String)> },
    /// Custom actions cannot be made here; the reason says why and what to do.
    Unavailable { reason: String },
}

impl Observed {
    /// The actions of `wanted` to create.
    pub fn missing(&self, wanted: &[CustomAction]) -> Vec<CustomAction> {
        match self {
            Observed::Available { present } => wanted
                .iter()
                .filter(|a| !present.iter().any(|(p, _)| *p == a.id))
                .cloned()
                .collect(),
            Observed::Unavailable { .. } => Vec::new(),
        }
    }

    /// Quell's actions here that `wanted` no longer has (a declared playbook's, removed from the
    /// configuration): (id, ARN) each. Its events would start nothing; upgrade deletes it.
    pub fn stale(&self, wanted: &[CustomAction]) -> Vec<(String, String)> {
        match self {
            Observed::Available { present } => present
                .iter()
                .filter(|(id, _)| !wanted.iter().any(|a| a.id == *id))
                .cloned()
                .collect(),
            Observed::Unavailable { .. } => Vec::new(),
        }
    }
}

/// The HTTP status of a failed call, when the service answered at all.
fn status<E>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

pub async fn read(
    hub: &aws_sdk_securityhub::Client,
    account: &str,
    region: &str,
) -> anyhow::Result<Observed> {
    let mut present = Vec::new();
    let mut pages = hub.describe_action_targets().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) if status(&e) == Some(404) => {
                return Ok(Observed::Unavailable {
                    reason: format!(
                        "the Security Hub endpoint for {account} {region} has no custom actions (HTTP 404; the local sandbox's emulator lacks them)"
                    ),
                })
            }
            Err(e) => {
                let e = Err::<(), _>(e)
                    .described("securityhub:DescribeActionTargets")
                    .unwrap_err();
                if e.is_code("InvalidAccessException") {
                    return Ok(Observed::Unavailable {
                        reason: format!(
                            "Security Hub is not enabled in {account} {region}: enable it (aws securityhub enable-security-hub), then run `quell upgrade`"
                        ),
                    });
                }
                return Err(e.into());
            }
        };
        for t in page.action_targets() {
            let arn = t.action_target_arn().unwrap_or_default();
            let id = arn.rsplit('/').next().unwrap_or_default();
            if id.starts_with(OWNED_PREFIX) {
                present.push((id.to_owned(), arn.to_owned()));
            }
        }
    }
    Ok(Observed::Available { present })
}

pub async fn create(
    hub: &aws_sdk_securityhub::Client,
    missing: &[CustomAction],
) -> anyhow::Result<()> {
    for a in missing {
        match hub
            .create_action_target()
            .id(&a.id)
            .name(&a.name)
            .description(&a.description)
            .send()
            .await
            .described("securityhub:CreateActionTarget")
        {
            // Made by a run that stopped before it could say so.
            Err(e) if e.is_code("ResourceConflictException") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Deletes Quell's actions; returns the ids deleted.
pub async fn delete(
    hub: &aws_sdk_securityhub::Client,
    observed: &Observed,
) -> anyhow::Result<Vec<String>> {
    let Observed::Available { present } = observed else {
        return Ok(Vec::new());
    };
    remove(hub, present).await
}

/// Deletes these actions, (id, ARN) each; returns the ids deleted (one already gone is not).
pub async fn remove(
    hub: &aws_sdk_securityhub::Client,
    actions: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let mut deleted = Vec::new();
    for (id, arn) in actions {
        match hub
            .delete_action_target()
            .action_target_arn(arn)
            .send()
            .await
            .described("securityhub:DeleteActionTarget")
        {
            Err(e) if e.is_code("ResourceNotFoundException") => {}
            other => {
                other?;
                deleted.push(id.clone());
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_securityhub::operation::create_action_target::{
        CreateActionTargetError, CreateActionTargetOutput,
    };
    use aws_sdk_securityhub::operation::delete_action_target::DeleteActionTargetOutput;
    use aws_sdk_securityhub::operation::describe_action_targets::{
        DescribeActionTargetsError, DescribeActionTargetsOutput,
    };
    use aws_sdk_securityhub::types::ActionTarget;
    use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    const ARN: &str = "arn:aws:securityhub:us-east-1:222233334444:action/custom/";

    /// Security Hub holding `existing` action ids; records what was created and deleted.
    fn hub(
        existing: &[&str],
        created: &Arc<Mutex<Vec<(String, String)>>>,
        deleted: &Arc<Mutex<Vec<String>>>,
    ) -> aws_sdk_securityhub::Client {
        let listed: Vec<ActionTarget> = existing
            .iter()
            .chain(["SomeoneElses"].iter())
            .map(|id| {
                ActionTarget::builder()
                    .action_target_arn(format!("{ARN}{id}"))
                    .name(*id)
                    .description("d")
                    .build()
            })
            .collect();
        let describe =
            mock!(aws_sdk_securityhub::Client::describe_action_targets).then_output(move || {
                DescribeActionTargetsOutput::builder()
                    .set_action_targets(Some(listed.clone()))
                    .build()
            });
        let existing: Vec<String> = existing.iter().map(|s| (*s).to_owned()).collect();
        let create = {
            let created = created.clone();
            mock!(aws_sdk_securityhub::Client::create_action_target).then_compute_response(
                move |req| {
                    let id = req.id().unwrap_or_default().to_owned();
                    if existing.contains(&id) {
                        return MockResponse::Error(CreateActionTargetError::generic(
                            ErrorMetadata::builder()
                                .code("ResourceConflictException")
                                .build(),
                        ));
                    }
                    created
                        .lock()
                        .unwrap()
                        .push((id.clone(), req.name().unwrap_or_default().to_owned()));
                    MockResponse::Output(
                        CreateActionTargetOutput::builder()
                            .action_target_arn(format!("{ARN}{id}"))
                            .build(),
                    )
                },
            )
        };
        let delete = {
            let deleted = deleted.clone();
            mock!(aws_sdk_securityhub::Client::delete_action_target).then_compute_output(
                move |req| {
                    let arn = req.action_target_arn().unwrap_or_default().to_owned();
                    deleted.lock().unwrap().push(arn.clone());
                    DeleteActionTargetOutput::builder()
                        .action_target_arn(arn)
                        .build()
                },
            )
        };
        mock_client!(
            aws_sdk_securityhub,
            RuleMode::MatchAny,
            &[&describe, &create, &delete]
        )
    }

    #[tokio::test]
    async fn install_creates_the_missing_action_and_uninstall_deletes_only_quells() {
        let created = Arc::new(Mutex::new(Vec::new()));
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let hub = hub(&["QuellContain"], &created, &deleted);
        let observed = read(&hub, "222233334444", "us-east-1").await.unwrap();
        let all = wanted(None);
        let missing = observed.missing(&all);
        assert_eq!(
            missing.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["Quell: remediate"]
        );
        create(&hub, &missing).await.unwrap();
        assert_eq!(
            created.lock().unwrap().as_slice(),
            [("QuellRemediate".to_owned(), "Quell: remediate".to_owned())]
        );
        // A run that stopped after creating it finds it there: no error, nothing twice.
        create(&hub, &all[..1]).await.unwrap();
        assert_eq!(created.lock().unwrap().len(), 1);
        assert!(
            all.iter().all(|a| a.name.len() < 20),
            "Security Hub's limit"
        );

        let removed = delete(&hub, &observed).await.unwrap();
        assert_eq!(removed, ["QuellContain"]);
        assert_eq!(
            deleted.lock().unwrap().as_slice(),
            [format!("{ARN}QuellContain")],
            "the other custom action stays"
        );
    }

    #[tokio::test]
    async fn upgrade_deletes_the_action_of_a_playbook_no_longer_declared_and_nothing_else() {
        let created = Arc::new(Mutex::new(Vec::new()));
        let deleted = Arc::new(Mutex::new(Vec::new()));
        let gone = "QuellPb0123456789abc";
        let hub = hub(
            &["QuellContain", "QuellRemediate", gone],
            &created,
            &deleted,
        );
        let observed = read(&hub, "222233334444", "us-east-1").await.unwrap();
        let stale = observed.stale(&wanted(None));
        assert_eq!(stale, [(gone.to_owned(), format!("{ARN}{gone}"))]);
        assert_eq!(remove(&hub, &stale).await.unwrap(), [gone]);
        assert_eq!(
            deleted.lock().unwrap().as_slice(),
            [format!("{ARN}{gone}")],
            "Quell's own two and someone else's stay"
        );
    }

    #[tokio::test]
    async fn an_endpoint_without_custom_actions_is_reported_as_such() {
        let describe = mock!(aws_sdk_securityhub::Client::describe_action_targets)
            .then_http_response(|| {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(404).unwrap(),
                    aws_smithy_types::body::SdkBody::from("<h1>Not Found</h1>"),
                )
            });
        let hub = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&describe]);
        let observed = read(&hub, "222233334444", "us-east-1").await.unwrap();
        let Observed::Unavailable { reason } = &observed else {
            panic!("{observed:?}")
        };
        assert!(reason.contains("HTTP 404"), "{reason}");
        assert!(
            observed.missing(&wanted(None)).is_empty(),
            "nothing to create, nothing written"
        );
    }

    #[tokio::test]
    async fn without_security_hub_the_plan_says_how_to_enable_it_and_nothing_is_written() {
        let describe =
            mock!(aws_sdk_securityhub::Client::describe_action_targets).then_error(|| {
                DescribeActionTargetsError::generic(
                    ErrorMetadata::builder()
                        .code("InvalidAccessException")
                        .message("Account 222233334444 is not subscribed to AWS Security Hub")
                        .build(),
                )
            });
        let hub = mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&describe]);
        let observed = read(&hub, "222233334444", "us-east-1").await.unwrap();
        let Observed::Unavailable { reason } = &observed else {
            panic!("{observed:?}")
        };
        assert!(reason.contains("enable-security-hub"), "{reason}");
        assert!(observed.missing(&wanted(None)).is_empty());
        assert!(delete(&hub, &observed).await.unwrap().is_empty());
    }
}
