//! Deliveries and their attempts as JSON, the same for the REST extension and `easel deliveries
//! ... --json`, so operators and users read one shape.

use serde_json::{Value, json};

use crate::clock::rfc3339_ms;
use crate::store::{Attempt, Delivery};

pub fn delivery_json(delivery: &Delivery, attempts: Option<&[Attempt]>) -> Value {
    let mut value = json!({
        "id": delivery.id,
        "webhookId": delivery.id,
        "generationId": delivery.generation_id,
        "apiKeyId": delivery.api_key_id,
        "eventType": delivery.event_type,
        "url": delivery.url,
        "status": delivery.status.as_str(),
        "attemptCount": delivery.attempt_count,
        "nextAttemptAt": delivery.next_attempt_at.map(rfc3339_ms),
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": rfc3339_ms(delivery.created_at),
        "updatedAt": rfc3339_ms(delivery.updated_at),
        "finishedAt": delivery.finished_at.map(rfc3339_ms),
    });
    if let Some(attempts) = attempts {
        value["attempts"] = attempts.iter().map(attempt_json).collect();
    }
    value
}

pub fn attempt_json(attempt: &Attempt) -> Value {
    json!({
        "attempt": attempt.attempt,
        "startedAt": rfc3339_ms(attempt.started_at),
        "durationMs": attempt.duration_ms,
        "statusCode": attempt.status_code,
        "errorClass": attempt.error_class,
        "errorDetail": attempt.error_detail,
        "responseExcerpt": attempt.response_excerpt,
    })
}
