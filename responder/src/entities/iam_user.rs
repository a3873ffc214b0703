//! Containing an IAM user: deny everything, refuse earlier session tokens, deactivate the access
//! keys, remove the console password. Keys are deactivated, not deleted, so they stay available as
//! evidence and can be reactivated on release.

use aws_sdk_iam::types::StatusType;
use aws_sdk_iam::Client;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{deny_all_arn, revoke_older_sessions_policy, StepOutcome, REVOKE_POLICY_NAME};
use crate::aws_error::{CallError, Described};
use crate::entity::IamUser;

/// The steps, in the order they run: the deny first, because it takes effect for every credential
/// at once, keys and password next.
pub const STEPS: [UserStep; 4] = [
    UserStep::AttachDenyAll,
    UserStep::RevokeOlderSessions,
    UserStep::DeactivateAccessKeys,
    UserStep::DeleteLoginProfile,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStep {
    AttachDenyAll,
    RevokeOlderSessions,
    DeactivateAccessKeys,
    DeleteLoginProfile,
}

impl UserStep {
    pub fn name(self) -> &'static str {
        match self {
            UserStep::AttachDenyAll => "attach_deny_all",
            UserStep::RevokeOlderSessions => "revoke_older_sessions",
            UserStep::DeactivateAccessKeys => "deactivate_access_keys",
            UserStep::DeleteLoginProfile => "delete_login_profile",
        }
    }
}

/// Whether the user exists; read before anything is written.
pub async fn exists(iam: &Client, user: &IamUser) -> Result<bool, CallError> {
    match iam
        .get_user()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:GetUser")
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_code("NoSuchEntity") => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn run(
    iam: &Client,
    user: &IamUser,
    step: UserStep,
    now: DateTime<Utc>,
) -> Result<StepOutcome, CallError> {
    match step {
        UserStep::AttachDenyAll => attach_deny_all(iam, user).await,
        UserStep::RevokeOlderSessions => revoke_older_sessions(iam, user, now).await,
        UserStep::DeactivateAccessKeys => deactivate_access_keys(iam, user).await,
        UserStep::DeleteLoginProfile => delete_login_profile(iam, user).await,
    }
}

async fn attached_policies(iam: &Client, user: &IamUser) -> Result<Vec<String>, CallError> {
    let mut arns = Vec::new();
    let mut pages = iam
        .list_attached_user_policies()
        .user_name(&user.name)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.described("iam:ListAttachedUserPolicies")?;
        arns.extend(
            page.attached_policies()
                .iter()
                .filter_map(|p| p.policy_arn().map(str::to_owned)),
        );
    }
    Ok(arns)
}

async fn attach_deny_all(iam: &Client, user: &IamUser) -> Result<StepOutcome, CallError> {
    let deny_all = deny_all_arn(&user.partition);
    let before = attached_policies(iam, user).await?;
    let prior = json!({ "attached_policies": before });
    if before.contains(&deny_all) {
        return Ok(StepOutcome::skipped(
            "AWSDenyAll was already attached",
            prior,
        ));
    }
    iam.attach_user_policy()
        .user_name(&user.name)
        .policy_arn(&deny_all)
        .send()
        .await
        .described("iam:AttachUserPolicy")?;
    Ok(StepOutcome::done(
        "attached AWSDenyAll",
        prior,
        json!({ "attached_policy": deny_all }),
    ))
}

