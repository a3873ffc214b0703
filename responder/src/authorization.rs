//! Who may ask Quell for what, and who asked.
//!
//! Each kind of request has its own SQS queue in the security account (`<prefix>-requests-contain`,
//! `-release`, `-decide` for approve and deny, `-sweep`). The queue's policy admits only the
//! principal ARN patterns the configuration names for that kind, so AWS refuses everyone else
//! before Quell sees anything, and SQS stamps every message with the sender's unique id
//! (`SenderId`), which no sender can choose. The responder confirms through IAM that the
//! requester the message names is the principal with that id, records the identity, and refuses
//! an approval or release by the principal who made the request unless the configuration allows it.
//!
//! The SNS topic with the ExternalId stays for integrations that cannot sign requests; what it
//! carries is recorded as self-declared, and by default it takes containments only.

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::contract::Action;

/// A queue that carries one kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Contain,
    Release,
    /// Approvals and denials of fixes awaiting approval.
    Decide,
    Sweep,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Contain,
        Channel::Release,
        Channel::Decide,
        Channel::Sweep,
    ];

    /// The queue for `action`; none for remediations, which come from events only.
    pub fn for_action(action: Action) -> Option<Channel> {
        match action {
            // Starting a playbook by hand acts on an entity as containing it does, and is
            // admitted by the same configuration.
            Action::Contain | Action::Run => Some(Channel::Contain),
            Action::Release => Some(Channel::Release),
            Action::Approve | Action::Deny => Some(Channel::Decide),
            Action::Sweep => Some(Channel::Sweep),
            Action::Remediate => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Contain => "contain",
            Channel::Release => "release",
            Channel::Decide => "decide",
            Channel::Sweep => "sweep",
        }
    }

    /// The queue's name; the security stack creates it, the CLI sends to it.
    pub fn queue_name(self, prefix: &str) -> String {
        format!("{prefix}-requests-{}", self.as_str())
    }

    /// The channel a delivery came through, from the queue ARN the event source mapping (AWS)
    /// set: only Quell's own queues in the security account's home Region count.
    pub fn from_queue_arn(arn: &str, prefix: &str, account: &str, region: &str) -> Option<Channel> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(_partition), Some("sqs"), Some(r), Some(a), Some(name)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if r != region || a != account {
            return None;
        }
        Channel::ALL
            .into_iter()
            .find(|c| c.queue_name(prefix) == name)
    }
}

/// The configuration's answer to "who may ask for what", as the security stack hands it to the
/// responder (`QUELL_AUTHORIZATION`) and renders it into the queue policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// IAM principal ARN patterns (`aws:PrincipalArn`: a role's ARN, not its session's) per kind.
    pub contain: Vec<String>,
    pub release: Vec<String>,
    /// Approve and deny.
    pub decide: Vec<String>,
    pub sweep: Vec<String>,
    /// Whether the principal who asked may also release or approve what it asked for.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// What the ExternalId topic may still ask for (its requester is self-declared).
    pub external_id_actions: Vec<Action>,
}

impl Authorization {
    /// Principals of the security account for every kind, self-approval refused, containment
    /// only through the ExternalId topic: what an install without an `authorization:` section gets.
    pub fn security_account_only(partition: &str, security_account: &str) -> Authorization {
        let own = vec![format!("arn:{partition}:iam::{security_account}:*")];
        Authorization {
            contain: own.clone(),
            release: own.clone(),
            decide: own.clone(),
            sweep: own,
            allow_self_approval: false,
            external_id_actions: vec![Action::Contain],
        }
    }

    pub fn patterns(&self, channel: Channel) -> &[String] {
        match channel {
            Channel::Contain => &self.contain,
            Channel::Release => &self.release,
            Channel::Decide => &self.decide,
            Channel::Sweep => &self.sweep,
        }
    }

    /// The pattern admitting `principal_arn` on `channel`, if any.
    pub fn admitting(&self, channel: Channel, principal_arn: &str) -> Option<&str> {
        self.patterns(channel)
            .iter()
            .find(|p| arn_like(p, principal_arn))
            .map(String::as_str)
    }

    /// Whether a request for `action` may come through the ExternalId topic.
    pub fn external_id_allows(&self, action: Action) -> bool {
        self.external_id_actions.contains(&action)
    }
}

/// IAM's `ArnLike`: the six colon-separated parts of the ARN are matched one by one, each with
/// `*` and `?` wildcards, letter case significant.
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| WildMatch::new(p).matches(a))
}

