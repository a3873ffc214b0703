//! The configuration's `authorization:` section: who may send each kind of request. It becomes
//! the policy of each request queue (AWS refuses everyone else) and the responder's own copy
//! (`QUELL_AUTHORIZATION`), which it checks against the principal it confirmed.

use serde::{Deserialize, Serialize};

use quell_responder::authorization::{Authorization, Channel};
use quell_responder::contract::Action;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// IAM principal ARN patterns per kind of request; principals of the security account when
    /// absent. A role's ARN, as `aws:PrincipalArn` has it, not an assumed-role session's.
    #[serde(default)]
    pub contain: Option<Vec<String>>,
    #[serde(default)]
    pub release: Option<Vec<String>>,
    /// `quell approve` and `quell deny`.
    #[serde(default)]
    pub decide: Option<Vec<String>>,
    #[serde(default)]
    pub sweep: Option<Vec<String>>,
    /// Whether whoever asked for a containment may release it (and approve what it asked for).
    #[serde(default)]
    pub allow_self_approval: bool,
    /// What integrations may still ask for through the ExternalId topic, where the requester is
    /// only what the sender wrote. Containment only, when absent.
    #[serde(default)]
    pub external_id_actions: Option<Vec<Action>>,
}

/// SQS's limit on a queue policy, in bytes.
pub const QUEUE_POLICY_LIMIT: usize = 8192;

/// The most patterns one kind of request may list: the queue policy names each twice.
pub const PATTERN_LIMIT: usize = 20;

impl AuthorizationConfig {
    /// The patterns and switches the templates and the responder get.
    pub fn resolve(&self, partition: &str, security_account: &str) -> Authorization {
        let default = Authorization::security_account_only(partition, security_account);
        let pick =
            |given: &Option<Vec<String>>, fallback: Vec<String>| given.clone().unwrap_or(fallback);
        Authorization {
            contain: pick(&self.contain, default.contain.clone()),
            release: pick(&self.release, default.release.clone()),
            decide: pick(&self.decide, default.decide.clone()),
            sweep: pick(&self.sweep, default.sweep.clone()),
            allow_self_approval: self.allow_self_approval,
            external_id_actions: self
                .external_id_actions
                .clone()
                .unwrap_or(default.external_id_actions),
        }
    }

    /// Every problem as (key, what was expected).
    pub fn check(&self) -> Result<(), (String, String)> {
        for channel in Channel::ALL {
            let key = format!("authorization.{}", channel.as_str());
            let Some(patterns) = self.listed(channel) else {
                continue;
            };
            if patterns.len() > PATTERN_LIMIT {
                return Err((key, format!("lists {} patterns; at most {PATTERN_LIMIT} fit in the queue policy (SQS allows {QUEUE_POLICY_LIMIT} bytes): use wildcards or a role per team", patterns.len())));
            }
            for (i, p) in patterns.iter().enumerate() {
                check_pattern(p).map_err(|why| (format!("{key}[{i}]"), why))?;
            }
            let bytes = policy_bytes(patterns);
            if bytes > QUEUE_POLICY_LIMIT {
                return Err((key, format!("makes a queue policy of about {bytes} bytes; SQS allows {QUEUE_POLICY_LIMIT}: shorten or merge the patterns with wildcards")));
            }
        }
        if let Some(actions) = &self.external_id_actions {
            if let Some(a) = actions.iter().find(|a| **a == Action::Remediate) {
                return Err((
                    "authorization.external_id_actions".into(),
                    format!("{} comes from events only; expected some of contain, release, approve, deny, sweep", a.as_str()),
                ));
            }
        }
        Ok(())
    }

    fn listed(&self, channel: Channel) -> Option<&Vec<String>> {
        match channel {
            Channel::Contain => self.contain.as_ref(),
            Channel::Release => self.release.as_ref(),
            Channel::Decide => self.decide.as_ref(),
            Channel::Sweep => self.sweep.as_ref(),
        }
    }
}

