//! The callback body: [`wire::CallbackEvent`], the guide's sample request key for key, serialized
//! once when the generation finishes (the same bytes are signed and sent on every attempt).

use bytes::Bytes;

use crate::clock::Millis;
use crate::images::ImageStore;
use crate::models::Model;
use crate::store::{ApiKey, Generation, JobStatus};
use crate::wire;

pub const EVENT_COMPLETE: &str = "image_generation.complete";
pub const EVENT_FAILED: &str = "image_generation.failed";

/// The event type for a finished generation.
pub fn event_type(generation: &Generation) -> &'static str {
    if generation.status == JobStatus::Complete { EVENT_COMPLETE } else { EVENT_FAILED }
}

/// The compact JSON body of the callback for a finished generation (images filled in).
/// `webhook_api_key_masked` is `Some` when the key has a webhook callback API key.
pub fn generation_event(
    generation: &Generation,
    api_key: &ApiKey,
    webhook_api_key_masked: Option<&str>,
    model: &Model,
    images: &ImageStore,
    at: Millis,
) -> Bytes {
    let event = wire::CallbackEvent::new(
        event_type(generation),
        generation,
        api_key,
        webhook_api_key_masked,
        model,
        images,
        at,
    );
    Bytes::from(serde_json::to_vec(&event).expect("the callback serializes"))
}
