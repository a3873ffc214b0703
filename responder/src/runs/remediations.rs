//! The built-in remediations as steps of a declared playbook: the same reads, the same calls and
//! the same read-back as the built-in playbooks make (`engine::remediate`), so a definition in
//! the language does exactly what Quell does today. Each refuses what the built-in refuses.

use serde_json::{json, Map};

use super::actions::{refused, Acted, Place};
use crate::aws_error::CallError;
use crate::clients::MemberClients;
use crate::entities::StepOutcome;
use crate::playbooks::exposure::Rule;
use crate::playbooks::{bucket, security_group, snapshot};

fn described(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(Rule::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sg.revoke_open_ingress`: the ingress rules open to the world on the configured ports,
/// revoked by rule id, then read back.
pub async fn revoke_open_ingress(
    m: &MemberClients,
    place: &Place<'_>,
    group_id: &str,
) -> Result<Acted, CallError> {
    let read = |why: &str| {
        refused(
            "ec2:DescribeSecurityGroups",
            format!("security group {group_id} {why} in {}", place.account),
        )
    };
    let group = security_group::read(&m.ec2, group_id, place.name_prefix)
        .await?
        .ok_or_else(|| read("does not exist"))?;
    if group.quell_untracked {
        return Err(refused(
            "playbook",
            format!("{group_id} is Quell's own untracked containment group: open on purpose while an instance passes through it, left alone"),
        ));
    }
    let offending = group.offending(place.ports);
    if offending.is_empty() {
        let outcome = StepOutcome::skipped(
            format!(
                "{group_id} has no ingress rule open to the world on ports {:?}",
                place.ports
            ),
            json!(group.ingress),
        );
        return Ok(Acted::one("revoke_ingress", outcome, outputs(&[])));
    }
    security_group::revoke(&m.ec2, group_id, &offending).await?;
    // Read back: nothing is reported fixed that was not seen fixed.
    let after = security_group::read(&m.ec2, group_id, place.name_prefix)
        .await?
        .ok_or_else(|| read("was deleted while it was fixed"))?;
    let still = after.offending(place.ports);
    if !still.is_empty() {
        return Err(refused(
            "ec2:RevokeSecurityGroupIngress",
            format!(
                "{group_id} is still open after the revoke: {}",
                described(&still)
            ),
        ));
    }
    let outcome = StepOutcome::done(
        format!(
            "revoked {}; {} other ingress rules kept",
            described(&offending),
            after.ingress.len()
        ),
        json!(offending),
        json!(after.ingress),
    );
    Ok(Acted::one("revoke_ingress", outcome, outputs(&offending)))
}

fn outputs(revoked: &[Rule]) -> Map<String, serde_json::Value> {
    let mut out = Map::new();
    out.insert(
        "revoked".into(),
        json!(revoked.iter().map(|r| r.id.clone()).collect::<Vec<_>>()),
    );
    out
}

/// `s3.make_private`: the public access block on, public ACL grants and policy statements
/// removed, read back private. Only a bucket the account owns is read or changed.
pub async fn make_bucket_private(
    m: &MemberClients,
    place: &Place<'_>,
    name: &str,
) -> Result<Acted, CallError> {
    let found = bucket::read(&m.s3, name, place.account)
        .await?
        .ok_or_else(|| {
            refused(
                "s3:GetBucketLocation",
                format!("bucket {name} does not exist in {}", place.account),
            )
        })?;
    let exposure = found.exposure();
    if !exposure.is_public() {
        let outcome = StepOutcome::skipped(
            format!("bucket {name} has no public ACL grant or policy statement"),
            json!(exposure),
        );
        return Ok(Acted::one("make_bucket_private", outcome, Map::new()));
    }
    bucket::make_private(&m.s3, &found, &exposure).await?;
    let after = bucket::read(&m.s3, name, place.account)
        .await?
        .ok_or_else(|| {
            refused(
                "s3:GetBucketLocation",
                format!("bucket {name} was deleted while it was fixed"),
            )
        })?;
    let still = after.exposure();
    if still.is_public() || !after.blocked() {
        return Err(refused(
            "s3:PutPublicAccessBlock",
            format!(
                "bucket {name} still reads back public ({}) or without its public access block",
                still.describe()
            ),
        ));
    }
    let outcome = StepOutcome::done(
        format!("public access block on; removed {}", exposure.describe()),
        json!(exposure),
        json!({"block": after.block, "policy": after.policy}),
    );
    Ok(Acted::one("make_bucket_private", outcome, Map::new()))
}

/// `ebs.snapshot_make_private`: the create-volume permission for everyone removed (accounts it
/// is shared with keep theirs), read back.
pub async fn make_snapshot_private(
    m: &MemberClients,
    place: &Place<'_>,
    id: &str,
) -> Result<Acted, CallError> {
    let gone = || {
        refused(
            "ec2:DescribeSnapshots",
            format!("snapshot {id} does not exist in {}", place.account),
        )
    };
    let found = snapshot::read(&m.ec2, id).await?.ok_or_else(gone)?;
    if !found.public {
        let outcome = StepOutcome::skipped(
            format!("snapshot {id} is not public"),
            json!({"public": false}),
        );
        return Ok(Acted::one("make_snapshot_private", outcome, Map::new()));
    }
    snapshot::make_private(&m.ec2, id).await?;
    let after = snapshot::read(&m.ec2, id).await?.ok_or_else(gone)?;
    if after.public {
        return Err(refused(
            "ec2:ModifySnapshotAttribute",
            format!("snapshot {id} is still restorable by everyone after the change"),
        ));
    }
    let outcome = StepOutcome::done(
        format!("removed the create-volume permission for all from {id}; other shares kept"),
        json!({"public": true}),
        json!({"public": after.public}),
    );
    Ok(Acted::one("make_snapshot_private", outcome, Map::new()))
}