/// An IAM principal ARN pattern as `aws:PrincipalArn` can match it.
fn check_pattern(p: &str) -> Result<(), String> {
    let example = "expected an IAM role or user ARN pattern such as arn:aws:iam::*:role/SecurityAnalyst or arn:aws:iam::222233334444:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_IncidentResponse_*";
    let parts: Vec<&str> = p.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(format!("'{p}' is not an ARN pattern; {example}"));
    };
    if arn != "arn" || partition.is_empty() || service != "iam" || !region.is_empty() {
        return Err(format!(
            "'{p}' is not an IAM principal ARN pattern; {example}"
        ));
    }
    let account_ok = account == "*"
        || (account.len() == 12
            && account
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '?'));
    if !account_ok {
        return Err(format!("'{p}': '{account}' is not an account id or *"));
    }
    if resource.starts_with("assumed-role/") || service == "sts" {
        return Err(format!("'{p}' names a session; aws:PrincipalArn is the role's ARN (arn:aws:iam::ACCOUNT:role/NAME)"));
    }
    let resource_ok = resource == "*"
        || resource == "root"
        || resource.starts_with("role/")
        || resource.starts_with("user/");
    if !resource_ok {
        return Err(format!(
            "'{p}': '{resource}' is not role/..., user/... or *; {example}"
        ));
    }
    if p.len() > 512 || p.chars().any(|c| c.is_control() || c == '"' || c == '\'') {
        return Err(format!(
            "'{p}' is too long or holds quotes or control characters"
        ));
    }
    Ok(())
}

/// The size of a request queue's policy with these patterns, as the security template renders
/// it (every name at its longest).
fn policy_bytes(patterns: &[String]) -> usize {
    let queue =
        "arn:aws-us-gov:sqs:us-gov-west-1:222233334444:abcdefghijklmnopqrst-requests-release";
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AdmittedPrincipalsOfTheOrganization", "Effect": "Allow", "Principal": {"AWS": "*"},
             "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"], "Resource": queue,
             "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghijklmnopqrstuvwxyz012345"},
                           "ArnLike": {"aws:PrincipalArn": patterns}}},
            {"Sid": "NobodyElse", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
             "Resource": queue, "Condition": {"ArnNotLike": {"aws:PrincipalArn": patterns}}},
        ]
    });
    policy.to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_lists_mean_the_security_account_and_containment_only_through_the_topic() {
        let a = AuthorizationConfig::default().resolve("aws", "222233334444");
        assert_eq!(a.contain, ["arn:aws:iam::222233334444:*"]);
        assert_eq!(a.sweep, ["arn:aws:iam::222233334444:*"]);
        assert!(!a.allow_self_approval);
        assert_eq!(a.external_id_actions, [Action::Contain]);
        let c = AuthorizationConfig {
            release: Some(vec!["arn:aws:iam::*:role/Lead".into()]),
            ..AuthorizationConfig::default()
        }
        .resolve("aws", "222233334444");
        assert_eq!(c.release, ["arn:aws:iam::*:role/Lead"]);
        assert_eq!(c.contain, ["arn:aws:iam::222233334444:*"]);
    }

    #[test]
    fn bad_patterns_are_refused_with_the_key_and_what_was_expected() {
        fn approve_list(p: &str) -> AuthorizationConfig {
            AuthorizationConfig {
                decide: Some(vec!["arn:aws:iam::*:role/Lead".into(), p.into()]),
                ..AuthorizationConfig::default()
            }
        }
        for (bad, says) in [
            ("Analyst", "not an ARN pattern"),
            (
                "arn:aws:sts::222233334444:assumed-role/Analyst/jo",
                "not an IAM principal",
            ),
            (
                "arn:aws:iam::222233334444:assumed-role/Analyst/jo",
                "names a session",
            ),
            ("arn:aws:iam::2222:role/Analyst", "not an account id"),
            ("arn:aws:iam::*:group/Analysts", "not role/"),
            ("arn:aws:s3:::bucket", "not an IAM principal"),
        ] {
            let (key, why) = approve_list(bad).check().unwrap_err();
            assert_eq!(key, "authorization.decide[1]", "{bad}");
            assert!(why.contains(says), "{bad}: {why}");
        }
        let many = AuthorizationConfig {
            contain: Some(
                (0..21)
                    .map(|i| format!("arn:aws:iam::*:role/R{i}"))
                    .collect(),
            ),
            ..AuthorizationConfig::default()
        };
        assert!(many.check().unwrap_err().1.contains("at most 20"));
        let long = AuthorizationConfig {
            contain: Some(
                (0..20)
                    .map(|i| format!("arn:aws:iam::*:role/{}{i}", "x".repeat(200)))
                    .collect(),
            ),
            ..AuthorizationConfig::default()
        };
        assert!(long.check().unwrap_err().1.contains("8192"));
        let remediate = AuthorizationConfig {
            external_id_actions: Some(vec![Action::Remediate]),
            ..AuthorizationConfig::default()
        };
        assert_eq!(
            remediate.check().unwrap_err().0,
            "authorization.external_id_actions"
        );
    }
}
