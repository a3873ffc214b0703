//! Inbound event shapes, parsed once into the deliveries the engine handles.

use std::collections::HashMap;

use aws_lambda_events::event::sns::SnsEvent;
use serde_json::Value;

use crate::error::ResponderError;

/// One SNS message as Lambda hands it over.
#[derive(Debug, Clone)]
pub struct SnsDelivery {
    pub message_id: String,
    pub topic_arn: String,
    pub body: String,
    /// String message attributes only: every attribute Quell reads is a string.
    pub attributes: HashMap<String, String>,
}

pub fn parse(payload: Value) -> Result<Vec<SnsDelivery>, ResponderError> {
    let is_sns = payload
        .pointer("/Records/0/EventSource")
        .and_then(Value::as_str)
        == Some("aws:sns");
    if !is_sns {
        return Err(ResponderError::Event(
            "expected an SNS event (Records[].EventSource = aws:sns)".into(),
        ));
    }
    let event: SnsEvent = serde_json::from_value(payload)
        .map_err(|e| ResponderError::Event(format!("SNS event does not parse: {e}")))?;
    Ok(event
        .records
        .into_iter()
        .map(|r| SnsDelivery {
            message_id: r.sns.message_id,
            topic_arn: r.sns.topic_arn,
            body: r.sns.message,
            attributes: r
                .sns
                .message_attributes
                .into_iter()
                .filter(|(_, a)| a.data_type == "String")
                .map(|(k, a)| (k, a.value))
                .collect(),
        })
        .collect())
}
