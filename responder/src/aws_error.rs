//! Readable text and a retry verdict for AWS SDK errors. `Display` of an SDK error is only
//! "service error", which helps nobody in an audit message.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What went wrong on one AWS call, in words fit for a ledger record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFailure {
    pub code: Option<String>,
    pub message: String,
}

impl AwsFailure {
    pub fn from_sdk<E, R>(err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let message = match (e.code(), e.message()) {
                    (_, Some(m)) => m.to_owned(),
                    (Some(_), None) => e.to_string(),
                    // Neither code nor message: the raw response is all there is to go on.
                    (None, None) => {
                        let raw: String =
                            format!("{:?}", service.raw()).chars().take(400).collect();
                        format!(
                            "{} ({raw})",
                            aws_smithy_types::error::display::DisplayErrorContext(e)
                        )
                    }
                };
                AwsFailure {
                    code: e.code().map(str::to_owned),
                    message,
                }
            }
            other => AwsFailure {
                code: None,
                message: aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
            },
        }
    }

    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl std::fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// One failed AWS call: which call, and what AWS said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {failure}")]
pub struct CallError {
    pub call: String,
    pub failure: AwsFailure,
}

impl CallError {
    /// A failure found in what a call returned, rather than reported by the service.
    pub fn local(call: &str, message: String) -> CallError {
        CallError {
            call: call.into(),
            failure: AwsFailure {
                code: Some("QuellInvalidResponse".into()),
                message,
            },
        }
    }

    pub fn is_code(&self, code: &str) -> bool {
        self.failure.is_code(code)
    }
}

/// Turns an SDK result into one with a [`CallError`] that names the call.
pub trait Described<T> {
    fn described(self, call: &str) -> Result<T, CallError>;
}

impl<T, E, R> Described<T> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn described(self, call: &str) -> Result<T, CallError> {
        self.map_err(|e| CallError {
            call: call.to_owned(),
            failure: AwsFailure::from_sdk(&e),
        })
    }
}

/// Treats one error code as success: the state the call wanted is already there (a rule that
/// exists, a policy already gone).
pub trait Tolerate {
    fn tolerating(self, code: &str) -> Result<(), CallError>;
}

impl<T> Tolerate for Result<T, CallError> {
    fn tolerating(self, code: &str) -> Result<(), CallError> {
        match self {
            Ok(_) => Ok(()),
            Err(e) if e.is_code(code) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