/// Who made a request, as far as AWS vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Caller {
    /// Through the ExternalId topic: the requester is what the sender wrote.
    SelfDeclared,
    /// SQS authenticated the sender, and IAM confirmed that the requester the message names is
    /// the principal with that unique id. `principal_arn` is the user's or role's ARN as IAM
    /// returns it (the role's, for a session: what `aws:PrincipalArn` is).
    Verified {
        sender_id: String,
        principal_arn: String,
    },
    /// SQS authenticated the sender, but its principal could not be looked up (an account Quell
    /// has no role in): the unique id is what identifies it.
    Authenticated { sender_id: String, why: String },
    /// The local sandbox, whose emulator stamps no real sender id. Recorded as such, never made up.
    Unverified,
    /// Quell itself: a scheduled sweep, an event.
    Quell,
    /// A Security Hub custom action in the security account: the event names no person.
    CustomAction,
}

impl Caller {
    /// The unique id AWS stamped on the request, when there is one.
    pub fn sender_id(&self) -> Option<&str> {
        match self {
            Caller::Verified { sender_id, .. } | Caller::Authenticated { sender_id, .. } => {
                Some(sender_id)
            }
            _ => None,
        }
    }

    /// One line for records and audit mail.
    pub fn describe(&self, requester: &str) -> String {
        match self {
            Caller::SelfDeclared => {
                format!("{requester} (self-declared, through the ExternalId topic)")
            }
            Caller::Verified {
                principal_arn,
                sender_id,
            } => {
                format!("{requester} (verified: {principal_arn}, sender {sender_id})")
            }
            Caller::Authenticated { sender_id, why } => {
                format!(
                    "sender {sender_id} (authenticated by SQS; {requester} not confirmed: {why})"
                )
            }
            Caller::Unverified => {
                format!("{requester} (unverified: the sandbox has no sender ids)")
            }
            Caller::Quell => "Quell".into(),
            Caller::CustomAction => {
                format!("{requester} (a Security Hub custom action; the event names no person)")
            }
        }
    }
}

/// Whether two requests came from the same principal. Where AWS stamped both, the sender ids
/// decide (a user's id, or a role's id with the session name: two people sharing a role through
/// IAM Identity Center are two sessions). Otherwise only the requesters as written can be
/// compared, which stops mistakes but not a sender who writes another name.
pub fn same_principal(a: &Caller, a_requester: &str, b: &Caller, b_requester: &str) -> bool {
    match (a.sender_id(), b.sender_id()) {
        (Some(x), Some(y)) => x == y,
        _ if [a, b]
            .iter()
            .any(|c| matches!(c, Caller::Quell | Caller::CustomAction)) =>
        {
            false
        }
        _ => a_requester.eq_ignore_ascii_case(b_requester),
    }
}

/// The requester a message names, as an ARN that IAM can confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    User {
        account: String,
        name: String,
    },
    RoleSession {
        account: String,
        role: String,
        session: String,
    },
}

impl Declared {
    pub fn account(&self) -> &str {
        match self {
            Declared::User { account, .. } | Declared::RoleSession { account, .. } => account,
        }
    }
}

