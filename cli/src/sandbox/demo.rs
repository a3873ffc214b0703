//! `quell sandbox demo`: the main job end to end on this machine. A simulated organization, Quell
//! installed across it, a compromised user contained (its key shown working before and denied
//! after, with IAM enforcement on), an instance isolated, a forbidden request refused, an open
//! security group and a public bucket fixed from their events, and a report a person can read.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use aws_config::SdkConfig;
use quell_responder::ledger::{Record, Status};
use serde::Serialize;

use super::state::{sandbox_dir, SandboxState};
use super::{demo_exposure, moto, seed};
use crate::args::{ConvergeArgs, GlobalArgs, OutputFormat, SandboxUpArgs};
use crate::aws::sandbox_config;
use crate::printer::{Printer, Tone};
use crate::{contain, converge, exit};

#[derive(Debug, Serialize)]
struct Probe {
    service: &'static str,
    call: &'static str,
    allowed: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Incident {
    title: String,
    entity: String,
    request_id: String,
    status: Status,
    record: Record,
    before: Vec<Probe>,
    after: Vec<Probe>,
    /// What was read back from the account, in words.
    observed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    endpoint: String,
    organization_id: String,
    incidents: Vec<Incident>,
    report_file: PathBuf,
    /// The organization at a glance, as `quell report` writes it.
    html_report: PathBuf,
    passed: bool,
}

pub async fn run(printer: &Printer) -> anyhow::Result<u8> {
    let global = GlobalArgs {
        sandbox: true,
        profile: None,
        output: OutputFormat::Text,
        quiet: false,
        verbose: 0,
    };
    let quiet = Printer::new(&GlobalArgs {
        quiet: true,
        ..global.clone()
    });
    // A fresh organization every time: the story starts with a key that still works.
    if SandboxState::exists() {
        printer.status("stopping the previous sandbox");
        super::down(&quiet)?;
    }
    super::up(
        &SandboxUpArgs {
            port: None,
            environments: 4,
        },
        &quiet,
    )
    .await?;
    let state = SandboxState::load()?;
    printer.status(&format!(
        "sandbox organization {} at {}",
        state.organization_id, state.endpoint
    ));
    Box::pin(converge::run(
        &global,
        &ConvergeArgs {
            config: Some(state.config_path.clone()),
            yes: true,
            dry_run: false,
            retry_failed: false,
            delegated_admin: false,
            bootstrap: None,
            skip_checks: false,
        },
        converge::Verb::Install,
        printer,
    ))
    .await?;

    let user = state
        .seeded
        .iter()
        .find(|s| {
            s.kind == "iam_user"
                && s.arn
                    .ends_with(&format!(":user/{}", seed::COMPROMISED_USER))
        })
        .context("the sandbox has no seeded user to contain")?;
    let key = user
        .access_key
        .clone()
        .context("the seeded user has no access key recorded")?;
    let as_user = sandbox_config(
        &state,
        seed::HOME_REGION,
        &key.access_key_id,
        &key.secret_access_key,
        None,
    )
    .await;

    printer.status(&format!(
        "incident 1: access key {} of {} leaked",
        key.access_key_id, user.arn
    ));
    let before = with_enforcement(&state, probe(&as_user)).await?;
    let contained = contain::send(
        &global,
        &contain_args(&user.arn, "access key leaked in a public CI log"),
        printer,
    )
    .await?;
    let after = with_enforcement(&state, probe(&as_user)).await?;

    let instance = state
        .seeded
        .iter()
        .find(|s| s.kind == "ec2_instance" && s.account == user.account)
        .context("the sandbox has no seeded instance")?;
    printer.status(&format!(
        "incident 2: {} mines crypto and talks to a command-and-control host",
        instance.arn
    ));
    let mgmt = sandbox_config(
        &state,
        seed::HOME_REGION,
        &state.admin.access_key_id,
        &state.admin.secret_access_key,
        None,
    )
    .await;
    let member = quell_responder::sessions::Sessions::new(&mgmt, "quell-demo")
        .assume(&seed::account_role(&instance.account), None)
        .await?;
    let ec2 = aws_sdk_ec2::Client::new(&member);
    let instance_id = instance
        .arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let groups_before = interface_groups(&ec2, &instance_id).await?;
    let isolated = contain::send(
        &global,
        &contain_args(&instance.arn, "crypto miner calling out"),
        printer,
    )
    .await?;
    let groups_after = interface_groups(&ec2, &instance_id).await?;
    let isolation_group = isolated
        .record
        .step("isolation_groups")
        .and_then(|s| s.new["group"].as_str())
        .unwrap_or_default()
        .to_owned();
    let isolated_everywhere = !groups_after.is_empty()
        && groups_after
            .iter()
            .all(|(_, g)| g.as_slice() == std::slice::from_ref(&isolation_group));

    let own_role = format!("arn:aws:iam::{}:role/quell-responder", user.account);
    printer.status(&format!(
        "incident 3: a request to contain Quell's own role {own_role}"
    ));
    let refused = contain::send(
        &global,
        &contain_args(&own_role, "an attacker tries to switch Quell off"),
        printer,
    )
    .await?;

    let security = quell_responder::sessions::Sessions::new(&mgmt, "quell-demo")
        .assume(&seed::account_role(&state.security_account), None)
        .await?;
    let name = crate::config::Config::load(&state.config_path)?.name;
    let ledger = quell_responder::ledger::Ledger::new(
        aws_sdk_dynamodb::Client::new(&security),
        &crate::deployment::ledger_table(&name),
    );
    printer.status("incident 4: a developer opens SSH to the world on a web server's group");
    let ssh =
        demo_exposure::open_ssh(&member, &instance.account, seed::HOME_REGION, &ledger).await?;
    printer.status("incident 5: a reports bucket is made readable by everyone");
    let bucket =
        demo_exposure::public_bucket(&member, &instance.account, seed::HOME_REGION, &ledger)
            .await?;
    let remediated = |title: &str, r: demo_exposure::Remediated| Incident {
        title: title.into(),
        entity: r.entity,
        request_id: r.record.key.clone(),
        status: if r.fixed {
            r.record.status
        } else {
            Status::Failed
        },
        record: r.record,
        before: Vec::new(),
        after: Vec::new(),
        observed: r.observed,
    };

    let incidents = vec![
        Incident {
            title: "Leaked access key: contain the IAM user".into(),
            entity: user.arn.clone(),
            request_id: contained.request_id,
            status: contained.record.status,
            record: contained.record,
            before,
            after,
            observed: Vec::new(),
        },
        Incident {
            title: "Compromised instance: isolate it in two phases".into(),
            entity: instance.arn.clone(),
            request_id: isolated.request_id,
            status: isolated.record.status,
            record: isolated.record,
            before: Vec::new(),
            after: Vec::new(),
            observed: groups_before
                .iter()
                .map(|(eni, g)| format!("before: interface {eni} in {}", g.join(", ")))
                .chain(groups_after.iter().map(|(eni, g)| {
                    format!(
                        "after: interface {eni} in {} (the isolation group: no rules)",
                        g.join(", ")
                    )
                }))
                .collect(),
        },
        Incident {
            title: "Attempt to contain Quell's own role: refused".into(),
            entity: own_role,
            request_id: refused.request_id,
            status: refused.record.status,
            record: refused.record,
            before: Vec::new(),
            after: Vec::new(),
            observed: Vec::new(),
        },
        remediated("SSH opened to the world: only that rule is revoked", ssh),
        remediated("Bucket made public: made private again", bucket),
    ];
    let passed = incidents[0].status == Status::Succeeded
        && incidents[0].before.iter().all(|p| p.allowed)
        && incidents[0].after.iter().all(|p| !p.allowed)
        && incidents[1].status == Status::Succeeded
        && isolated_everywhere
        && incidents[2].status == Status::Rejected
        && incidents[3..].iter().all(|i| i.status == Status::Succeeded);
    let report_file = sandbox_dir().join("report.md");
    let html_report = sandbox_dir().join("report.html");
    printer.status("writing the organization's report");
    Box::pin(crate::report::run(
        &quiet_global(&global),
        &crate::args::ReportArgs {
            config: None,
            out: html_report.clone(),
            since: chrono::Duration::days(1),
            from: None,
            delegated_admin: false,
        },
        &quiet,
    ))
    .await?;
    let mut report = DemoReport {
        endpoint: state.endpoint.clone(),
        organization_id: state.organization_id.clone(),
        incidents,
        report_file: report_file.clone(),
        html_report: html_report.canonicalize().unwrap_or(html_report),
        passed,
    };
    let text = report_text(
        &report,
        &Printer::new(&GlobalArgs {
            quiet: true,
            ..global.clone()
        }),
    );
    std::fs::write(&report_file, &text)
        .with_context(|| format!("cannot write {}", report_file.display()))?;
    report.report_file = report_file.canonicalize().unwrap_or(report_file);
    printer.result(&report, || report_text(&report, printer));
    Ok(if passed { exit::SUCCESS } else { exit::FAILURE })
}

/// The demo's own settings, without output: the report is written, not printed.
fn quiet_global(global: &GlobalArgs) -> GlobalArgs {
    GlobalArgs {
        quiet: true,
        output: OutputFormat::Text,
        ..global.clone()
    }
}

fn contain_args<'a>(arn: &'a str, reason: &'a str) -> contain::Request<'a> {
    contain::Request {
        arn,
        reason,
        request_id: None,
        action: quell_responder::contract::Action::Contain,
        options: quell_responder::contract::Options::default(),
        yes: true,
        config: None,
        timeout: 60,
    }
}

/// Runs `f` with moto's IAM enforcement on, and turns it off again whatever happens. Enforcement
/// stays off otherwise: moto checks most services' calls against resource `*`, so least-privilege
/// policies that name resources (the responder's) are refused there although AWS grants them.
async fn with_enforcement<T>(
    state: &SandboxState,
    f: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    moto::set_iam_enforcement(&state.endpoint, true).await?;
    let out = f.await;
    moto::set_iam_enforcement(&state.endpoint, false).await?;
    Ok(out)
}

/// Each network interface of the instance and its security groups, as EC2 reports them.
async fn interface_groups(
    ec2: &aws_sdk_ec2::Client,
    instance: &str,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let out = ec2
        .describe_network_interfaces()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(instance)
                .build(),
        )
        .send()
        .await?;
    Ok(out
        .network_interfaces()
        .iter()
        .map(|n| {
            (
                n.network_interface_id().unwrap_or_default().to_owned(),
                n.groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_owned))
                    .collect(),
            )
        })
        .collect())
}

