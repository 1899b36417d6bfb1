//! The request bodies' schemas in the OpenAPI document. Bodies are read through
//! [`crate::generation::Body`] (typed field access with exact error messages), not deserialized
//! into these types: they mirror what the parsers accept, taking every enum list and limit from the
//! constants the parsers use ([`crate::vocabulary`], the handlers' own), and a test
//! (`tests/it/openapi.rs`) sends every documented field with a wrong type and checks that the
//! answer names it, so a field the parser does not read cannot be documented.
//!
//! `null` is accepted wherever a field is optional (the SDKs send it), so optional fields are
//! nullable.

#![allow(dead_code)] // The fields exist for their schemas.

use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use uuid::Uuid;

use crate::vocabulary::*;

/// `T` or `null`.
fn nullable(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

/// One of `values`, or `null`.
fn strings(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::String))
        .enum_values(Some(values.iter().map(|v| Value::from(*v)).chain([Value::Null])))
        .build()
}

/// One of `values`, or `null`.
fn numbers(values: &[f64]) -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Number))
        .enum_values(Some(values.iter().map(|v| Value::from(*v)).chain([Value::Null])))
        .build()
}

use serde_json::Value;

fn schedulers() -> Object {
    strings(SCHEDULERS)
}
fn sd_versions() -> Object {
    strings(SD_VERSIONS)
}
fn preset_styles() -> Object {
    strings(PRESET_STYLES)
}
fn transparency_types() -> Object {
    strings(TRANSPARENCY_TYPES)
}
fn controlnet_types() -> Object {
    strings(CONTROLNET_TYPES)
}
fn canvas_request_types() -> Object {
    strings(CANVAS_REQUEST_TYPES)
}
fn photo_real_strengths() -> Object {
    numbers(PHOTO_REAL_STRENGTHS)
}
fn photo_real_versions() -> Object {
    strings(PHOTO_REAL_VERSIONS)
}
fn prompt_magic_versions() -> Object {
    strings(PROMPT_MAGIC_VERSIONS)
}
fn contrast_values() -> Object {
    numbers(CONTRAST_VALUES)
}
fn init_image_types() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::generation::INIT_IMAGE_TYPES.iter().copied()))
        .build()
}
fn strength_types() -> Object {
    strings(crate::generation::STRENGTH_TYPES)
}
fn upscaler_styles() -> Object {
    strings(super::variations::UPSCALER_STYLES)
}
fn ultra_styles() -> Object {
    strings(super::variations::ULTRA_STYLES)
}
fn services() -> Object {
    strings(super::pricing::SERVICES)
}
fn extensions() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::uploads::EXTENSIONS.iter().map(|(extension, _)| *extension)))
        .build()
}
/// `false` or `null`: a flag Easel cannot serve when it is true.
fn only_false() -> Object {
    ObjectBuilder::new()
        .schema_type(nullable(Type::Boolean))
        .enum_values(Some([Value::Bool(false), Value::Null]))
        .build()
}
/// Always empty (or `null`): Easel trains no elements.
fn no_user_elements() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new().schema_type(nullable(Type::Array)).max_items(Some(0)).build()
}
/// A prompt: not blank, at most [`MAX_PROMPT_CHARS`] characters.
fn prompt() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_PROMPT_CHARS))
        .pattern(Some(r"\S"))
        .build()
}

