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

/// How often a copy still being made is read again: EBS copies take minutes to hours.
pub const COPY_POLL_SECONDS: i64 = 60;

/// The state of a snapshot EC2 could not take or copy: it never completes.
const SNAPSHOT_ERROR: &str = "error";

/// The snapshot, or a refusal naming it.
async fn snapshot_in(
    m: &MemberClients,
    place: &Place<'_>,
    id: &str,
) -> Result<snapshot::Snapshot, CallError> {
    snapshot::read(&m.ec2, id).await?.ok_or_else(|| {
        refused(
            "ec2:DescribeSnapshots",
            format!("snapshot {id} does not exist in {}", place.account),
        )
    })
}

/// The encrypted copy of `original` Quell made, read back: the original's tag names it, and it
/// names the original back and is encrypted. A tag alone proves nothing (anyone in the account
/// can tag a snapshot), so a copy that does not confirm it is refused.
async fn confirmed_copy(
    m: &MemberClients,
    place: &Place<'_>,
    original: &snapshot::Snapshot,
) -> Result<Option<snapshot::Snapshot>, CallError> {
    let Some(copy_id) = original.copy_id() else {
        return Ok(None);
    };
    let copy = snapshot_in(m, place, copy_id).await?;
    let names_back = copy.tags.get(snapshot::ORIGINAL_TAG) == Some(&original.id);
    if !names_back || !copy.encrypted {
        return Err(refused(
            "playbook",
            format!(
                "{}'s tag {} names {copy_id}, which is not its encrypted copy ({}); remove the tag to copy it again",
                original.id,
                snapshot::COPY_TAG,
                if names_back { "not encrypted" } else { "it does not name the snapshot back" }
            ),
        ));
    }
    Ok(Some(copy))
}

fn copy_outputs(copy_id: Option<&str>) -> Map<String, serde_json::Value> {
    let mut out = Map::new();
    out.insert("copy_id".into(), json!(copy_id));
    out
}

/// `ebs.snapshot_encrypt_copy`: an encrypted copy of an unencrypted snapshot, with the configured
/// KMS key or the account's default, both tagged with the other's id, as the built-in playbook
/// makes it. A copy made earlier is used again. The step waits for a snapshot still being taken,
/// and ends when the copy reads back completed and encrypted; until then each is read again every
/// minute (a later phase).
pub async fn encrypt_snapshot_copy(
    m: &MemberClients,
    place: &Place<'_>,
    id: &str,
    phase: u8,
) -> Result<Acted, CallError> {
    let original = snapshot_in(m, place, id).await?;
    if original.encrypted {
        let outcome = StepOutcome::skipped(
            format!("snapshot {id} is encrypted already"),
            json!({"encrypted": true}),
        );
        return Ok(Acted::one("encrypted_copy", outcome, copy_outputs(None)));
    }
    let later = |parts| Acted {
        parts,
        outputs: Map::new(),
        next_phase: Some((phase.saturating_add(1), COPY_POLL_SECONDS)),
    };
    // A snapshot CloudTrail has just reported created is still being taken: only a completed one
    // can be copied. One EC2 failed to take never completes: waiting for it would never end.
    if original.state == SNAPSHOT_ERROR {
        return Err(refused(
            "ec2:DescribeSnapshots",
            format!("snapshot {id} is in state error: EC2 could not take it, so there is nothing to copy"),
        ));
    }
    if !original.completed() {
        return Ok(later(Vec::new()));
    }
    let (copy, made) = if let Some(copy) = confirmed_copy(m, place, &original).await? {
        (copy, false)
    } else {
        let made =
            snapshot::encrypted_copy(&m.ec2, &original, place.region, place.kms_key_id).await?;
        (snapshot_in(m, place, &made).await?, true)
    };
    if !copy.encrypted {
        return Err(refused(
            "ec2:CopySnapshot",
            format!(
                "the copy {} of {id} reads back unencrypted; {id} is kept",
                copy.id
            ),
        ));
    }
    if copy.state == SNAPSHOT_ERROR {
        return Err(refused(
            "ec2:CopySnapshot",
            format!(
                "the copy {} of {id} is in state error; {id} is kept. Delete the copy and the tag {} on {id} to copy again",
                copy.id,
                snapshot::COPY_TAG
            ),
        ));
    }
    if !copy.completed() {
        let parts = if made {
            vec![(
                "encrypted_copy".to_owned(),
                StepOutcome::done(
                    format!(
                        "{} (encrypted, {}), tagged {}={id}; {id} tagged {}={}",
                        copy.id,
                        copy.state,
                        snapshot::ORIGINAL_TAG,
                        snapshot::COPY_TAG,
                        copy.id
                    ),
                    json!({"snapshot": id, "encrypted": false}),
                    json!({"snapshot": copy.id, "encrypted": true, "state": copy.state}),
                ),
            )]
        } else {
            Vec::new()
        };
        return Ok(later(parts));
    }
    let outcome = StepOutcome::done(
        format!(
            "{} is the completed, encrypted copy of {id}; each names the other in a tag",
            copy.id
        ),
        json!({"snapshot": id, "encrypted": false}),
        json!({"snapshot": copy.id, "encrypted": true, "state": copy.state}),
    );
    Ok(Acted::one(
        "encrypted_copy",
        outcome,
        copy_outputs(Some(&copy.id)),
    ))
}

/// `ebs.snapshot_delete_original`: deletes an unencrypted snapshot once its encrypted copy reads
/// back completed, and reads it back gone. Only an original whose copy Quell made and confirms
/// (see `confirmed_copy`); the member role may delete no other snapshot. It cannot be undone, so
/// a playbook puts an approval before it.
pub async fn delete_snapshot_original(
    m: &MemberClients,
    place: &Place<'_>,
    id: &str,
) -> Result<Acted, CallError> {
    let Some(original) = snapshot::read(&m.ec2, id).await? else {
        let outcome = StepOutcome::skipped(
            format!("snapshot {id} is gone already"),
            json!({"gone": true}),
        );
        return Ok(Acted::one("delete_original", outcome, Map::new()));
    };
    if original.encrypted {
        return Err(refused(
            "playbook",
            format!("snapshot {id} is encrypted: Quell deletes only unencrypted originals"),
        ));
    }
    let copy = confirmed_copy(m, place, &original).await?.ok_or_else(|| {
        refused(
            "playbook",
            format!(
                "snapshot {id} has no encrypted copy made by Quell (tag {}): run ebs.snapshot_encrypt_copy first",
                snapshot::COPY_TAG
            ),
        )
    })?;
    if !copy.completed() {
        return Err(refused(
            "playbook",
            format!(
                "the encrypted copy {} of {id} is still {}; {id} is kept until it is completed",
                copy.id, copy.state
            ),
        ));
    }
    snapshot::delete(&m.ec2, id).await?;
    if snapshot::read(&m.ec2, id).await?.is_some() {
        return Err(refused(
            "ec2:DeleteSnapshot",
            format!("snapshot {id} still exists after its deletion"),
        ));
    }
    let outcome = StepOutcome::done(
        format!("deleted the unencrypted {id}; {} replaces it", copy.id),
        json!({"snapshot": id, "copy": copy.id}),
        json!({"gone": true}),
    );
    Ok(Acted::one("delete_original", outcome, Map::new()))
}
