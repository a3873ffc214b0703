//! The local sandbox: moto on loopback, seeded with a simulated organization, and a local Lambda
//! host that runs the real `bootstrap` where AWS would invoke the function.

pub mod crashes;
pub mod deliveries;
pub mod demo;
mod demo_exposure;
pub mod host;
pub mod moto;
pub mod process;
pub mod seed;
pub mod stand_ins;
pub mod state;
pub mod venv;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::args::{CrashArgs, IamArgs, SandboxUpArgs, Switch};
use crate::exit;
use crate::printer::Printer;
use state::{sandbox_dir, SandboxState};

pub async fn up(args: &SandboxUpArgs, printer: &Printer) -> anyhow::Result<u8> {
    if SandboxState::exists() {
        let state = SandboxState::load()?;
        if process::alive(state.moto_pid) {
            printer.status(&format!(
                "the sandbox is already running at {}",
                state.endpoint
            ));
            print_status(&state, printer);
            return Ok(exit::SUCCESS);
        }
        printer.warn("a sandbox was recorded but its moto is gone: starting a new one");
        stop_all(&state);
        SandboxState::remove()?;
    }
    venv::ensure(printer).await?;
    let dir = sandbox_dir();
    let port = match args.port {
        Some(p) => p,
        None => moto::free_port()?,
    };
    let task = printer.task(&format!("starting moto on 127.0.0.1:{port}"));
    let started = moto::start(port, &dir)?;
    let endpoint = format!("http://127.0.0.1:{}", started.port);
    if let Err(e) = moto::wait_ready(&endpoint, started.pid, Duration::from_secs(60)).await {
        task.fail();
        process::stop(started.pid, &["moto_server"]);
        return Err(e);
    }
    task.done(&format!("moto is up at {endpoint}"));

    let task = printer.task("seeding a simulated organization");
    let mut state = SandboxState {
        endpoint,
        port: started.port,
        moto_pid: started.pid,
        host_pid: None,
        iam_enforcement: false,
        organization_id: String::new(),
        root_id: String::new(),
        management_account: String::new(),
        security_account: String::new(),
        member_accounts: Vec::new(),
        organizational_units: Vec::new(),
        regions: vec![seed::HOME_REGION.into(), seed::SECOND_REGION.into()],
        account_access_role: seed::ACCOUNT_ACCESS_ROLE.into(),
        admin: state::AccessKey {
            access_key_id: String::new(),
            secret_access_key: String::new(),
        },
        config_path: dir.join("quell.yaml"),
        seeded: Vec::new(),
        environments: args.environments,
    };
    // Remembered before seeding, so `sandbox down` can stop moto even if seeding fails.
    state.save()?;
    let org = match seed::seed(&state).await {
        Ok(org) => org,
        Err(e) => {
            task.fail();
            return Err(e.context(
                "seeding the sandbox failed; `quell sandbox down` stops what was started",
            ));
        }
    };
    state.organization_id = org.organization_id;
    state.root_id = org.root_id;
    state.management_account = org.management_account;
    state.security_account = org.security_account;
    state.member_accounts = org.member_accounts;
    state.organizational_units = org.organizational_units;
    state.admin = org.admin;
    state.seeded = org.seeded;
    std::fs::write(&state.config_path, sandbox_config_yaml(&state))
        .context("cannot write the sandbox configuration")?;
    task.done(&format!(
        "seeded organization {} with {} member accounts and {} resources",
        state.organization_id,
        state.member_accounts.len(),
        state.seeded.len()
    ));

    // The host reads the state when it starts: it must find the seeded organization there.
    state.save()?;
    state.host_pid = Some(host::spawn(&dir)?);
    state.save()?;
    printer.status("local Lambda host started: it runs the responder once `quell install --sandbox` has deployed it");
    print_status(&state, printer);
    Ok(exit::SUCCESS)
}

fn stop_all(state: &SandboxState) -> Vec<String> {
    let mut stopped = Vec::new();
    if let Some(pid) = state.host_pid {
        if process::stop(pid, &["sandbox", "host"]) {
            stopped.push(format!("Lambda host (pid {pid})"));
        }
    }
    if process::stop(state.moto_pid, &["moto_server", &state.port.to_string()]) {
        stopped.push(format!("moto (pid {})", state.moto_pid));
    }
    stopped
}

pub fn down(printer: &Printer) -> anyhow::Result<u8> {
    if !SandboxState::exists() {
        printer.status("no sandbox is running here");
        return Ok(exit::SUCCESS);
    }
    let state = SandboxState::load()?;
    let stopped = stop_all(&state);
    SandboxState::remove()?;
    printer.result(&serde_json::json!({ "stopped": stopped }), || {
        if stopped.is_empty() {
            "the sandbox's processes had already exited\n".into()
        } else {
            format!("stopped {}\n", stopped.join(" and "))
        }
    });
    Ok(exit::SUCCESS)
}

pub fn status(printer: &Printer) -> anyhow::Result<u8> {
    let state = SandboxState::load()?;
    print_status(&state, printer);
    Ok(exit::SUCCESS)
}

pub async fn iam_enforcement(args: &IamArgs, printer: &Printer) -> anyhow::Result<u8> {
    let mut state = SandboxState::load()?;
    let on = args.enforcement == Switch::On;
    moto::set_iam_enforcement(&state.endpoint, on).await?;
    state.iam_enforcement = on;
    state.save()?;
    printer.result(&serde_json::json!({ "iam_enforcement": on }), || {
        format!(
            "IAM enforcement is {}\n",
            if on {
                "on: every call is checked against IAM policies"
            } else {
                "off"
            }
        )
    });
    Ok(exit::SUCCESS)
}

