//! Inbound event shapes, parsed once into the deliveries the engine handles.

use std::collections::HashMap;

use aws_lambda_events::event::sns::SnsEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::Value;

use crate::authorization::Caller;
use crate::error::ResponderError;

/// One SNS message as Lambda hands it over.
#[derive(Debug, Clone)]
pub struct SnsDelivery {
    pub message_id: String,
    pub topic_arn: String,
    pub body: String,
    /// String message attributes only: every attribute Quell reads is a string.
    pub attributes: HashMap<String, String>,
    /// Who sent it, as far as AWS vouches for it: self-declared for SNS.
    pub caller: Caller,
}

/// One SQS message: a request, an event, or the responder's own scheduled work.
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    pub message_id: String,
    pub queue_arn: String,
    pub body: String,
    /// The unique id of the principal that sent the message, stamped by SQS (`SenderId`).
    pub sender_id: Option<String>,
    /// How many times SQS has handed this message out, this time included
    /// (`ApproximateReceiveCount`); 1 when absent.
    pub receive_count: u32,
}

#[derive(Debug, Clone)]
pub enum Delivery {
    Sns(SnsDelivery),
    Queue(QueueDelivery),
}

pub fn parse(payload: Value) -> Result<Vec<Delivery>, ResponderError> {
    let source = payload
        .pointer("/Records/0/EventSource")
        .or_else(|| payload.pointer("/Records/0/eventSource"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match source.as_deref() {
        Some("aws:sns") => {
            let event: SnsEvent = serde_json::from_value(payload)
                .map_err(|e| ResponderError::Event(format!("SNS event does not parse: {e}")))?;
            Ok(event
                .records
                .into_iter()
                .map(|r| {
                    Delivery::Sns(SnsDelivery {
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
                        caller: Caller::SelfDeclared,
                    })
                })
                .collect())
        }
        Some("aws:sqs") => {
            let event: SqsEvent = serde_json::from_value(payload)
                .map_err(|e| ResponderError::Event(format!("SQS event does not parse: {e}")))?;
            Ok(event
                .records
                .into_iter()
                .map(|r| {
                    Delivery::Queue(QueueDelivery {
                        message_id: r.message_id.unwrap_or_default(),
                        queue_arn: r.event_source_arn.unwrap_or_default(),
                        body: r.body.unwrap_or_default(),
                        sender_id: r.attributes.get("SenderId").cloned(),
                        receive_count: r
                            .attributes
                            .get("ApproximateReceiveCount")
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(1),
                    })
                })
                .collect())
        }
        _ => Err(ResponderError::Event(
            "expected an SNS or SQS event (Records[].EventSource aws:sns or aws:sqs)".into(),
        )),
    }
}
