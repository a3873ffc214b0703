use std::sync::Arc;

use anyhow::{ensure, Context, Result};

use crate::support::{Sandbox, HOME, SECOND};
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        install_puts_the_responder_role_and_rules_in_every_account_and_region,
        install_puts_the_security_stack_and_org_reader_in_place
    ]
}

async fn install_puts_the_responder_role_and_rules_in_every_account_and_region(
    s: Arc<Sandbox>,
) -> Result<()> {
    let security = s.security();
    let accounts: Vec<String> = std::iter::once(security.clone())
        .chain(s.members())
        .collect();
    ensure!(
        accounts.len() == 4,
        "expected the security account and three members, got {accounts:?}"
    );
    for account in &accounts {
        let home = s.in_account(account, HOME).await?;
        let role = aws_sdk_iam::Client::new(&home)
            .get_role()
            .role_name("quell-responder")
            .send()
            .await
            .with_context(|| format!("quell-responder in {account}"))?;
        let trust = role
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .unwrap_or_default();
        let trust = urlencoding_decode(trust);
        ensure!(
            trust.contains(&format!(
                "arn:aws:iam::{security}:role/quell-responder-execution"
            )),
            "{account}: trust names the responder: {trust}"
        );
        ensure!(
            trust.contains("sts:ExternalId"),
            "{account}: trust demands the ExternalId: {trust}"
        );
        let inline = aws_sdk_iam::Client::new(&home)
            .list_role_policies()
            .role_name("quell-responder")
            .send()
            .await?;
        ensure!(
            inline.policy_names().iter().any(|p| p == "quell-responder"),
            "{account}: least-privilege policy in place"
        );
        for region in [HOME, SECOND] {
            let config = s.in_account(account, region).await?;
            let rules = aws_sdk_eventbridge::Client::new(&config)
                .list_rules()
                .name_prefix("quell-forward")
                .send()
                .await?;
            let mut names: Vec<&str> = rules.rules().iter().filter_map(|r| r.name()).collect();
            names.sort_unstable();
            ensure!(
                names
                    == [
                        "quell-forward-api-calls",
                        "quell-forward-config",
                        "quell-forward-findings",
                        "quell-forward-securityhub"
                    ],
                "{account} {region}: rules {names:?}"
            );
            let targets = aws_sdk_eventbridge::Client::new(&config)
                .list_targets_by_rule()
                .rule("quell-forward-api-calls")
                .send()
                .await?;
            let target = targets
                .targets()
                .first()
                .map(|t| t.arn().to_owned())
                .unwrap_or_default();
            ensure!(
                target == format!("arn:aws:events:{HOME}:{security}:event-bus/quell-central"),
                "{account} {region}: forwards to the central bus, not {target}"
            );
            // The Region's own forwarder role, made by the same stack as the rule.
            let forwarder = format!("quell-event-forwarder-{region}");
            let role_arn = targets
                .targets()
                .first()
                .and_then(|t| t.role_arn())
                .unwrap_or_default();
            ensure!(
                role_arn == format!("arn:aws:iam::{account}:role/{forwarder}"),
                "{account} {region}: forwards as {forwarder}, not {role_arn}"
            );
            aws_sdk_iam::Client::new(&home)
                .get_role()
                .role_name(&forwarder)
                .send()
                .await
                .with_context(|| format!("{forwarder} in {account}"))?;
        }
    }
    Ok(())
}

async fn install_puts_the_security_stack_and_org_reader_in_place(s: Arc<Sandbox>) -> Result<()> {
    let security = s.in_account(&s.security(), HOME).await?;
    let topics = aws_sdk_sns::Client::new(&security)
        .list_topics()
        .send()
        .await?;
    let arns: Vec<&str> = topics
        .topics()
        .iter()
        .filter_map(|t| t.topic_arn())
        .collect();
    for t in ["quell-containment", "quell-audit"] {
        ensure!(
            arns.iter().any(|a| a.ends_with(&format!(":{t}"))),
            "topic {t} in {arns:?}"
        );
    }
    let mgmt = s.admin(HOME).await;
    let reader = aws_sdk_iam::Client::new(&mgmt)
        .get_role()
        .role_name("quell-org-reader")
        .send()
        .await
        .context("quell-org-reader in the management account")?;
    ensure!(reader.role().is_some());
    // Installing again changes nothing it does not have to and uploads no new package.
    let out = s.must(&[
        "--sandbox",
        "--output",
        "json",
        "install",
        "--config",
        s.config_path().to_str().unwrap_or_default(),
        "--yes",
    ])?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        summary["plan"]["upload_artifact"] == false && summary["applied"] == false,
        "same build, nothing to apply: {}",
        summary["plan"]
    );
    ensure!(
        summary["stack_sets"][0]["instances"]
            .as_array()
            .map(Vec::len)
            == Some(4),
        "member-roles instances: {}",
        summary["stack_sets"][0]
    );
    ensure!(
        summary["stack_sets"][1]["instances"]
            .as_array()
            .map(Vec::len)
            == Some(8),
        "member-regional instances: {}",
        summary["stack_sets"][1]
    );
    Ok(())
}

/// IAM returns trust policies URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
