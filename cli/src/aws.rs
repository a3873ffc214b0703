//! Where AWS calls go: the normal credential chain and profiles, or, with `--sandbox`, the local
//! sandbox with the right account's credentials for each call. The sandbox endpoint is set on each
//! configuration explicitly, never through the environment, so it cannot leak into a real session.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use quell_responder::aws_error::Described;
use quell_responder::sessions::Sessions;

use crate::args::GlobalArgs;
use crate::sandbox::state::SandboxState;

#[derive(Debug)]
pub struct Aws {
    base: SdkConfig,
    sessions: Sessions,
    sandbox: Option<SandboxState>,
}

impl Aws {
    /// Connects for `region` with the caller's identity.
    pub async fn connect(global: &GlobalArgs, region: &str) -> anyhow::Result<Aws> {
        if global.sandbox {
            let state = SandboxState::load()?;
            let base = sandbox_config(
                &state,
                region,
                &state.admin.access_key_id,
                &state.admin.secret_access_key,
                None,
            )
            .await;
            return Ok(Aws {
                sessions: Sessions::new(&base, "quell-cli"),
                base,
                sandbox: Some(state),
            });
        }
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
        if let Some(profile) = &global.profile {
            loader = loader.profile_name(profile);
        }
        let base = loader.load().await;
        Ok(Aws {
            sessions: Sessions::new(&base, "quell-cli"),
            base,
            sandbox: None,
        })
    }

    /// The caller's identity from `base`, with `sts` assuming roles (a mocked client in tests).
    #[cfg(test)]
    pub fn with_clients(base: SdkConfig, sts: aws_sdk_sts::Client) -> Aws {
        Aws {
            sessions: Sessions::with_client(&base, sts, "quell-cli"),
            base,
            sandbox: None,
        }
    }

    pub fn sandbox(&self) -> Option<&SandboxState> {
        self.sandbox.as_ref()
    }

    /// The caller's identity in the connected Region.
    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// The caller's identity in another Region.
    pub fn in_region(&self, region: &str) -> SdkConfig {
        self.base
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }

    pub async fn caller(&self) -> anyhow::Result<Caller> {
        let out = crate::calls::client!(aws_sdk_sts, &self.base)
            .get_caller_identity()
            .send()
            .await
            .described("sts:GetCallerIdentity")
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot tell who you are ({e}): check your AWS credentials or --profile"
                )
            })?;
        Ok(Caller {
            account: out.account().unwrap_or_default().to_owned(),
            arn: out.arn().unwrap_or_default().to_owned(),
        })
    }

    /// A session in `account`: the caller's own when it is already there, else `role_name` assumed.
    pub async fn account(
        &self,
        caller: &Caller,
        account: &str,
        region: &str,
        role_name: &str,
    ) -> anyhow::Result<SdkConfig> {
        if caller.account == account {
            return Ok(self.in_region(region));
        }
        let partition = caller.arn.split(':').nth(1).unwrap_or("aws");
        let role = format!("arn:{partition}:iam::{account}:role/{role_name}");
        let config = self.sessions.assume(&role, None).await.map_err(|e| {
            anyhow::anyhow!("cannot act in account {account} from {} ({e}): allow {} to assume {role}, or run with credentials for {account} (--profile)", caller.account, caller.arn)
        })?;
        Ok(config
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build())
    }
}

impl Aws {
    /// A session in the configured security account, in the home Region.
    pub async fn security_account(
        &self,
        caller: &Caller,
        config: &crate::config::Config,
    ) -> anyhow::Result<SdkConfig> {
        self.account(
            caller,
            &config.security_account,
            &config.home_region,
            &config.security_account_role,
        )
        .await
    }
}

impl Aws {
    /// Where requests are sent from: the caller's own identity, so that SQS stamps the caller's
    /// unique id on each and the queue's policy judges the caller. The sandbox's emulator keeps
    /// queues per calling account (another account's queue URL is not found), so there the
    /// session in the security account sends, and the responder records the sender as
    /// unverified (`quell sandbox host` strips the emulator's made-up sender id).
    pub fn request_sender(&self, security: &SdkConfig) -> SdkConfig {
        if self.sandbox.is_some() {
            return security.clone();
        }
        self.in_region(
            security
                .region()
                .map_or("us-east-1", aws_config::Region::as_ref),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub account: String,
    pub arn: String,
}

/// A configuration for the sandbox endpoint with static credentials.
pub async fn sandbox_config(
    state: &SandboxState,
    region: &str,
    key: &str,
    secret: &str,
    token: Option<String>,
) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&state.endpoint)
        .credentials_provider(Credentials::new(key, secret, token, None, "quell-sandbox"))
        .load()
        .await
}
