//! Generation requests: the body of `POST /generations` parsed into validated parameters.
//!
//! Parsing is lenient where the SDKs need it (every nullable key may be `null`; unknown keys are
//! ignored; snake_case and camelCase keys mixed exactly as on the wire) and strict about values:
//! every documented constraint is checked and a violation names the field and the allowed values.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::ids::ImageId;
use crate::models::{Catalogue, DEFAULT_MODEL_ID};
pub use crate::vocabulary::*;

/// An invalid field in a request: the message names the field and what it allows.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError { field: field.to_string(), message: message.into() }
    }
}

/// Validated parameters of a generation, as stored with the job and echoed in responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub model_id: Uuid,
    pub width: u32,
    pub height: u32,
    pub num_images: u32,
    pub inference_steps: u32,
    pub guidance_scale: f64,
    /// The seed used: the requested one, or a random one chosen at creation.
    pub seed: u64,
    pub scheduler: String,
    pub sd_version: String,
    pub preset_style: Option<String>,
    pub alchemy: Option<bool>,
    pub photo_real: bool,
    pub photo_real_strength: Option<f64>,
    pub photo_real_version: Option<String>,
    pub prompt_magic: bool,
    pub prompt_magic_strength: Option<f64>,
    pub prompt_magic_version: Option<String>,
    pub high_contrast: bool,
    pub high_resolution: Option<bool>,
    pub expanded_domain: Option<bool>,
    pub contrast: Option<f64>,
    pub contrast_ratio: Option<f64>,
    pub init_generation_image_id: Option<ImageId>,
    /// An uploaded init image (`POST /init-image`), for image-to-image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image_id: Option<Uuid>,
    pub init_strength: Option<f64>,
    /// A canvas editor request (`canvasRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canvas: Option<Canvas>,
    /// `controlnets`: pictures whose structure guides the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controlnets: Vec<Controlnet>,
    /// `imagePrompts`: uploaded pictures whose look the result takes on, by `image_prompt_weight`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_prompts: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_prompt_weight: Option<f64>,
    /// `elements`: the configured elements applied, as they were configured at creation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<AppliedElement>,
    pub public: bool,
    pub tiling: bool,
    pub ultra: Option<bool>,
    pub transparency: Option<String>,
}

/// A canvas editor request: what to do with the canvas picture (and its mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canvas {
    /// `INPAINT`, `OUTPAINT`, `SKETCH2IMG` or `IMG2IMG`.
    pub request_type: String,
    /// `canvasInitId`: a canvas upload (`POST /canvas-init-image`).
    pub init_id: Uuid,
    /// `canvasMaskId`: white where the picture is repainted; needed by `INPAINT`.
    pub mask_id: Option<Uuid>,
}

/// An element applied to a generation, with its weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppliedElement {
    pub element: crate::models::ElementConfig,
    pub weight: f64,
}

impl AppliedElement {
    /// The name of its LoRA on the backends (`lora`, else its name).
    pub fn lora(&self) -> &str {
        self.element.lora.as_deref().unwrap_or(&self.element.name)
    }
}

/// One entry of `controlnets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Controlnet {
    pub init_image_id: Uuid,
    /// `UPLOADED` (an init image) or `GENERATED` (a generated image).
    pub init_image_type: String,
    pub preprocessor_id: u32,
    /// 0 to 2 (default 1): how strongly its structure shows.
    pub weight: f64,
    pub strength_type: Option<String>,
}

