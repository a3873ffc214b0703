use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use aws_config::SdkConfig;
use quell_responder::ledger::{Status, StepStatus};
use serde_json::Value;

use crate::support::{Sandbox, HOME};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![contain_user_denies_its_key_and_records_every_step]
}

/// One read call on S3, EC2 and SNS with the user's own key: which succeed.
async fn probe(config: &SdkConfig) -> Vec<(&'static str, Result<(), String>)> {
    let show = |r: Result<(), String>| r;
    vec![
        (
            "s3",
            show(
                aws_sdk_s3::Client::new(config)
                    .list_buckets()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
            ),
        ),
        (
            "ec2",
            show(
                aws_sdk_ec2::Client::new(config)
                    .describe_instances()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
            ),
        ),
        (
            "sns",
            show(
                aws_sdk_sns::Client::new(config)
                    .list_topics()
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
            ),
        ),
    ]
}

pub struct UserState {
    pub attached: Vec<String>,
    pub inline: Vec<String>,
    pub keys: Vec<(String, String)>,
    pub login: bool,
}

pub async fn user_state(s: &Sandbox, account: &str, name: &str) -> Result<UserState> {
    let iam = aws_sdk_iam::Client::new(&s.in_account(account, HOME).await?);
    let attached = iam
        .list_attached_user_policies()
        .user_name(name)
        .send()
        .await?
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect();
    let inline = iam
        .list_user_policies()
        .user_name(name)
        .send()
        .await?
        .policy_names()
        .to_vec();
    let keys = iam
        .list_access_keys()
        .user_name(name)
        .send()
        .await?
        .access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap_or_default().to_owned(),
                k.status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let login = iam.get_login_profile().user_name(name).send().await.is_ok();
    Ok(UserState {
        attached,
        inline,
        keys,
        login,
    })
}

const DENY_ALL: &str = "arn:aws:iam::aws:policy/AWSDenyAll";

async fn contain_user_denies_its_key_and_records_every_step(s: Arc<Sandbox>) -> Result<()> {
    let account = s.members()[0].clone();
    let arn = Sandbox::user_arn(&account);
    let (key, secret) = s.user_key(&account)?;
    let as_user = s.with_keys(&key, &secret, None, HOME).await;

    s.enforce_iam(true)?;
    let before = probe(&as_user).await;
    s.enforce_iam(false)?;
    for (service, r) in &before {
        ensure!(
            r.is_ok(),
            "before containment the key works on {service}: {r:?}"
        );
    }

    let out = s.quell(&[
        "--sandbox",
        "--output",
        "json",
        "contain",
        &arn,
        "--reason",
        "key found in a public gist",
        "--yes",
    ]);
    ensure!(
        out.status.code() == Some(0),
        "contain exits 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .context("contain --output json prints one JSON object")?;
    ensure!(report["status"] == "succeeded", "{report}");
    let request_id = report["request_id"].as_str().unwrap_or_default().to_owned();
    let steps: Vec<&str> = report["record"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    ensure!(
        steps
            == [
                "attach_deny_all",
                "revoke_older_sessions",
                "deactivate_access_keys",
                "delete_login_profile"
            ],
        "{steps:?}"
    );

    // Effects, read back from the account.
    let state = user_state(&s, &account, "ci-deployer").await?;
    ensure!(
        state.attached.iter().any(|p| p == DENY_ALL),
        "AWSDenyAll attached: {:?}",
        state.attached
    );
    ensure!(
        state.inline.iter().any(|p| p == "AWSRevokeOlderSessions"),
        "revoke policy: {:?}",
        state.inline
    );
    ensure!(
        state.keys.iter().all(|(_, st)| st == "Inactive"),
        "keys inactive: {:?}",
        state.keys
    );
    ensure!(!state.login, "console login removed");

    s.enforce_iam(true)?;
    let after = probe(&as_user).await;
    s.enforce_iam(false)?;
    for (service, r) in &after {
        let denied = r
            .as_ref()
            .err()
            .is_some_and(|e| e.contains("AccessDenied") || e.contains("403"));
        ensure!(
            denied,
            "after containment the key is denied on {service}: {r:?}"
        );
    }

    // The ledger holds the prior state a release needs.
    let record = s.ledger(&request_id).await?.context("ledger record")?;
    ensure!(record.status == Status::Succeeded);
    ensure!(
        record
            .requester
            .as_deref()
            .is_some_and(|r| r.contains("quell-sandbox-admin")),
        "requester recorded: {:?}",
        record.requester
    );
    let keys_step = record.step("deactivate_access_keys").context("keys step")?;
    ensure!(keys_step.status == StepStatus::Done);
    ensure!(
        keys_step.prior["access_keys"][0]["status"] == "Active",
        "prior key state: {}",
        keys_step.prior
    );
    let login_step = record.step("delete_login_profile").context("login step")?;
    ensure!(
        login_step.prior["login_profile"].is_object(),
        "prior login profile: {}",
        login_step.prior
    );

    let audit = s.audit_for(&request_id, 2).await?;
    let events: Vec<&str> = audit.iter().filter_map(|m| m["event"].as_str()).collect();
    ensure!(
        events.contains(&"started") && events.contains(&"succeeded"),
        "audit events {events:?}"
    );
    Ok(())
}
