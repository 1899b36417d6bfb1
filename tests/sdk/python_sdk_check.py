"""Drives Easel with the official Leonardo Python SDK (leonardo-ai-sdk, pinned in requirements.txt).

Run by the Rust test `sdk::the_official_python_sdk_works_against_easel`, which starts Easel and
passes EASEL_URL (http://host:port), EASEL_KEY and EASEL_USER_ID. Exits non-zero with a message on
the first failed check.

Besides the calls themselves, every parsed response is compared with the raw JSON: the Python SDK
silently replaces a nested object that fails validation with `Unset` (a missing `generationId`, a
vanished `generations_by_pk`), so each key the SDK's model knows must come back set.
"""

import json
import os
import struct
import sys
import time
import warnings
import zlib

import httpx
from leonardo_ai_sdk import LeonardoAiSDK
from leonardo_ai_sdk.models import errors
from leonardo_ai_sdk.types import BaseModel
from leonardo_ai_sdk.types.basemodel import Unset

BASE = os.environ["EASEL_URL"]
KEY = os.environ["EASEL_KEY"]
USER_ID = os.environ["EASEL_USER_ID"]
SDK_DEFAULT_MODEL = "b24e16ff-06e3-43eb-8d33-4416c2d75876"

# The SDK marks apiCreditCost deprecated; reading it is part of the check.
warnings.simplefilter("ignore", DeprecationWarning)


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def assert_nothing_dropped(model, raw, where):
    """Every key of `raw` that the SDK model declares must be set on the parsed model."""
    check(isinstance(model, BaseModel), f"{where}: parsed to {type(model).__name__}, not a model (dropped?)")
    check(isinstance(raw, dict), f"{where}: raw value is not an object")
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        if key not in raw:
            continue
        value = getattr(model, name)
        check(not isinstance(value, Unset), f"{where}.{key}: sent {raw[key]!r} but the SDK dropped it")
        if raw[key] is None:
            continue
        if isinstance(value, BaseModel):
            assert_nothing_dropped(value, raw[key], f"{where}.{key}")
        elif isinstance(value, list):
            check(len(value) == len(raw[key]), f"{where}.{key}: list length changed")
            for index, (item, raw_item) in enumerate(zip(value, raw[key])):
                if isinstance(item, BaseModel) or isinstance(raw_item, dict):
                    assert_nothing_dropped(item, raw_item, f"{where}.{key}[{index}]")


def checked(response, where):
    """The response's parsed object, after checking status, content type and every field."""
    check(response.status_code == 200, f"{where}: status {response.status_code}")
    check(response.content_type.startswith("application/json"), f"{where}: content type {response.content_type}")
    check(response.object is not None, f"{where}: no parsed body")
    assert_nothing_dropped(response.object, response.raw_response.json(), where)
    return response.object


MAGIC = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}


def download(url, where, content_type="image/jpeg"):
    """The bytes at `url`, which must be served as `content_type` and start like one."""
    reply = httpx.get(url, timeout=30)
    check(reply.status_code == 200, f"{where}: GET {url} -> {reply.status_code}")
    served = reply.headers.get("content-type")
    check(served == content_type, f"{where}: content type {served}, not {content_type}")
    check(reply.content.startswith(MAGIC[content_type]), f"{where}: not an {content_type} file")
    return reply.content


def download_jpeg(url, where):
    return download(url, where)


def png(width, height, rgb):
    """A minimal valid PNG, written by hand: one colour, 8-bit RGB, every row unfiltered."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + bytes(rgb) * width) * height
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def policy_fields(fields, key, where):
    """The form fields of an upload policy, sent as one JSON string; their `key` is the policy's."""
    check(isinstance(fields, str), f"{where}: fields {fields!r} is not a JSON string")
    try:
        decoded = json.loads(fields)
    except ValueError as error:
        fail(f"{where}: fields is not JSON ({error}): {fields!r}")
    check(isinstance(decoded, dict), f"{where}: fields {fields!r} is not a JSON object")
    check(all(isinstance(v, str) for v in decoded.values()), f"{where}: fields {fields!r} are not all strings")
    check(decoded.get("key") == key, f"{where}: key {key!r} but fields.key {decoded.get('key')!r}")
    return decoded


def upload(url, fields, file):
    """POSTs every policy field and then the `file` part to `url` as multipart/form-data, with
    no key (the policy is the authorization); the status and body of the answer."""
    reply = httpx.post(url, data=fields, files={"file": ("init.png", file, "image/png")}, timeout=30)
    return reply.status_code, reply.text


