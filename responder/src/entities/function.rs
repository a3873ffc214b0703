//! Containing a Lambda function: its execution role's credentials are denied for this function only
//! (`lambda:SourceFunctionArn`), so other functions sharing the role keep working, and its reserved
//! concurrency goes to 0 so it cannot run at all.

use aws_sdk_iam::Client as Iam;
use aws_sdk_lambda::Client as Lambda;
use serde_json::json;

use super::StepOutcome;
use crate::aws_error::{AwsFailure, CallError, Described, Tolerate};
use crate::entity::Function;

pub const STEPS: &[&str] = &["deny_function_credentials", "zero_concurrency"];

pub fn policy_name(f: &Function) -> String {
    format!("QuellContainFunction-{}", f.name)
}

pub fn arn(f: &Function) -> String {
    format!(
        "arn:{}:lambda:{}:{}:function:{}",
        f.partition, f.region, f.account, f.name
    )
}

/// The function's own ARN as Lambda returns it, `None` when there is no such function.
pub async fn real_arn(lambda: &Lambda, f: &Function) -> Result<Option<String>, CallError> {
    match lambda
        .get_function_configuration()
        .function_name(&f.name)
        .send()
        .await
        .described("lambda:GetFunctionConfiguration")
    {
        // An unqualified request acts on $LATEST, whose ARN AWS gives unqualified.
        Ok(conf) => Ok(Some(
            conf.function_arn()
                .map_or_else(|| arn(f), |a| a.trim_end_matches(":$LATEST").to_owned()),
        )),
        Err(e) if e.is_code("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The execution role, read from the function: its ARN as IAM has it (path included, which
/// protection matches) and its name (which IAM's calls take).
struct ExecutionRole {
    arn: String,
    name: String,
}

async fn execution_role(lambda: &Lambda, f: &Function) -> Result<ExecutionRole, CallError> {
    let conf = lambda
        .get_function_configuration()
        .function_name(&f.name)
        .send()
        .await
        .described("lambda:GetFunctionConfiguration")?;
    let arn = conf.role().unwrap_or_default();
    arn.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(|name| ExecutionRole {
            arn: arn.to_owned(),
            name: name.to_owned(),
        })
        .ok_or_else(|| CallError {
            call: "lambda:GetFunctionConfiguration".into(),
            failure: AwsFailure {
                code: None,
                message: format!("function {} has no execution role", f.name),
            },
        })
}

/// Other functions in the Region that run with the same role.
async fn sharing(lambda: &Lambda, f: &Function, role: &str) -> Result<Vec<String>, CallError> {
    let mut others = Vec::new();
    let mut pages = lambda.list_functions().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.described("lambda:ListFunctions")?;
        for other in page.functions() {
            let same_role = other
                .role()
                .is_some_and(|r| r.rsplit('/').next() == Some(role));
            if same_role && other.function_name() != Some(f.name.as_str()) {
                others.push(other.function_name().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(others)
}

pub async fn run(
    lambda: &Lambda,
    iam: &Iam,
    f: &Function,
    step: &str,
    protected: &dyn Fn(&str) -> Option<String>,
) -> Result<StepOutcome, CallError> {
    match step {
        "deny_function_credentials" => deny_credentials(lambda, iam, f, protected).await,
        "zero_concurrency" => zero_concurrency(lambda, f).await,
        other => unreachable!("no function step {other}"),
    }
}

async fn deny_credentials(
    lambda: &Lambda,
    iam: &Iam,
    f: &Function,
    protected: &dyn Fn(&str) -> Option<String>,
) -> Result<StepOutcome, CallError> {
    let ExecutionRole {
        arn: role_arn,
        name: role,
    } = execution_role(lambda, f).await?;
    if let Some(pattern) = protected(&role_arn) {
        return Err(CallError {
            call: "deny_function_credentials".into(),
            failure: AwsFailure {
                code: Some("Quell.ProtectedRole".into()),
                message: format!("execution role {role_arn} is protected ({pattern}): its policies are left alone; the function is still stopped by concurrency 0"),
            },
        });
    }
    let others = sharing(lambda, f, &role).await?;
    let name = policy_name(f);
    let prior = super::iam::role_inline_policy(iam, &role, &name).await?;
    let document = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "QuellDenyFunctionCredentials",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"ArnEquals": {"lambda:SourceFunctionArn": arn(f)}}
        }]
    })
    .to_string();
    iam.put_role_policy()
        .role_name(&role)
        .policy_name(&name)
        .policy_document(&document)
        .send()
        .await
        .described("iam:PutRolePolicy")?;
    let scoping = if others.is_empty() {
        format!("scoped to this function (lambda:SourceFunctionArn); role {role} serves no other function")
    } else {
        format!("scoped to this function (lambda:SourceFunctionArn) so {} other function(s) using role {role} keep working: {}", others.len(), others.join(", "))
    };
    Ok(StepOutcome::done(
        format!("denied the function's own credentials on {role}, {scoping}"),
        json!({ "role": role, "inline_policy": name, "document": prior, "sharing_functions": others }),
        json!({ "role": role, "inline_policy": name, "document": document, "scoping": "lambda:SourceFunctionArn" }),
    ))
}

async fn zero_concurrency(lambda: &Lambda, f: &Function) -> Result<StepOutcome, CallError> {
    let current = lambda
        .get_function_concurrency()
        .function_name(&f.name)
        .send()
        .await
        .described("lambda:GetFunctionConcurrency")?;
    let prior = current.reserved_concurrent_executions();
    let prior_json = json!({ "reserved_concurrency": prior });
    if prior == Some(0) {
        return Ok(StepOutcome::skipped(
            "reserved concurrency was already 0",
            prior_json,
        ));
    }
    lambda
        .put_function_concurrency()
        .function_name(&f.name)
        .reserved_concurrent_executions(0)
        .send()
        .await
        .described("lambda:PutFunctionConcurrency")?;
    let was = prior.map_or_else(|| "unreserved".to_owned(), |p| p.to_string());
    Ok(StepOutcome::done(
        format!("reserved concurrency 0 (was {was}): the function cannot run"),
        prior_json,
        json!({ "reserved_concurrency": 0 }),
    ))
}

pub async fn verify(
    lambda: &Lambda,
    iam: &Iam,
    f: &Function,
    done: &[&str],
) -> Result<Vec<String>, CallError> {
    let mut problems = Vec::new();
    let c = lambda
        .get_function_concurrency()
        .function_name(&f.name)
        .send()
        .await
        .described("lambda:GetFunctionConcurrency")?;
    if c.reserved_concurrent_executions() != Some(0) {
        problems.push(format!(
            "reserved concurrency is {:?}, not 0",
            c.reserved_concurrent_executions()
        ));
    }
    if done.contains(&"deny_function_credentials") {
        let role = execution_role(lambda, f).await?.name;
        if iam
            .get_role_policy()
            .role_name(&role)
            .policy_name(policy_name(f))
            .send()
            .await
            .described("iam:GetRolePolicy")
            .is_err()
        {
            problems.push(format!("the deny policy on {role} is missing"));
        }
    }
    Ok(problems)
}

pub async fn release(
    lambda: &Lambda,
    iam: &Iam,
    f: &Function,
    done: &[&crate::ledger::Step],
) -> Vec<(String, Result<StepOutcome, CallError>)> {
    let mut out = Vec::new();
    for step in done {
        let result = match step.name.as_str() {
            "deny_function_credentials" => {
                let role = step.new["role"].as_str().unwrap_or_default().to_owned();
                let name = policy_name(f);
                async {
                    match step.prior["document"].as_str() {
                        Some(original) => iam
                            .put_role_policy()
                            .role_name(&role)
                            .policy_name(&name)
                            .policy_document(original)
                            .send()
                            .await
                            .map(|_| ())
                            .described("iam:PutRolePolicy")?,
                        None => iam
                            .delete_role_policy()
                            .role_name(&role)
                            .policy_name(&name)
                            .send()
                            .await
                            .described("iam:DeleteRolePolicy")
                            .tolerating("NoSuchEntity")?,
                    }
                    Ok(StepOutcome::done(
                        format!("removed {name} from {role}"),
                        step.new.clone(),
                        step.prior.clone(),
                    ))
                }
                .await
            }
            "zero_concurrency" => {
                async {
                    let now = lambda
                        .get_function_concurrency()
                        .function_name(&f.name)
                        .send()
                        .await
                        .described("lambda:GetFunctionConcurrency")?;
                    let current =
                        json!({ "reserved_concurrency": now.reserved_concurrent_executions() });
                    if now.reserved_concurrent_executions() != Some(0) {
                        return Ok(StepOutcome::skipped(
                            "reserved concurrency was changed since containment; left as it is",
                            current,
                        ));
                    }
                    match step.prior["reserved_concurrency"].as_i64() {
                        Some(n) => {
                            lambda
                                .put_function_concurrency()
                                .function_name(&f.name)
                                .reserved_concurrent_executions(i32::try_from(n).unwrap_or(0))
                                .send()
                                .await
                                .described("lambda:PutFunctionConcurrency")?;
                        }
                        None => {
                            lambda
                                .delete_function_concurrency()
                                .function_name(&f.name)
                                .send()
                                .await
                                .described("lambda:DeleteFunctionConcurrency")?;
                        }
                    }
                    Ok(StepOutcome::done(
                        "reserved concurrency restored",
                        current,
                        step.prior.clone(),
                    ))
                }
                .await
            }
            _ => continue,
        };
        out.push((format!("release_{}", step.name), result));
    }
    out
}
