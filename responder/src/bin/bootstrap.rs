//! The responder's Lambda entry point (`provided.al2023`): wiring only, the engine is the library.

use lambda_runtime::{service_fn, LambdaEvent};
use quell_responder::{Responder, ResponderError};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    quell_responder::telemetry::init();
    let responder = Responder::from_env().await?;
    let responder = &responder;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        responder.handle(event.payload).await
    }))
    .await
}

// Keeps the error type in the signature above honest: the runtime reports it as a Diagnostic.
#[allow(dead_code)]
fn _assert_diagnostic(e: ResponderError) -> lambda_runtime::Diagnostic {
    e.into()
}
