//! The callback body: [`wire::CallbackEvent`], the guide's sample request key for key, serialized
//! once when the generation finishes (the same bytes are signed and sent on every attempt).

use bytes::Bytes;

use crate::clock::Millis;
use crate::generation::{FieldError, GenerationParams};
use crate::ids::GenerationId;
use crate::images::{ImageStore, generation_image_key, image_id};
use crate::models::{Catalogue, DEFAULT_MODEL_ID, Model};
use crate::store::{ApiKey, Generation, Image, JobStatus};
use crate::wire;

pub const EVENT_COMPLETE: &str = "image_generation.complete";
pub const EVENT_FAILED: &str = "image_generation.failed";

/// The prompt of a test callback's made-up generation.
pub const TEST_PROMPT: &str = "Easel test callback";

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

/// A test callback's body: an `image_generation.complete` callback of `api_key`, key for key as a
/// real one, for a made-up generation (fresh ids, the prompt [`TEST_PROMPT`], the default model,
/// one image whose URL has no file behind it). Returns the made-up generation's id with it.
pub fn test_event(
    api_key: &ApiKey,
    webhook_api_key_masked: Option<&str>,
    catalogue: &Catalogue,
    images: &ImageStore,
    at: Millis,
) -> Result<(GenerationId, Bytes), FieldError> {
    let model = catalogue.get(&DEFAULT_MODEL_ID.parse().expect("a UUID")).expect("the default model is built in");
    let request =
        serde_json::json!({"prompt": TEST_PROMPT, "width": model.width, "height": model.height, "num_images": 1});
    let params = GenerationParams::parse(&request, catalogue, |_| 0)?;
    let id = GenerationId::random();
    let image = Image {
        id: image_id(id, 0),
        generation_id: id,
        user_id: api_key.user_id,
        index: 0,
        storage_key: generation_image_key(api_key.user_id, id, &model.name, TEST_PROMPT, 0),
        width: params.width,
        height: params.height,
        created_at: at,
        variations: Vec::new(),
    };
    let generation = Generation {
        id,
        user_id: api_key.user_id,
        api_key_id: api_key.id,
        status: JobStatus::Complete,
        params,
        failure_reason: None,
        created_at: at,
        updated_at: at,
        images: vec![image],
    };
    Ok((id, generation_event(&generation, api_key, webhook_api_key_masked, model, images, at)))
}
