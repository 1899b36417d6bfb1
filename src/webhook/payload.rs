//! The callback body: the guide's sample request, key for key and in the same order, with the
//! generation's values. `seed` is a string here (an integer in REST). Secrets never travel in the
//! body: `apiKey.key` and `apiKey.webhookCallbackApiKey` are present but masked.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::clock::{Millis, rfc3339_ms};
use crate::images::ImageStore;
use crate::models::Model;
use crate::store::{ApiKey, Generation, JobStatus};

pub const EVENT_COMPLETE: &str = "image_generation.complete";
pub const EVENT_FAILED: &str = "image_generation.failed";

/// Stands in for the API key in payloads: Easel stores only its hash.
const MASKED_API_KEY: &str = "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX";
/// The owner of platform models in payloads.
const PLATFORM_USER_ID: &str = "00000000-0000-0000-0000-000000000000";

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
    let p = &generation.params;
    let cost = p.api_credit_cost().to_string();
    let image_list: Vec<Value> = if generation.status == JobStatus::Complete {
        generation
            .images
            .iter()
            .map(|image| {
                json!({
                    "id": image.id,
                    "createdAt": rfc3339_ms(image.created_at),
                    "updatedAt": rfc3339_ms(image.created_at),
                    "userId": image.user_id,
                    "url": images.url(&image.storage_key),
                    "generationId": generation.id,
                    "nobgId": null,
                    "nsfw": false,
                    "likeCount": 0,
                    "trendingScore": 0,
                    "public": p.public,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let init_image = p.init_generation_image_id;
    let body = json!({
        "type": event_type(generation),
        "object": "generation",
        "timestamp": at,
        "api_version": "v1",
        "data": {"object": {
            "id": generation.id,
            "createdAt": rfc3339_ms(generation.created_at),
            "updatedAt": rfc3339_ms(generation.updated_at),
            "userId": generation.user_id,
            "public": p.public,
            "flagged": false,
            "nsfw": false,
            "status": generation.status.as_str(),
            "coreModel": "SD",
            "guidanceScale": number(p.guidance_scale),
            "imageHeight": p.height,
            "imageWidth": p.width,
            "inferenceSteps": p.inference_steps,
            "initGeneratedImageId": init_image,
            "initImageId": null,
            "initStrength": p.init_strength,
            "initType": init_image.map(|_| "GENERATED"),
            "initUpscaledImageId": null,
            "modelId": p.model_id,
            "negativePrompt": p.negative_prompt,
            "prompt": p.prompt,
            "quantity": p.num_images,
            "sdVersion": p.sd_version,
            "tiling": p.tiling,
            "imageAspectRatio": null,
            "tokenCost": 0,
            "negativeStylePrompt": "",
            "seed": p.seed.to_string(),
            "scheduler": p.scheduler,
            "presetStyle": p.preset_style,
            "promptMagic": p.prompt_magic,
            "canvasInitImageId": null,
            "canvasMaskImageId": null,
            "canvasRequest": false,
            "api": true,
            "poseImage2Image": false,
            "imagePromptStrength": null,
            "category": null,
            "poseImage2ImageType": null,
            "highContrast": p.high_contrast,
            "apiDollarCost": cost,
            "poseImage2ImageWeight": null,
            "alchemy": p.alchemy,
            "contrastRatio": p.contrast_ratio,
            "highResolution": p.high_resolution,
            "expandedDomain": p.expanded_domain,
            "promptMagicVersion": p.prompt_magic_version,
            "unzoom": null,
            "unzoomAmount": null,
            "apiKeyId": api_key.id,
            "photoReal": p.photo_real,
            "promptMagicStrength": p.prompt_magic_strength,
            "photoRealStrength": p.photo_real_strength,
            "imageToImage": init_image.is_some(),
            "controlnetsUsed": false,
            "model": model_json(model),
            "images": image_list,
            "apiKey": {
                "id": api_key.id,
                "createdAt": rfc3339_ms(api_key.created_at),
                "userId": api_key.user_id,
                "key": MASKED_API_KEY,
                "lastUsed": rfc3339_ms(api_key.last_used_at.unwrap_or(generation.created_at)),
                "name": api_key.name,
                "type": "PRODUCTION",
                "webhookCallbackUrl": api_key.webhook_url,
                "webhookCallbackApiKey": webhook_api_key_masked,
            },
        }},
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON values serialize"))
}

/// Integral values as JSON integers (`7`, as in the sample), others as they are (`7.5`).
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 { json!(value as i64) } else { json!(value) }
}

fn model_json(model: &Model) -> Value {
    json!({
        "id": model.id,
        "createdAt": rfc3339_ms(model.created_at),
        "updatedAt": rfc3339_ms(model.created_at),
        "name": model.name,
        "description": model.description,
        "public": true,
        "userId": PLATFORM_USER_ID,
        "flagged": false,
        "nsfw": model.nsfw,
        "official": true,
        "status": "COMPLETE",
        "classPrompt": null,
        "coreModel": "SD",
        "initDatasetId": null,
        "instancePrompt": null,
        "sdVersion": model.sd_version,
        "trainingEpoch": null,
        "trainingSteps": null,
        "tokenCost": null,
        "batchSize": 4,
        "learningRate": null,
        "type": "GENERAL",
        "modelHeight": model.height,
        "modelWidth": model.width,
        "leonardoInstancePrompt": null,
        "trainingStrength": "MEDIUM",
        "featured": model.featured,
        "featuredImageId": null,
        "featuredPosition": if model.featured { json!(1) } else { json!(0) },
        "api": false,
        "favouriteCount": 0,
        "imageCount": 0,
        "enhancedModeration": false,
        "apiDollarCost": null,
        "apiKeyId": null,
        "modelLRN": null,
    })
}
