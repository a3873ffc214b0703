//! The built-in containments of IAM users, IAM roles and Lambda functions as steps of a declared
//! playbook: the same steps, in the same order, as `quell contain` runs (`entities`), each
//! reading the state it changes first, so that the run's release puts back exactly that.

use chrono::Utc;
use serde_json::Map;

use super::actions::{refused, Acted, Place};
use crate::aws_error::CallError;
use crate::clients::MemberClients;
use crate::contract::Options;
use crate::entities::{StepOutcome, Target};
use crate::entity::{Entity, Function, IamPrincipal};
use crate::ledger::{Record, Step, StepStatus};

/// The entity a containment action acts on: the run's target, read back under its real name.
fn entity_of(action: &str, place: &Place<'_>, name: &str) -> Option<Entity> {
    let principal = || IamPrincipal {
        partition: place.partition.to_owned(),
        account: place.account.to_owned(),
        // IAM calls name a user or role by name alone; the run read its real ARN at the start.
        path: "/".into(),
        name: name.to_owned(),
    };
    Some(match action {
        "iam.contain_user" | "iam.release_user" => Entity::IamUser(principal()),
        "iam.contain_role" | "iam.release_role" => Entity::IamRole(principal()),
        "lambda.contain" | "lambda.release" => Entity::Function(Function {
            partition: place.partition.to_owned(),
            region: place.region.to_owned(),
            account: place.account.to_owned(),
            name: name.to_owned(),
        }),
        _ => return None,
    })
}

/// Every step of the entity's containment, in order. A step that fails ends the action with the
/// steps before it recorded, so that a release can undo them.
pub async fn contain(
    m: &MemberClients,
    place: &Place<'_>,
    action: &str,
    name: &str,
) -> Result<Acted, CallError> {
    let entity = entity_of(action, place, name)
        .ok_or_else(|| refused("playbook", format!("`{action}` is not a containment")))?;
    let target = Target::new(&entity, m.clone(), place.run, place.name_prefix);
    let mut parts = Vec::new();
    for step in target.plan(&Options::default()) {
        match target.run(step, Utc::now(), place.protected).await {
            Ok(outcome) => parts.push((step.to_owned(), outcome)),
            Err(e) => {
                parts.push((
                    step.to_owned(),
                    StepOutcome {
                        status: StepStatus::Failed,
                        detail: e.to_string(),
                        prior: serde_json::Value::Null,
                        new: serde_json::Value::Null,
                    },
                ));
                break;
            }
        }
    }
    Ok(Acted {
        parts,
        outputs: Map::new(),
        next_phase: None,
    })
}

/// Undoes a containment from its recorded steps (`parts`, named without the playbook step's
/// prefix), newest first; keys stay inactive unless `reactivate_keys`.
pub async fn release(
    m: &MemberClients,
    place: &Place<'_>,
    inverse: &str,
    name: &str,
    parts: &[Step],
    reactivate_keys: bool,
) -> Result<StepOutcome, CallError> {
    let entity = entity_of(inverse, place, name)
        .ok_or_else(|| refused("playbook", format!("`{inverse}` is not a release")))?;
    let target = Target::new(&entity, m.clone(), place.run, place.name_prefix);
    let mut recorded = Record::new(place.run.to_owned(), Utc::now(), "");
    recorded.steps = parts.to_vec();
    let options = Options {
        reactivate_keys,
        ..Options::default()
    };
    let results = target.release(&recorded, &options).await;
    let mut undone = Vec::new();
    for (step, result) in results {
        let outcome = result?;
        undone.push(format!("{step}: {}", outcome.detail));
    }
    Ok(StepOutcome::done(
        undone.join("; "),
        serde_json::Value::Null,
        serde_json::Value::Null,
    ))
}
