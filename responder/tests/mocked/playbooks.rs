//! Playbooks and Security Hub against mocked clients: what moto cannot show. Its CopySnapshot
//! ignores `Encrypted`, and it answers 404 to BatchUpdateFindings.

use std::collections::HashMap;

use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};
use serde_json::{json, Value};

use super::{
    calls, meta, record, responder_full, settings_with, world, Shared, ACCOUNT, EXTERNAL_ID,
};
use quell_responder::ledger::{Status, StepStatus};

pub const EVENTS_QUEUE: &str = "arn:aws:sqs:us-east-1:222233334444:quell-events";

#[derive(Debug, Clone)]
pub struct Snap {
    pub encrypted: bool,
    pub public: bool,
    pub state: &'static str,
    pub tags: HashMap<String, String>,
    pub kms: Option<String>,
}

impl Snap {
    pub fn plain(public: bool) -> Snap {
        Snap {
            encrypted: false,
            public,
            state: "completed",
            tags: HashMap::new(),
            kms: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FindingUpdate {
    id: String,
    workflow: String,
    note: String,
}

pub fn security_hub(w: &Shared) -> aws_sdk_securityhub::Client {
    use aws_sdk_securityhub::operation::batch_update_findings::BatchUpdateFindingsOutput;
    use aws_sdk_securityhub::types::BatchUpdateFindingsUnprocessedFinding;
    let w = w.clone();
    let update =
        mock!(aws_sdk_securityhub::Client::batch_update_findings).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            let ids = req.finding_identifiers().to_vec();
            if let Some(code) = world.call("BatchUpdateFindings") {
                // Security Hub reports per finding, in a successful response.
                return BatchUpdateFindingsOutput::builder()
                    .set_processed_findings(Some(Vec::new()))
                    .set_unprocessed_findings(Some(
                        ids.into_iter()
                            .map(|id| {
                                BatchUpdateFindingsUnprocessedFinding::builder()
                                    .finding_identifier(id)
                                    .error_code(code)
                                    .error_message("the finding is not in this account")
                                    .build()
                            })
                            .collect(),
                    ))
                    .build();
            }
            for id in &ids {
                world.finding_updates.push(FindingUpdate {
                    id: id.id().unwrap_or_default().to_owned(),
                    workflow: req
                        .workflow()
                        .and_then(|x| x.status())
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    note: req
                        .note()
                        .map(|n| n.text().unwrap_or_default().to_owned())
                        .unwrap_or_default(),
                });
            }
            BatchUpdateFindingsOutput::builder()
                .set_processed_findings(Some(ids))
                .set_unprocessed_findings(Some(Vec::new()))
                .build()
        });
    mock_client!(aws_sdk_securityhub, RuleMode::MatchAny, &[&update])
}

/// EC2 with the account's snapshots. `ignore_modify`: ModifySnapshotAttribute answers success and
/// changes nothing, the way moto treats one of its forms.
pub fn snapshots_ec2(w: &Shared, ignore_modify: bool) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::operation::{
        copy_snapshot::*, create_tags::*, delete_snapshot::*, describe_snapshot_attribute::*,
        describe_snapshots::*, modify_snapshot_attribute::*,
    };
    use aws_sdk_ec2::types::{
        CreateVolumePermission, PermissionGroup, Snapshot, SnapshotState, Tag,
    };
    let describe = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::describe_snapshots).then_compute_response(move |req| {
            let mut world = w.lock().unwrap();
            // An injected failure answers first; it is not counted, as the call sequences that
            // tests compare are about writes.
            if let Some(code) = world
                .failures
                .get_mut("DescribeSnapshots")
                .and_then(std::collections::VecDeque::pop_front)
            {
                return MockResponse::Error(DescribeSnapshotsError::generic(meta(code)));
            }
            let wanted = req.snapshot_ids().to_vec();
            let found: Vec<Snapshot> = world
                .snapshots
                .iter()
                .filter(|(id, _)| wanted.is_empty() || wanted.contains(id))
                .map(|(id, s)| {
                    Snapshot::builder()
                        .snapshot_id(id)
                        .encrypted(s.encrypted)
                        .state(SnapshotState::from(s.state))
                        .set_kms_key_id(s.kms.clone())
                        .set_tags(Some(
                            s.tags
                                .iter()
                                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                                .collect(),
                        ))
                        .build()
                })
                .collect();
            if !wanted.is_empty() && found.is_empty() {
                return MockResponse::Error(DescribeSnapshotsError::generic(meta(
                    "InvalidSnapshot.NotFound",
                )));
            }
            MockResponse::Output(
                DescribeSnapshotsOutput::builder()
                    .set_snapshots(Some(found))
                    .build(),
            )
        })
    };
    let attribute = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::describe_snapshot_attribute).then_compute_output(move |req| {
            let world = w.lock().unwrap();
            let public = world
                .snapshots
                .get(req.snapshot_id().unwrap_or_default())
                .is_some_and(|s| s.public);
            let permissions = if public {
                vec![CreateVolumePermission::builder()
                    .group(PermissionGroup::All)
                    .build()]
            } else {
                Vec::new()
            };
            DescribeSnapshotAttributeOutput::builder()
                .set_create_volume_permissions(Some(permissions))
                .build()
        })
    };
    let modify = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::modify_snapshot_attribute).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            world.call("ModifySnapshotAttribute");
            let removes_all = req
                .operation_type()
                .map(aws_sdk_ec2::types::OperationType::as_str)
                == Some("remove")
                && req.group_names().iter().any(|g| g == "all");
            if removes_all && !ignore_modify {
                if let Some(s) = world
                    .snapshots
                    .get_mut(req.snapshot_id().unwrap_or_default())
                {
                    s.public = false;
                }
            }
            ModifySnapshotAttributeOutput::builder().build()
        })
    };
    let copy = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::copy_snapshot).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            world.call("CopySnapshot");
            let tags = super::requested_tags(req.tag_specifications()).collect();
            let id = format!("snap-c0{}", world.snapshots.len());
            world.snapshots.insert(
                id.clone(),
                Snap {
                    encrypted: req.encrypted() == Some(true),
                    public: false,
                    state: "completed",
                    tags,
                    kms: req.kms_key_id().map(str::to_owned),
                },
            );
            CopySnapshotOutput::builder().snapshot_id(id).build()
        })
    };
    let tag = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::create_tags).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            for r in req.resources() {
                if let Some(s) = world.snapshots.get_mut(r) {
                    for t in req.tags() {
                        s.tags.insert(
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        );
                    }
                }
            }
            CreateTagsOutput::builder().build()
        })
    };
    let delete = {
        let w = w.clone();
        mock!(aws_sdk_ec2::Client::delete_snapshot).then_compute_output(move |req| {
            let mut world = w.lock().unwrap();
            world.call("DeleteSnapshot");
            world
                .snapshots
                .remove(req.snapshot_id().unwrap_or_default());
            DeleteSnapshotOutput::builder().build()
        })
    };
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        &[&describe, &attribute, &modify, &copy, &tag, &delete]
    )
}