impl Controlnet {
    fn parse(index: usize, item: &Value) -> Result<Controlnet, FieldError> {
        let field = format!("controlnets[{index}]");
        let Some(map) = item.as_object() else {
            return Err(FieldError::new(&field, format!("`{field}` must be an object")));
        };
        let item = Body(map);
        // Errors of an entry's fields name the entry: `controlnets[0].weight`.
        let named = |e: FieldError| {
            let path = format!("{field}.{}", e.field);
            FieldError::new(&path, e.message.replacen(&format!("`{}`", e.field), &format!("`{path}`"), 1))
        };
        let id = item.string("initImageId").map_err(named)?.ok_or_else(|| {
            FieldError::new(&format!("{field}.initImageId"), format!("`{field}.initImageId` is required"))
        })?;
        let init_image_id = id.parse().map_err(|_| {
            FieldError::new(&format!("{field}.initImageId"), format!("`{field}.initImageId` {id:?} is not a UUID"))
        })?;
        let init_image_type = item.one_of("initImageType", INIT_IMAGE_TYPES).map_err(named)?.ok_or_else(|| {
            FieldError::new(
                &format!("{field}.initImageType"),
                format!("`{field}.initImageType` is required: UPLOADED or GENERATED"),
            )
        })?;
        let preprocessor_id = item.integer("preprocessorId", 1, 1_000).map_err(named)?.ok_or_else(|| {
            FieldError::new(&format!("{field}.preprocessorId"), format!("`{field}.preprocessorId` is required"))
        })? as u32;
        Ok(Controlnet {
            init_image_id,
            init_image_type,
            preprocessor_id,
            weight: item.number_in("weight", 0.0, 2.0).map_err(named)?.unwrap_or(1.0),
            strength_type: item.one_of("strengthType", STRENGTH_TYPES).map_err(named)?,
        })
    }
}

