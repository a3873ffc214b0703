//! The ExternalIds: one authenticates containment messages, the other is the `sts:ExternalId` the
//! member roles demand. They are kept apart so that the people allowed to publish (who know the
//! first) cannot assume the member roles.

use aws_sdk_secretsmanager::Client;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::aws_error::{CallError, Described};

#[derive(Clone, Serialize, Deserialize)]
pub struct ExternalIds {
    pub message_external_id: String,
    pub role_external_id: String,
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
        bool::from(
            self.message_external_id
                .as_bytes()
                .ct_eq(presented.as_bytes()),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_value_matches() {
        let ids = ExternalIds {
            message_external_id: "abc123".into(),
            role_external_id: "zzz".into(),
        };
        assert!(ids.message_matches("abc123"));
        for wrong in ["", "abc12", "abc1234", "ABC123", "zzz"] {
            assert!(!ids.message_matches(wrong), "{wrong}");
        }
        assert_eq!(format!("{ids:?}"), "ExternalIds { .. }");
    }
}