pub fn event_delivery(message_id: &str, event: &Value) -> Value {
    json!({"Records": [{
        "messageId": message_id, "receiptHandle": "r", "body": event.to_string(),
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
        "eventSource": "aws:sqs", "eventSourceARN": EVENTS_QUEUE, "awsRegion": "us-east-1"
    }]})
}

pub fn request_delivery(message_id: &str, body: &Value) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0", "EventSubscriptionArn": "arn:aws:sns:us-east-1:222233334444:quell-containment:sub",
        "Sns": {"Type": "Notification", "MessageId": message_id, "TopicArn": "arn:aws:sns:us-east-1:222233334444:quell-containment",
                "Subject": null, "Message": body.to_string(), "Timestamp": "2026-11-22T10:00:00.000Z", "SignatureVersion": "1",
                "Signature": "x", "SigningCertUrl": "https://example.invalid/cert", "UnsubscribeUrl": "https://example.invalid/unsub",
                "MessageAttributes": {"ExternalId": {"Type": "String", "Value": EXTERNAL_ID}}}
    }]})
}

fn decision(message_id: &str, action: &str, key: &str) -> Value {
    request_delivery(
        message_id,
        &json!({"version": "1", "request_id": format!("decision-{message_id}"), "action": action,
                "entity": key, "reason": "change ticket 42", "requester": "arn:aws:iam::222233334444:user/lead"}),
    )
}

