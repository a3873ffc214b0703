//! Parameter values of the stacks and StackSets. Some come from outputs of other stacks; before
//! those exist, the plan shows them as known after apply, and the apply fills them in as it goes.

use std::collections::{BTreeMap, HashMap};

use super::plan::Value;
use super::{Context, Observed, StackKind};
use crate::render::StackSetDefinition;

#[derive(Debug, Clone)]
pub struct Inputs {
    pub secret_arn: Value,
    pub role_external_id: Value,
    pub artifact_bucket: Value,
    pub responder_role_arn: Value,
    /// The execution role's unique id: trust policies follow a recreated role only when it changes.
    pub responder_role_id: Value,
    pub central_bus_arn: Value,
}

fn output(outputs: Option<&HashMap<String, String>>, key: &str, stack: &str) -> Value {
    match outputs.and_then(|o| o.get(key)) {
        Some(v) => Value::Known(v.clone()),
        None => Value::AfterApply(format!("{key} of stack {stack}")),
    }
}

impl Inputs {
    pub fn observed(ctx: &Context, observed: &Observed) -> Inputs {
        let artifacts = ctx.stack(StackKind::Artifacts).name;
        let security = ctx.stack(StackKind::Security).name;
        let (secret_arn, role_external_id) = match &observed.secret {
            Some((arn, ids)) => (
                Value::Known(arn.clone()),
                Value::Known(ids.role_external_id.clone()),
            ),
            None => (
                Value::AfterApply("the new secret".into()),
                Value::AfterApply("the new secret".into()),
            ),
        };
        let artifact_outputs = observed.artifacts.as_ref().map(|s| &s.outputs);
        let security_outputs = observed.security.as_ref().map(|s| &s.outputs);
        Inputs {
            secret_arn,
            role_external_id,
            artifact_bucket: output(artifact_outputs, "ArtifactBucketName", &artifacts),
            responder_role_arn: output(security_outputs, "ResponderRoleArn", &security),
            responder_role_id: output(security_outputs, "ResponderRoleId", &security),
            central_bus_arn: output(security_outputs, "CentralBusArn", &security),
        }
    }

    pub fn stack_parameters(&self, ctx: &Context, kind: StackKind) -> BTreeMap<String, Value> {
        let known = |s: &str| Value::Known(s.to_owned());
        let pairs: Vec<(&str, Value)> = match kind {
            StackKind::Artifacts => vec![],
            StackKind::Security => vec![
                ("ArtifactBucket", self.artifact_bucket.clone()),
                ("ArtifactKey", Value::Known(ctx.package().key())),
                ("OrganizationId", known(&ctx.org.id)),
                ("ManagementAccountId", known(&ctx.org.management_account)),
                ("ExternalIdSecretArn", self.secret_arn.clone()),
            ],
            StackKind::Management => vec![
                ("ResponderRoleArn", self.responder_role_arn.clone()),
                ("ResponderRoleId", self.responder_role_id.clone()),
                ("RoleExternalId", self.role_external_id.clone()),
                ("OrganizationId", known(&ctx.org.id)),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    pub fn stack_set_parameters(
        &self,
        definition: &StackSetDefinition,
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        definition
            .parameters
            .iter()
            .map(|p| {
                let value = match p.as_str() {
                    "ResponderRoleArn" => self.responder_role_arn.clone(),
                    "ResponderRoleId" => self.responder_role_id.clone(),
                    "RoleExternalId" => self.role_external_id.clone(),
                    "CentralBusArn" => self.central_bus_arn.clone(),
                    other => anyhow::bail!(
                        "stacksets/{}.yaml names parameter {other}, which quell does not know",
                        definition.name
                    ),
                };
                Ok((p.clone(), value))
            })
            .collect()
    }
}

/// The values, once every one is known (during apply, after the stacks they come from).
pub fn known(values: &BTreeMap<String, Value>) -> anyhow::Result<BTreeMap<String, String>> {
    values
        .iter()
        .map(|(k, v)| match v {
            Value::Known(s) => Ok((k.clone(), s.clone())),
            Value::AfterApply(from) => {
                anyhow::bail!(
                    "parameter {k} still waits for {from}: an earlier step did not finish"
                )
            }
        })
        .collect()
}