impl GenerationParams {
    /// Parses and validates a `POST /generations` body. `random_seed` supplies the seed when the
    /// request has none (it is recorded, so the generation stays reproducible).
    pub fn parse(
        body: &Value,
        catalogue: &Catalogue,
        random_seed: impl FnOnce(u64) -> u64,
    ) -> Result<GenerationParams, FieldError> {
        let body = Body::of(body)?;

        let prompt = body.string("prompt")?.ok_or_else(|| FieldError::new("prompt", "`prompt` is required"))?;
        if prompt.trim().is_empty() {
            return Err(FieldError::new("prompt", "`prompt` must not be empty"));
        }
        check_length("prompt", &prompt)?;
        let negative_prompt = body.string("negative_prompt")?.unwrap_or_default();
        check_length("negative_prompt", &negative_prompt)?;

        let model_id = match body.string("modelId")? {
            Some(text) => Uuid::parse_str(&text).ok().filter(|id| catalogue.get(id).is_some()).ok_or_else(|| {
                FieldError::new(
                    "modelId",
                    format!("`modelId` {text:?} is not a known model; GET /api/rest/v1/platformModels lists them"),
                )
            })?,
            None => Uuid::parse_str(DEFAULT_MODEL_ID).expect("constant"),
        };
        let model = catalogue.get(&model_id).expect("checked above or built in");

        let width = body.dimension("width")?.unwrap_or(1024);
        let height = body.dimension("height")?.unwrap_or(768);
        for (field, value) in [("width", width), ("height", height)] {
            if value % model.size_multiple != 0 {
                return Err(FieldError::new(
                    field,
                    format!(
                        "`{field}` must be a multiple of {} for model {:?}, whose inference servers need it (got {value})",
                        model.size_multiple, model.name
                    ),
                ));
            }
        }
        let max_images = if width > 768 || height > 768 { 4 } else { 8 };
        let num_images = body.integer("num_images", 1, 8)?.unwrap_or(4) as u32;
        if num_images > max_images {
            return Err(FieldError::new(
                "num_images",
                format!(
                    "`num_images` must be between 1 and 4 when width or height is over 768 (got {num_images} at {width}x{height})"
                ),
            ));
        }
        let inference_steps = body.integer("num_inference_steps", 10, 60)?.unwrap_or(15) as u32;
        let guidance_scale = body.number_in("guidance_scale", 1.0, 20.0)?.unwrap_or(7.0);
        let max_seed = model.max_seed();
        let seed = match body.integer("seed", 0, max_seed)? {
            Some(seed) => seed,
            None => random_seed(max_seed),
        };
        let scheduler = body.one_of("scheduler", SCHEDULERS)?.unwrap_or_else(|| "EULER_DISCRETE".into());
        let sd_version = body.one_of("sd_version", SD_VERSIONS)?.unwrap_or_else(|| model.sd_version.clone());
        let preset_style = body.one_of("presetStyle", PRESET_STYLES)?;
        let transparency = body.one_of("transparency", TRANSPARENCY_TYPES)?;
        body.one_of("controlNetType", CONTROLNET_TYPES)?;
        body.one_of("canvasRequestType", CANVAS_REQUEST_TYPES)?;

        let photo_real_strength = body.number_from("photoRealStrength", PHOTO_REAL_STRENGTHS)?;
        let photo_real_version = body.one_of("photoRealVersion", PHOTO_REAL_VERSIONS)?;
        let prompt_magic_strength = body.number_in("promptMagicStrength", 0.1, 1.0)?;
        let prompt_magic_version = body.one_of("promptMagicVersion", PROMPT_MAGIC_VERSIONS)?;
        let contrast = body.number_from("contrast", CONTRAST_VALUES)?;
        let contrast_ratio = body.number_in("contrastRatio", 0.0, 1.0)?;
        let init_strength = body.number_in("init_strength", 0.1, 0.9)?;
        let init_generation_image_id = match body.string("init_generation_image_id")? {
            Some(text) => Some(text.parse::<ImageId>().map_err(|_| {
                FieldError::new(
                    "init_generation_image_id",
                    format!("`init_generation_image_id` {text:?} is not an image id (a UUID)"),
                )
            })?),
            None => None,
        };
        let init_image_id = match body.string("init_image_id")? {
            Some(text) => Some(text.parse::<Uuid>().map_err(|_| {
                FieldError::new("init_image_id", format!("`init_image_id` {text:?} is not an init image id (a UUID)"))
            })?),
            None => None,
        };
        if init_image_id.is_some() && init_generation_image_id.is_some() {
            return Err(FieldError::new(
                "init_image_id",
                "give `init_image_id` (an upload) or `init_generation_image_id` (a generated image), not both",
            ));
        }
        if init_strength.is_some() && init_generation_image_id.is_none() && init_image_id.is_none() {
            return Err(FieldError::new(
                "init_strength",
                "`init_strength` needs `init_image_id` or `init_generation_image_id`",
            ));
        }
        for number in ["weighting", "unzoomAmount", "upscaleRatio"] {
            body.number(number)?;
        }
        body.string("enhancePromptInstruction")?;

        let canvas = Canvas::parse(&body)?;
        if canvas.is_some() && (init_image_id.is_some() || init_generation_image_id.is_some()) {
            return Err(FieldError::new(
                "canvasRequest",
                "a canvas request starts from `canvasInitId`; leave out `init_image_id` and `init_generation_image_id`",
            ));
        }
        let controlnets = match body.array("controlnets")? {
            None => Vec::new(),
            Some(items) if items.len() > MAX_CONTROLNETS => {
                return Err(FieldError::new(
                    "controlnets",
                    format!("`controlnets` takes at most {MAX_CONTROLNETS} entries"),
                ));
            }
            Some(items) => {
                items.iter().enumerate().map(|(i, item)| Controlnet::parse(i, item)).collect::<Result<_, _>>()?
            }
        };
        let mut image_prompts = Vec::new();
        for (index, item) in body.array("imagePrompts")?.into_iter().flatten().enumerate() {
            let field = format!("imagePrompts[{index}]");
            match item {
                Value::Null => {}
                Value::String(text) => image_prompts.push(text.parse::<Uuid>().map_err(|_| {
                    FieldError::new(&field, format!("`{field}` {text:?} is not an init image id (a UUID)"))
                })?),
                other => {
                    return Err(FieldError::new(
                        &field,
                        format!("`{field}` must be a string, got {}", type_name(other)),
                    ));
                }
            }
        }
        if image_prompts.len() > MAX_CONTROLNETS {
            return Err(FieldError::new(
                "imagePrompts",
                format!("`imagePrompts` takes at most {MAX_CONTROLNETS} images"),
            ));
        }
        let image_prompt_weight = body.number_in("imagePromptWeight", 0.0, 1.0)?;
        let elements = parse_elements(&body, catalogue, &sd_version)?;
        // Easel trains no elements, so no user element can be named.
        if let Some(first) = body.array("userElements")?.and_then(|items| items.first()) {
            return Err(FieldError::new(
                "userElements[0]",
                format!(
                    "`userElements[0]`: Easel trains no elements, so there is no user element {first}; use `elements` (GET /elements)"
                ),
            ));
        }
        for field in ["controlNet", "unzoom"] {
            if body.boolean(field)? == Some(true) {
                return Err(unsupported(field));
            }
        }
        for flag in ["fantasyAvatar", "enhancePrompt"] {
            body.boolean(flag)?;
        }

        Ok(GenerationParams {
            prompt,
            negative_prompt,
            model_id,
            width,
            height,
            num_images,
            inference_steps,
            guidance_scale,
            seed,
            scheduler,
            sd_version,
            preset_style,
            alchemy: body.boolean("alchemy")?,
            photo_real: body.boolean("photoReal")?.unwrap_or(false),
            photo_real_strength,
            photo_real_version,
            prompt_magic: body.boolean("promptMagic")?.unwrap_or(false),
            prompt_magic_strength,
            prompt_magic_version,
            high_contrast: body.boolean("highContrast")?.unwrap_or(false),
            high_resolution: body.boolean("highResolution")?,
            expanded_domain: body.boolean("expandedDomain")?,
            contrast,
            contrast_ratio,
            init_generation_image_id,
            init_image_id,
            init_strength,
            canvas,
            controlnets,
            image_prompts,
            image_prompt_weight,
            elements,
            public: body.boolean("public")?.unwrap_or(false),
            tiling: body.boolean("tiling")?.unwrap_or(false),
            ultra: body.boolean("ultra")?,
            transparency,
        })
    }

