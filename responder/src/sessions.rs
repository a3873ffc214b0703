//! Sessions in other accounts, assumed once and reused until shortly before they expire.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use tokio::sync::Mutex;

use crate::aws_error::{AwsFailure, CallError, Described};

/// Assumed sessions are short-lived on purpose: the responder needs minutes, not hours.
const SESSION_SECONDS: i32 = 900;
const REFRESH_BEFORE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Sessions {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    session_name: String,
    cache: Mutex<HashMap<String, (SdkConfig, SystemTime)>>,
}

impl Sessions {
    pub fn new(base: &SdkConfig, session_name: &str) -> Sessions {
        Self::with_client(base, aws_sdk_sts::Client::new(base), session_name)
    }

    pub fn with_client(base: &SdkConfig, sts: aws_sdk_sts::Client, session_name: &str) -> Sessions {
        Sessions {
            base: base.clone(),
            sts,
            session_name: session_name.to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A configuration whose credentials are those of `role_arn` (assumed with `external_id`
    /// where the role's trust policy demands one).
    pub async fn assume(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<SdkConfig, CallError> {
        let mut cache = self.cache.lock().await;
        if let Some((config, expires)) = cache.get(role_arn) {
            if *expires > SystemTime::now() + REFRESH_BEFORE {
                return Ok(config.clone());
            }
        }
        let out = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(external_id.map(str::to_owned))
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .described(&format!("sts:AssumeRole {role_arn}"))?;
        let creds = out.credentials().ok_or_else(|| CallError {
            call: format!("sts:AssumeRole {role_arn}"),
            failure: AwsFailure {
                code: None,
                message: "STS answered without credentials".into(),
            },
        })?;
        let expires = SystemTime::try_from(*creds.expiration())
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(60));
        let provider = Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            Some(expires),
            "quell-assumed-role",
        );
        let config = self
            .base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
        cache.insert(role_arn.to_owned(), (config.clone(), expires));
        Ok(config)
    }
}
