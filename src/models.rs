//! The platform model catalogue: the models `GET /platformModels` lists and `modelId` may name.
//! Built in: the SDKs' default model and the webhook guide's "Leonardo Creative", plus a few more;
//! `[[models]]` in the configuration adds models or overrides built-in ones by id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Millis;
use crate::setting::InvalidSetting;
use crate::vocabulary::SD_VERSIONS;

/// The model the SDKs send when the caller names none.
pub const DEFAULT_MODEL_ID: &str = "b24e16ff-06e3-43eb-8d33-4416c2d75876";

/// A platform model as configured (`[[models]]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// One of the SDKs' `SdVersions`; decides the `sdVersion` of generations (default `SDXL_1_0`).
    #[serde(default = "default_sd_version")]
    pub sd_version: String,
    /// The model's native size (`modelWidth` / `modelHeight` in webhook payloads).
    #[serde(default = "default_model_size")]
    pub width: u32,
    #[serde(default = "default_model_size")]
    pub height: u32,
    #[serde(default)]
    pub featured: bool,
    #[serde(default)]
    pub nsfw: bool,
    /// Names of the `[[backends]]` that run this model; empty: the built-in renderer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// The checkpoint or model name on those backends (`sd_xl_base_1.0.safetensors`); unset: the
    /// server's loaded model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_model: Option<String>,
}

impl ModelConfig {
    /// A model with default settings (SDXL 1.0, 1024x1024, not featured).
    pub fn new(id: &str, name: &str) -> ModelConfig {
        ModelConfig {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            sd_version: default_sd_version(),
            width: default_model_size(),
            height: default_model_size(),
            featured: false,
            nsfw: false,
            backends: Vec::new(),
            backend_model: None,
        }
    }
}

/// An element (a LoRA a backend has) as configured (`[[elements]]`), listed by `GET /elements`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementConfig {
    /// `akUUID`: the id clients name the element by.
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The `SdVersions` of the models it works with (`baseModel`).
    #[serde(default = "default_sd_version")]
    pub base_model: String,
    /// The LoRA's name on the backends (`<lora:NAME:weight>` for AUTOMATIC1111 and
    /// stable-diffusion.cpp); unset: the element's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<String>,
    #[serde(default = "default_weight")]
    pub weight_default: i64,
    #[serde(default)]
    pub weight_min: i64,
    #[serde(default = "default_weight_max")]
    pub weight_max: i64,
    /// A preview picture (`urlImage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// `creatorName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
}

fn default_weight() -> i64 {
    1
}

fn default_weight_max() -> i64 {
    2
}

/// The configured elements, validated: ids are UUIDs and unique, names are set, the base model
/// is an `SdVersions` value and `weight_min <= weight_default <= weight_max`.
pub fn validate_elements(elements: &[ElementConfig]) -> Result<(), InvalidSetting> {
    let mut seen = std::collections::BTreeSet::new();
    for (index, element) in elements.iter().enumerate() {
        let setting = |field: &str| format!("elements[{index}].{field}");
        let id = Uuid::parse_str(&element.id)
            .map_err(|e| InvalidSetting::new(setting("id"), format!("{:?} is not a UUID", element.id)).caused_by(e))?;
        if !seen.insert(id) {
            return Err(InvalidSetting::new(setting("id"), format!("{id} names two elements")));
        }
        if element.name.trim().is_empty() {
            return Err(InvalidSetting::new(setting("name"), "must not be empty"));
        }
        if !SD_VERSIONS.contains(&element.base_model.as_str()) {
            return Err(InvalidSetting::new(
                setting("base_model"),
                format!("{:?} is not one of {}", element.base_model, SD_VERSIONS.join(", ")),
            ));
        }
        if !(element.weight_min <= element.weight_default && element.weight_default <= element.weight_max) {
            return Err(InvalidSetting::new(
                setting("weight_default"),
                format!(
                    "must lie between weight_min and weight_max ({} <= {} <= {} does not hold)",
                    element.weight_min, element.weight_default, element.weight_max
                ),
            ));
        }
    }
    Ok(())
}