async fn revoke_older_sessions(
    iam: &Client,
    user: &IamUser,
    now: DateTime<Utc>,
) -> Result<StepOutcome, CallError> {
    let prior_document = match iam
        .get_user_policy()
        .user_name(&user.name)
        .policy_name(REVOKE_POLICY_NAME)
        .send()
        .await
        .described("iam:GetUserPolicy")
    {
        Ok(out) => Some(out.policy_document().to_owned()),
        Err(e) if e.is_code("NoSuchEntity") => None,
        Err(e) => return Err(e),
    };
    let document = revoke_older_sessions_policy(&now);
    iam.put_user_policy()
        .user_name(&user.name)
        .policy_name(REVOKE_POLICY_NAME)
        .policy_document(&document)
        .send()
        .await
        .described("iam:PutUserPolicy")?;
    Ok(StepOutcome::done(
        format!(
            "session tokens issued before {} are denied",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        json!({ "inline_policy": REVOKE_POLICY_NAME, "document": prior_document }),
        json!({ "inline_policy": REVOKE_POLICY_NAME, "document": document }),
    ))
}

async fn deactivate_access_keys(iam: &Client, user: &IamUser) -> Result<StepOutcome, CallError> {
    let out = iam
        .list_access_keys()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:ListAccessKeys")?;
    let keys: Vec<(String, StatusType)> = out
        .access_key_metadata()
        .iter()
        .filter_map(|k| Some((k.access_key_id()?.to_owned(), k.status()?.clone())))
        .collect();
    let prior = json!({
        "access_keys": keys.iter().map(|(id, st)| json!({"id": id, "status": st.as_str()})).collect::<Vec<_>>()
    });
    let active: Vec<&String> = keys
        .iter()
        .filter(|(_, st)| *st == StatusType::Active)
        .map(|(id, _)| id)
        .collect();
    if active.is_empty() {
        return Ok(StepOutcome::skipped("no active access keys", prior));
    }
    for id in &active {
        iam.update_access_key()
            .user_name(&user.name)
            .access_key_id(id.as_str())
            .status(StatusType::Inactive)
            .send()
            .await
            .described("iam:UpdateAccessKey")?;
    }
    let ids: Vec<&str> = active.iter().map(|s| s.as_str()).collect();
    Ok(StepOutcome::done(
        format!("deactivated {}", ids.join(", ")),
        prior,
        json!({ "deactivated": ids }),
    ))
}

async fn delete_login_profile(iam: &Client, user: &IamUser) -> Result<StepOutcome, CallError> {
    let profile = match iam
        .get_login_profile()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:GetLoginProfile")
    {
        Ok(out) => out.login_profile().cloned(),
        Err(e) if e.is_code("NoSuchEntity") => None,
        Err(e) => return Err(e),
    };
    let Some(profile) = profile else {
        return Ok(StepOutcome::skipped(
            "no console login",
            json!({ "login_profile": null }),
        ));
    };
    let prior = json!({ "login_profile": {
        "created": profile.create_date().to_string(),
        "password_reset_required": profile.password_reset_required(),
    }});
    match iam
        .delete_login_profile()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:DeleteLoginProfile")
    {
        Ok(_) => {}
        // Deleted between our read and our write: the goal is met.
        Err(e) if e.is_code("NoSuchEntity") => {}
        Err(e) => return Err(e),
    }
    Ok(StepOutcome::done(
        "console password removed",
        prior,
        json!({ "login_profile": null }),
    ))
}

/// Reads the user back and lists what is not as containment left it. Empty means contained.
pub async fn verify(iam: &Client, user: &IamUser) -> Result<Vec<String>, CallError> {
    let mut problems = Vec::new();
    if !attached_policies(iam, user)
        .await?
        .contains(&deny_all_arn(&user.partition))
    {
        problems.push("AWSDenyAll is not attached".to_owned());
    }
    match iam
        .get_user_policy()
        .user_name(&user.name)
        .policy_name(REVOKE_POLICY_NAME)
        .send()
        .await
        .described("iam:GetUserPolicy")
    {
        Ok(_) => {}
        Err(e) if e.is_code("NoSuchEntity") => {
            problems.push(format!("inline policy {REVOKE_POLICY_NAME} is missing"));
        }
        Err(e) => return Err(e),
    }
    let keys = iam
        .list_access_keys()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:ListAccessKeys")?;
    for k in keys.access_key_metadata() {
        if k.status() == Some(&StatusType::Active) {
            problems.push(format!(
                "access key {} is still active",
                k.access_key_id().unwrap_or("?")
            ));
        }
    }
    match iam
        .get_login_profile()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:GetLoginProfile")
    {
        Ok(_) => problems.push("console login still exists".to_owned()),
        Err(e) if e.is_code("NoSuchEntity") => {}
        Err(e) => return Err(e),
    }
    Ok(problems)
}
