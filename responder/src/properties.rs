//! Property tests of every parser that sees outside input: the Lambda event, SNS messages,
//! EventBridge events, ARNs and findings. Whatever arrives, a parser answers (a bounded refusal or
//! a parse), never panics, and never turns an event into an action outside the account that sent
//! it. `PROPTEST_CASES` sets how many inputs each property sees: the suite runs a short pass,
//! `scripts/fuzz-parsers` a long one.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::contract::ContainmentMessage;
use crate::entity::Entity;
use crate::playbooks::event::{self, tests::origin, Parsed};

const ACCOUNTS: &[&str] = &["111122223333", "444455556666", "999999999999", "12345", ""];
const REGIONS: &[&str] = &["us-east-1", "eu-west-1", "ap-south-1", "", "cn-north-1"];
const DETAIL_TYPES: &[&str] = &[
    "AWS API Call via CloudTrail",
    "Config Rules Compliance Change",
    "Security Hub Findings - Imported",
    "Security Hub Findings - Custom Action",
    "Scheduled Event",
    "Something Else",
];

/// Text that an attacker would try: ids, ARNs of every shape, control characters, long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(ACCOUNTS).prop_map(str::to_owned),
        prop::sample::select(REGIONS).prop_map(str::to_owned),
        "(arn|ARN):(aws|aws-cn|aws-us-gov|x)?:(iam|ec2|s3|lambda|securityhub|events)?:[a-z0-9-]{0,12}:[0-9]{0,12}:[a-zA-Z0-9/:_.+=,@-]{0,40}",
        "(sg|snap|i)-[0-9a-f]{0,20}",
        "[a-z0-9.-]{0,70}",
        "\\PC{0,30}",
        "[\\x00-\\x1f]{0,5}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(
                    &[
                        "Id",
                        "Region",
                        "AwsAccountId",
                        "Resources",
                        "Type",
                        "Partition",
                        "ProductArn",
                        "eventName",
                        "recipientAccountId",
                        "awsRegion",
                        "requestParameters",
                        "groupId",
                        "bucketName",
                        "snapshotId",
                        "configRuleName",
                        "awsAccountId",
                        "resourceType",
                        "resourceId",
                        "newEvaluationResult",
                        "complianceType",
                        "findings",
                        "Compliance",
                        "Status",
                        "SecurityControlId",
                        "RecordState",
                        "Details",
                    ][..]
                ),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// An event with a real envelope and an arbitrary detail.
fn event() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(DETAIL_TYPES),
        prop::option::of(prop::sample::select(ACCOUNTS)),
        prop::sample::select(REGIONS),
        prop::collection::vec(text(), 0..3),
        json_value(),
    )
        .prop_map(|(detail_type, account, region, resources, detail)| {
            let mut e = json!({"id": "ev-p", "detail-type": detail_type, "source": "aws.securityhub",
                "region": region, "resources": resources, "detail": detail});
            if let Some(a) = account {
                e["account"] = json!(a);
            }
            e
        })
}

/// A plausible event of each kind, with every account and Region field drawn on its own: the
/// parser must notice whenever they disagree.
fn mixed_event() -> impl Strategy<Value = Value> {
    let acct = || prop::sample::select(ACCOUNTS);
    let region = || prop::sample::select(REGIONS);
    (0..4_u8, acct(), acct(), acct(), region(), region())
        .prop_map(|(kind, envelope, detail, resource, r1, r2)| {
            let e = match kind {
                0 => json!({"detail-type": "AWS API Call via CloudTrail", "detail": {
                    "eventName": "AuthorizeSecurityGroupIngress", "recipientAccountId": detail,
                    "awsRegion": r1, "requestParameters": {"groupId": "sg-0abc"}}}),
                1 => json!({"detail-type": "Config Rules Compliance Change", "detail": {
                    "configRuleName": "quell-ebs-snapshot-public-restorable", "awsAccountId": detail,
                    "awsRegion": r1, "resourceType": "AWS::::Account", "resourceId": resource,
                    "newEvaluationResult": {"complianceType": "NON_COMPLIANT"}}}),
                2 => json!({"detail-type": "Security Hub Findings - Imported", "detail": {"findings": [{
                    "Id": "f", "ProductArn": "p", "AwsAccountId": detail, "Region": r1,
                    "Compliance": {"Status": "FAILED", "SecurityControlId": "EC2.19"},
                    "Resources": [{"Type": "AwsEc2SecurityGroup", "Region": r2,
                        "Id": format!("arn:aws:ec2:{r2}:{resource}:security-group/sg-0abc")}]}]}}),
                _ => json!({"detail-type": "Security Hub Findings - Custom Action",
                    "resources": [format!("arn:aws:securityhub:us-east-1:{envelope}:action/custom/QuellContain")],
                    "detail": {"findings": [{"Id": "f", "ProductArn": "p", "AwsAccountId": detail, "Region": r1,
                        "Resources": [{"Type": "AwsIamRole", "Region": r2,
                            "Id": format!("arn:aws:iam::{resource}:role/app")}]}]}}),
            };
            let mut e = e;
            e["id"] = json!("ev-m");
            e["account"] = json!(envelope);
            e
        })
}

proptest! {
    #[test]
    fn an_event_parses_or_is_refused_with_a_bounded_reason(e in event()) {
        if let Err(r) = event::parse(&e, &origin()) {
            prop_assert!(r.message().len() < 4096, "{}", r.message());
        }
    }

    #[test]
    fn no_event_acts_outside_the_account_and_regions_that_sent_it(e in mixed_event()) {
        let o = origin();
        let envelope = e["account"].as_str().unwrap_or_default().to_owned();
        match event::parse(&e, &o) {
            Ok(Parsed::Triggers(ts)) => {
                for t in ts {
                    prop_assert_eq!(&t.account, &envelope);
                    prop_assert!(o.regions.contains(&t.region), "{}", t.region);
                }
            }
            Ok(Parsed::Place { account, region, .. }) => {
                prop_assert_eq!(&account, &envelope);
                prop_assert!(o.regions.contains(&region));
            }
            Ok(Parsed::Contain(cs)) => {
                prop_assert_eq!(&envelope, &o.security_account);
                let finding_account = e["detail"]["findings"][0]["AwsAccountId"].as_str().unwrap_or_default();
                for c in cs {
                    prop_assert!(c.entity.contains(&format!(":{finding_account}:")), "{}", c.entity);
                }
            }
            Ok(Parsed::Nothing(_) | Parsed::Sweep { .. }) | Err(_) => {}
        }
    }

    #[test]
    fn a_lambda_payload_of_any_shape_is_parsed_or_refused(v in json_value(), source in prop::sample::select(&["aws:sns", "aws:sqs", "x"][..])) {
        let payload = json!({"Records": [{"EventSource": source, "eventSource": source, "Sns": v.clone(), "body": v}]});
        let _ = crate::inbound::parse(payload);
    }

    #[test]
    fn any_arn_parses_or_is_refused(arn in text()) {
        if let Ok(e) = Entity::parse(&arn) {
            // What parses prints back as an ARN Quell would act on, nothing else.
            prop_assert!(e.to_string().starts_with("arn:"));
        }
    }

    #[test]
    fn a_message_body_of_any_shape_is_parsed_or_refused(body in json_value(), raw in text()) {
        for candidate in [body.to_string(), raw] {
            if let Ok(m) = serde_json::from_str::<ContainmentMessage>(&candidate) {
                let _ = m.check_texts();
            }
        }
    }
}