pub fn create_snapshot_event(id: &str) -> Value {
    json!({"id": "ev-snap", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "account": ACCOUNT, "region": "us-east-1",
        "detail": {"eventSource": "ec2.amazonaws.com", "eventName": "CreateSnapshot", "awsRegion": "us-east-1",
                   "recipientAccountId": ACCOUNT, "responseElements": {"snapshotId": id}}})
}

fn responder_for(
    w: &Shared,
    ec2: aws_sdk_ec2::Client,
    s3: Option<aws_sdk_s3::Client>,
    playbooks: &Value,
) -> quell_responder::Responder {
    let json = playbooks.to_string();
    responder_full(
        w,
        Vec::new(),
        ec2,
        s3,
        settings_with(&[
            ("QUELL_EVENTS_QUEUE_ARN", EVENTS_QUEUE),
            ("QUELL_PLAYBOOKS", json.as_str()),
        ]),
    )
}

#[tokio::test]
async fn an_unencrypted_snapshot_is_copied_encrypted_and_the_original_goes_only_on_approval() {
    let w = world();
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0a1".into(), Snap::plain(true));
    let r = responder_for(
        &w,
        snapshots_ec2(&w, false),
        None,
        &json!({"unencrypted_snapshot": {"mode": "auto", "kms_key_id": "alias/backups"}}),
    );
    r.handle(event_delivery("m-1", &create_snapshot_event("snap-0a1")))
        .await
        .unwrap();
    let key = "remediation:ev-snap:snap-0a1";
    let pending = record(&w, key);
    assert_eq!(pending.status, Status::AwaitingApproval, "{pending:?}");
    {
        let world = w.lock().unwrap();
        let original = &world.snapshots["snap-0a1"];
        assert!(
            !original.public,
            "the public permission went at once (auto)"
        );
        let copy_id = original.tags["quell:encrypted-copy"].clone();
        let copy = &world.snapshots[&copy_id];
        assert!(copy.encrypted);
        assert_eq!(copy.kms.as_deref(), Some("alias/backups"));
        assert_eq!(copy.tags["quell:encrypted-copy-of"], "snap-0a1");
        let audit = world.published.last().unwrap();
        assert_eq!(audit["event"], "awaiting_approval");
    }
    assert_eq!(
        calls(&w, "DeleteSnapshot"),
        0,
        "nothing deleted before approval"
    );

    // The same event again does nothing more.
    r.handle(event_delivery("m-2", &create_snapshot_event("snap-0a1")))
        .await
        .unwrap();
    assert_eq!(calls(&w, "CopySnapshot"), 1);

    // A later event about the same snapshot reuses the copy, and its approval replaces the
    // first one: one pending decision per resource, however many events or sweeps.
    let mut later = create_snapshot_event("snap-0a1");
    later["id"] = json!("ev-later");
    r.handle(event_delivery("m-2b", &later)).await.unwrap();
    assert_eq!(calls(&w, "CopySnapshot"), 1, "the tagged copy is reused");
    let superseded = record(&w, key);
    assert_eq!(superseded.status, Status::Skipped);
    assert!(superseded
        .reason
        .unwrap()
        .contains("remediation:ev-later:snap-0a1"));
    r.handle(decision("m-2c", "approve", key)).await.unwrap();
    assert_eq!(
        record(&w, "decision-m-2c").rejection.unwrap().code,
        "not_awaiting_approval"
    );
    let key = "remediation:ev-later:snap-0a1";
    assert_eq!(record(&w, key).status, Status::AwaitingApproval);

    r.handle(decision("m-3", "approve", key)).await.unwrap();
    let done = record(&w, key);
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert!(done
        .decided_by
        .as_deref()
        .unwrap()
        .starts_with("approve by arn:aws:iam::222233334444:user/lead"));
    assert_eq!(
        done.step("delete_original").unwrap().status,
        StepStatus::Done
    );
    assert!(
        !w.lock().unwrap().snapshots.contains_key("snap-0a1"),
        "read back as gone"
    );
    assert_eq!(record(&w, "decision-m-3").status, Status::Succeeded);

    // A second approval finds nothing pending and deletes nothing.
    r.handle(decision("m-4", "approve", key)).await.unwrap();
    let again = record(&w, "decision-m-4");
    assert_eq!(again.status, Status::Rejected);
    assert_eq!(again.rejection.unwrap().code, "not_awaiting_approval");
    assert_eq!(calls(&w, "DeleteSnapshot"), 1);
}