/// `quell sandbox crash`: the local Lambda host kills responder processes part way through.
pub fn crash(args: &CrashArgs, printer: &Printer) -> anyhow::Result<u8> {
    SandboxState::load()?;
    let crashes = (!args.off).then_some(crashes::Crashes {
        rate: args.rate,
        within_ms: args.within_ms,
        at_most: args.at_most,
        seed: args.seed,
    });
    crashes::set(crashes.as_ref())?;
    printer.result(&serde_json::json!({ "crashes": crashes }), || match &crashes {
        Some(c) => format!(
            "The local Lambda host now kills {:.0} % of first tries, at most {} in all, at a random moment in their first {} ms; their retries run to the end\n",
            c.rate * 100.0,
            c.at_most,
            c.within_ms
        ),
        None => "The local Lambda host kills nothing\n".into(),
    });
    Ok(exit::SUCCESS)
}

#[derive(Serialize)]
struct StatusView<'a> {
    endpoint: &'a str,
    running: bool,
    host_running: bool,
    iam_enforcement: bool,
    organization_id: &'a str,
    accounts: Accounts<'a>,
    organizational_units: &'a [state::OrganizationalUnit],
    regions: &'a [String],
    config: String,
    seeded: Vec<SeededView<'a>>,
    /// What the local Lambda host delivered, per queue.
    deliveries: std::collections::BTreeMap<String, deliveries::QueueCounts>,
}

#[derive(Serialize)]
struct Accounts<'a> {
    management: &'a str,
    security: &'a str,
    members: &'a [String],
}

#[derive(Serialize)]
struct SeededView<'a> {
    account: &'a str,
    region: &'a str,
    kind: &'a str,
    arn: &'a str,
    note: &'a str,
}

fn print_status(state: &SandboxState, printer: &Printer) {
    let view = StatusView {
        endpoint: &state.endpoint,
        running: process::alive(state.moto_pid),
        host_running: state.host_pid.is_some_and(process::alive),
        iam_enforcement: state.iam_enforcement,
        organization_id: &state.organization_id,
        accounts: Accounts {
            management: &state.management_account,
            security: &state.security_account,
            members: &state.member_accounts,
        },
        organizational_units: &state.organizational_units,
        regions: &state.regions,
        config: state.config_path.display().to_string(),
        seeded: state
            .seeded
            .iter()
            .map(|s| SeededView {
                account: &s.account,
                region: &s.region,
                kind: &s.kind,
                arn: &s.arn,
                note: &s.note,
            })
            .collect(),
        deliveries: deliveries::load(),
    };
    printer.result(&view, || {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "Sandbox at {} ({})",
            state.endpoint,
            if view.running {
                "running"
            } else {
                "NOT running"
            }
        );
        let _ = writeln!(t, "  organization  {}", state.organization_id);
        let _ = writeln!(t, "  management    {}", state.management_account);
        let _ = writeln!(t, "  security      {}", state.security_account);
        let _ = writeln!(t, "  members       {}", state.member_accounts.join(", "));
        for ou in &state.organizational_units {
            let _ = writeln!(
                t,
                "  OU {:<22} {} : {}",
                ou.path,
                ou.id,
                ou.accounts.join(", ")
            );
        }
        let _ = writeln!(t, "  Regions       {}", state.regions.join(", "));
        let _ = writeln!(t, "  config        {}", state.config_path.display());
        let _ = writeln!(
            t,
            "  IAM enforcement {}",
            if state.iam_enforcement { "on" } else { "off" }
        );
        let _ = writeln!(t, "Seeded:");
        for s in &state.seeded {
            let _ = writeln!(t, "  {:<16} {}  ({})", s.kind, s.arn, s.note);
        }
        if !view.deliveries.is_empty() {
            let _ = writeln!(t, "Local Lambda host, per queue:");
            let _ = writeln!(
                t,
                "  {:<30} {:>9} {:>9} {:>7} {:>13} {:>7} {:>11} {:>6}",
                "queue",
                "in flight",
                "delivered",
                "retried",
                "dead-lettered",
                "dropped",
                "host errors",
                "killed"
            );
            for (queue, c) in &view.deliveries {
                let _ = writeln!(
                    t,
                    "  {queue:<30} {:>9} {:>9} {:>7} {:>13} {:>7} {:>11} {:>6}",
                    c.in_flight,
                    c.delivered,
                    c.retried,
                    c.dead_lettered,
                    c.dropped,
                    c.host_errors,
                    c.killed
                );
            }
        }
        t
    });
}

fn sandbox_config_yaml(state: &SandboxState) -> String {
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "x86_64"
    };
    let ous: Vec<&str> = state
        .organizational_units
        .iter()
        .filter(|o| o.path.matches('/').count() == 1)
        .map(|o| o.id.as_str())
        .collect();
    format!(
        r#"# Quell configuration for the local sandbox organization {org} (written by `quell sandbox up`).
name: quell
home_region: {home}
security_account: "{security}"
regions: [{regions}]
targets:
  organizational_units: [{ous}]
protected_principals:
  - arn:aws:iam::*:role/{access_role}
  - arn:aws:iam::{management}:user/{admin}
responder:
  # The sandbox runs the responder on this machine, so it is built for this machine.
  architecture: {arch}
containment:
  # Nothing is tracked in the sandbox: isolate at once.
  isolation_wait_seconds: 0
authorization:
  # The sandbox has one operator identity, which contains and then releases.
  allow_self_approval: true
"#,
        org = state.organization_id,
        home = seed::HOME_REGION,
        security = state.security_account,
        regions = state.regions.join(", "),
        ous = ous.join(", "),
        access_role = state.account_access_role,
        management = state.management_account,
        admin = seed::ADMIN_USER,
    )
}