/// The body of `POST /generations` (`createGeneration`). Only `prompt` is required. Unknown keys
/// are ignored, as by the SDKs' server.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"prompt": "a lighthouse at dusk", "width": 512, "height": 512, "num_images": 1}))]
pub struct CreateGeneration {
    #[schema(schema_with = prompt)]
    pub prompt: String,
    #[schema(max_length = 1500)]
    pub negative_prompt: Option<String>,
    /// A model of `GET /platformModels` (the default model when absent).
    #[serde(rename = "modelId")]
    pub model_id: Option<Uuid>,
    /// 32 to 1536, a multiple of 8 (and of the model's `size_multiple`); 1024 when absent.
    #[schema(minimum = 32, maximum = 1536, multiple_of = 8)]
    pub width: Option<u32>,
    /// 32 to 1536, a multiple of 8 (and of the model's `size_multiple`); 768 when absent.
    #[schema(minimum = 32, maximum = 1536, multiple_of = 8)]
    pub height: Option<u32>,
    /// 1 to 8; at most 4 when width or height is over 768.
    #[schema(minimum = 1, maximum = 8)]
    pub num_images: Option<u32>,
    #[schema(minimum = 10, maximum = 60)]
    pub num_inference_steps: Option<u32>,
    #[schema(minimum = 1, maximum = 20)]
    pub guidance_scale: Option<f64>,
    /// 0 to 9999999998 (2147483637 for FLUX models); random (and recorded) when absent.
    #[schema(minimum = 0, maximum = 9_999_999_998_u64)]
    pub seed: Option<u64>,
    #[schema(schema_with = schedulers)]
    pub scheduler: Option<String>,
    #[schema(schema_with = sd_versions)]
    pub sd_version: Option<String>,
    #[serde(rename = "presetStyle")]
    #[schema(schema_with = preset_styles)]
    pub preset_style: Option<String>,
    #[schema(schema_with = transparency_types)]
    pub transparency: Option<String>,
    #[serde(rename = "controlNetType")]
    #[schema(schema_with = controlnet_types)]
    pub control_net_type: Option<String>,
    pub alchemy: Option<bool>,
    #[serde(rename = "photoReal")]
    pub photo_real: Option<bool>,
    #[serde(rename = "photoRealStrength")]
    #[schema(schema_with = photo_real_strengths)]
    pub photo_real_strength: Option<f64>,
    #[serde(rename = "photoRealVersion")]
    #[schema(schema_with = photo_real_versions)]
    pub photo_real_version: Option<String>,
    #[serde(rename = "promptMagic")]
    pub prompt_magic: Option<bool>,
    #[serde(rename = "promptMagicStrength")]
    #[schema(minimum = 0.1, maximum = 1.0)]
    pub prompt_magic_strength: Option<f64>,
    #[serde(rename = "promptMagicVersion")]
    #[schema(schema_with = prompt_magic_versions)]
    pub prompt_magic_version: Option<String>,
    #[serde(rename = "highContrast")]
    pub high_contrast: Option<bool>,
    #[serde(rename = "highResolution")]
    pub high_resolution: Option<bool>,
    #[serde(rename = "expandedDomain")]
    pub expanded_domain: Option<bool>,
    #[schema(schema_with = contrast_values)]
    pub contrast: Option<f64>,
    #[serde(rename = "contrastRatio")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub contrast_ratio: Option<f64>,
    /// A generated image to start from (image to image).
    pub init_generation_image_id: Option<Uuid>,
    /// An uploaded init image (`POST /init-image`) to start from; not with `init_generation_image_id`.
    pub init_image_id: Option<Uuid>,
    /// Needs `init_image_id` or `init_generation_image_id`.
    #[schema(minimum = 0.1, maximum = 0.9)]
    pub init_strength: Option<f64>,
    pub weighting: Option<f64>,
    #[serde(rename = "unzoomAmount")]
    pub unzoom_amount: Option<f64>,
    #[serde(rename = "upscaleRatio")]
    pub upscale_ratio: Option<f64>,
    #[serde(rename = "enhancePromptInstruction")]
    pub enhance_prompt_instruction: Option<String>,
    #[serde(rename = "enhancePrompt")]
    pub enhance_prompt: Option<bool>,
    #[serde(rename = "fantasyAvatar")]
    pub fantasy_avatar: Option<bool>,
    /// A canvas editor request: needs `canvasRequestType` and `canvasInitId` (and `canvasMaskId`
    /// for INPAINT); no init image with it.
    #[serde(rename = "canvasRequest")]
    pub canvas_request: Option<bool>,
    #[serde(rename = "canvasRequestType")]
    #[schema(schema_with = canvas_request_types)]
    pub canvas_request_type: Option<String>,
    /// The init image of `POST /canvas-init-image`.
    #[serde(rename = "canvasInitId")]
    pub canvas_init_id: Option<Uuid>,
    /// The mask of `POST /canvas-init-image`.
    #[serde(rename = "canvasMaskId")]
    pub canvas_mask_id: Option<Uuid>,
    #[schema(max_items = 4)]
    pub controlnets: Option<Vec<ControlnetRequest>>,
    /// Uploaded init images whose look the result takes on.
    #[serde(rename = "imagePrompts")]
    #[schema(max_items = 4)]
    pub image_prompts: Option<Vec<Option<Uuid>>>,
    #[serde(rename = "imagePromptWeight")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub image_prompt_weight: Option<f64>,
    /// Configured elements (`GET /elements`) for the model's `sd_version`.
    #[schema(max_items = 4)]
    pub elements: Option<Vec<ElementRequest>>,
    /// Easel trains no elements: always empty.
    #[serde(rename = "userElements")]
    #[schema(schema_with = no_user_elements)]
    pub user_elements: Option<Vec<Value>>,
    /// Not served (`true` is refused).
    #[serde(rename = "controlNet")]
    #[schema(schema_with = only_false)]
    pub control_net: Option<bool>,
    /// Not served (`true` is refused).
    #[schema(schema_with = only_false)]
    pub unzoom: Option<bool>,
    pub public: Option<bool>,
    pub tiling: Option<bool>,
    pub ultra: Option<bool>,
}

