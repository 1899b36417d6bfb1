"""Makes one generation with the official Leonardo Python SDK and prints it as JSON.

Run by the Rust tests of the inference backends (`tests/it/backends.rs`), which start Easel with a
backend and pass EASEL_URL, EASEL_KEY, MODEL_ID, PROMPT, WIDTH, HEIGHT, NUM_IMAGES and (optionally)
INIT_IMAGE_ID and INIT_STRENGTH. Waits until the generation leaves PENDING (up to WAIT_SECONDS) and
prints `{"id", "status", "seed", "width", "height", "images": [{"id", "url"}]}` on stdout.
"""

import json
import os
import sys
import time

from leonardo_ai_sdk import LeonardoAiSDK

BASE = os.environ["EASEL_URL"]
KEY = os.environ["EASEL_KEY"]


def main():
    request = {
        "prompt": os.environ["PROMPT"],
        "modelId": os.environ["MODEL_ID"],
        "width": int(os.environ.get("WIDTH", "64")),
        "height": int(os.environ.get("HEIGHT", "64")),
        "num_images": int(os.environ.get("NUM_IMAGES", "1")),
        "num_inference_steps": 10,
        "guidance_scale": int(os.environ.get("GUIDANCE", "1")),
    }
    if os.environ.get("SEED"):
        request["seed"] = int(os.environ["SEED"])
    if os.environ.get("INIT_IMAGE_ID"):
        request["init_generation_image_id"] = os.environ["INIT_IMAGE_ID"]
        request["init_strength"] = float(os.environ.get("INIT_STRENGTH", "0.5"))
    deadline = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "120"))
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1", timeout_ms=30_000) as leo:
        created = leo.image.create_generation(request=request)
        generation_id = created.object.sd_generation_job.generation_id
        while True:
            generation = leo.image.get_generation_by_id(id=generation_id).object.generations_by_pk
            if generation.status.value != "PENDING":
                break
            if time.monotonic() > deadline:
                print(f"generation {generation_id} still PENDING", file=sys.stderr)
                sys.exit(1)
            time.sleep(0.2)
    print(
        json.dumps(
            {
                "id": generation.id,
                "status": generation.status.value,
                "seed": generation.seed,
                "width": generation.image_width,
                "height": generation.image_height,
                "images": [{"id": image.id, "url": image.url} for image in generation.generated_images],
            }
        )
    )


if __name__ == "__main__":
    main()
