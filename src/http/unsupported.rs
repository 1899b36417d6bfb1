//! The operations of the official Leonardo SDKs that Easel does not serve. Each answers, after
//! authentication like every other route, 501 in the error shape with a message that names the
//! operation, instead of a 404 or 405 that reads like a wrong server URL.

use axum::Router;
use axum::routing::{MethodFilter, on};

use super::ApiContext;
use super::error::ApiError;
use super::extract::Caller;

/// (method, path, the SDKs' operation id, what it is) of every operation not served.
pub const UNSUPPORTED: &[(&str, &str, &str, &str)] = &[
    ("POST", "/blueprint-executions", "executeBlueprint", "blueprints"),
    ("GET", "/blueprint-executions/{id}", "getBlueprintExecution", "blueprints"),
    ("GET", "/blueprint-executions/{id}/generations", "getBlueprintExecutionGenerations", "blueprints"),
    ("GET", "/blueprints", "listBlueprints", "blueprints"),
    ("GET", "/blueprints/{id}", "getBlueprintById", "blueprints"),
    ("GET", "/blueprints/{id}/versions", "getBlueprintVersionsByBlueprintId", "blueprints"),
    ("POST", "/datasets", "createDataset", "datasets (model training)"),
    ("POST", "/datasets/{datasetId}/upload", "uploadDatasetImage", "datasets (model training)"),
    ("POST", "/datasets/{datasetId}/upload/gen", "uploadDatasetImageFromGen", "datasets (model training)"),
    ("GET", "/datasets/{id}", "getDatasetById", "datasets (model training)"),
    ("DELETE", "/datasets/{id}", "deleteDatasetById", "datasets (model training)"),
    ("POST", "/elements", "createElement", "element training"),
    ("DELETE", "/elements/{id}", "deleteElementById", "element training"),
    ("POST", "/generations-image-to-video", "createImageToVideoGeneration", "video"),
    ("POST", "/generations-lcm", "createLCMGeneration", "realtime canvas (LCM)"),
    ("POST", "/generations-motion-svd", "createSVDMotionGeneration", "video"),
    ("POST", "/generations-text-to-video", "createTextToVideoGeneration", "video"),
    ("POST", "/generations-texture", "createTextureGeneration", "textures"),
    ("GET", "/generations-texture/model/{modelId}", "getTextureGenerationsByModelId", "textures"),
    ("GET", "/generations-texture/{id}", "getTextureGenerationById", "textures"),
    ("DELETE", "/generations-texture/{id}", "deleteTextureGenerationById", "textures"),
    ("POST", "/generations-video-upscale", "createVideoUpscale", "video"),
    ("POST", "/lcm-inpainting", "performInpaintingLCM", "realtime canvas (LCM)"),
    ("POST", "/lcm-instant-refine", "performInstantRefine", "realtime canvas (LCM)"),
    ("POST", "/lcm-upscale", "performAlchemyUpscaleLCM", "realtime canvas (LCM)"),
    ("POST", "/models", "createModel", "model training"),
    ("POST", "/models-3d/upload", "uploadModelAsset", "3D models"),
    ("GET", "/models-3d/user/{userId}", "get3DModelsByUserId", "3D models"),
    ("GET", "/models-3d/{id}", "get3DModelById", "3D models"),
    ("DELETE", "/models-3d/{id}", "delete3DModelById", "3D models"),
    ("DELETE", "/models/{id}", "deleteModelById", "model training"),
    ("GET", "/motion-variations/{id}", "getMotionVariationById", "video"),
];

pub fn router() -> Router<ApiContext> {
    let mut router = Router::new();
    for &(method, path, operation, what) in UNSUPPORTED {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "DELETE" => MethodFilter::DELETE,
            other => unreachable!("no unsupported operation uses {other}"),
        };
        let handler = move |_caller: Caller| async move {
            Err::<(), ApiError>(ApiError::NotSupported(format!(
                "{operation} ({method} {path}) is not supported by this server: Easel does not serve {what}. \
                 The operations it serves are listed in its README"
            )))
        };
        router = router.route(path, on(filter, handler));
    }
    router
}