#[tokio::test]
async fn a_batch_names_only_the_message_that_failed_and_the_others_are_done() {
    let w = world();
    for id in ["snap-1", "snap-2", "snap-3"] {
        w.lock()
            .unwrap()
            .snapshots
            .insert(id.into(), Snap::plain(false));
    }
    // The first read fails for a while (EC2 unavailable, which the SDK leaves to Quell).
    w.lock()
        .unwrap()
        .failures
        .insert("DescribeSnapshots", ["ServiceUnavailable"].into());
    let r = responder_for(
        &w,
        snapshots_ec2(&w, false),
        None,
        &json!({"unencrypted_snapshot": {"mode": "auto"}}),
    );
    let records: Vec<Value> = ["snap-1", "snap-2", "snap-3"]
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let mut event = create_snapshot_event(id);
            event["id"] = json!(format!("ev-{n}"));
            event_delivery(&format!("m-{n}"), &event)["Records"][0].clone()
        })
        .collect();
    let out = r
        .handle(json!({ "Records": records }))
        .await
        .expect("a batch is settled message by message, never failed whole");
    assert_eq!(
        out["batchItemFailures"],
        json!([{"itemIdentifier": "m-0"}]),
        "{out}"
    );
    for (n, id) in [(1, "snap-2"), (2, "snap-3")] {
        let done = record(&w, &format!("remediation:ev-{n}:{id}"));
        assert_eq!(done.status, Status::AwaitingApproval, "{done:?}");
        assert!(w.lock().unwrap().snapshots[id]
            .tags
            .contains_key("quell:encrypted-copy"));
    }
    assert!(!w.lock().unwrap().snapshots["snap-1"]
        .tags
        .contains_key("quell:encrypted-copy"));

    // Its redelivery, alone, is done.
    let mut first = create_snapshot_event("snap-1");
    first["id"] = json!("ev-0");
    let out = r.handle(event_delivery("m-0", &first)).await.unwrap();
    assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    assert_eq!(
        record(&w, "remediation:ev-0:snap-1").status,
        Status::AwaitingApproval
    );
}