/// Reads `arn:P:iam::A:user/[path/]NAME` or `arn:P:sts::A:assumed-role/ROLE/SESSION`, which is
/// what `sts get-caller-identity` says (and what the CLI writes).
pub fn declared(requester: &str) -> Result<Declared, String> {
    let bad = || {
        format!(
            "requester {requester:?} is not the ARN of an IAM user or an assumed-role session (what `aws sts get-caller-identity` prints)"
        )
    };
    let parts: Vec<&str> = requester.splitn(6, ':').collect();
    let [arn, _partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    if arn != "arn" || !region.is_empty() || !crate::entity::is_account_id(account) {
        return Err(bad());
    }
    let segments: Vec<&str> = resource.split('/').collect();
    match (service, segments.as_slice()) {
        ("iam", ["user", .., name]) if segments.len() >= 2 && !name.is_empty() => {
            Ok(Declared::User {
                account: account.into(),
                name: (*name).into(),
            })
        }
        ("sts", ["assumed-role", role, session]) if !role.is_empty() && !session.is_empty() => {
            Ok(Declared::RoleSession {
                account: account.into(),
                role: (*role).into(),
                session: (*session).into(),
            })
        }
        _ => Err(bad()),
    }
}

/// What IAM says about the declared principal.
#[derive(Debug, Clone)]
pub struct Looked {
    pub unique_id: String,
    pub arn: String,
}

/// Whether the sender id SQS stamped is the declared principal's: a user's id is the sender id;
/// a role session's is the role's id, a colon, and the session name.
pub fn confirms(declared: &Declared, looked: &Looked, sender_id: &str) -> bool {
    match declared {
        Declared::User { .. } => looked.unique_id == sender_id,
        Declared::RoleSession { session, .. } => sender_id
            .split_once(':')
            .is_some_and(|(id, s)| id == looked.unique_id && s == session),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_like_matches_part_by_part_with_case() {
        assert!(arn_like(
            "arn:aws:iam::*:role/Analyst",
            "arn:aws:iam::111122223333:role/Analyst"
        ));
        assert!(arn_like(
            "arn:aws:iam::222233334444:*",
            "arn:aws:iam::222233334444:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Ir_1"
        ));
        assert!(!arn_like(
            "arn:aws:iam::*:role/Analyst",
            "arn:aws:iam::111122223333:role/analyst"
        ));
        // A wildcard stays inside its part: the account cannot swallow the resource.
        assert!(!arn_like(
            "arn:aws:iam::*",
            "arn:aws:iam::111122223333:role/Analyst"
        ));
        assert!(!arn_like(
            "arn:aws:iam::222233334444:*",
            "arn:aws:iam::999922223333:role/Analyst"
        ));
    }

    #[test]
    fn requesters_are_read_as_users_or_role_sessions() {
        assert_eq!(
            declared("arn:aws:sts::111122223333:assumed-role/Analyst/jo@example.com"),
            Ok(Declared::RoleSession {
                account: "111122223333".into(),
                role: "Analyst".into(),
                session: "jo@example.com".into()
            })
        );
        assert_eq!(
            declared("arn:aws:iam::111122223333:user/ops/alice"),
            Ok(Declared::User {
                account: "111122223333".into(),
                name: "alice".into()
            })
        );
        for bad in [
            "e2e",
            "arn:aws:iam::111122223333:role/Analyst",
            "arn:aws:sts::111122223333:assumed-role/Analyst",
            "arn:aws:iam::111122223333:root",
            "arn:aws:sts:us-east-1:111122223333:assumed-role/A/s",
            "arn:aws:iam::11112222333:user/alice",
        ] {
            assert!(declared(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_declared_principals_id_confirms_it() {
        let session = declared("arn:aws:sts::111122223333:assumed-role/Analyst/jo").unwrap();
        let role = Looked {
            unique_id: "AROAEXAMPLEANALYST01".into(),
            arn: "arn:aws:iam::111122223333:role/team/Analyst".into(),
        };
        assert!(confirms(&session, &role, "AROAEXAMPLEANALYST01:jo"));
        assert!(!confirms(&session, &role, "AROAEXAMPLEANALYST01:kim"));
        assert!(!confirms(&session, &role, "AROAOTHERROLE0000001:jo"));
        assert!(!confirms(&session, &role, "AROAEXAMPLEANALYST01"));
        let user = declared("arn:aws:iam::111122223333:user/alice").unwrap();
        let alice = Looked {
            unique_id: "AIDAEXAMPLEALICE0001".into(),
            arn: "arn:aws:iam::111122223333:user/alice".into(),
        };
        assert!(confirms(&user, &alice, "AIDAEXAMPLEALICE0001"));
        assert!(!confirms(&user, &alice, "AIDAEXAMPLEBOB000001"));
    }

    #[test]
    fn the_same_principal_is_decided_by_sender_ids_where_aws_stamped_them() {
        let jo = Caller::Verified {
            sender_id: "AROAX:jo".into(),
            principal_arn: "arn:aws:iam::1:role/Analyst".into(),
        };
        let kim = Caller::Verified {
            sender_id: "AROAX:kim".into(),
            principal_arn: "arn:aws:iam::1:role/Analyst".into(),
        };
        // Two people in one role are two principals, whatever they write.
        assert!(!same_principal(&jo, "same", &kim, "same"));
        assert!(same_principal(&jo, "a", &jo.clone(), "b"));
        // Without sender ids, only the written requesters can be compared.
        assert!(same_principal(
            &Caller::Unverified,
            "arn:aws:iam::1:user/a",
            &Caller::Unverified,
            "ARN:AWS:IAM::1:USER/A"
        ));
        assert!(!same_principal(
            &Caller::Quell,
            "Quell",
            &Caller::Quell,
            "Quell"
        ));
    }

    #[test]
    fn only_quells_queues_in_the_security_account_are_channels() {
        let c = |arn| Channel::from_queue_arn(arn, "quell", "222233334444", "us-east-1");
        assert_eq!(
            c("arn:aws:sqs:us-east-1:222233334444:quell-requests-release"),
            Some(Channel::Release)
        );
        assert_eq!(
            c("arn:aws:sqs:us-east-1:999933334444:quell-requests-release"),
            None
        );
        assert_eq!(
            c("arn:aws:sqs:eu-west-1:222233334444:quell-requests-release"),
            None
        );
        assert_eq!(c("arn:aws:sqs:us-east-1:222233334444:quell-events"), None);
    }
}
