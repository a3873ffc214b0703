//! Requests through the per-kind queues: AWS decides who may send each kind (the queue policies)
//! and stamps who did (`SenderId`). Here the requester the message names is confirmed to be that
//! sender, checked against the configuration again, and a release or decision by the principal
//! who made the original request is refused unless the configuration allows it.

use std::collections::HashMap;

use super::remediate::partition_of;
use super::{refuse, Outcome, Refusal, Responder};
use crate::authorization::{self, Caller, Channel, Declared, Looked};
use crate::aws_error::{CallError, Described};
use crate::error::ResponderError;
use crate::inbound::{QueueDelivery, SnsDelivery};
use crate::ledger::Record;

impl Responder {
    /// The request channel a queue delivery came through, if it is one of Quell's request queues.
    pub(super) fn channel_of(&self, q: &QueueDelivery) -> Option<Channel> {
        Channel::from_queue_arn(
            &q.queue_arn,
            &self.settings.name_prefix,
            &self.settings.security_account,
            &self.settings.home_region,
        )
    }

    pub(super) async fn handle_queued_request(
        &self,
        q: &QueueDelivery,
        channel: Channel,
    ) -> Result<Outcome, ResponderError> {
        let mut d = SnsDelivery {
            message_id: q.message_id.clone(),
            topic_arn: q.queue_arn.clone(),
            body: String::new(),
            attributes: HashMap::new(),
            caller: q.sender_id.clone().map_or(Caller::Unverified, |sender_id| {
                Caller::Authenticated {
                    sender_id,
                    why: "not looked up yet".into(),
                }
            }),
        };
        let message = match Self::parse_request(&q.body) {
            Ok(m) => m,
            Err(r) => return self.reject_delivery(&d, None, r).await,
        };
        if Channel::for_action(message.action) != Some(channel) {
            let why = format!(
                "a {} request arrived on the {} queue; each kind of request has its own queue, whose policy says who may send it",
                message.action.as_str(),
                channel.queue_name(&self.settings.name_prefix)
            );
            return self
                .reject_delivery(&d, Some(&message), refuse("wrong_channel", why))
                .await;
        }
        match self
            .identify(q.sender_id.as_deref(), &message.requester, channel)
            .await
        {
            Ok(caller) => d.caller = caller,
            Err(refusal) => return self.reject_delivery(&d, Some(&message), refusal).await,
        }
        Box::pin(self.handle_authenticated(&d, &message, 1)).await
    }

    /// Who sent a queued request: the requester the message names, confirmed to be the principal
    /// SQS says sent it, and admitted by the configuration for this kind of request.
    async fn identify(
        &self,
        sender_id: Option<&str>,
        requester: &str,
        channel: Channel,
    ) -> Result<Caller, Refusal> {
        let Some(sender_id) = sender_id.filter(|s| !s.is_empty()) else {
            if self.settings.requests_may_lack_sender_id {
                return Ok(Caller::Unverified);
            }
            return Err(refuse(
                "unauthenticated",
                "the message has no SenderId, which SQS stamps on every message it accepts; it did not come through SQS",
            ));
        };
        let declared =
            authorization::declared(requester).map_err(|why| refuse("requester_mismatch", why))?;
        let looked = match self.look_up(&declared).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(refuse(
                    "requester_mismatch",
                    format!("the request names {requester}, which does not exist; SQS says sender {sender_id} sent it"),
                ))
            }
            // AWS's queue policy admitted the sender; without a way to read its account, its
            // unique id is what the record can say about it.
            Err(e) => {
                return Ok(Caller::Authenticated {
                    sender_id: sender_id.to_owned(),
                    why: format!("cannot look up {requester}: {e}"),
                })
            }
        };
        if !authorization::confirms(&declared, &looked, sender_id) {
            return Err(refuse(
                "requester_mismatch",
                format!("the request names {requester}, but SQS says sender {sender_id} sent it, which is not that principal"),
            ));
        }
        if self
            .settings
            .authorization
            .admitting(channel, &looked.arn)
            .is_none()
        {
            return Err(refuse(
                "not_authorized",
                format!(
                    "{} may not send {} requests: it matches none of authorization.{} in the configuration",
                    looked.arn,
                    channel.as_str(),
                    channel.as_str()
                ),
            ));
        }
        Ok(Caller::Verified {
            sender_id: sender_id.to_owned(),
            principal_arn: looked.arn,
        })
    }

    /// The declared principal's unique id and ARN, read in its own account: through the
    /// responder's own role in the security account, through the member role elsewhere. `None`
    /// when IAM has no such principal.
    async fn look_up(&self, declared: &Declared) -> Result<Option<Looked>, CallError> {
        let account = declared.account();
        let iam = if account == self.settings.security_account {
            self.iam.clone()
        } else {
            self.session_in(partition_of(&self.settings.home_region), account, None)
                .await?
                .iam
        };
        let looked = match declared {
            Declared::User { name, .. } => iam
                .get_user()
                .user_name(name)
                .send()
                .await
                .described("iam:GetUser")
                .map(|o| {
                    o.user().map(|u| Looked {
                        unique_id: u.user_id().to_owned(),
                        arn: u.arn().to_owned(),
                    })
                }),
            Declared::RoleSession { role, .. } => iam
                .get_role()
                .role_name(role)
                .send()
                .await
                .described("iam:GetRole")
                .map(|o| {
                    o.role().map(|r| Looked {
                        unique_id: r.role_id().to_owned(),
                        arn: r.arn().to_owned(),
                    })
                }),
        };
        match looked {
            Err(e) if e.failure.code.as_deref() == Some("NoSuchEntity") => Ok(None),
            other => other,
        }
    }

    /// A release or decision by the principal who asked for what it undoes or decides, unless the
    /// configuration allows that.
    pub(super) fn self_decision(
        &self,
        original: &Record,
        caller: &Caller,
        requester: &str,
        what: &str,
    ) -> Option<Refusal> {
        if self.settings.authorization.allow_self_approval {
            return None;
        }
        let original_requester = original.requester.as_deref()?;
        let original_caller = original.caller.clone().unwrap_or(Caller::SelfDeclared);
        authorization::same_principal(&original_caller, original_requester, caller, requester)
            .then(|| {
                refuse(
                    "self_approval",
                    format!(
                        "{} asked for {} itself and may not {what} it: another principal must (authorization.allow_self_approval is off)",
                        caller.describe(requester),
                        original.key
                    ),
                )
            })
    }
}
