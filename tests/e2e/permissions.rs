//! Every AWS operation the responder called during the whole suite is in the list of operations
//! and roles that the templates are checked against (`quell_responder::permissions`): moto grants
//! everything, so an unlisted call would work here and fail with AccessDenied on AWS.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use quell_responder::permissions::{cli_listed, listed, RunsAs};
use serde_json::Value;

use crate::support::Sandbox;
use crate::TestFn;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    crate::online![
        every_operation_the_responder_called_is_listed_with_its_role,
        every_operation_the_cli_called_is_listed,
    ]
}

/// The CLI's runs wrote what they called to `QUELL_CALL_LOG` (set by `Sandbox::quell`).
async fn every_operation_the_cli_called_is_listed(s: Arc<Sandbox>) -> Result<()> {
    let path = s.home.path().join("cli-calls.log");
    let log = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let seen: BTreeSet<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    ensure!(
        seen.len() >= 40,
        "the suite should have exercised the CLI widely; it called only {seen:?}"
    );
    let unlisted: Vec<&&str> = seen.iter().filter(|c| !cli_listed(c)).collect();
    ensure!(
        unlisted.is_empty(),
        "called by quell but not in permissions::CLI_OPERATIONS: {unlisted:#?}"
    );
    Ok(())
}

/// The operations of every invocation the responder logged, as `service:Operation@role`.
fn called(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "invocation")
        .filter_map(|v| v["fields"]["operations"].as_str().map(str::to_owned))
        .flat_map(|ops| {
            ops.split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn every_operation_the_responder_called_is_listed_with_its_role(
    s: Arc<Sandbox>,
) -> Result<()> {
    let path = s.home.path().join("sandbox").join("responder.log");
    let log = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let seen = called(&log);
    ensure!(
        seen.len() >= 30,
        "the suite should have exercised the responder widely; it called only {seen:?}"
    );
    let roles = [RunsAs::Execution, RunsAs::Member, RunsAs::OrgReader];
    let unlisted: Vec<&String> = seen
        .iter()
        .filter(|c| {
            let Some((call, role)) = c.split_once('@') else {
                return true;
            };
            !roles.iter().any(|r| r.as_str() == role && listed(call, *r))
        })
        .collect();
    ensure!(
        unlisted.is_empty(),
        "called by the responder but not in permissions::OPERATIONS (so no test checks the role grants them): {unlisted:#?}"
    );
    Ok(())
}
