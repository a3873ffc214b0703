//! Every AWS request the CLI sends, counted and split into reads and writes: a no-change upgrade
//! proves it wrote nothing, and the benchmarks report how many calls a run took.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

/// Operations that only look: everything else changes something.
const READ_PREFIXES: &[&str] = &[
    "Describe", "List", "Get", "Head", "Query", "Scan", "BatchGet", "Detect", "Lookup",
];
/// Reads whose names do not say so. DetectStackSetDrift starts an operation, so it is a write.
const READ_OPERATIONS: &[&str] = &["AssumeRole"];
const WRITE_OPERATIONS: &[&str] = &["DetectStackSetDrift", "DetectStackDrift"];

pub fn is_write(operation: &str) -> bool {
    if WRITE_OPERATIONS.contains(&operation) {
        return true;
    }
    !(READ_OPERATIONS.contains(&operation)
        || READ_PREFIXES.iter().any(|p| operation.starts_with(p)))
}

/// Counts per `service:Operation`, retries included.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<BTreeMap<String, usize>>>);

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CallCount {
    pub total: usize,
    pub writes: usize,
    /// The write operations, with how often each was sent.
    pub write_operations: BTreeMap<String, usize>,
}

impl CallLog {
    pub fn record(&self, service: &str, operation: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(format!("{service}:{operation}")).or_default() += 1;
    }

    pub fn count(&self) -> CallCount {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut c = CallCount::default();
        for (name, n) in map.iter() {
            c.total += n;
            let operation = name.split_once(':').map_or(name.as_str(), |(_, op)| op);
            if is_write(operation) {
                c.writes += n;
                c.write_operations.insert(name.clone(), *n);
            }
        }
        c
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "QuellCliCallLog"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.record(m.service(), m.name());
        }
        Ok(())
    }
}

impl CallLog {
    /// The operations called, as `service:Operation` with IAM's service prefixes.
    pub fn operations(&self) -> Vec<String> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.keys()
            .filter_map(|k| k.split_once(':'))
            .map(|(service, op)| quell_responder::permissions::call_name(service, op))
            .collect()
    }
}

/// `QUELL_CALL_LOG=FILE`: every AWS operation this run called is appended to FILE, one a line,
/// so an admin can see what a command needed (the end-to-end suite checks them against
/// `quell_responder::permissions::CLI_OPERATIONS`).
pub fn append_to_call_log() {
    let Some(path) = std::env::var_os("QUELL_CALL_LOG") else {
        return;
    };
    let lines: String = log().operations().into_iter().map(|o| o + "\n").collect();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "cannot append to QUELL_CALL_LOG {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// The one log of this process: a CLI invocation is one command.
pub fn log() -> &'static CallLog {
    static LOG: std::sync::OnceLock<CallLog> = std::sync::OnceLock::new();
    LOG.get_or_init(CallLog::default)
}

/// A client of `$krate` for `$config` whose requests are counted in [`log`]. In tests run within
/// [`double::scope`], the client answers from that scope's mocks instead of AWS.
macro_rules! client {
    ($krate:ident, $config:expr) => {{
        #[allow(unused_mut)]
        let mut builder =
            $krate::config::Builder::from($config).interceptor($crate::calls::log().clone());
        #[cfg(test)]
        if let Some(double) = $crate::calls::double::current() {
            for interceptor in double.interceptors {
                builder = builder.interceptor(interceptor);
            }
            builder = builder.http_client(double.http);
        }
        $krate::Client::from_conf(builder.build())
    }};
}
pub(crate) use client;

/// A whole command against the SDK's mocks: every client [`client!`] makes inside [`scope`] gets
/// the scope's interceptors (aws-smithy-mocks rules, recorders) and never reaches the network.
#[cfg(test)]
pub mod double {
    use aws_smithy_runtime_api::client::http::SharedHttpClient;
    use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;

    #[derive(Clone)]
    pub struct Double {
        pub interceptors: Vec<SharedInterceptor>,
        pub http: SharedHttpClient,
    }

    tokio::task_local! {
        static DOUBLE: Double;
    }

    pub fn current() -> Option<Double> {
        DOUBLE.try_with(Clone::clone).ok()
    }

    pub async fn scope<F: std::future::Future>(double: Double, f: F) -> F::Output {
        DOUBLE.scope(double, f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart() {
        for read in [
            "DescribeStacks",
            "ListStackInstances",
            "GetTemplate",
            "HeadObject",
            "AssumeRole",
            "GetCallerIdentity",
        ] {
            assert!(!is_write(read), "{read} is a read");
        }
        for write in [
            "UpdateStackSet",
            "CreateStackInstances",
            "PutObject",
            "DetectStackSetDrift",
            "Subscribe",
            "DeleteStack",
        ] {
            assert!(is_write(write), "{write} is a write");
        }
    }

    #[test]
    fn the_count_names_each_write() {
        let log = CallLog::default();
        log.record("CloudFormation", "DescribeStacks");
        log.record("CloudFormation", "DescribeStacks");
        log.record("S3", "PutObject");
        let c = log.count();
        assert_eq!(c.total, 3);
        assert_eq!(c.writes, 1);
        assert_eq!(c.write_operations.get("S3:PutObject"), Some(&1));
    }
}