    /// API credits charged: one per image per started 512x512 tile of output (an integer, as the
    /// SDKs require).
    pub fn api_credit_cost(&self) -> u64 {
        let tiles = (u64::from(self.width) * u64::from(self.height)).div_ceil(512 * 512);
        u64::from(self.num_images) * tiles.max(1)
    }
}

/// The most `controlnets` (and `imagePrompts`) one generation takes.
pub const MAX_CONTROLNETS: usize = 4;
pub const INIT_IMAGE_TYPES: &[&str] = &["UPLOADED", "GENERATED"];
pub const STRENGTH_TYPES: &[&str] = &["Low", "Mid", "High", "Ultra", "Max"];

/// `elements`: each a configured element (`akUUID`) for this model's base (`sd_version`), with a
/// weight in its range (its default when not given); at most [`MAX_CONTROLNETS`].
fn parse_elements(body: &Body<'_>, catalogue: &Catalogue, sd_version: &str) -> Result<Vec<AppliedElement>, FieldError> {
    let Some(items) = body.array("elements")? else { return Ok(Vec::new()) };
    if items.len() > MAX_CONTROLNETS {
        return Err(FieldError::new("elements", format!("`elements` takes at most {MAX_CONTROLNETS} entries")));
    }
    let mut applied = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let field = format!("elements[{index}]");
        let Some(map) = item.as_object() else {
            return Err(FieldError::new(&field, format!("`{field}` must be an object with `akUUID` and `weight`")));
        };
        let item = Body(map);
        let id_field = format!("{field}.akUUID");
        let text = item
            .string("akUUID")
            .map_err(|e| FieldError::new(&id_field, e.message.replace("`akUUID`", &format!("`{id_field}`"))))?
            .ok_or_else(|| FieldError::new(&id_field, format!("`{id_field}` is required")))?;
        let element = text.parse::<Uuid>().ok().and_then(|id| catalogue.element(&id)).ok_or_else(|| {
            FieldError::new(&id_field, format!("`{id_field}`: there is no element {text:?} (GET /elements lists them)"))
        })?;
        if element.base_model != sd_version {
            return Err(FieldError::new(
                &id_field,
                format!(
                    "`{id_field}`: {} is for {} models, and this generation's model is {sd_version}",
                    element.name, element.base_model
                ),
            ));
        }
        let weight_field = format!("{field}.weight");
        let (min, max) = (element.weight_min as f64, element.weight_max as f64);
        let weight = item
            .number_in("weight", min, max)
            .map_err(|e| FieldError::new(&weight_field, e.message.replace("`weight`", &format!("`{weight_field}`"))))?
            .unwrap_or(element.weight_default as f64);
        applied.push(AppliedElement { element: element.clone(), weight });
    }
    Ok(applied)
}

