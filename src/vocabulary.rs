//! The Leonardo SDKs' vocabulary: the values their enums allow and the documented limits. A leaf:
//! request parsing, the model catalogue and the wire shapes all take their lists from here.

pub const JOB_STATUSES: &[&str] = &["PENDING", "COMPLETE", "FAILED"];
pub const SCHEDULERS: &[&str] =
    &["KLMS", "EULER_ANCESTRAL_DISCRETE", "EULER_DISCRETE", "DDIM", "DPM_SOLVER", "PNDM", "LEONARDO"];
pub const PRESET_STYLES: &[&str] = &[
    "ANIME",
    "BOKEH",
    "CINEMATIC",
    "CINEMATIC_CLOSEUP",
    "CREATIVE",
    "DYNAMIC",
    "ENVIRONMENT",
    "FASHION",
    "FILM",
    "FOOD",
    "GENERAL",
    "HDR",
    "ILLUSTRATION",
    "LEONARDO",
    "LONG_EXPOSURE",
    "MACRO",
    "MINIMALISTIC",
    "MONOCHROME",
    "MOODY",
    "NONE",
    "NEUTRAL",
    "PHOTOGRAPHY",
    "PORTRAIT",
    "RAYTRACED",
    "RENDER_3D",
    "RETRO",
    "SKETCH_BW",
    "SKETCH_COLOR",
    "STOCK_PHOTO",
    "VIBRANT",
    "UNPROCESSED",
];
pub const SD_VERSIONS: &[&str] = &[
    "v1_5",
    "v2",
    "v3",
    "SDXL_0_8",
    "SDXL_0_9",
    "SDXL_1_0",
    "SDXL_LIGHTNING",
    "PHOENIX",
    "FLUX",
    "FLUX_DEV",
    "KINO_2_0",
];
pub const TRANSPARENCY_TYPES: &[&str] = &["disabled", "foreground_only"];
pub const CONTROLNET_TYPES: &[&str] = &["POSE", "CANNY", "DEPTH"];
pub const CANVAS_REQUEST_TYPES: &[&str] = &["INPAINT", "OUTPAINT", "SKETCH2IMG", "IMG2IMG"];
pub const CONTRAST_VALUES: &[f64] = &[1.0, 1.3, 1.8, 2.5, 3.0, 3.5, 4.0, 4.5];
pub const PHOTO_REAL_STRENGTHS: &[f64] = &[0.55, 0.5, 0.45];
pub const MAX_PROMPT_CHARS: usize = 1500;
pub const PHOTO_REAL_VERSIONS: &[&str] = &["v1", "v2"];
pub const PROMPT_MAGIC_VERSIONS: &[&str] = &["v2", "v3"];
/// The largest seed of a model (FLUX models: [`MAX_FLUX_SEED`]).
pub const MAX_SEED: u64 = 9_999_999_998;
pub const MAX_FLUX_SEED: u64 = 2_147_483_637;
