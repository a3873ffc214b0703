//! Where the engine's AWS clients come from: built from the SDK configuration in production, and
//! handed in ready-made (aws-smithy-mocks clients) by tests of what the sandbox cannot show.

use std::sync::Arc;

use aws_config::SdkConfig;

/// Clients for one session in another account: what the entity steps and the membership check use.
#[derive(Debug, Clone)]
pub struct MemberClients {
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub organizations: aws_sdk_organizations::Client,
}

impl MemberClients {
    pub fn from_config(config: &SdkConfig) -> MemberClients {
        MemberClients {
            iam: aws_sdk_iam::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            organizations: aws_sdk_organizations::Client::new(config),
        }
    }
}

/// Makes the clients for an assumed session.
pub type MemberFactory = Arc<dyn Fn(&SdkConfig) -> MemberClients + Send + Sync>;

/// The responder's own clients (security account) and the factory for member sessions.
#[derive(Clone)]
pub struct Clients {
    /// The configuration assumed sessions are derived from.
    pub base: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sts: aws_sdk_sts::Client,
    pub member: MemberFactory,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients { .. }")
    }
}

impl Clients {
    pub fn from_config(config: &SdkConfig) -> Clients {
        Clients {
            base: config.clone(),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            member: Arc::new(MemberClients::from_config),
        }
    }
}
