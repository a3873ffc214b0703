//! `quell doctor`: everything install needs, checked before anything is written. Each problem
//! comes with the command or setting that fixes it; the exit code says whether install would fail.

use std::fmt::Write as _;

use futures::stream::{self, StreamExt};
use quell_responder::aws_error::Described;
use serde::Serialize;

use crate::args::{DoctorArgs, GlobalArgs};
use crate::aws::{Aws, Caller};
use crate::calls::client;
use crate::config::Config;
use crate::converge::custom_actions;
use crate::converge::org_tree::OrgTree;
use crate::converge::organization::{self, STACKSETS_PRINCIPAL};
use crate::converge::plan::{self, Target};
use crate::exit;
use crate::printer::{Printer, Tone};

/// Accounts x Regions checked at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Severity {
    Ok,
    /// Works, but part of Quell will not (no events, no findings).
    Warning,
    /// Install would fail.
    Blocking,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    severity: Severity,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    caller: String,
    role: String,
    checks: Vec<Check>,
    install_would_fail: bool,
}

fn ok(check: &str, detail: String) -> Check {
    Check {
        check: check.into(),
        severity: Severity::Ok,
        detail,
        fix: None,
    }
}

fn problem(check: &str, severity: Severity, detail: String, fix: String) -> Check {
    Check {
        check: check.into(),
        severity,
        detail,
        fix: Some(fix),
    }
}

pub async fn run(global: &GlobalArgs, args: &DoctorArgs, printer: &Printer) -> anyhow::Result<u8> {
    let config = Config::load(&crate::config_file::find(global, args.config.as_deref())?)?;
    let aws = Aws::connect(global, &config.home_region).await?;
    let caller = aws.caller().await?;
    let (role, checks) = checks(&aws, &caller, &config, args.delegated_admin, printer).await?;
    Ok(finish(caller, role, checks, printer))
}

/// Install runs the blocking checks before it writes anything: a problem found here would
/// otherwise surface half-way, as stack instances failed in the places it names.
pub async fn refuse_if_install_would_fail(
    aws: &Aws,
    caller: &Caller,
    config: &Config,
    delegated_admin: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let (_, checks) = checks(aws, caller, config, delegated_admin, printer).await?;
    let blocking: Vec<String> = checks
        .iter()
        .filter(|c| c.severity == Severity::Blocking)
        .map(|c| {
            format!(
                "{}: {}\n    fix: {}",
                c.check,
                c.detail,
                c.fix.as_deref().unwrap_or("see `quell doctor`")
            )
        })
        .collect();
    if blocking.is_empty() {
        return Ok(());
    }
    Err(exit::refused(format!(
        "install would fail, so nothing was changed:\n  {}\nfix these and run install again (`quell doctor` shows every check), or add --skip-checks to install anyway: stack instances in those places will then fail",
        blocking.join("\n  ")
    )))
}

