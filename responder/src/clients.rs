//! Where the engine's AWS clients come from: built from the SDK configuration in production, and
//! handed in ready-made (aws-smithy-mocks clients) by tests of what the sandbox cannot show.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::permissions::RunsAs;

/// Counts every request the clients send, retries included, and notes which operations under
/// which role: the responder reports both per invocation, next to the handler time, and the
/// end-to-end suite checks each operation against `permissions::OPERATIONS`.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    count: Arc<AtomicUsize>,
    operations: Arc<Mutex<BTreeSet<String>>>,
    /// Each try of each call, when it was sent and when it ended: what ran one after another
    /// and what ran side by side (the time-to-contain benchmark reads it from the log).
    timeline: Arc<Mutex<Vec<(String, Instant, Instant)>>>,
}

/// One try of one call in an invocation: `service:Operation`, and when it was sent and when it
/// ended, in microseconds since the invocation began.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Span(pub String, pub u64, pub u64);

/// When this try was sent (kept in the try's own configuration bag).
#[derive(Debug, Clone, Copy)]
struct SentAt(Instant);

impl aws_smithy_types::config_bag::Storable for SentAt {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl CallCounter {
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The operations called since the last time, as `service:Operation@role`.
    pub fn take_operations(&self) -> Vec<String> {
        let mut seen = self
            .operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *seen).into_iter().collect()
    }

    /// The calls' tries since the last time, relative to `since`.
    pub fn take_timeline(&self, since: Instant) -> Vec<Span> {
        let mut spans = std::mem::take(
            &mut *self
                .timeline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        spans.sort_by_key(|(_, sent, _)| *sent);
        let micros = |t: Instant| {
            u64::try_from(t.saturating_duration_since(since).as_micros()).unwrap_or(u64::MAX)
        };
        spans
            .into_iter()
            .map(|(call, sent, ended)| Span(call, micros(sent), micros(ended)))
            .collect()
    }

    /// The interceptor for clients that run as `runs_as`.
    fn as_role(&self, runs_as: RunsAs) -> Tally {
        Tally {
            counter: self.clone(),
            runs_as,
        }
    }
}

#[derive(Debug, Clone)]
struct Tally {
    counter: CallCounter,
    runs_as: RunsAs,
}

impl Intercept for Tally {
    fn name(&self) -> &'static str {
        "QuellCallCounter"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counter.count.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = cfg.load::<Metadata>() {
            let call = crate::permissions::call_name(m.service(), m.name());
            self.counter
                .operations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(format!("{call}@{}", self.runs_as.as_str()));
        }
        cfg.interceptor_state().store_put(SentAt(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (Some(SentAt(sent)), Some(m)) = (cfg.load::<SentAt>().copied(), cfg.load::<Metadata>())
        else {
            return Ok(());
        };
        let call = crate::permissions::call_name(m.service(), m.name());
        self.counter
            .timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((call, sent, Instant::now()));
        Ok(())
    }
}

macro_rules! counted {
    ($krate:ident, $config:expr, $counter:expr, $runs_as:expr) => {
        $krate::Client::from_conf(
            $krate::config::Builder::from($config)
                .interceptor($counter.as_role($runs_as))
                .build(),
        )
    };
}

/// Clients for one session in another account: what the entity steps and the membership check use.
#[derive(Debug, Clone)]
pub struct MemberClients {
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
    /// Declared playbooks' patching and allow-listed documents.
    pub ssm: aws_sdk_ssm::Client,
    pub organizations: aws_sdk_organizations::Client,
}

impl MemberClients {
    pub fn from_config(config: &SdkConfig, counter: &CallCounter) -> MemberClients {
        MemberClients {
            iam: counted!(aws_sdk_iam, config, counter, RunsAs::Member),
            lambda: counted!(aws_sdk_lambda, config, counter, RunsAs::Member),
            ec2: counted!(aws_sdk_ec2, config, counter, RunsAs::Member),
            s3: counted!(aws_sdk_s3, config, counter, RunsAs::Member),
            ssm: counted!(aws_sdk_ssm, config, counter, RunsAs::Member),
            // Only the organization reader's session asks Organizations anything.
            organizations: counted!(aws_sdk_organizations, config, counter, RunsAs::OrgReader),
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
    /// Runs' timers beyond SQS's 15-minute delay.
    pub scheduler: aws_sdk_scheduler::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sts: aws_sdk_sts::Client,
    /// The declared playbooks' document, in the artifacts bucket.
    pub s3: aws_sdk_s3::Client,
    /// Finding updates, made from the security account (the Security Hub administrator).
    pub security_hub: aws_sdk_securityhub::Client,
    /// The security account's IAM: who sent a request from there.
    pub iam: aws_sdk_iam::Client,
    pub member: MemberFactory,
    pub counter: CallCounter,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clients { .. }")
    }
}

impl Clients {
    pub fn from_config(config: &SdkConfig) -> Clients {
        let counter = CallCounter::default();
        let member_counter = counter.clone();
        Clients {
            base: config.clone(),
            dynamodb: counted!(aws_sdk_dynamodb, config, counter, RunsAs::Execution),
            sns: counted!(aws_sdk_sns, config, counter, RunsAs::Execution),
            sqs: counted!(aws_sdk_sqs, config, counter, RunsAs::Execution),
            scheduler: counted!(aws_sdk_scheduler, config, counter, RunsAs::Execution),
            secrets: counted!(aws_sdk_secretsmanager, config, counter, RunsAs::Execution),
            sts: counted!(aws_sdk_sts, config, counter, RunsAs::Execution),
            s3: counted!(aws_sdk_s3, config, counter, RunsAs::Execution),
            security_hub: counted!(aws_sdk_securityhub, config, counter, RunsAs::Execution),
            iam: counted!(aws_sdk_iam, config, counter, RunsAs::Execution),
            member: Arc::new(move |c| MemberClients::from_config(c, &member_counter)),
            counter,
        }
    }
}