fn default_sd_version() -> String {
    "SDXL_1_0".into()
}

fn default_model_size() -> u32 {
    1024
}

/// A model Easel can generate with.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub sd_version: String,
    pub width: u32,
    pub height: u32,
    pub featured: bool,
    pub nsfw: bool,
    /// When the model entered the catalogue (`createdAt`); fixed for built-ins.
    pub created_at: Millis,
    /// The `[[backends]]` that run it, by name; empty: the built-in renderer.
    pub backends: Vec<String>,
    /// The model's name on those backends.
    pub backend_model: Option<String>,
    /// Widths and heights must be multiples of this (8, or what its backends need).
    pub size_multiple: u32,
}

impl Model {
    /// The largest seed the model accepts (Flux models take 32-bit seeds).
    pub fn max_seed(&self) -> u64 {
        if self.sd_version.starts_with("FLUX") { crate::vocabulary::MAX_FLUX_SEED } else { crate::vocabulary::MAX_SEED }
    }
}

/// All models, by id.
#[derive(Clone, Debug)]
pub struct Catalogue {
    models: BTreeMap<Uuid, Model>,
    /// `[[elements]]` (validated), by id.
    elements: BTreeMap<Uuid, ElementConfig>,
}

impl Catalogue {
    /// The built-in models plus `extra` (an extra model with a built-in id replaces it).
    pub fn new(extra: &[ModelConfig]) -> Result<Catalogue, InvalidSetting> {
        let mut models = BTreeMap::new();
        for builtin in builtin_models() {
            models.insert(builtin.id, builtin);
        }
        for (index, config) in extra.iter().enumerate() {
            let setting = |field: &str| format!("models[{index}].{field}");
            let id = Uuid::parse_str(&config.id).map_err(|e| {
                InvalidSetting::new(setting("id"), format!("{:?} is not a UUID", config.id)).caused_by(e)
            })?;
            if config.name.trim().is_empty() {
                return Err(InvalidSetting::new(setting("name"), "must not be empty"));
            }
            if !SD_VERSIONS.contains(&config.sd_version.as_str()) {
                let reason = format!("{:?} is not one of {}", config.sd_version, SD_VERSIONS.join(", "));
                return Err(InvalidSetting::new(setting("sd_version"), reason));
            }
            for (field, value) in [("width", config.width), ("height", config.height)] {
                if !(32..=4096).contains(&value) {
                    return Err(InvalidSetting::new(setting(field), "must be between 32 and 4096"));
                }
            }
            models.insert(
                id,
                Model {
                    id,
                    name: config.name.clone(),
                    description: config.description.clone(),
                    sd_version: config.sd_version.clone(),
                    width: config.width,
                    height: config.height,
                    featured: config.featured,
                    nsfw: config.nsfw,
                    created_at: BUILTIN_CREATED_AT,
                    backends: config.backends.clone(),
                    backend_model: config.backend_model.clone(),
                    size_multiple: 8,
                },
            );
        }
        Ok(Catalogue { models, elements: BTreeMap::new() })
    }

    /// With the elements of `[[elements]]`, checked by [`validate_elements`].
    pub fn with_elements(mut self, elements: &[ElementConfig]) -> Result<Catalogue, InvalidSetting> {
        validate_elements(elements)?;
        for element in elements {
            let id = Uuid::parse_str(&element.id).expect("validated");
            self.elements.insert(id, ElementConfig { id: id.to_string(), ..element.clone() });
        }
        Ok(self)
    }

    /// A configured element by id.
    pub fn element(&self, id: &Uuid) -> Option<&ElementConfig> {
        self.elements.get(id)
    }

    /// Every configured element, by id.
    pub fn elements(&self) -> impl Iterator<Item = &ElementConfig> {
        self.elements.values()
    }