#[tokio::test]
async fn deny_drops_a_pending_fix_and_an_unknown_id_is_refused() {
    let w = world();
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0b2".into(), Snap::plain(false));
    let r = responder_for(
        &w,
        snapshots_ec2(&w, false),
        None,
        &json!({"unencrypted_snapshot": {"mode": "approve"}}),
    );
    r.handle(event_delivery("m-1", &create_snapshot_event("snap-0b2")))
        .await
        .unwrap();
    let key = "remediation:ev-snap:snap-0b2";
    assert_eq!(record(&w, key).status, Status::AwaitingApproval);
    assert_eq!(
        calls(&w, "CopySnapshot"),
        0,
        "approve mode copies nothing yet"
    );
    r.handle(decision("m-2", "deny", key)).await.unwrap();
    let denied = record(&w, key);
    assert_eq!(denied.status, Status::Denied);
    assert!(denied.reason.unwrap().contains("change ticket 42"));
    assert!(denied.pending.is_none());
    assert_eq!(calls(&w, "CopySnapshot") + calls(&w, "DeleteSnapshot"), 0);
    assert!(w.lock().unwrap().snapshots.contains_key("snap-0b2"));

    r.handle(decision("m-3", "approve", "remediation:nope:snap-0"))
        .await
        .unwrap();
    let unknown = record(&w, "decision-m-3");
    assert_eq!(unknown.rejection.unwrap().code, "unknown_remediation");
}

fn finding_event(detail_type: &str, action: Option<&str>, resource: &Value) -> Value {
    let mut e = json!({"id": "ev-hub", "detail-type": detail_type, "source": "aws.securityhub",
        "account": ACCOUNT, "region": "us-east-1",
        "detail": {"findings": [{"Id": "finding-1", "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/securityhub",
            "AwsAccountId": ACCOUNT, "Region": "us-east-1", "RecordState": "ACTIVE",
            "Compliance": {"Status": "FAILED", "SecurityControlId": "EC2.1"},
            "Resources": [resource.clone()]}]}});
    if let Some(a) = action {
        e["resources"] = json!([format!(
            "arn:aws:securityhub:us-east-1:222233334444:action/custom/{a}"
        )]);
        e["detail"]["actionName"] = json!(a);
        e["account"] = json!("222233334444");
    }
    e
}

#[tokio::test]
async fn a_finding_is_resolved_only_when_the_fix_reads_back_and_is_noted_otherwise() {
    let snapshot = json!({"Type": "Other", "Id": format!("arn:aws:ec2:us-east-1:{ACCOUNT}:snapshot/snap-0c3")});
    for (ignore_modify, status, workflow) in [
        (false, Status::Succeeded, "RESOLVED"),
        (true, Status::Failed, "NOTIFIED"),
    ] {
        let w = world();
        let mut encrypted = Snap::plain(true);
        encrypted.encrypted = true;
        w.lock()
            .unwrap()
            .snapshots
            .insert("snap-0c3".into(), encrypted);
        // Notify mode: the custom action is a person asking, so it acts anyway.
        let r = responder_for(
            &w,
            snapshots_ec2(&w, ignore_modify),
            None,
            &json!({"public_snapshot": {"mode": "notify"}}),
        );
        let event = finding_event(
            "Security Hub Findings - Custom Action",
            Some("QuellRemediate"),
            &snapshot,
        );
        let _ = r.handle(event_delivery("m-1", &event)).await;
        let rec = record(&w, "remediation:ev-hub:snap-0c3");
        assert_eq!(rec.status, status, "{rec:?}");
        assert_eq!(calls(&w, "ModifySnapshotAttribute"), 1);
        let world = w.lock().unwrap();
        let update = world
            .finding_updates
            .last()
            .expect("the finding was updated");
        assert_eq!(update.id, "finding-1");
        assert_eq!(update.workflow, workflow, "ignore_modify={ignore_modify}");
        assert!(
            update.note.contains("remediation:ev-hub:snap-0c3"),
            "{}",
            update.note
        );
        assert_eq!(rec.step("update_finding").unwrap().status, StepStatus::Done);
    }
}