/// One entry of `controlnets`.
#[derive(Deserialize, ToSchema)]
pub struct ControlnetRequest {
    /// An uploaded init image, or a generated image with `initImageType` GENERATED.
    #[serde(rename = "initImageId")]
    pub init_image_id: Uuid,
    #[serde(rename = "initImageType")]
    #[schema(schema_with = init_image_types)]
    pub init_image_type: String,
    #[serde(rename = "preprocessorId")]
    #[schema(minimum = 1, maximum = 1000)]
    pub preprocessor_id: u32,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub weight: Option<f64>,
    #[serde(rename = "strengthType")]
    #[schema(schema_with = strength_types)]
    pub strength_type: Option<String>,
}

/// One entry of `elements`.
#[derive(Deserialize, ToSchema)]
pub struct ElementRequest {
    /// The element's `akUUID` (`GET /elements`).
    #[serde(rename = "akUUID")]
    pub ak_uuid: Uuid,
    /// Within the element's `weightMin` and `weightMax` (its `weightDefault` when absent).
    pub weight: Option<f64>,
}

/// The body of `POST /variations/upscale`.
#[derive(Deserialize, ToSchema)]
pub struct ImageVariationRequest {
    /// The generated image.
    pub id: Uuid,
}

/// The body of `POST /variations/nobg` and `POST /variations/unzoom`.
#[derive(Deserialize, ToSchema)]
pub struct VariationSourceRequest {
    /// The generated image, or with `isVariation` a complete variation.
    pub id: Uuid,
    #[serde(rename = "isVariation")]
    pub is_variation: Option<bool>,
}

/// The body of `POST /variations/universal-upscaler`: exactly one of `generatedImageId` and
/// `variationId` (`initImageId` is refused: uploaded init images are not upscaled yet).
#[derive(Deserialize, ToSchema)]
pub struct UniversalUpscalerRequest {
    #[serde(rename = "generatedImageId")]
    pub generated_image_id: Option<Uuid>,
    #[serde(rename = "variationId")]
    pub variation_id: Option<Uuid>,
    /// Refused (400): not served yet.
    #[serde(rename = "initImageId")]
    pub init_image_id: Option<Uuid>,
    /// Not with `ultraUpscaleStyle`.
    #[serde(rename = "upscalerStyle")]
    #[schema(schema_with = upscaler_styles)]
    pub upscaler_style: Option<String>,
    #[serde(rename = "ultraUpscaleStyle")]
    #[schema(schema_with = ultra_styles)]
    pub ultra_upscale_style: Option<String>,
    #[serde(rename = "creativityStrength")]
    #[schema(minimum = 1, maximum = 10)]
    pub creativity_strength: Option<u32>,
    #[serde(rename = "detailContrast")]
    #[schema(minimum = 1, maximum = 10)]
    pub detail_contrast: Option<u32>,
    #[schema(minimum = 1, maximum = 10)]
    pub similarity: Option<u32>,
    #[schema(max_length = 1500)]
    pub prompt: Option<String>,
    #[serde(rename = "upscaleMultiplier")]
    #[schema(minimum = 1.0, maximum = 2.0)]
    pub upscale_multiplier: Option<f64>,
}

/// The body of `POST /prompt/improve`.
#[derive(Deserialize, ToSchema)]
pub struct ImprovePromptRequest {
    #[schema(schema_with = prompt)]
    pub prompt: String,
    #[serde(rename = "promptInstructions")]
    #[schema(max_length = 1000)]
    pub prompt_instructions: Option<String>,
    #[serde(rename = "isVideo")]
    pub is_video: Option<bool>,
}

/// The body of `POST /init-image`.
#[derive(Deserialize, ToSchema)]
pub struct InitImageRequest {
    /// The picture's format (case does not matter).
    #[schema(schema_with = extensions)]
    pub extension: String,
}

/// The body of `POST /canvas-init-image`.
#[derive(Deserialize, ToSchema)]
pub struct CanvasInitImageRequest {
    #[serde(rename = "initExtension")]
    #[schema(schema_with = extensions)]
    pub init_extension: String,
    #[serde(rename = "maskExtension")]
    #[schema(schema_with = extensions)]
    pub mask_extension: String,
}

/// The body of `POST /pricing-calculator`: a service (IMAGE_GENERATION when absent) and its
/// parameters under its name.
#[derive(Deserialize, ToSchema)]
pub struct PricingRequest {
    #[schema(schema_with = services)]
    pub service: Option<String>,
    #[serde(rename = "serviceParams")]
    pub service_params: Option<PricingParams>,
}

