//! Playbooks: EBS snapshots. A public snapshot (create-volume permission for the group `all`)
//! loses that permission and nothing else: other accounts it is shared with keep it. An
//! unencrypted snapshot gets an encrypted copy (the configured KMS key or the account default),
//! both tagged with the other's id; the original is deleted only after approval, and only when the
//! copy reads back completed and encrypted.

use std::collections::HashMap;

use aws_sdk_ec2::types::{
    OperationType, PermissionGroup, ResourceType, SnapshotAttributeName, SnapshotState, Tag,
    TagSpecification,
};

use crate::aws_error::{CallError, Described};

/// On the original: the id of its encrypted copy. The member role may delete only snapshots
/// carrying it.
pub const COPY_TAG: &str = "quell:encrypted-copy";
/// On the copy: the id of the snapshot it replaces.
pub const ORIGINAL_TAG: &str = "quell:encrypted-copy-of";

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub state: String,
    pub encrypted: bool,
    /// Restorable by every AWS account.
    pub public: bool,
    pub tags: HashMap<String, String>,
}

impl Snapshot {
    pub fn completed(&self) -> bool {
        self.state == SnapshotState::Completed.as_str()
    }

    /// The encrypted copy Quell made earlier, if any.
    pub fn copy_id(&self) -> Option<&str> {
        self.tags.get(COPY_TAG).map(String::as_str)
    }
}

fn of(s: &aws_sdk_ec2::types::Snapshot, public: bool) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or_default().to_owned(),
        state: s.state().map(|x| x.as_str().to_owned()).unwrap_or_default(),
        encrypted: s.encrypted() == Some(true),
        public,
        tags: s
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
    }
}

async fn is_public(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<bool, CallError> {
    let attr = ec2
        .describe_snapshot_attribute()
        .snapshot_id(id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .described("ec2:DescribeSnapshotAttribute")?;
    Ok(attr
        .create_volume_permissions()
        .iter()
        .any(|p| p.group() == Some(&PermissionGroup::All)))
}

/// The snapshot, or `None` when it no longer exists.
pub async fn read(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<Snapshot>, CallError> {
    let described = ec2
        .describe_snapshots()
        .snapshot_ids(id)
        .send()
        .await
        .described("ec2:DescribeSnapshots");
    let found = match described {
        Ok(out) => match out.snapshots().first() {
            Some(s) => s.clone(),
            None => return Ok(None),
        },
        Err(e) if e.is_code("InvalidSnapshot.NotFound") => return Ok(None),
        Err(e) => return Err(e),
    };
    let public = is_public(ec2, id).await?;
    Ok(Some(of(&found, public)))
}

/// Removes the create-volume permission for everyone; accounts it is shared with keep theirs.
pub async fn make_private(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<(), CallError> {
    // The OperationType + GroupNames form: the one every EC2 implementation honours.
    ec2.modify_snapshot_attribute()
        .snapshot_id(id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Remove)
        .group_names("all")
        .send()
        .await
        .described("ec2:ModifySnapshotAttribute")?;
    Ok(())
}

/// Makes an encrypted copy and tags both snapshots with the other's id; returns the copy's id.
pub async fn encrypted_copy(
    ec2: &aws_sdk_ec2::Client,
    original: &Snapshot,
    region: &str,
    kms_key_id: Option<&str>,
) -> Result<String, CallError> {
    let copied = ec2
        .copy_snapshot()
        .source_snapshot_id(&original.id)
        .source_region(region)
        .encrypted(true)
        .set_kms_key_id(kms_key_id.map(str::to_owned))
        .description(format!("Encrypted copy of {} made by Quell", original.id))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(Tag::builder().key(ORIGINAL_TAG).value(&original.id).build())
                .build(),
        )
        .send()
        .await
        .described("ec2:CopySnapshot")?;
    let copy = copied.snapshot_id().unwrap_or_default().to_owned();
    ec2.create_tags()
        .resources(&original.id)
        .tags(Tag::builder().key(COPY_TAG).value(&copy).build())
        .send()
        .await
        .described("ec2:CreateTags")?;
    Ok(copy)
}

pub async fn delete(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<(), CallError> {
    ec2.delete_snapshot()
        .snapshot_id(id)
        .send()
        .await
        .described("ec2:DeleteSnapshot")?;
    Ok(())
}

/// Every snapshot the account owns in the Region, each marked public or not. Only the snapshots
/// EC2 lists as restorable by all are checked one by one.
pub async fn scan(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Snapshot>, CallError> {
    let mut owned = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        owned.extend(
            page.described("ec2:DescribeSnapshots")?
                .snapshots()
                .iter()
                .map(|s| of(s, false)),
        );
    }
    let mut candidates = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .restorable_by_user_ids("all")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        candidates.extend(
            page.described("ec2:DescribeSnapshots")?
                .snapshots()
                .iter()
                .filter_map(|s| s.snapshot_id().map(str::to_owned)),
        );
    }
    for s in &mut owned {
        if candidates.contains(&s.id) {
            s.public = is_public(ec2, &s.id).await?;
        }
    }
    Ok(owned)
}
