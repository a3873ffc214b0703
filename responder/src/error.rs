use std::fmt;

/// An error that stops the responder from handling an event at all (as opposed to a rejected or
/// failed request, which is an outcome and is recorded). Returning it to the Lambda runtime makes
/// the invocation fail, so the platform retries and finally sends the event to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("configuration: {0}")]
    Settings(String),
    #[error("event not understood: {0}")]
    Event(String),
    #[error("{0}")]
    Aws(String),
    #[error("containment of {entity} failed: {error}")]
    ContainmentFailed { entity: String, error: String },
}

impl From<ResponderError> for lambda_runtime::Diagnostic {
    fn from(e: ResponderError) -> Self {
        let error_type = match e {
            ResponderError::Settings(_) => "Quell.Settings",
            ResponderError::Event(_) => "Quell.Event",
            ResponderError::Aws(_) => "Quell.Aws",
            ResponderError::ContainmentFailed { .. } => "Quell.ContainmentFailed",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// A short display helper for optional values in human-readable text.
pub struct OrNone<'a>(pub Option<&'a str>);

impl fmt::Display for OrNone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.unwrap_or("none"))
    }
}