#[derive(Deserialize, ToSchema)]
pub struct PricingParams {
    #[serde(rename = "IMAGE_GENERATION")]
    pub image_generation: Option<GenerationPricing>,
    #[serde(rename = "UNIVERSAL_UPSCALER")]
    pub universal_upscaler: Option<UniversalUpscalerPricing>,
    #[serde(rename = "UNIVERSAL_UPSCALER_ULTRA")]
    pub universal_upscaler_ultra: Option<UniversalUpscalerUltraPricing>,
}

/// Priced as the generation with these settings (`createGeneration`'s rules apply).
#[derive(Deserialize, ToSchema)]
pub struct GenerationPricing {
    #[serde(rename = "imageWidth")]
    #[schema(minimum = 32, maximum = 1536, multiple_of = 8)]
    pub image_width: Option<u32>,
    #[serde(rename = "imageHeight")]
    #[schema(minimum = 32, maximum = 1536, multiple_of = 8)]
    pub image_height: Option<u32>,
    #[serde(rename = "numImages")]
    #[schema(minimum = 1, maximum = 8)]
    pub num_images: Option<u32>,
    #[serde(rename = "inferenceSteps")]
    #[schema(minimum = 10, maximum = 60)]
    pub inference_steps: Option<u32>,
    #[serde(rename = "alchemyMode")]
    pub alchemy_mode: Option<bool>,
    #[serde(rename = "highResolution")]
    pub high_resolution: Option<bool>,
    #[serde(rename = "promptMagic")]
    pub prompt_magic: Option<bool>,
    #[serde(rename = "promptMagicStrength")]
    #[schema(minimum = 0.1, maximum = 1.0)]
    pub prompt_magic_strength: Option<f64>,
    #[serde(rename = "promptMagicVersion")]
    #[schema(schema_with = prompt_magic_versions)]
    pub prompt_magic_version: Option<String>,
    #[serde(rename = "photoRealMode")]
    pub photo_real_mode: Option<bool>,
    #[serde(rename = "photoRealStrength")]
    #[schema(schema_with = photo_real_strengths)]
    pub photo_real_strength: Option<f64>,
    #[serde(rename = "photoRealVersion")]
    #[schema(schema_with = photo_real_versions)]
    pub photo_real_version: Option<String>,
    #[serde(rename = "isUltra")]
    pub is_ultra: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct UniversalUpscalerPricing {
    /// The megapixels of the result (1 when absent).
    #[schema(minimum = 1, maximum = 100)]
    pub megapixel: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
pub struct UniversalUpscalerUltraPricing {
    #[serde(rename = "inputWidth")]
    #[schema(minimum = 1, maximum = 16384)]
    pub input_width: Option<u32>,
    #[serde(rename = "inputHeight")]
    #[schema(minimum = 1, maximum = 16384)]
    pub input_height: Option<u32>,
    #[serde(rename = "upscaleMultiplier")]
    #[schema(minimum = 1.0, maximum = 2.0)]
    pub upscale_multiplier: Option<f64>,
}

/// The body of `POST /keys`. An empty string reads as "not given".
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeyRequest {
    #[schema(max_length = 100)]
    pub name: String,
    /// `https://` (or one of this Easel's inspector bins): receives a callback per generation.
    pub webhook_callback_url: Option<String>,
    /// Sent as `authorization: Bearer <key>` with every callback; needs a webhook URL.
    pub webhook_callback_api_key: Option<String>,
    /// May the new key manage its user's keys (default false).
    pub manage_keys: Option<bool>,
}

/// The body of `POST /keys/{id}/rotate`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateKeyRequest {
    /// Default: the old key's name.
    #[schema(max_length = 100)]
    pub name: Option<String>,
    /// A new signing secret (shown once) instead of keeping the old key's (default false).
    pub new_signing_secret: Option<bool>,
}

/// The body of `POST /inspector/bins` and `PUT /inspector/bins/{id}/response`: what the bin
/// answers with.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BinResponseRequest {
    /// Default 200.
    #[schema(minimum = 0, maximum = 999)]
    pub status: Option<u16>,
    /// An object of names to values, or an array of `[name, value]` pairs.
    #[schema(value_type = Option<Object>)]
    pub headers: Option<serde_json::Value>,
    /// Default empty.
    pub body: Option<String>,
    /// Milliseconds to wait before answering (at most `inspector.max_delay`).
    #[schema(minimum = 0)]
    pub delay_ms: Option<u32>,
}