impl Canvas {
    /// `canvasRequest` with its type and ids; the ids without `canvasRequest: true` are refused
    /// rather than ignored.
    fn parse(body: &Body<'_>) -> Result<Option<Canvas>, FieldError> {
        let uuid = |field: &str| -> Result<Option<Uuid>, FieldError> {
            body.string(field)?
                .map(|text| {
                    text.parse().map_err(|_| {
                        FieldError::new(field, format!("`{field}` {text:?} is not an init image id (a UUID)"))
                    })
                })
                .transpose()
        };
        let (init_id, mask_id) = (uuid("canvasInitId")?, uuid("canvasMaskId")?);
        let request_type = body.one_of("canvasRequestType", CANVAS_REQUEST_TYPES)?;
        if body.boolean("canvasRequest")? != Some(true) {
            if init_id.is_some() || mask_id.is_some() || request_type.is_some() {
                return Err(FieldError::new(
                    "canvasRequest",
                    "`canvasInitId`, `canvasMaskId` and `canvasRequestType` need `canvasRequest` set to true",
                ));
            }
            return Ok(None);
        }
        let request_type = request_type.ok_or_else(|| {
            FieldError::new(
                "canvasRequestType",
                format!(
                    "`canvasRequestType` is required with `canvasRequest`: one of {}",
                    CANVAS_REQUEST_TYPES.join(", ")
                ),
            )
        })?;
        let init_id = init_id.ok_or_else(|| {
            FieldError::new(
                "canvasInitId",
                "`canvasInitId` (a canvas upload's initImageId) is required with `canvasRequest`",
            )
        })?;
        if request_type == "INPAINT" && mask_id.is_none() {
            return Err(FieldError::new(
                "canvasMaskId",
                "`canvasMaskId` is required for INPAINT: it marks what to repaint",
            ));
        }
        Ok(Some(Canvas { request_type, init_id, mask_id }))
    }
}

fn unsupported(field: &str) -> FieldError {
    FieldError::new(field, format!("`{field}` is not supported by Easel (no such input can be served); leave it out"))
}

fn check_length(field: &str, text: &str) -> Result<(), FieldError> {
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(FieldError::new(
            field,
            format!("`{field}` must be at most {MAX_PROMPT_CHARS} characters (got {chars})"),
        ));
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed access to a JSON object's fields; `null` and absence both read as `None`. Every
/// request body is read through it, so type and range errors read the same everywhere.
pub struct Body<'a>(pub &'a Map<String, Value>);

impl<'a> Body<'a> {
    /// The body as an object, or the error that it is not one.
    pub fn of(body: &'a Value) -> Result<Body<'a>, FieldError> {
        body.as_object().map(Body).ok_or_else(|| FieldError::new("$", "the request body must be a JSON object"))
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|value| !value.is_null())
    }

    fn wrong_type(field: &str, expected: &str, value: &Value) -> FieldError {
        FieldError::new(field, format!("`{field}` must be {expected}, got {}", type_name(value)))
    }

