//! EC2 containment with a failure injected at every EC2 call it makes (and at the scheduling of
//! phase 2): whatever fails, no interface is left in the all-open untracked group without
//! isolation following. moto cannot fail a chosen call, so a small EC2 of two interfaces in one
//! VPC answers here, keeping groups, rules and interfaces as EC2 does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, GroupIdentifier, Instance, InstanceNetworkInterface,
    InstanceState, InstanceStateName, IpPermission, IpRange, NetworkInterface, Reservation,
    SecurityGroup, Tag,
};
use aws_smithy_mocks::{mock, mock_client, MockResponse, RuleMode};

use super::{delivery, isolation_queue_delivery, meta, record, responder_full, settings, world};
use quell_responder::ledger::Status;

const INSTANCE: &str = "i-0123456789abcdef0";

#[derive(Debug, Clone)]
struct Group {
    name: String,
    tags: Vec<(String, String)>,
    ingress: Vec<IpPermission>,
    egress: Vec<IpPermission>,
}

#[derive(Default)]
struct Ec2World {
    groups: HashMap<String, Group>,
    /// Interface id and its groups, in attachment order.
    interfaces: Vec<(String, Vec<String>)>,
    termination_protection: bool,
    calls: HashMap<&'static str, usize>,
    /// Fail the n-th call of this operation.
    fail: Option<(&'static str, usize)>,
    made: usize,
}

impl Ec2World {
    fn new(fail: Option<(&'static str, usize)>) -> Ec2World {
        let web = Group {
            name: "web".into(),
            tags: Vec::new(),
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        Ec2World {
            groups: HashMap::from([("sg-web".to_owned(), web)]),
            interfaces: vec![
                ("eni-1".into(), vec!["sg-web".into()]),
                ("eni-2".into(), vec!["sg-web".into()]),
            ],
            fail,
            ..Ec2World::default()
        }
    }

    /// Counts the call; whether it is the one to fail.
    fn call(&mut self, op: &'static str) -> bool {
        let n = self.calls.entry(op).or_default();
        *n += 1;
        self.fail == Some((op, *n))
    }

    fn purpose(&self, id: &str) -> Option<String> {
        self.groups[id]
            .tags
            .iter()
            .find(|(k, _)| k == "quell:purpose")
            .map(|(_, v)| v.clone())
    }
}

type Shared = Arc<Mutex<Ec2World>>;

fn group_output(id: &str, g: &Group) -> SecurityGroup {
    SecurityGroup::builder()
        .group_id(id)
        .group_name(&g.name)
        .vpc_id("vpc-1")
        .set_tags(Some(
            g.tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .set_ip_permissions(Some(g.ingress.clone()))
        .set_ip_permissions_egress(Some(g.egress.clone()))
        .build()
}

macro_rules! ec2_rule {
    ($w:expr, $op:ident, $name:literal, $err:ty, |$world:ident, $req:ident| $body:expr) => {{
        let w = $w.clone();
        mock!(aws_sdk_ec2::Client::$op).then_compute_response(move |$req| {
            let mut $world = w.lock().unwrap();
            if $world.call($name) {
                return MockResponse::Error(<$err>::generic(meta("UnauthorizedOperation")));
            }
            $body
        })
    }};
}

#[allow(clippy::too_many_lines)]
fn ec2(w: &Shared) -> aws_sdk_ec2::Client {
    use aws_sdk_ec2::operation::{
        authorize_security_group_egress::*, authorize_security_group_ingress::*,
        create_security_group::*, create_tags::*, describe_instance_attribute::*,
        describe_instances::*, describe_network_interfaces::*, describe_security_groups::*,
        modify_instance_attribute::*, modify_network_interface_attribute::*,
        revoke_security_group_egress::*,
    };
    let instances = ec2_rule!(
        w,
        describe_instances,
        "DescribeInstances",
        DescribeInstancesError,
        |world, _req| {
            let enis = world
                .interfaces
                .iter()
                .map(|(id, _)| {
                    InstanceNetworkInterface::builder()
                        .network_interface_id(id)
                        .build()
                })
                .collect();
            MockResponse::Output(
                DescribeInstancesOutput::builder()
                    .reservations(
                        Reservation::builder()
                            .instances(
                                Instance::builder()
                                    .instance_id(INSTANCE)
                                    .vpc_id("vpc-1")
                                    .state(
                                        InstanceState::builder()
                                            .name(InstanceStateName::Running)
                                            .build(),
                                    )
                                    .set_network_interfaces(Some(enis))
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
        }
    );
    let enis = ec2_rule!(
        w,
        describe_network_interfaces,
        "DescribeNetworkInterfaces",
        DescribeNetworkInterfacesError,
        |world, _req| {
            MockResponse::Output(
                DescribeNetworkInterfacesOutput::builder()
                    .set_network_interfaces(Some(
                        world
                            .interfaces
                            .iter()
                            .map(|(id, groups)| {
                                NetworkInterface::builder()
                                    .network_interface_id(id)
                                    .set_groups(Some(
                                        groups
                                            .iter()
                                            .map(|g| GroupIdentifier::builder().group_id(g).build())
                                            .collect(),
                                    ))
                                    .build()
                            })
                            .collect(),
                    ))
                    .build(),
            )
        }
    );
    let groups = ec2_rule!(
        w,
        describe_security_groups,
        "DescribeSecurityGroups",
        DescribeSecurityGroupsError,
        |world, req| {
            let by_tag = req
                .filters()
                .iter()
                .find(|f| f.name() == Some("tag:quell:purpose"))
                .and_then(|f| f.values().first().cloned());
            let wanted: Vec<SecurityGroup> = world
                .groups
                .iter()
                .filter(|(id, _)| {
                    req.group_ids().contains(id)
                        || by_tag
                            .as_ref()
                            .is_some_and(|t| world.purpose(id).as_ref() == Some(t))
                })
                .map(|(id, g)| group_output(id, g))
                .collect();
            MockResponse::Output(
                DescribeSecurityGroupsOutput::builder()
                    .set_security_groups(Some(wanted))
                    .build(),
            )
        }
    );
    let create = ec2_rule!(
        w,
        create_security_group,
        "CreateSecurityGroup",
        CreateSecurityGroupError,
        |world, req| {
            world.made += 1;
            let id = format!("sg-q{}", world.made);
            let tags = super::requested_tags(req.tag_specifications()).collect();
            // EC2 gives every new group an allow-all IPv4 egress rule.
            let default_out = IpPermission::builder()
                .ip_protocol("-1")
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build();
            world.groups.insert(
                id.clone(),
                Group {
                    name: req.group_name().unwrap_or_default().to_owned(),
                    tags,
                    ingress: Vec::new(),
                    egress: vec![default_out],
                },
            );
            MockResponse::Output(CreateSecurityGroupOutput::builder().group_id(id).build())
        }
    );
    let ingress = ec2_rule!(
        w,
        authorize_security_group_ingress,
        "AuthorizeSecurityGroupIngress",
        AuthorizeSecurityGroupIngressError,
        |world, req| {
            let id = req.group_id().unwrap_or_default().to_owned();
            world
                .groups
                .get_mut(&id)
                .unwrap()
                .ingress
                .extend(req.ip_permissions().iter().cloned());
            MockResponse::Output(
                AuthorizeSecurityGroupIngressOutput::builder()
                    .r#return(true)
                    .build(),
            )
        }
    );
    let egress = ec2_rule!(
        w,
        authorize_security_group_egress,
        "AuthorizeSecurityGroupEgress",
        AuthorizeSecurityGroupEgressError,
        |world, req| {
            let id = req.group_id().unwrap_or_default().to_owned();
            world
                .groups
                .get_mut(&id)
                .unwrap()
                .egress
                .extend(req.ip_permissions().iter().cloned());
            MockResponse::Output(
                AuthorizeSecurityGroupEgressOutput::builder()
                    .r#return(true)
                    .build(),
            )
        }
    );
    let revoke = ec2_rule!(
        w,
        revoke_security_group_egress,
        "RevokeSecurityGroupEgress",
        RevokeSecurityGroupEgressError,
        |world, req| {
            let id = req.group_id().unwrap_or_default().to_owned();
            let gone = req.ip_permissions().to_vec();
            world
                .groups
                .get_mut(&id)
                .unwrap()
                .egress
                .retain(|p| !gone.contains(p));
            MockResponse::Output(
                RevokeSecurityGroupEgressOutput::builder()
                    .r#return(true)
                    .build(),
            )
        }
    );
    let modify_eni = ec2_rule!(
        w,
        modify_network_interface_attribute,
        "ModifyNetworkInterfaceAttribute",
        ModifyNetworkInterfaceAttributeError,
        |world, req| {
            if let Some(groups) = req.groups().first().map(|_| req.groups().to_vec()) {
                let eni = req.network_interface_id().unwrap_or_default();
                if let Some((_, g)) = world.interfaces.iter_mut().find(|(id, _)| id == eni) {
                    *g = groups;
                }
            }
            MockResponse::Output(ModifyNetworkInterfaceAttributeOutput::builder().build())
        }
    );
    let modify_instance = ec2_rule!(
        w,
        modify_instance_attribute,
        "ModifyInstanceAttribute",
        ModifyInstanceAttributeError,
        |world, req| {
            if let Some(v) = req
                .disable_api_termination()
                .and_then(AttributeBooleanValue::value)
            {
                world.termination_protection = v;
            }
            MockResponse::Output(ModifyInstanceAttributeOutput::builder().build())
        }
    );
    let attribute = ec2_rule!(
        w,
        describe_instance_attribute,
        "DescribeInstanceAttribute",
        DescribeInstanceAttributeError,
        |world, _req| {
            MockResponse::Output(
                DescribeInstanceAttributeOutput::builder()
                    .disable_api_termination(
                        AttributeBooleanValue::builder()
                            .value(world.termination_protection)
                            .build(),
                    )
                    .instance_initiated_shutdown_behavior(
                        AttributeValue::builder().value("terminate").build(),
                    )
                    .build(),
            )
        }
    );
    let tags = ec2_rule!(
        w,
        create_tags,
        "CreateTags",
        CreateTagsError,
        |world, _req| {
            let _ = &world;
            MockResponse::Output(CreateTagsOutput::builder().build())
        }
    );
    mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        &[
            &instances,
            &enis,
            &groups,
            &create,
            &ingress,
            &egress,
            &revoke,
            &modify_eni,
            &modify_instance,
            &attribute,
            &tags
        ]
    )
}

/// Contains the instance with `fail` injected, delivers phase 2 if it was scheduled, and returns
/// the final record's status and the interfaces' groups with each group's purpose.
async fn contain_with(
    fail: Option<(&'static str, usize)>,
) -> (Status, Vec<(String, Vec<Option<String>>)>, String) {
    let w = world();
    let e = Arc::new(Mutex::new(Ec2World::new(None)));
    let responder = responder_full(&w, Vec::new(), ec2(&e), None, settings());
    e.lock().unwrap().fail = fail;
    if fail.map(|f| f.0) == Some("SendMessage") {
        w.lock().unwrap().failures.insert(
            "SendMessageIsolation",
            std::collections::VecDeque::from(["AccessDenied"]),
        );
    }
    let arn = format!(
        "arn:aws:ec2:us-east-1:{}:instance/{INSTANCE}",
        super::ACCOUNT
    );
    responder
        .handle(delivery("m1", "req-i", &arn))
        .await
        .unwrap();
    let scheduled: Vec<String> = w
        .lock()
        .unwrap()
        .queued
        .iter()
        .filter(|(url, body)| url.ends_with("/quell-isolation") && !body.contains("\"attempt\""))
        .map(|(_, body)| body.clone())
        .collect();
    for (n, body) in scheduled.iter().enumerate() {
        let _ = responder
            .handle(isolation_queue_delivery(&format!("q{n}"), body))
            .await;
    }
    let r = record(&w, "req-i");
    let world = e.lock().unwrap();
    let interfaces = world
        .interfaces
        .iter()
        .map(|(id, groups)| {
            (
                id.clone(),
                groups.iter().map(|g| world.purpose(g)).collect(),
            )
        })
        .collect();
    (r.status, interfaces, format!("{:?}", r.steps))
}

const UNTRACKED: Option<&str> = Some("untracked");

#[tokio::test]
async fn without_failures_both_interfaces_end_in_the_isolation_group() {
    let (status, interfaces, steps) = contain_with(None).await;
    assert_eq!(status, Status::Succeeded, "{steps}");
    for (eni, purposes) in interfaces {
        assert_eq!(purposes, [Some("isolation".to_owned())], "{eni}");
    }
}

/// Phase 2 may start in another execution environment the moment its message goes out: by then
/// the record must already wait for it, and phase 1 must write the record no more, or its last
/// write would undo what phase 2 recorded.
#[tokio::test]
async fn the_isolation_message_goes_out_only_once_the_record_waits_for_it() {
    let w = world();
    let e = Arc::new(Mutex::new(Ec2World::new(None)));
    let responder = responder_full(&w, Vec::new(), ec2(&e), None, settings());
    let arn = format!(
        "arn:aws:ec2:us-east-1:{}:instance/{INSTANCE}",
        super::ACCOUNT
    );
    let out = responder
        .handle(delivery("m1", "req-i", &arn))
        .await
        .unwrap();
    let seen = w.lock().unwrap().record_when_isolation_sent.clone();
    assert_eq!(seen.len(), 1, "one isolation message: {out}");
    let at_send: quell_responder::ledger::Record =
        serde_json::from_str(seen[0].as_deref().expect("the record existed")).unwrap();
    assert!(at_send.isolation_due_at.is_some(), "{at_send:?}");
    assert!(
        at_send.completed("schedule_isolation"),
        "{:?}",
        at_send.steps
    );
    let after = record(&w, "req-i");
    assert_eq!(
        after.updated_at, at_send.updated_at,
        "phase 1 wrote nothing after the message went out"
    );
}

#[tokio::test]
async fn a_failure_at_any_ec2_call_never_leaves_an_interface_in_the_open_group() {
    let (_, clean, _) = contain_with(None).await;
    assert!(clean
        .iter()
        .all(|(_, p)| p.iter().all(|x| x.as_deref() != UNTRACKED)));
    let mut tried = 0;
    for op in [
        "DescribeInstances",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "CreateSecurityGroup",
        "AuthorizeSecurityGroupIngress",
        "AuthorizeSecurityGroupEgress",
        "RevokeSecurityGroupEgress",
        "ModifyNetworkInterfaceAttribute",
        "ModifyInstanceAttribute",
        "DescribeInstanceAttribute",
        "CreateTags",
        "SendMessage",
    ] {
        for n in 1..=8 {
            let (status, interfaces, steps) = contain_with(Some((op, n))).await;
            tried += 1;
            for (eni, purposes) in &interfaces {
                assert!(
                    !purposes.iter().any(|p| p.as_deref() == UNTRACKED),
                    "{op} #{n} failing left {eni} in the all-open group ({status:?}): {steps}"
                );
            }
            if status == Status::Succeeded {
                for (eni, purposes) in &interfaces {
                    assert_eq!(
                        purposes,
                        &[Some("isolation".to_owned())],
                        "{op} #{n}: succeeded, so {eni} is isolated: {steps}"
                    );
                }
            }
        }
    }
    assert_eq!(tried, 96);
}
