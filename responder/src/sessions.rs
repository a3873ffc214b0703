//! Sessions in other accounts, assumed once and refreshed before they expire: a configuration
//! handed out keeps working however long its user runs (a StackSet operation, a person at a
//! prompt), because its credentials provider assumes the role again when the session nears its
//! end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{
    error::CredentialsError, future::ProvideCredentials as ProvideFuture, ProvideCredentials,
    SharedCredentialsProvider,
};
use aws_credential_types::Credentials;
use tokio::sync::Mutex;

use crate::aws_error::{AwsFailure, CallError, Described};

/// Assumed sessions are short-lived on purpose: the responder needs minutes, not hours.
const SESSION_SECONDS: i32 = 900;
/// A session this close to its end is assumed again before the next call.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct Sessions {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    session_name: String,
    cache: Mutex<HashMap<String, SdkConfig>>,
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
    /// where the role's trust policy demands one). The role is assumed now, so that a role that
    /// cannot be assumed is an error here, and again whenever the session nears its end.
    pub async fn assume(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<SdkConfig, CallError> {
        let mut cache = self.cache.lock().await;
        if let Some(config) = cache.get(role_arn) {
            return Ok(config.clone());
        }
        let role = AssumedRole {
            sts: self.sts.clone(),
            role_arn: role_arn.to_owned(),
            external_id: external_id.map(str::to_owned),
            session_name: self.session_name.clone(),
            current: Arc::new(Mutex::new(None)),
        };
        role.fresh().await?;
        let config = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(role))
            .build();
        cache.insert(role_arn.to_owned(), config.clone());
        Ok(config)
    }
}

/// Credentials of an assumed role, assumed again when they near their end.
#[derive(Debug, Clone)]
struct AssumedRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
    current: Arc<Mutex<Option<Credentials>>>,
}

impl AssumedRole {
    /// The current credentials, or new ones when these end within [`REFRESH_BEFORE`].
    async fn fresh(&self) -> Result<Credentials, CallError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if c.expiry()
                .is_some_and(|e| e > SystemTime::now() + REFRESH_BEFORE)
            {
                return Ok(c.clone());
            }
        }
        let call = format!("sts:AssumeRole {}", self.role_arn);
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .described(&call)?;
        let creds = out.credentials().ok_or_else(|| CallError {
            call: call.clone(),
            failure: AwsFailure {
                code: None,
                message: "STS answered without credentials".into(),
            },
        })?;
        let expires = SystemTime::try_from(*creds.expiration())
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(60));
        let fresh = Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            Some(expires),
            "quell-assumed-role",
        );
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

impl ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(&'a self) -> ProvideFuture<'a>
    where
        Self: 'a,
    {
        ProvideFuture::new(async move {
            self.fresh()
                .await
                .map_err(|e| CredentialsError::provider_error(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// STS whose sessions last `lifetime` and carry a new key id each time.
    fn sts(lifetime: Duration, issued: Arc<AtomicUsize>) -> aws_sdk_sts::Client {
        let assume = mock!(aws_sdk_sts::Client::assume_role).then_compute_output(move |_| {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let expires = SystemTime::now() + lifetime;
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id(format!("ASIA{n}"))
                        .secret_access_key("secret")
                        .session_token("token")
                        .expiration(aws_smithy_types::DateTime::from(expires))
                        .build()
                        .unwrap(),
                )
                .build()
        });
        mock_client!(aws_sdk_sts, RuleMode::MatchAny, &[&assume])
    }

    async fn key(config: &SdkConfig) -> String {
        config
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap()
            .access_key_id()
            .to_owned()
    }

    #[tokio::test]
    async fn a_session_is_assumed_again_before_it_ends_and_the_same_configuration_keeps_working() {
        let issued = Arc::new(AtomicUsize::new(0));
        // Two seconds longer than the refresh margin: fresh now, due for renewal in two.
        let sts = sts(REFRESH_BEFORE + Duration::from_secs(2), issued.clone());
        let base = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let sessions = Sessions::with_client(&base, sts, "test");
        let config = sessions
            .assume("arn:aws:iam::111122223333:role/r", Some("x"))
            .await
            .unwrap();
        assert_eq!(key(&config).await, "ASIA1");
        assert_eq!(
            key(&config).await,
            "ASIA1",
            "still fresh: not assumed again"
        );
        assert_eq!(issued.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The operation outlasts its session: the same configuration gets new credentials.
        assert_eq!(key(&config).await, "ASIA2");
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        let again = sessions
            .assume("arn:aws:iam::111122223333:role/r", Some("x"))
            .await
            .unwrap();
        assert_eq!(key(&again).await, "ASIA2", "one session per role, shared");
    }
}