#[tokio::test]
async fn a_finding_security_hub_will_not_update_is_recorded_and_the_fix_stands() {
    let w = world();
    let mut encrypted = Snap::plain(true);
    encrypted.encrypted = true;
    w.lock()
        .unwrap()
        .snapshots
        .insert("snap-0d4".into(), encrypted);
    w.lock()
        .unwrap()
        .failures
        .insert("BatchUpdateFindings", ["AccessDeniedException"].into());
    let r = responder_for(&w, snapshots_ec2(&w, false), None, &json!({}));
    let event = finding_event(
        "Security Hub Findings - Custom Action",
        Some("QuellRemediate"),
        &json!({"Type": "Other", "Id": format!("arn:aws:ec2:us-east-1:{ACCOUNT}:snapshot/snap-0d4")}),
    );
    r.handle(event_delivery("m-1", &event)).await.unwrap();
    let rec = record(&w, "remediation:ev-hub:snap-0d4");
    assert_eq!(rec.status, Status::Succeeded);
    let step = rec.step("update_finding").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert!(
        step.detail.contains("AccessDeniedException"),
        "{}",
        step.detail
    );
    assert!(!w.lock().unwrap().snapshots["snap-0d4"].public);
}

#[tokio::test]
async fn the_contain_action_contains_the_findings_user_and_notes_the_finding_unresolved() {
    let w = world();
    let r = responder_for(&w, snapshots_ec2(&w, false), None, &json!({}));
    let event = finding_event(
        "Security Hub Findings - Custom Action",
        Some("QuellContain"),
        &json!({"Type": "AwsIamAccessKey", "Id": "AKIAOLD",
               "Details": {"AwsIamAccessKey": {"PrincipalName": "alice", "PrincipalType": "IAMUser"}}}),
    );
    // A second finding in the same event names Quell's own role: refused, and recorded apart.
    let mut event = event;
    let mut own = event["detail"]["findings"][0].clone();
    own["Id"] = json!("finding-2");
    own["Resources"] = json!([{"Type": "AwsIamRole", "Id": format!("arn:aws:iam::{ACCOUNT}:role/quell-responder")}]);
    event["detail"]["findings"]
        .as_array_mut()
        .unwrap()
        .push(own);
    let out = r.handle(event_delivery("m-1", &event)).await.unwrap();
    assert_eq!(out["outcomes"][1]["code"], "protected_principal", "{out}");
    let refused = record(&w, out["outcomes"][1]["key"].as_str().unwrap());
    assert_eq!(refused.rejection.unwrap().code, "protected_principal");
    let key = out["outcomes"][0]["key"].as_str().unwrap().to_owned();
    let rec = record(&w, &key);
    assert_eq!(rec.status, Status::Succeeded, "{rec:?}");
    assert_eq!(
        rec.entity.as_deref(),
        Some(format!("arn:aws:iam::{ACCOUNT}:user/alice").as_str())
    );
    assert!(rec.requester.unwrap().contains("Quell: contain"));
    {
        let world = w.lock().unwrap();
        assert!(
            world
                .user
                .attached
                .iter()
                .any(|p| p.ends_with("/AWSDenyAll")),
            "{:?}",
            world.user.attached
        );
        let update = |id: &str| {
            world
                .finding_updates
                .iter()
                .find(|u| u.id == id)
                .unwrap_or_else(|| panic!("{id} was updated"))
                .clone()
        };
        let contained = update("finding-1");
        assert_eq!(
            contained.workflow, "NOTIFIED",
            "a contained principal still needs investigating"
        );
        assert!(
            contained.note.contains("contain succeeded"),
            "{}",
            contained.note
        );
        let refused = update("finding-2");
        assert!(
            refused.note.contains("contain rejected"),
            "{}",
            refused.note
        );
    }
    // The same event delivered again contains nothing twice.
    r.handle(event_delivery("m-2", &event)).await.unwrap();
    assert_eq!(calls(&w, "AttachUserPolicy"), 1);
}