/// Every check, and who the caller is to StackSets.
async fn checks(
    aws: &Aws,
    caller: &Caller,
    config: &Config,
    delegated_admin: bool,
    printer: &Printer,
) -> anyhow::Result<(String, Vec<Check>)> {
    let mut checks = Vec::new();

    checks.push(
        match client!(aws_sdk_cloudformation, aws.base())
            .list_stacks()
            .send()
            .await
            .described("cloudformation:ListStacks")
        {
            Ok(_) => ok("home Region", format!("CloudFormation answers in {}", config.home_region)),
            Err(e) => problem(
                "home Region",
                Severity::Blocking,
                format!("CloudFormation in {} does not answer: {e}", config.home_region),
                "check home_region in the configuration, network access to the Region, and that the Region is enabled for the account".into(),
            ),
        },
    );

    let org = organization::check(aws, caller, config, delegated_admin).await;
    let role = role(aws, caller, &mut checks, delegated_admin).await;
    let org = match org {
        Ok(o) => {
            checks.push(ok(
                "organization",
                format!("organization {}, targets and security account found", o.id),
            ));
            o
        }
        Err(e) => {
            checks.push(problem(
                "organization",
                Severity::Blocking,
                format!("{e:#}"),
                "see the message: fix the configuration or the credentials".into(),
            ));
            return Ok((role, checks));
        }
    };

    if !delegated_admin {
        checks.push(match organization::trusted_access_enabled(aws).await {
            Ok(true) => ok("trusted access", "StackSets trusted access with AWS Organizations is on".into()),
            Ok(false) => problem(
                "trusted access",
                Severity::Warning,
                "StackSets trusted access with AWS Organizations is off".into(),
                "quell install turns it on; or in the CloudFormation console: StackSets > Activate trusted access".into(),
            ),
            Err(e) => problem(
                "trusted access",
                Severity::Blocking,
                format!("cannot read the organization's trusted services: {e:#}"),
                "run from the management account".into(),
            ),
        });
    }

    match aws.security_account(caller, config).await {
        Ok(security) => {
            checks.push(ok(
                "security account",
                format!(
                    "{} reachable with role {}",
                    config.security_account, config.security_account_role
                ),
            ));
            checks.push(custom_action_check(&security, config).await);
            checks.push(security_hub_administrator_check(&security, config).await);
        }
        Err(e) => checks.push(problem(
            "security account",
            Severity::Blocking,
            format!("{e:#}"),
            format!(
                "let {} assume {} in {}, or set security_account_role in the configuration",
                caller.arn, config.security_account_role, config.security_account
            ),
        )),
    }

    let tree = OrgTree::read(&client!(aws_sdk_organizations, aws.base())).await?;
    let targets = Target::resolve(
        &org.targets.organizational_units,
        &org.targets.accounts,
        &tree,
        &org.management_account,
    );
    let places = plan::places(&targets, &config.all_regions());
    let task = printer.task(&format!(
        "checking AWS Config, CloudTrail and Security Hub in {} accounts x Regions",
        places.len()
    ));
    let findings: Vec<Vec<Finding>> = stream::iter(places)
        .map(|(account, region)| async move {
            place_checks(aws, caller, config, &account, &region).await
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    task.done("checked every target account and Region");
    let findings: Vec<Finding> = findings.into_iter().flatten().collect();
    checks.extend(summarize(&findings, config));
    Ok((role, checks))
}

/// Whether the Security Hub custom actions are in place: they are what sends findings to Quell
/// from the console.
async fn custom_action_check(security: &aws_config::SdkConfig, config: &Config) -> Check {
    const CHECK: &str = "Security Hub custom actions";
    let hub = custom_actions::client(security);
    match custom_actions::read(&hub, &config.security_account, &config.home_region).await {
        Ok(observed @ custom_actions::Observed::Available { .. }) => {
            let wanted = custom_actions::wanted(config.playbook_document.as_ref());
            let missing = observed.missing(&wanted);
            if missing.is_empty() {
                ok(
                    CHECK,
                    format!(
                        "{} in {} {}",
                        wanted
                            .iter()
                            .map(|a| format!("{:?}", a.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                        config.security_account,
                        config.home_region
                    ),
                )
            } else {
                problem(
                    CHECK,
                    Severity::Warning,
                    format!(
                        "missing in {} {}: {}",
                        config.security_account,
                        config.home_region,
                        missing
                            .iter()
                            .map(|a| format!("{:?}", a.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "quell upgrade creates them".into(),
                )
            }
        }
        Ok(custom_actions::Observed::Unavailable { reason }) => problem(
            CHECK,
            Severity::Warning,
            reason,
            "findings can still reach Quell automatically; the console actions need Security Hub in the security account's home Region".into(),
        ),
        Err(e) => problem(
            CHECK,
            Severity::Warning,
            format!("cannot list them: {e:#}"),
            "let the security account role call securityhub:DescribeActionTargets".into(),
        ),
    }
}

/// Whether the security account is Security Hub's delegated administrator: Security Hub lets only
/// the administrator update member accounts' findings, which the responder does after a custom
/// action (a note, the workflow status). Only the administrator may describe the organization's
/// Security Hub configuration, so the answer to that call is the test.
async fn security_hub_administrator_check(
    security: &aws_config::SdkConfig,
    config: &Config,
) -> Check {
    const CHECK: &str = "Security Hub administrator";
    let fix = format!(
        "from the management account, in each Region: aws securityhub enable-organization-admin-account --admin-account-id {}",
        config.security_account
    );
    match custom_actions::client(security)
        .describe_organization_configuration()
        .send()
        .await
        .described("securityhub:DescribeOrganizationConfiguration")
    {
        Ok(_) => ok(
            CHECK,
            format!(
                "the security account {} is Security Hub's administrator in {}",
                config.security_account, config.home_region
            ),
        ),
        Err(e) if e.is_code("AccessDeniedException") || e.is_code("InvalidAccessException") => {
            problem(
                CHECK,
                Severity::Warning,
                format!(
                    "the security account {} is not Security Hub's administrator in {} (or its role may not ask: {e}): custom actions still contain and remediate, but notes and workflow status on member accounts' findings will be refused",
                    config.security_account, config.home_region
                ),
                fix,
            )
        }
        Err(e) => problem(CHECK, Severity::Warning, format!("cannot tell: {e}"), fix),
    }
}

/// Who the caller is to StackSets.
async fn role(aws: &Aws, caller: &Caller, checks: &mut Vec<Check>, delegated: bool) -> String {
    let org = client!(aws_sdk_organizations, aws.base());
    let management = org
        .describe_organization()
        .send()
        .await
        .ok()
        .and_then(|o| o.organization)
        .and_then(|o| o.master_account_id);
    if management.as_deref() == Some(caller.account.as_str()) {
        return "management account".into();
    }
    let registered = org
        .list_delegated_administrators()
        .service_principal(STACKSETS_PRINCIPAL)
        .send()
        .await
        .described("organizations:ListDelegatedAdministrators");
    match registered {
        Ok(out)
            if out
                .delegated_administrators()
                .iter()
                .any(|d| d.id() == Some(caller.account.as_str())) =>
        {
            if !delegated {
                checks.push(problem(
                    "identity",
                    Severity::Blocking,
                    format!(
                        "{} is a StackSets delegated administrator, not the management account",
                        caller.account
                    ),
                    "add --delegated-admin to install, upgrade, status and uninstall".into(),
                ));
            }
            "StackSets delegated administrator".into()
        }
        other => {
            let why = match other {
                Err(e) => format!(" ({e})"),
                Ok(_) => String::new(),
            };
            checks.push(problem(
                "identity",
                Severity::Blocking,
                format!(
                    "{} is neither the management account nor a registered StackSets delegated administrator{why}",
                    caller.account
                ),
                format!(
                    "run with management-account credentials (--profile), or from the management account: aws organizations register-delegated-administrator --service-principal {STACKSETS_PRINCIPAL} --account-id {}",
                    caller.account
                ),
            ));
            "neither management account nor delegated administrator".into()
        }
    }
}

/// One check in one account and Region.
struct Finding {
    check: &'static str,
    place: String,
    passed: bool,
    /// Why it could not be checked, when it could not.
    error: Option<String>,
}

async fn place_checks(
    aws: &Aws,
    caller: &Caller,
    config: &Config,
    account: &str,
    region: &str,
) -> Vec<Finding> {
    let place = format!("{account} {region}");
    let finding = |check: &'static str, passed: bool| Finding {
        check,
        place: place.clone(),
        passed,
        error: None,
    };
    let session = match aws
        .account(caller, account, region, &config.security_account_role)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding {
                error: Some(format!("{e:#}")),
                ..finding(MEMBER_ACCESS, false)
            }]
        }
    };
    let recording = client!(aws_sdk_config, &session)
        .describe_configuration_recorder_status()
        .send()
        .await
        .is_ok_and(|o| {
            o.configuration_recorders_status()
                .iter()
                .any(aws_sdk_config::types::ConfigurationRecorderStatus::recording)
        });

    let trail = client!(aws_sdk_cloudtrail, &session);
    let mut logging = false;
    if let Ok(o) = trail
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
    {
        for t in o.trail_list() {
            let covers =
                t.is_multi_region_trail().unwrap_or(false) || t.home_region() == Some(region);
            let Some(arn) = t.trail_arn() else { continue };
            if covers
                && trail
                    .get_trail_status()
                    .name(arn)
                    .send()
                    .await
                    .is_ok_and(|s| s.is_logging().unwrap_or(false))
            {
                logging = true;
                break;
            }
        }
    }
    let hub = client!(aws_sdk_securityhub, &session)
        .describe_hub()
        .send()
        .await
        .is_ok();
    vec![
        finding(CONFIG, recording),
        finding(CLOUDTRAIL, logging),
        finding(SECURITY_HUB, hub),
    ]
}

const MEMBER_ACCESS: &str = "member access";
const CONFIG: &str = "AWS Config";
const CLOUDTRAIL: &str = "CloudTrail";
const SECURITY_HUB: &str = "Security Hub";

/// One line per check over every account and Region, naming the places that fail.
fn summarize(findings: &[Finding], config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for check in [MEMBER_ACCESS, CONFIG, CLOUDTRAIL, SECURITY_HUB] {
        let all: Vec<&Finding> = findings.iter().filter(|f| f.check == check).collect();
        let mut failing: Vec<String> = all
            .iter()
            .filter(|f| !f.passed)
            .map(|f| match &f.error {
                Some(e) => format!("{} ({e})", f.place),
                None => f.place.clone(),
            })
            .collect();
        failing.sort();
        if all.is_empty() {
            continue;
        }
        if failing.is_empty() {
            out.push(ok(
                check,
                format!("in all {} target accounts x Regions", all.len()),
            ));
            continue;
        }
        let (severity, what, fix) = match check {
            MEMBER_ACCESS => (
                Severity::Warning,
                "could not be checked",
                format!("let the caller assume {} in the member accounts to check them", config.security_account_role),
            ),
            CONFIG => (
                if config.config_rules { Severity::Blocking } else { Severity::Warning },
                if config.config_rules {
                    "no AWS Config recorder is recording, so Quell's Config rules cannot be created"
                } else {
                    "no AWS Config recorder is recording"
                },
                "turn on AWS Config recording there (aws configservice put-configuration-recorder, put-delivery-channel and start-configuration-recorder --region REGION, or an organization-wide Config setup), or set config_rules: false".into(),
            ),
            CLOUDTRAIL => (
                Severity::Warning,
                "no CloudTrail trail logs there, so remediation driven by API calls sees nothing",
                "create an organization trail from the management account: aws cloudtrail create-trail --name org-trail --s3-bucket-name BUCKET --is-organization-trail --is-multi-region-trail, then aws cloudtrail start-logging --name org-trail".into(),
            ),
            _ => (
                Severity::Warning,
                "Security Hub is not enabled, so its findings cannot reach Quell",
                "aws securityhub enable-security-hub --region REGION in each, or enable it organization-wide from the Security Hub administrator account".into(),
            ),
        };
        out.push(problem(
            check,
            severity,
            format!(
                "{} of {}: {what}: {}",
                failing.len(),
                all.len(),
                failing.join(", ")
            ),
            fix,
        ));
    }
    out
}

fn finish(caller: Caller, role: String, checks: Vec<Check>, printer: &Printer) -> u8 {
    let report = Report {
        install_would_fail: checks.iter().any(|c| c.severity == Severity::Blocking),
        caller: caller.arn,
        role,
        checks,
    };
    printer.result(&report, || text(&report, printer));
    if report.install_would_fail {
        exit::FAILURE
    } else {
        exit::SUCCESS
    }
}

fn text(r: &Report, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "You are {} ({})", r.caller, r.role);
    for c in &r.checks {
        let (mark, tone) = match c.severity {
            Severity::Ok => ("ok  ", Tone::Good),
            Severity::Warning => ("warn", Tone::Change),
            Severity::Blocking => ("FAIL", Tone::Bad),
        };
        let _ = writeln!(
            t,
            "  {} {:<16} {}",
            printer.paint(mark, tone),
            c.check,
            c.detail
        );
        if let Some(fix) = &c.fix {
            let _ = writeln!(t, "       fix: {fix}");
        }
    }
    let (warnings, blocking) = r.checks.iter().fold((0, 0), |(w, b), c| match c.severity {
        Severity::Warning => (w + 1, b),
        Severity::Blocking => (w, b + 1),
        Severity::Ok => (w, b),
    });
    let _ = writeln!(
        t,
        "{}",
        if blocking > 0 {
            printer.paint(
                &format!("{blocking} problems would make install fail; {warnings} warnings"),
                Tone::Bad,
            )
        } else {
            printer.paint(
                &format!("install can proceed; {warnings} warnings"),
                Tone::Good,
            )
        }
    );
    t
}
