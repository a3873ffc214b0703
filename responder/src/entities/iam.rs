//! Containing IAM principals. A user: deny everything, refuse earlier session tokens, deactivate
//! the access keys (kept, as evidence and for release), remove the console password. A role: deny
//! everything and revoke its active sessions.

use aws_sdk_iam::types::StatusType;
use aws_sdk_iam::Client;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{deny_all_arn, revoke_older_sessions_policy, StepOutcome, REVOKE_POLICY_NAME};
use crate::aws_error::{CallError, Described};
use crate::entity::IamPrincipal;

pub const USER_STEPS: &[&str] = &[
    "attach_deny_all",
    "revoke_older_sessions",
    "deactivate_access_keys",
    "delete_login_profile",
];
pub const ROLE_STEPS: &[&str] = &["attach_deny_all", "revoke_older_sessions"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Role,
}

/// A user or a role, with the IAM calls that differ between them.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub kind: Kind,
    pub who: &'a IamPrincipal,
}

impl Principal<'_> {
    fn name(&self) -> &str {
        &self.who.name
    }

    /// The ARN IAM has for the principal named like this one, `None` when there is none. IAM
    /// names are unique whatever their letter case, so this may differ from the request's ARN.
    pub async fn real_arn(&self, iam: &Client) -> Result<Option<String>, CallError> {
        let r = match self.kind {
            Kind::User => iam
                .get_user()
                .user_name(self.name())
                .send()
                .await
                .described("iam:GetUser")
                .map(|o| o.user().map(|u| u.arn().to_owned())),
            Kind::Role => iam
                .get_role()
                .role_name(self.name())
                .send()
                .await
                .described("iam:GetRole")
                .map(|o| o.role().map(|r| r.arn().to_owned())),
        };
        match r {
            Ok(arn) => Ok(arn),
            Err(e) if e.is_code("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn attached_policies(&self, iam: &Client) -> Result<Vec<String>, CallError> {
        let mut arns = Vec::new();
        match self.kind {
            Kind::User => {
                let mut pages = iam
                    .list_attached_user_policies()
                    .user_name(self.name())
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
            }
            Kind::Role => {
                let mut pages = iam
                    .list_attached_role_policies()
                    .role_name(self.name())
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.described("iam:ListAttachedRolePolicies")?;
                    arns.extend(
                        page.attached_policies()
                            .iter()
                            .filter_map(|p| p.policy_arn().map(str::to_owned)),
                    );
                }
            }
        }
        Ok(arns)
    }

    pub async fn attach(&self, iam: &Client, policy: &str) -> Result<(), CallError> {
        match self.kind {
            Kind::User => iam
                .attach_user_policy()
                .user_name(self.name())
                .policy_arn(policy)
                .send()
                .await
                .map(|_| ())
                .described("iam:AttachUserPolicy"),
            Kind::Role => iam
                .attach_role_policy()
                .role_name(self.name())
                .policy_arn(policy)
                .send()
                .await
                .map(|_| ())
                .described("iam:AttachRolePolicy"),
        }
    }

    pub async fn detach(&self, iam: &Client, policy: &str) -> Result<(), CallError> {
        match self.kind {
            Kind::User => iam
                .detach_user_policy()
                .user_name(self.name())
                .policy_arn(policy)
                .send()
                .await
                .map(|_| ())
                .described("iam:DetachUserPolicy"),
            Kind::Role => iam
                .detach_role_policy()
                .role_name(self.name())
                .policy_arn(policy)
                .send()
                .await
                .map(|_| ())
                .described("iam:DetachRolePolicy"),
        }
    }

    /// The inline policy document named `name`, if there is one.
    pub async fn inline(&self, iam: &Client, name: &str) -> Result<Option<String>, CallError> {
        if self.kind == Kind::Role {
            return role_inline_policy(iam, self.name(), name).await;
        }
        match iam
            .get_user_policy()
            .user_name(self.name())
            .policy_name(name)
            .send()
            .await
            .described("iam:GetUserPolicy")
        {
            Ok(o) => Ok(Some(percent_decoded(o.policy_document()))),
            Err(e) if e.is_code("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn put_inline(
        &self,
        iam: &Client,
        name: &str,
        document: &str,
    ) -> Result<(), CallError> {
        match self.kind {
            Kind::User => iam
                .put_user_policy()
                .user_name(self.name())
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .described("iam:PutUserPolicy"),
            Kind::Role => iam
                .put_role_policy()
                .role_name(self.name())
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .described("iam:PutRolePolicy"),
        }
    }

    pub async fn delete_inline(&self, iam: &Client, name: &str) -> Result<(), CallError> {
        let r = match self.kind {
            Kind::User => iam
                .delete_user_policy()
                .user_name(self.name())
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .described("iam:DeleteUserPolicy"),
            Kind::Role => iam
                .delete_role_policy()
                .role_name(self.name())
                .policy_name(name)
                .send()
                .await
                .map(|_| ())
                .described("iam:DeleteRolePolicy"),
        };
        match r {
            Err(e) if e.is_code("NoSuchEntity") => Ok(()),
            other => other,
        }
    }
}

/// A role's inline policy `name` as JSON, if there is one (IAM returns it URL-encoded, and a
/// document saved that way could never be put back).
pub async fn role_inline_policy(
    iam: &Client,
    role: &str,
    name: &str,
) -> Result<Option<String>, CallError> {
    match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
        .described("iam:GetRolePolicy")
    {
        Ok(o) => Ok(Some(percent_decoded(o.policy_document()))),
        Err(e) if e.is_code("NoSuchEntity") => Ok(None),
        Err(e) => Err(e),
    }
}

/// IAM returns policy documents URL-encoded.
fn percent_decoded(doc: &str) -> String {
    percent_encoding::percent_decode_str(doc)
        .decode_utf8_lossy()
        .into_owned()
}

pub async fn run(
    iam: &Client,
    p: Principal<'_>,
    step: &str,
    now: DateTime<Utc>,
) -> Result<StepOutcome, CallError> {
    match step {
        "attach_deny_all" => attach_deny_all(iam, p).await,
        "revoke_older_sessions" => revoke_older_sessions(iam, p, now).await,
        "deactivate_access_keys" => deactivate_access_keys(iam, p.who).await,
        "delete_login_profile" => delete_login_profile(iam, p.who).await,
        other => unreachable!("no IAM step {other}"),
    }
}

async fn attach_deny_all(iam: &Client, p: Principal<'_>) -> Result<StepOutcome, CallError> {
    let deny_all = deny_all_arn(&p.who.partition);
    let before = p.attached_policies(iam).await?;
    let prior = json!({ "attached_policies": before });
    if before.contains(&deny_all) {
        return Ok(StepOutcome::skipped(
            "AWSDenyAll was already attached",
            prior,
        ));
    }
    match p.attach(iam, &deny_all).await {
        Ok(()) => Ok(StepOutcome::done(
            "attached AWSDenyAll",
            prior,
            json!({ "attached_policy": deny_all }),
        )),
        // IAM allows 10 managed policies per user or role by default: an entity that has them
        // all still gets denied everything, by an inline policy of the same effect.
        Err(e) if e.is_code("LimitExceeded") => {
            let existing = p.inline(iam, DENY_ALL_POLICY_NAME).await?;
            p.put_inline(iam, DENY_ALL_POLICY_NAME, DENY_ALL_DOCUMENT)
                .await?;
            Ok(StepOutcome::done(
                format!("AWSDenyAll could not be attached ({} managed policies are IAM's limit): denied everything with the inline policy {DENY_ALL_POLICY_NAME} instead", before.len()),
                json!({ "attached_policies": before, "inline_policy": DENY_ALL_POLICY_NAME, "document": existing }),
                json!({ "inline_policy": DENY_ALL_POLICY_NAME, "document": DENY_ALL_DOCUMENT }),
            ))
        }
        Err(e) => Err(e),
    }
}

/// The inline stand-in for AWSDenyAll, used when the entity has no room for a managed policy.
pub const DENY_ALL_POLICY_NAME: &str = "QuellDenyAll";
const DENY_ALL_DOCUMENT: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"QuellDenyAll","Effect":"Deny","Action":"*","Resource":"*"}]}"#;