def wait_for(fetch, done, where, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            fail(f"{where}: not finished within {timeout}s")
        time.sleep(0.1)


def main():
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1", timeout_ms=30_000) as leo:
        me = checked(leo.user.get_user_self(), "getUserSelf")
        details = me.user_details[0]
        check(details.user.id == USER_ID, f"getUserSelf: user id {details.user.id}")
        check(isinstance(details.api_concurrency_slots, int), "getUserSelf: apiConcurrencySlots")

        models = checked(leo.models.list_platform_models(), "listPlatformModels")
        ids = [m.id for m in models.custom_models]
        check(SDK_DEFAULT_MODEL in ids, f"listPlatformModels: the SDK default model is missing from {ids}")

        created = checked(
            leo.image.create_generation(
                request={"prompt": "An oil painting of a cat", "width": 512, "height": 512, "num_images": 2}
            ),
            "createGeneration",
        )
        job = created.sd_generation_job
        check(job is not None and isinstance(job.generation_id, str), "createGeneration: no generationId")
        check(isinstance(job.api_credit_cost, int), "createGeneration: apiCreditCost")
        check(isinstance(job.cost.amount, str), "createGeneration: cost.amount")
        generation_id = job.generation_id

        def fetch_generation():
            return checked(leo.image.get_generation_by_id(id=generation_id), "getGenerationById").generations_by_pk

        generation = wait_for(fetch_generation, lambda g: g is not None and g.status.value != "PENDING", "generation")
        check(generation.status.value == "COMPLETE", f"generation status {generation.status}")
        check(generation.id == generation_id, "getGenerationById: id")
        check(isinstance(generation.seed, int), "getGenerationById: seed")
        check((generation.image_width, generation.image_height) == (512, 512), "getGenerationById: size")
        check(len(generation.generated_images) == 2, f"{len(generation.generated_images)} images")
        for image in generation.generated_images:
            check(image.url.startswith(f"{BASE}/cdn/"), f"image url {image.url}")
            download_jpeg(image.url, "generated image")

        listed = checked(
            leo.image.get_generations_by_user_id(user_id=USER_ID, limit=10, offset=0), "getGenerationsByUserId"
        )
        check(generation_id in [g.id for g in listed.generations], "getGenerationsByUserId: generation not listed")

        upscale = checked(
            leo.variation.create_variation_upscale(request={"id": generation.generated_images[0].id}),
            "createVariationUpscale",
        )
        variation_id = upscale.sd_upscale_job.id
        check(isinstance(variation_id, str), "createVariationUpscale: id")

        def fetch_variation():
            body = checked(leo.variation.get_variation_by_id(id=variation_id), "getVariationById")
            return body.generated_image_variation_generic

        variation = wait_for(fetch_variation, lambda v: v and v[0].status.value != "PENDING", "upscale")[0]
        check(variation.status.value == "COMPLETE", f"upscale status {variation.status}")
        check(variation.transform_type.value == "UPSCALE", "upscale transformType")
        download_jpeg(variation.url, "upscaled image")

        # Background removal, unzoom of its result (isVariation) and the universal upscaler.
        image_id = generation.generated_images[0].id
        nobg = checked(leo.variation.create_variation_no_bg(request={"id": image_id}), "createVariationNoBG")
        nobg_done = wait_for(
            lambda: checked(leo.variation.get_variation_by_id(id=nobg.sd_nobg_job.id), "getVariationById")
            .generated_image_variation_generic,
            lambda v: v and v[0].status.value != "PENDING",
            "nobg",
        )[0]
        check(nobg_done.transform_type.value == "NOBG", f"nobg transformType {nobg_done.transform_type}")
        check(nobg_done.url.endswith(".png"), f"nobg url {nobg_done.url}")
        unzoom = checked(
            leo.variation.create_variation_unzoom(request={"id": nobg.sd_nobg_job.id, "isVariation": True}),
            "createVariationUnzoom",
        )
        check(unzoom.sd_unzoom_job.api_credit_cost == 1, "createVariationUnzoom: apiCreditCost")
        universal = checked(
            leo.variation.create_universal_upscaler_job(
                request={"generatedImageId": image_id, "upscaleMultiplier": 1.5, "upscalerStyle": "GENERAL"}
            ),
            "CreateUniversalUpscalerJob",
        )
        for job_id, kind in [(unzoom.sd_unzoom_job.id, "UNZOOM"), (universal.universal_upscaler.id, "UPSCALE")]:
            done = wait_for(
                lambda: checked(leo.variation.get_variation_by_id(id=job_id), "getVariationById")
                .generated_image_variation_generic,
                lambda v: v and v[0].status.value != "PENDING",
                kind,
            )[0]
            check(done.status.value == "COMPLETE" and done.transform_type.value == kind, f"{kind}: {done}")
            download_jpeg(done.url, f"{kind} image")

        deleted = checked(leo.image.delete_generation_by_id(id=generation_id), "deleteGenerationById")
        check(deleted.delete_generations_by_pk.id == generation_id, "deleteGenerationById: id")
        gone = leo.image.get_generation_by_id(id=generation_id)
        check(gone.object.generations_by_pk is None, "deleted generation still readable")

    # Models by id: every catalogue model, in the SDK's shape; null for an unknown id.
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1") as leo:
        found = checked(leo.models.get_model_by_id(id=SDK_DEFAULT_MODEL), "getModelById").custom_models_by_pk
        check(found is not None and found.id == SDK_DEFAULT_MODEL, "getModelById: the SDK's default model")
        check(found.sd_version.value == "SDXL_LIGHTNING", f"getModelById: sdVersion {found.sd_version}")
        missing = leo.models.get_model_by_id(id="3f1c0a52-0000-4000-8000-000000000001").object
        check(missing.custom_models_by_pk is None, "getModelById: unknown id")

    # Elements from the configuration; Easel trains no models or elements, so user lists are empty.
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1") as leo:
        loras = checked(leo.elements.list_elements(), "listElements").loras
        check([l.ak_uuid for l in loras] == ["9f0d2c1e-5b7a-4e3c-8d21-6a4b3c2d1e0f"], f"listElements: {loras}")
        check(loras[0].base_model.value == "SDXL_1_0" and loras[0].weight_default == 1, f"listElements: {loras[0]}")
        mine = checked(leo.elements.get_custom_elements_by_user_id(user_id=USER_ID), "getCustomElementsByUserId")
        check(mine.user_loras == [], f"getCustomElementsByUserId: {mine}")
        element = leo.elements.get_element_by_id(id=1).object
        check(element.user_loras_by_pk is None, f"getElementById: {element}")
        models = checked(leo.models.get_custom_models_by_user_id(user_id=USER_ID), "getCustomModelsByUserId")
        check(models.custom_models == [], f"getCustomModelsByUserId: {models}")

    # The pricing calculator agrees with the apiCreditCost of a real job.
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1") as leo:
        for width, height, count in [(512, 512, 2), (1024, 768, 4), (64, 64, 1)]:
            priced = checked(
                leo.pricing_calculator.pricing_calculator(
                    request={
                        "service": "IMAGE_GENERATION",
                        "serviceParams": {
                            "IMAGE_GENERATION": {"imageWidth": width, "imageHeight": height, "numImages": count}
                        },
                    }
                ),
                "pricingCalculator",
            )
            created = checked(
                leo.image.create_generation(
                    request={"prompt": "priced", "width": width, "height": height, "num_images": count}
                ),
                "createGeneration",
            )
            cost = priced.calculate_production_api_service_cost.cost
            check(cost == created.sd_generation_job.api_credit_cost, f"pricing {cost} != apiCreditCost at {width}x{height}x{count}")

    # Init images: a presigned upload policy, the upload itself (plain multipart to the policy's
    # URL, no key), image-to-image from it, one upload per policy, canvas pairs, deletion.
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1", timeout_ms=30_000) as leo:
        policy = checked(
            leo.init_images.upload_init_image(request={"extension": "png"}), "uploadInitImage"
        ).upload_init_image
        check(policy is not None, "uploadInitImage: uploadInitImage is null")
        check(isinstance(policy.id, str) and isinstance(policy.url, str), f"uploadInitImage: {policy}")
        init_id = policy.id
        fields = policy_fields(policy.fields, policy.key, "uploadInitImage")
        check(fields.get("Content-Type") == "image/png", f"uploadInitImage: Content-Type field {fields}")
        picture = png(64, 64, (220, 20, 20))
        status, body = upload(policy.url, fields, picture)
        check(status == 204, f"upload to {policy.url}: status {status}: {body}")

        found = checked(leo.init_images.get_init_image_by_id(id=init_id), "getInitImageById").init_images_by_pk
        check(found is not None and found.id == init_id, f"getInitImageById: {found}")
        check(isinstance(found.created_at, str) and found.created_at, f"getInitImageById: createdAt {found.created_at!r}")
        check(download(found.url, "init image", "image/png") == picture, "init image: the download is not the upload")

        img2img = checked(
            leo.image.create_generation(
                request={
                    "prompt": "a blue sky over green hills",
                    "width": 64,
                    "height": 64,
                    "num_images": 1,
                    "init_image_id": init_id,
                    "init_strength": 0.5,
                }
            ),
            "createGeneration (init_image_id)",
        ).sd_generation_job
        check(img2img is not None and isinstance(img2img.generation_id, str), "createGeneration (init_image_id): no generationId")
        from_upload = wait_for(
            lambda: checked(
                leo.image.get_generation_by_id(id=img2img.generation_id), "getGenerationById (init_image_id)"
            ).generations_by_pk,
            lambda g: g is not None and g.status.value != "PENDING",
            "image-to-image generation",
        )
        check(from_upload.status.value == "COMPLETE", f"image-to-image generation: status {from_upload.status}")
        check(from_upload.init_strength == 0.5, f"image-to-image generation: initStrength {from_upload.init_strength}")
        check(len(from_upload.generated_images) == 1, f"image-to-image generation: {len(from_upload.generated_images)} images")
        download_jpeg(from_upload.generated_images[0].url, "image-to-image result")

        status, body = upload(policy.url, fields, picture)
        check(status == 403, f"second upload to the same policy: status {status}, not 403: {body}")
        check("already used" in body, f"second upload to the same policy: body {body}")

        pair = checked(
            leo.init_images.upload_canvas_init_image(request={"initExtension": "png", "maskExtension": "png"}),
            "uploadCanvasInitImage",
        ).upload_canvas_init_image
        check(pair is not None, "uploadCanvasInitImage: uploadCanvasInitImage is null")
        check(pair.init_image_id != pair.mask_image_id, f"uploadCanvasInitImage: one id for both halves: {pair}")
        for side, image_id, url, key, side_fields in [
            ("init", pair.init_image_id, pair.init_url, pair.init_key, pair.init_fields),
            ("mask", pair.mask_image_id, pair.mask_url, pair.mask_key, pair.mask_fields),
        ]:
            where = f"uploadCanvasInitImage ({side})"
            check(isinstance(image_id, str) and isinstance(url, str), f"{where}: id {image_id!r}, url {url!r}")
            decoded = policy_fields(side_fields, key, where)
            status, body = upload(url, decoded, png(32, 32, (200, 200, 200)))
            check(status == 204, f"{where}: upload to {url}: status {status}: {body}")

        deleted = checked(leo.init_images.delete_init_image_by_id(id=init_id), "deleteInitImageById")
        check(
            deleted.delete_init_images_by_pk is not None and deleted.delete_init_images_by_pk.id == init_id,
            f"deleteInitImageById: {deleted}",
        )
        again = checked(leo.init_images.delete_init_image_by_id(id=init_id), "deleteInitImageById (again)")
        check(again.delete_init_images_by_pk is None, f"deleteInitImageById (again): {again}")
        gone = checked(leo.init_images.get_init_image_by_id(id=init_id), "getInitImageById (deleted)")
        check(gone.init_images_by_pk is None, f"getInitImageById (deleted): {gone}")

    # An operation Easel does not serve says so by name (501 in the error shape).
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1") as leo:
        try:
            leo.dataset.get_dataset_by_id(id="3f1c0a52-0000-4000-8000-000000000001")
            fail("getDatasetById: an unserved operation answered 2xx")
        except errors.SDKError as error:
            check(error.status_code == 501, f"getDatasetById: status {error.status_code}")
            check("getDatasetById" in error.body and "not supported" in error.body, f"getDatasetById: body {error.body}")

    # The prompt tools (built in).
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1") as leo:
        random = checked(leo.prompt.prompt_random(), "promptRandom").prompt_generation
        check(len(random.prompt) > 20, f"promptRandom: {random.prompt!r}")
        improved = checked(
            leo.prompt.prompt_improve(request={"prompt": "a cat", "promptInstructions": "make it cosy"}),
            "promptImprove",
        ).prompt_generation
        check(improved.prompt.startswith("a cat, ") and improved.prompt.endswith("make it cosy"), f"promptImprove: {improved.prompt!r}")

    with LeonardoAiSDK(bearer_auth="not-a-key", server_url=f"{BASE}/api/rest/v1") as stranger:
        try:
            stranger.user.get_user_self()
            fail("a wrong key was accepted")
        except errors.SDKError as error:
            check(error.status_code == 401, f"wrong key: status {error.status_code}")
            check('"path":"$"' in error.body, f"wrong key: body {error.body}")

    print("python SDK check passed")


if __name__ == "__main__":
    main()
