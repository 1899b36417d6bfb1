//! The operations of the official Leonardo SDKs that Easel does not serve. Each answers, after
//! authentication like every other route, 501 in the error shape with a message that names the
//! operation, instead of a 404 or 405 that reads like a wrong server URL.

use axum::routing::{MethodFilter, on};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, Paths};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;

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

/// Each operation is registered with its route and its entry in the OpenAPI document together.
pub fn router() -> OpenApiRouter<ApiContext> {
    let mut router = OpenApiRouter::new();
    for &(method, path, operation, what) in UNSUPPORTED {
        let (filter, http_method) = match method {
            "GET" => (MethodFilter::GET, HttpMethod::Get),
            "POST" => (MethodFilter::POST, HttpMethod::Post),
            "DELETE" => (MethodFilter::DELETE, HttpMethod::Delete),
            other => unreachable!("no unsupported operation uses {other}"),
        };
        let handler = move |_caller: Caller| async move {
            Err::<(), ApiError>(ApiError::NotSupported(format!(
                "{operation} ({method} {path}) is not supported by this server: Easel does not serve {what}. \
                 The operations it serves are listed in its README"
            )))
        };
        let paths = Paths::builder().path(path, PathItem::new(http_method, document(path, operation, what))).build();
        router = router.routes((Vec::new(), paths, on(filter, handler)));
    }
    router
}

/// The document's entry for an operation Easel does not serve: it answers 501, after
/// authentication; its path parameters are any text.
fn document(path: &str, operation: &str, what: &str) -> utoipa::openapi::path::Operation {
    let parameters = path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}')).map(|name| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(utoipa::openapi::Required::True)
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build()
    });
    let error = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    OperationBuilder::new()
        .operation_id(Some(operation))
        .tags(Some(["unsupported"]))
        .summary(Some(format!("Not served: Easel does not serve {what}")))
        .parameters(Some(parameters))
        .security(SecurityRequirement::new(super::openapi::BEARER, Vec::<String>::new()))
        .response(
            "501",
            ResponseBuilder::new()
                .description(format!("{operation} is not supported by this server (code `not-supported`)"))
                .content("application/json", error)
                .build(),
        )
        .build()
}