async fn revoke_older_sessions(
    iam: &Client,
    p: Principal<'_>,
    now: DateTime<Utc>,
) -> Result<StepOutcome, CallError> {
    let prior_document = p.inline(iam, REVOKE_POLICY_NAME).await?;
    let document = revoke_older_sessions_policy(&now);
    p.put_inline(iam, REVOKE_POLICY_NAME, &document).await?;
    let what = match p.kind {
        Kind::User => "session tokens",
        Kind::Role => "role sessions",
    };
    Ok(StepOutcome::done(
        format!(
            "{what} issued before {} are denied",
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        json!({ "inline_policy": REVOKE_POLICY_NAME, "document": prior_document }),
        json!({ "inline_policy": REVOKE_POLICY_NAME, "document": document }),
    ))
}

async fn deactivate_access_keys(
    iam: &Client,
    user: &IamPrincipal,
) -> Result<StepOutcome, CallError> {
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
    let prior = json!({ "access_keys": keys.iter().map(|(id, st)| json!({"id": id, "status": st.as_str()})).collect::<Vec<_>>() });
    let active: Vec<&str> = keys
        .iter()
        .filter(|(_, st)| *st == StatusType::Active)
        .map(|(id, _)| id.as_str())
        .collect();
    if active.is_empty() {
        return Ok(StepOutcome::skipped("no active access keys", prior));
    }
    for id in &active {
        set_key_status(iam, user, id, StatusType::Inactive).await?;
    }
    Ok(StepOutcome::done(
        format!("deactivated {}", active.join(", ")),
        prior,
        json!({ "deactivated": active }),
    ))
}

pub async fn set_key_status(
    iam: &Client,
    user: &IamPrincipal,
    key: &str,
    status: StatusType,
) -> Result<(), CallError> {
    iam.update_access_key()
        .user_name(&user.name)
        .access_key_id(key)
        .status(status)
        .send()
        .await
        .described("iam:UpdateAccessKey")?;
    Ok(())
}

async fn delete_login_profile(iam: &Client, user: &IamPrincipal) -> Result<StepOutcome, CallError> {
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
        // Deleted between our read and our write: the goal is met.
        Ok(_) => {}
        Err(e) if e.is_code("NoSuchEntity") => {}
        Err(e) => return Err(e),
    }
    Ok(StepOutcome::done(
        "console password removed",
        prior,
        json!({ "login_profile": null }),
    ))
}