    pub fn string(&self, field: &str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(Self::wrong_type(field, "a string", other)),
        }
    }

    pub fn boolean(&self, field: &str) -> Result<Option<bool>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(Self::wrong_type(field, "a boolean", other)),
        }
    }

    pub fn array(&self, field: &str) -> Result<Option<&Vec<Value>>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(Self::wrong_type(field, "an array", other)),
        }
    }

    pub fn number(&self, field: &str) -> Result<Option<f64>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(number)) => Ok(number.as_f64()),
            Some(other) => Err(Self::wrong_type(field, "a number", other)),
        }
    }

    pub fn number_in(&self, field: &str, min: f64, max: f64) -> Result<Option<f64>, FieldError> {
        let number = self.number(field)?;
        match number {
            Some(n) if !(min..=max).contains(&n) => {
                Err(FieldError::new(field, format!("`{field}` must be between {min} and {max} (got {n})")))
            }
            _ => Ok(number),
        }
    }

    pub fn number_from(&self, field: &str, allowed: &[f64]) -> Result<Option<f64>, FieldError> {
        let number = self.number(field)?;
        match number {
            Some(n) if !allowed.iter().any(|a| (a - n).abs() < 1e-9) => {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                Err(FieldError::new(field, format!("`{field}` must be one of {} (got {n})", list.join(", "))))
            }
            _ => Ok(number),
        }
    }

    /// An integer in `min..=max`; integral floats (`512.0`) are accepted.
    pub fn integer(&self, field: &str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
        let Some(value) = self.get(field) else { return Ok(None) };
        let out_of_range =
            || FieldError::new(field, format!("`{field}` must be an integer between {min} and {max} (got {value})"));
        let Value::Number(number) = value else {
            return Err(Self::wrong_type(field, "an integer", value));
        };
        let integer = if let Some(u) = number.as_u64() {
            u
        } else if number.as_i64().is_some() {
            return Err(out_of_range());
        } else {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() != 0.0 {
                return Err(FieldError::new(field, format!("`{field}` must be an integer (got {value})")));
            }
            if float < 0.0 || float > max as f64 {
                return Err(out_of_range());
            }
            float as u64
        };
        if !(min..=max).contains(&integer) {
            return Err(out_of_range());
        }
        Ok(Some(integer))
    }

    /// `width` / `height`: 32..=1536 and a multiple of 8.
    fn dimension(&self, field: &str) -> Result<Option<u32>, FieldError> {
        let Some(value) = self.get(field) else { return Ok(None) };
        let Value::Number(number) = value else {
            return Err(Self::wrong_type(field, "an integer", value));
        };
        match number.as_f64() {
            Some(n) if n.fract() == 0.0 && (32.0..=1536.0).contains(&n) && (n as u32).is_multiple_of(8) => {
                Ok(Some(n as u32))
            }
            _ => Err(FieldError::new(
                field,
                format!("`{field}` must be an integer between 32 and 1536 and a multiple of 8 (got {value})"),
            )),
        }
    }

    fn one_of(&self, field: &str, allowed: &[&str]) -> Result<Option<String>, FieldError> {
        match self.string(field)? {
            Some(text) if !allowed.contains(&text.as_str()) => {
                Err(FieldError::new(field, format!("`{field}` must be one of {} (got {text:?})", allowed.join(", "))))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<GenerationParams, FieldError> {
        GenerationParams::parse(&body, &Catalogue::new(&[]).unwrap(), |_| 42)
    }

    fn field_of(body: Value) -> String {
        parse(body).unwrap_err().field
    }

    #[test]
    fn sdk_default_body_parses_with_sdk_defaults() {
        let params = parse(json!({"alchemy":true,"height":768,"modelId":DEFAULT_MODEL_ID,"num_images":4,
            "presetStyle":"DYNAMIC","prompt":"bare minimum","width":1024}))
        .unwrap();
        assert_eq!((params.width, params.height, params.num_images), (1024, 768, 4));
        assert_eq!((params.inference_steps, params.guidance_scale, params.seed), (15, 7.0, 42));
        assert_eq!(params.scheduler, "EULER_DISCRETE");
        assert_eq!(params.sd_version, "SDXL_LIGHTNING");
        assert_eq!(params.preset_style.as_deref(), Some("DYNAMIC"));
    }

    #[test]
    fn explicit_nulls_read_as_absent() {
        let params = parse(json!({"alchemy":null,"height":768,"modelId":null,"num_images":4,"presetStyle":null,
            "prompt":"p","seed":null,"width":1024}))
        .unwrap();
        assert_eq!(params.model_id.to_string(), DEFAULT_MODEL_ID);
        assert_eq!(params.preset_style, None);
    }

    #[test]
    fn sizes_must_be_multiples_of_8_within_range() {
        for (width, ok) in [(32, true), (1536, true), (24, false), (1544, false), (100, false), (512, true)] {
            let result = parse(json!({"prompt":"p","width":width,"height":512,"num_images":1}));
            assert_eq!(result.is_ok(), ok, "width {width}");
            if let Err(e) = result {
                assert_eq!(e.field, "width");
                assert!(e.message.contains("between 32 and 1536 and a multiple of 8"), "{}", e.message);
            }
        }
        assert_eq!(field_of(json!({"prompt":"p","height":-8})), "height");
        assert_eq!(field_of(json!({"prompt":"p","height":"512"})), "height");
        assert_eq!(field_of(json!({"prompt":"p","height":512.5})), "height");
        assert!(parse(json!({"prompt":"p","height":512.0, "num_images": 1})).is_ok());
    }

    #[test]
    fn image_count_depends_on_size() {
        assert!(parse(json!({"prompt":"p","width":768,"height":768,"num_images":8})).is_ok());
        let e = parse(json!({"prompt":"p","width":776,"height":768,"num_images":5})).unwrap_err();
        assert_eq!(e.field, "num_images");
        assert!(e.message.contains("between 1 and 4"));
        assert_eq!(field_of(json!({"prompt":"p","width":512,"height":512,"num_images":9})), "num_images");
        assert_eq!(field_of(json!({"prompt":"p","width":512,"height":512,"num_images":0})), "num_images");
    }

    #[test]
    fn documented_ranges_are_enforced() {
        let cases = [
            (json!({"prompt":"p","num_inference_steps":9}), "num_inference_steps"),
            (json!({"prompt":"p","num_inference_steps":61}), "num_inference_steps"),
            (json!({"prompt":"p","guidance_scale":0.5}), "guidance_scale"),
            (json!({"prompt":"p","guidance_scale":21}), "guidance_scale"),
            (json!({"prompt":"p","seed":-1}), "seed"),
            (json!({"prompt":"p","seed":9_999_999_999u64}), "seed"),
            (json!({"prompt":"p","init_strength":0.5}), "init_strength"),
            (json!({"prompt":"p","init_generation_image_id":"x","init_strength":0.5}), "init_generation_image_id"),
            (json!({"prompt":"p","contrast":2.0}), "contrast"),
            (json!({"prompt":"p","contrastRatio":1.5}), "contrastRatio"),
            (json!({"prompt":"p","photoRealStrength":0.6}), "photoRealStrength"),
            (json!({"prompt":"p","promptMagicStrength":0.0}), "promptMagicStrength"),
            (json!({"prompt":"p","promptMagicVersion":"v9"}), "promptMagicVersion"),
            (json!({"prompt":"p","scheduler":"FAST"}), "scheduler"),
            (json!({"prompt":"p","presetStyle":"dynamic"}), "presetStyle"),
            (json!({"prompt":"p","sd_version":"v4"}), "sd_version"),
            (json!({"prompt":"p","transparency":"full"}), "transparency"),
            (json!({"prompt":"p","modelId":"00000000-0000-0000-0000-000000000000"}), "modelId"),
            (json!({"prompt":"p","modelId":"not-a-model"}), "modelId"),
            (json!({"prompt":"p","alchemy":"yes"}), "alchemy"),
            (json!({"prompt":"p","controlnets":[{"initImageId":"x"}]}), "controlnets[0].initImageId"),
            (json!({"prompt":"p","init_image_id":"x"}), "init_image_id"),
            (json!({"prompt":""}), "prompt"),
            (json!({"prompt":"x".repeat(1501)}), "prompt"),
            (json!({"width":512}), "prompt"),
            (json!([1, 2]), "$"),
        ];
        for (body, field) in cases {
            let error = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(error.field, field, "{body}: {}", error.message);
            assert!(error.message.contains(&format!("`{field}`")) || field == "$", "{}", error.message);
        }
    }

    #[test]
    fn enum_errors_list_the_allowed_values() {
        let e = parse(json!({"prompt":"p","scheduler":"FAST"})).unwrap_err();
        assert!(e.message.contains("EULER_DISCRETE") && e.message.contains("\"FAST\""), "{}", e.message);
    }

    #[test]
    fn flux_models_take_32_bit_seeds() {
        let flux = crate::models::ModelConfig {
            sd_version: "FLUX".into(),
            ..crate::models::ModelConfig::new("11111111-2222-4333-8444-555555555555", "Flux")
        };
        let catalogue = Catalogue::new(&[flux]).unwrap();
        let body = json!({"prompt":"p","modelId":"11111111-2222-4333-8444-555555555555","seed":2_147_483_638u64});
        assert_eq!(GenerationParams::parse(&body, &catalogue, |_| 0).unwrap_err().field, "seed");
        let mut chosen_max = 0;
        let body = json!({"prompt":"p","modelId":"11111111-2222-4333-8444-555555555555"});
        GenerationParams::parse(&body, &catalogue, |max| {
            chosen_max = max;
            7
        })
        .unwrap();
        assert_eq!(chosen_max, 2_147_483_637);
    }

    #[test]
    fn cost_is_an_integer_per_image_and_tile() {
        let params = parse(json!({"prompt":"p","width":512,"height":512,"num_images":2})).unwrap();
        assert_eq!(params.api_credit_cost(), 2);
        let params = parse(json!({"prompt":"p","width":1024,"height":768,"num_images":4})).unwrap();
        assert_eq!(params.api_credit_cost(), 12);
    }
}