/// What the credentials in `config` can still do: one read call each on S3, EC2 and SNS.
async fn probe(config: &SdkConfig) -> Vec<Probe> {
    fn verdict<T, E: std::fmt::Debug>(
        service: &'static str,
        call: &'static str,
        r: Result<T, E>,
    ) -> Probe {
        match r {
            Ok(_) => Probe {
                service,
                call,
                allowed: true,
                detail: "allowed".into(),
            },
            Err(e) => {
                let text = format!("{e:?}");
                let detail = if text.contains("AccessDenied") || text.contains("403") {
                    "AccessDenied".to_owned()
                } else {
                    text.chars().take(200).collect()
                };
                Probe {
                    service,
                    call,
                    allowed: false,
                    detail,
                }
            }
        }
    }
    vec![
        verdict(
            "s3",
            "ListBuckets",
            aws_sdk_s3::Client::new(config).list_buckets().send().await,
        ),
        verdict(
            "ec2",
            "DescribeInstances",
            aws_sdk_ec2::Client::new(config)
                .describe_instances()
                .send()
                .await,
        ),
        verdict(
            "sns",
            "ListTopics",
            aws_sdk_sns::Client::new(config).list_topics().send().await,
        ),
    ]
}

fn report_text(r: &DemoReport, printer: &Printer) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n# Quell sandbox report\n");
    let _ = writeln!(t, "Organization {} on {}.\n", r.organization_id, r.endpoint);
    for (n, i) in r.incidents.iter().enumerate() {
        let tone = if i.status == Status::Succeeded {
            Tone::Good
        } else {
            Tone::Change
        };
        let _ = writeln!(t, "## Incident {}: {}\n", n + 1, i.title);
        let _ = writeln!(t, "- entity: {}", i.entity);
        let _ = writeln!(
            t,
            "- request: {} -> {}",
            i.request_id,
            printer.paint(i.status.as_str(), tone)
        );
        if let Some(rej) = &i.record.rejection {
            let _ = writeln!(t, "- refused: {} ({})", rej.message, rej.code);
        }
        for s in &i.record.steps {
            let _ = writeln!(t, "- step {}: {:?}, {}", s.name, s.status, s.detail);
        }
        for o in &i.observed {
            let _ = writeln!(t, "- {o}");
        }
        if !i.before.is_empty() {
            let _ = writeln!(
                t,
                "\n| call (IAM enforcement on) | before | after |\n|---|---|---|"
            );
            for (b, a) in i.before.iter().zip(&i.after) {
                let _ = writeln!(
                    t,
                    "| {}:{} | {} | {} |",
                    b.service, b.call, b.detail, a.detail
                );
            }
        }
        let _ = writeln!(t);
    }
    let verdict = if r.passed {
        printer.paint(
            "PASSED: the leaked key is denied everywhere, the instance is isolated, Quell refused to act against itself, and the open group and the public bucket were fixed and read back.",
            Tone::Good,
        )
    } else {
        printer.paint("FAILED: see the incidents above.", Tone::Bad)
    };
    let _ = writeln!(t, "{verdict}");
    let _ = writeln!(t, "Report written to {}", r.report_file.display());
    let _ = writeln!(
        t,
        "The organization at a glance (open it in a browser): {}",
        r.html_report.display()
    );
    let _ = writeln!(t, "The sandbox is still running: try `quell --sandbox contain ...` or `quell sandbox status`; `quell sandbox down` stops it.");
    t
}