/// Reads the principal back and lists what is not as containment left it. Empty means contained.
pub async fn verify(iam: &Client, p: Principal<'_>) -> Result<Vec<String>, CallError> {
    let mut problems = Vec::new();
    let denied = p
        .attached_policies(iam)
        .await?
        .contains(&deny_all_arn(&p.who.partition))
        || p.inline(iam, DENY_ALL_POLICY_NAME)
            .await?
            .is_some_and(|d| same_json(&d, DENY_ALL_DOCUMENT));
    if !denied {
        problems.push(format!(
            "neither AWSDenyAll nor the inline {DENY_ALL_POLICY_NAME} is in place"
        ));
    }
    if p.inline(iam, REVOKE_POLICY_NAME).await?.is_none() {
        problems.push(format!("inline policy {REVOKE_POLICY_NAME} is missing"));
    }
    if p.kind == Kind::Role {
        return Ok(problems);
    }
    let keys = iam
        .list_access_keys()
        .user_name(&p.who.name)
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
        .user_name(&p.who.name)
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

/// Undoes a containment from what the ledger recorded. Returns one outcome per undone step.
pub async fn release(
    iam: &Client,
    p: Principal<'_>,
    done: &[&crate::ledger::Step],
    reactivate_keys: bool,
) -> Vec<(String, Result<StepOutcome, CallError>)> {
    let mut out = Vec::new();
    for step in done {
        let result = match step.name.as_str() {
            "attach_deny_all" => release_deny_all(iam, p, step).await,
            "revoke_older_sessions" => release_revoke(iam, p, step).await,
            "deactivate_access_keys" => release_keys(iam, p.who, step, reactivate_keys).await,
            "delete_login_profile" => Ok(StepOutcome::skipped(
                "the console password cannot be restored (IAM never reveals it): set a new one with `aws iam create-login-profile` once the user is trusted again",
                step.prior.clone(),
            )),
            _ => continue,
        };
        out.push((format!("release_{}", step.name), result));
    }
    out
}

async fn release_deny_all(
    iam: &Client,
    p: Principal<'_>,
    step: &crate::ledger::Step,
) -> Result<StepOutcome, CallError> {
    if step.new["inline_policy"].as_str() == Some(DENY_ALL_POLICY_NAME) {
        return release_inline(iam, p, step, DENY_ALL_POLICY_NAME).await;
    }
    let deny_all = deny_all_arn(&p.who.partition);
    let attached = p.attached_policies(iam).await?;
    let prior = json!({ "attached_policies": attached });
    if !attached.contains(&deny_all) {
        return Ok(StepOutcome::skipped(
            "AWSDenyAll is no longer attached (changed since containment); nothing to remove",
            prior,
        ));
    }
    p.detach(iam, &deny_all).await?;
    let _ = step;
    Ok(StepOutcome::done(
        "detached AWSDenyAll, which Quell attached",
        prior,
        json!({ "detached_policy": deny_all }),
    ))
}

async fn release_revoke(
    iam: &Client,
    p: Principal<'_>,
    step: &crate::ledger::Step,
) -> Result<StepOutcome, CallError> {
    release_inline(iam, p, step, REVOKE_POLICY_NAME)
        .await
        .map(|mut o| {
            if o.status == crate::ledger::StepStatus::Done {
                o.detail.push_str(
                    "; sessions issued before containment stay invalid only until they expire",
                );
            }
            o
        })
}

/// Puts back the inline policy `name` as it was before containment (or removes it), unless it
/// changed since Quell wrote it.
async fn release_inline(
    iam: &Client,
    p: Principal<'_>,
    step: &crate::ledger::Step,
    name: &str,
) -> Result<StepOutcome, CallError> {
    let current = p.inline(iam, name).await?;
    let ours = step.new["document"].as_str();
    let prior = json!({ "inline_policy": name, "document": current });
    match (&current, ours) {
        (None, _) => Ok(StepOutcome::skipped(
            format!("{name} is already gone"),
            prior,
        )),
        (Some(cur), Some(ours)) if !same_json(cur, ours) => Ok(StepOutcome::skipped(
            format!("{name} was changed since containment; left as it is"),
            prior,
        )),
        _ => {
            match step.prior["document"].as_str() {
                Some(original) => p.put_inline(iam, name, original).await?,
                None => p.delete_inline(iam, name).await?,
            }
            Ok(StepOutcome::done(
                format!("removed {name}, which Quell put there"),
                prior,
                json!({ "inline_policy": name, "document": step.prior["document"] }),
            ))
        }
    }
}

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

async fn release_keys(
    iam: &Client,
    user: &IamPrincipal,
    step: &crate::ledger::Step,
    reactivate: bool,
) -> Result<StepOutcome, CallError> {
    let deactivated: Vec<String> = step.new["deactivated"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if !reactivate {
        return Ok(StepOutcome::skipped(
            format!("access keys {} stay inactive: a leaked key stays leaked; pass --reactivate-keys if you are sure, or issue new keys", deactivated.join(", ")),
            json!({ "inactive": deactivated }),
        ));
    }
    let existing = iam
        .list_access_keys()
        .user_name(&user.name)
        .send()
        .await
        .described("iam:ListAccessKeys")?;
    let present: Vec<String> = existing
        .access_key_metadata()
        .iter()
        .filter_map(|k| k.access_key_id().map(str::to_owned))
        .collect();
    let mut reactivated = Vec::new();
    for key in deactivated.iter().filter(|k| present.contains(k)) {
        set_key_status(iam, user, key, StatusType::Active).await?;
        reactivated.push(key.clone());
    }
    Ok(StepOutcome::done(
        format!("reactivated {}", reactivated.join(", ")),
        json!({ "inactive": deactivated }),
        json!({ "reactivated": reactivated }),
    ))
}