pub fn public_bucket_s3(w: &Shared) -> aws_sdk_s3::Client {
    use aws_sdk_s3::operation::{
        get_bucket_acl::*, get_bucket_location::*, get_bucket_policy::*, get_bucket_tagging::*,
        get_public_access_block::*, put_bucket_acl::*, put_public_access_block::*,
    };
    use aws_sdk_s3::types::{Grant, Permission};
    // Every call names the account the bucket must belong to; a call that does not matches no
    // rule here and fails the test.
    macro_rules! owned {
        () => {
            |req| req.expected_bucket_owner() == Some(ACCOUNT)
        };
    }
    let location = mock!(aws_sdk_s3::Client::get_bucket_location)
        .match_requests(owned!())
        .then_output(|| GetBucketLocationOutput::builder().build());
    let acl = mock!(aws_sdk_s3::Client::get_bucket_acl)
        .match_requests(owned!())
        .then_output(|| {
            GetBucketAclOutput::builder()
                .grants(
                    Grant::builder()
                        .grantee(quell_responder::playbooks::bucket::group_grantee(
                            "http://acs.amazonaws.com/groups/global/AllUsers",
                        ))
                        .permission(Permission::Read)
                        .build(),
                )
                .build()
        });
    let policy = mock!(aws_sdk_s3::Client::get_bucket_policy)
        .match_requests(owned!())
        .then_error(|| GetBucketPolicyError::generic(meta("NoSuchBucketPolicy")));
    let block = mock!(aws_sdk_s3::Client::get_public_access_block)
        .match_requests(owned!())
        .then_error(|| {
            GetPublicAccessBlockError::generic(meta("NoSuchPublicAccessBlockConfiguration"))
        });
    let tags = mock!(aws_sdk_s3::Client::get_bucket_tagging)
        .match_requests(owned!())
        .then_error(|| GetBucketTaggingError::generic(meta("NoSuchTagSet")));
    let put_block = {
        let w = w.clone();
        mock!(aws_sdk_s3::Client::put_public_access_block)
            .match_requests(owned!())
            .then_compute_response(move |_| {
                w.lock().unwrap().call("PutPublicAccessBlock");
                MockResponse::Error(PutPublicAccessBlockError::generic(meta("AccessDenied")))
            })
    };
    let put_acl = {
        let w = w.clone();
        mock!(aws_sdk_s3::Client::put_bucket_acl)
            .match_requests(owned!())
            .then_compute_output(move |_| {
                w.lock().unwrap().call("PutBucketAcl");
                PutBucketAclOutput::builder().build()
            })
    };
    mock_client!(
        aws_sdk_s3,
        RuleMode::MatchAny,
        &[&location, &acl, &policy, &block, &tags, &put_block, &put_acl]
    )
}

#[tokio::test]
async fn a_bucket_whose_public_access_block_is_denied_is_left_as_it_was_and_the_failure_named() {
    let w = world();
    let r = responder_for(
        &w,
        snapshots_ec2(&w, false),
        Some(public_bucket_s3(&w)),
        &json!({}),
    );
    let event = json!({"id": "ev-s3", "detail-type": "AWS API Call via CloudTrail", "source": "aws.s3",
        "account": ACCOUNT, "region": "us-east-1",
        "detail": {"eventSource": "s3.amazonaws.com", "eventName": "PutBucketAcl", "awsRegion": "us-east-1",
                   "recipientAccountId": ACCOUNT, "requestParameters": {"bucketName": "open-reports"}}});
    let _ = r.handle(event_delivery("m-1", &event)).await;
    let rec = record(&w, "remediation:ev-s3:open-reports");
    assert_eq!(rec.status, Status::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("s3:PutPublicAccessBlock"),
        "{:?}",
        rec.error
    );
    let step = rec.step("make_bucket_private").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.prior["grants"][0]["permission"], "READ",
        "what was public is recorded"
    );
    assert_eq!(calls(&w, "PutPublicAccessBlock"), 1);
    assert_eq!(
        calls(&w, "PutBucketAcl"),
        0,
        "no ACL change after the block failed"
    );
}
