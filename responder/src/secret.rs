//! The ExternalIds: one authenticates containment messages, the other is the `sts:ExternalId` the
//! member roles demand. They are kept apart so that the people allowed to publish (who know the
//! first) cannot assume the member roles.

use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::aws_error::{CallError, Described};

#[derive(Clone, Serialize, Deserialize)]
pub struct ExternalIds {
    pub message_external_id: String,
    pub role_external_id: String,
    /// The message ExternalId before the last `quell rotate-external-id`, still accepted until
    /// `previous_valid_until` so that publishers can switch without a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_message_external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for ExternalIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalIds { .. }")
    }
}

impl ExternalIds {
    /// Constant-time comparison, so response timing tells a guesser nothing about how much of a
    /// presented value was right.
    pub fn message_matches(&self, presented: &str) -> bool {
        self.message_matches_at(presented, Utc::now())
    }

    /// Whether `presented` is the current message ExternalId, or the previous one within its
    /// grace period at `now`. Both are compared, whichever matches, so timing tells nothing.
    pub fn message_matches_at(&self, presented: &str, now: DateTime<Utc>) -> bool {
        let current = self
            .message_external_id
            .as_bytes()
            .ct_eq(presented.as_bytes());
        let previous = match (
            &self.previous_message_external_id,
            self.previous_valid_until,
        ) {
            (Some(old), Some(until)) if now < until => old.as_bytes().ct_eq(presented.as_bytes()),
            _ => subtle::Choice::from(0),
        };
        bool::from(current | previous)
    }

    /// A new message ExternalId; the current one stays valid until `grace_until`. The role
    /// ExternalId is the member StackSets' parameter and is not changed here.
    #[must_use]
    pub fn rotated(&self, new_message_id: String, grace_until: DateTime<Utc>) -> ExternalIds {
        ExternalIds {
            message_external_id: new_message_id,
            role_external_id: self.role_external_id.clone(),
            previous_message_external_id: Some(self.message_external_id.clone()),
            previous_valid_until: Some(grace_until),
        }
    }

    pub async fn load(client: &Client, secret_id: &str) -> Result<ExternalIds, CallError> {
        let out = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .described("secretsmanager:GetSecretValue")?;
        let text = out.secret_string().unwrap_or_default();
        serde_json::from_str(text).map_err(|e| CallError {
            call: "secretsmanager:GetSecretValue".into(),
            failure: crate::aws_error::AwsFailure {
                code: Some("Quell.MalformedSecret".into()),
                message: format!(
                    "secret {secret_id} is not the JSON Quell wrote ({e}); run `quell install` to repair it"
                ),
            },
        })
    }
}

/// The ExternalIds as the responder keeps them: read once, read again when older than a lifetime,
/// so a rotation reaches a warm responder without a cold start.
#[derive(Debug)]
pub struct CachedIds {
    client: Client,
    secret_id: String,
    lifetime: std::time::Duration,
    held: tokio::sync::Mutex<Option<(std::time::Instant, Arc<ExternalIds>)>>,
}

/// How long a read copy of the secret is used.
pub const CACHE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// A presented ExternalId that matches neither id makes the responder read the secret again,
/// but at most this often: a flood of wrong ids cannot become a flood of reads.
pub const REREAD_ON_MISMATCH: std::time::Duration = std::time::Duration::from_secs(5);

impl CachedIds {
    pub fn new(client: Client, secret_id: &str, lifetime: std::time::Duration) -> CachedIds {
        CachedIds {
            client,
            secret_id: secret_id.to_owned(),
            lifetime,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// The ids, read again when the copy held is older than the lifetime.
    pub async fn get(&self) -> Result<Arc<ExternalIds>, CallError> {
        self.read_if_older_than(self.lifetime).await
    }

    /// The ids, read again when the copy held is older than `age`.
    pub async fn read_if_older_than(
        &self,
        age: std::time::Duration,
    ) -> Result<Arc<ExternalIds>, CallError> {
        let mut held = self.held.lock().await;
        if let Some((read_at, ids)) = held.as_ref() {
            if read_at.elapsed() < age {
                return Ok(ids.clone());
            }
        }
        let ids = Arc::new(ExternalIds::load(&self.client, &self.secret_id).await?);
        *held = Some((std::time::Instant::now(), ids.clone()));
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_value_matches() {
        let ids = ExternalIds {
            message_external_id: "abc123".into(),
            role_external_id: "zzz".into(),
            previous_message_external_id: None,
            previous_valid_until: None,
        };
        assert!(ids.message_matches("abc123"));
        for wrong in ["", "abc12", "abc1234", "ABC123", "zzz"] {
            assert!(!ids.message_matches(wrong), "{wrong}");
        }
        assert_eq!(format!("{ids:?}"), "ExternalIds { .. }");
    }

    #[test]
    fn after_rotation_the_old_id_is_accepted_only_during_its_grace_period() {
        let now = Utc::now();
        let ids = ExternalIds {
            message_external_id: "old".into(),
            role_external_id: "role".into(),
            previous_message_external_id: None,
            previous_valid_until: None,
        }
        .rotated("new".into(), now + chrono::Duration::hours(1));
        assert!(ids.message_matches_at("new", now));
        assert!(
            ids.message_matches_at("old", now),
            "within the grace period"
        );
        assert!(!ids.message_matches_at("old", now + chrono::Duration::hours(2)));
        assert!(ids.message_matches_at("new", now + chrono::Duration::hours(2)));
        assert!(!ids.message_matches_at("role", now));
        assert_eq!(ids.role_external_id, "role", "the role ExternalId stays");
    }
}