    /// Makes the models that `backend` runs take only sizes that are multiples of `multiple`.
    pub fn require_size_multiple(&mut self, backend: &str, multiple: u32) {
        for model in self.models.values_mut() {
            if model.backends.iter().any(|name| name == backend) {
                model.size_multiple = model.size_multiple.max(multiple);
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&Model> {
        self.models.get(id)
    }

    /// Featured models first, then by name.
    pub fn list(&self) -> Vec<&Model> {
        let mut list: Vec<&Model> = self.models.values().collect();
        list.sort_by(|a, b| b.featured.cmp(&a.featured).then_with(|| a.name.cmp(&b.name)));
        list
    }
}

/// 2023-01-06T01:02:38.315Z, the `createdAt` of the guide's sample model.
const BUILTIN_CREATED_AT: Millis = 1_672_966_958_315;

fn builtin_models() -> Vec<Model> {
    let model = |id: &str, name: &str, sd_version: &str, size: u32, featured: bool, description: &str| Model {
        id: Uuid::parse_str(id).expect("built-in model ids are UUIDs"),
        name: name.into(),
        description: description.into(),
        sd_version: sd_version.into(),
        width: size,
        height: size,
        featured,
        nsfw: false,
        created_at: BUILTIN_CREATED_AT,
        backends: Vec::new(),
        backend_model: None,
        size_multiple: 8,
    };
    vec![
        model(
            DEFAULT_MODEL_ID,
            "Leonardo Lightning XL",
            "SDXL_LIGHTNING",
            1024,
            true,
            "A high-speed generalist model: photorealism to painterly styles.",
        ),
        model(
            "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3",
            "Leonardo Creative",
            "v2",
            768,
            false,
            "An alternative finetune of SD 2.1 that brings a little more creative interpretation to the mix.",
        ),
        model(
            "1e60896f-3c26-4296-8ecc-53e2afecc132",
            "Leonardo Diffusion XL",
            "SDXL_0_9",
            1024,
            true,
            "The next phase of the core Leonardo model: stunning outputs even with short prompts.",
        ),
        model(
            "de7d3faf-762f-48e0-b3b7-9d0ac3a3fcf3",
            "Leonardo Phoenix",
            "PHOENIX",
            1024,
            true,
            "A foundational model with strong prompt adherence and legible text in images.",
        ),
        model(
            "ac614f96-1082-45bf-be9d-757f2d31c174",
            "DreamShaper v7",
            "v1_5",
            512,
            false,
            "A versatile Stable Diffusion 1.5 finetune.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_holds_the_sdk_default_and_the_guide_model() {
        let catalogue = Catalogue::new(&[]).unwrap();
        let default = catalogue.get(&Uuid::parse_str(DEFAULT_MODEL_ID).unwrap()).unwrap();
        assert_eq!(default.name, "Leonardo Lightning XL");
        let creative = catalogue.get(&Uuid::parse_str("6bef9f1b-29cb-40c7-b9df-32b51c1f67d3").unwrap()).unwrap();
        assert_eq!(creative.name, "Leonardo Creative");
        assert_eq!((creative.width, creative.sd_version.as_str()), (768, "v2"));
    }

    #[test]
    fn configured_models_extend_and_override() {
        let extra = |id: &str, name: &str| ModelConfig { sd_version: "FLUX".into(), ..ModelConfig::new(id, name) };
        let new_id = "11111111-2222-4333-8444-555555555555";
        let catalogue = Catalogue::new(&[extra(new_id, "House Model"), extra(DEFAULT_MODEL_ID, "Renamed")]).unwrap();
        let house = catalogue.get(&Uuid::parse_str(new_id).unwrap()).unwrap();
        assert_eq!(house.max_seed(), 2_147_483_637);
        assert_eq!(catalogue.get(&Uuid::parse_str(DEFAULT_MODEL_ID).unwrap()).unwrap().name, "Renamed");
        assert!(Catalogue::new(&[extra("nope", "x")]).unwrap_err().to_string().contains("models[0].id"));
    }
}
