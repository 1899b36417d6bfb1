"""Fake, deterministic text-to-image predictor for Easel's `cog` adapter tests.

Run without Docker (cog 0.23.1 = SDK + coglet, a Rust HTTP server):

    python3 -m venv /tmp/cogvenv && /tmp/cogvenv/bin/pip install -r tests/cog/requirements.txt
    mkdir -p /tmp/cogrun && cd /tmp/cogrun && \
    PATH=/tmp/cogvenv/bin:$PATH PORT=5055 \
    COG_PREDICT_TYPE_STUB=$REPO/tests/cog/predict.py:Predictor \
        python -m cog.server.http --host 127.0.0.1

* cog.yaml is NOT read by this server: the predictor comes from
  COG_PREDICT_TYPE_STUB (path relative to the cwd, or absolute), the port
  from $PORT (there is no --port flag), the host from --host (default 0.0.0.0).
* coglet spawns its worker as `python -c ...` looked up on $PATH, so the
  venv's bin/ must come first on PATH (else the worker dies with
  "No module named 'coglet'" and health stays STARTING forever).
* Importing this module writes `.cog/openapi_schema.json` into the cwd (see
  the end of the file); run from a scratch cwd, not from the repo.

Behaviour:
* Returns `num_outputs` PNG images of exactly `width` x `height`.
* Deterministic for (prompt, negative_prompt, seed, index): colours from a
  hash, diagonal stripes, and a box in a corner chosen by the index so that
  every image of a batch differs visibly.
* `seed` < 0 means random; the seed actually used is printed as
  "Using seed: N" (ends up in the prediction's `logs`) and recorded as the
  metric `seed` (ends up in the prediction's `metrics`, also on failure).
* `image` (init image: URL or data: URI) is resized to width x height and
  blended with the generated picture: prompt_strength 1.0 = ignore the image.
* Env hooks: FAKE_COG_SETUP_SLEEP=<seconds> slows setup() (health STARTING);
  FAKE_COG_SETUP_FAIL=1 makes setup() raise (health SETUP_FAILED).
* Prompt hooks: "FAIL" raises (after logging the seed);
  "SLEEP" sleeps 30 s in 0.1 s steps, logging once a second (cancelable);
  "CRASH" kills the worker process: that prediction fails with "Worker
  crashed", then the server stays up but UNHEALTHY and answers 409 forever.
"""

import hashlib
import os
import random
import tempfile
import time
from typing import List, Optional

from PIL import Image, ImageDraw

from cog import BasePredictor, Input, Path, current_scope

SCHEDULERS = ["DDIM", "K_EULER", "K_EULER_ANCESTRAL", "DPMSolverMultistep", "PNDM"]


def _digest(prompt: str, seed: int, index: int) -> bytes:
    return hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode("utf-8")).digest()


class Predictor(BasePredictor):
    def setup(self) -> None:
        # Hooks for readiness tests: slow setup (health STARTING) / failing setup (SETUP_FAILED).
        delay = float(os.environ.get("FAKE_COG_SETUP_SLEEP", "0") or 0)
        if delay > 0:
            print(f"setup: sleeping {delay} s")
            time.sleep(delay)
        if os.environ.get("FAKE_COG_SETUP_FAIL") == "1":
            raise RuntimeError("setup failed on purpose (FAKE_COG_SETUP_FAIL=1)")
        # One output dir per server process; file names are content-derived, so
        # repeated identical requests reuse the same files.
        self.out_dir = tempfile.mkdtemp(prefix="fake-t2i-")
        print("Fake text-to-image model loaded")

    def predict(
        self,
        prompt: str = Input(description="Text prompt"),
        negative_prompt: str = Input(description="What not to draw", default=""),
        width: int = Input(description="Output width in pixels", default=64, ge=8, le=2048),
        height: int = Input(description="Output height in pixels", default=64, ge=8, le=2048),
        num_outputs: int = Input(description="Number of images", default=1, ge=1, le=4),
        seed: int = Input(description="Random seed; -1 = random", default=-1),
        num_inference_steps: int = Input(description="Denoising steps", default=20, ge=1, le=500),
        guidance_scale: float = Input(description="CFG scale", default=7.5, ge=0.0, le=50.0),
        scheduler: Optional[str] = Input(description="Scheduler name", default=None, choices=SCHEDULERS),
        image: Optional[Path] = Input(description="Init image for img2img", default=None),
        prompt_strength: float = Input(
            description="Strength of the prompt when using an init image (1.0 = ignore image)",
            default=0.8,
            ge=0.0,
            le=1.0,
        ),
    ) -> List[Path]:
        if seed is None or seed < 0:
            seed = int.from_bytes(os.urandom(4), "big")
        print(f"Using seed: {seed}", flush=True)
        try:
            current_scope().record_metric("seed", seed)
        except Exception as e:  # metrics are best effort
            print(f"could not record seed metric: {e}")

        if "FAIL" in prompt:
            raise RuntimeError("Prediction failed on purpose: prompt contains FAIL")
        if "CRASH" in prompt:
            # Kill the worker process outright.
            print("CRASH hook: exiting worker process", flush=True)
            os._exit(17)
        if "SLEEP" in prompt:
            # Short sleeps so that a cancel (an exception coglet injects into this
            # thread, only raised between Python bytecodes) takes effect within ~0.1 s.
            print("SLEEP hook: sleeping 30 s", flush=True)
            deadline = time.monotonic() + 30
            next_log = time.monotonic() + 1
            while time.monotonic() < deadline:
                time.sleep(0.1)
                if time.monotonic() >= next_log:
                    print(f"sleeping... {int(deadline - time.monotonic())} s left", flush=True)
                    next_log += 1

        init = None
        if image is not None:
            init = Image.open(str(image)).convert("RGB").resize((width, height))
            print(f"Using init image {os.path.basename(str(image))} with prompt_strength={prompt_strength}")

        outputs: List[Path] = []
        for index in range(num_outputs):
            d = _digest(prompt + "\x00" + negative_prompt, seed, index)
            rng = random.Random(d)
            bg = (d[0], d[1], d[2])
            fg = (255 - d[0], 255 - d[1], 255 - d[2])
            img = Image.new("RGB", (width, height), bg)
            draw = ImageDraw.Draw(img)
            # Diagonal stripes whose spacing depends on the hash.
            step = 4 + d[3] % 12
            for off in range(-height, width, step * 2):
                draw.line([(off, 0), (off + height, height)], fill=fg, width=max(1, step // 2))
            # A box in a corner that depends on the output index (visibly different per image).
            bw, bh = max(2, width // 3), max(2, height // 3)
            x0 = (index % 2) * (width - bw)
            y0 = (index // 2) * (height - bh)
            draw.rectangle([x0, y0, x0 + bw - 1, y0 + bh - 1], fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
            if init is not None:
                img = Image.blend(init, img, prompt_strength)
            # Unique, content-derived name: with --upload-url coglet PUTs each file to
            # <upload-url><basename>, so fixed names would overwrite each other.
            path = os.path.join(self.out_dir, f"{d.hex()[:16]}-{index}.png")
            img.save(path, format="PNG")
            outputs.append(Path(path))
        print(
            f"Generated {num_outputs} image(s) {width}x{height} steps={num_inference_steps} "
            f"guidance={guidance_scale} scheduler={scheduler}",
            flush=True,
        )
        return outputs


# ---------------------------------------------------------------------------
# OpenAPI schema.
#
# coglet only validates inputs (HTTP 422), strips unknown fields and serves
# GET /openapi.json when `.cog/openapi_schema.json` exists in the server's
# working directory. `cog build` (the Go CLI, not on PyPI) normally writes it;
# here we build the same document (mirroring cog's pkg/schema/openapi.go) from
# cog's own inspector and write it when this module is imported by the worker
# (the worker imports the predictor before it looks for the schema file).
# Set COG_FAKE_NO_SCHEMA=1 to skip that and see coglet's schema-less mode.
# ---------------------------------------------------------------------------


def build_openapi_schema() -> dict:
    from cog import _adt as adt
    from cog import _inspector

    info = _inspector._create_predictor_info(
        __name__, "Predictor", Predictor.predict, "predict", True
    )
    properties, required, enums = {}, [], {}
    for name, field in info.inputs.items():
        prop: dict = {"x-order": field.order}
        if field.choices:
            enum_name = name.replace("_", " ").title().replace(" ", "")
            enums[enum_name] = {
                "title": enum_name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": field.type.primitive.json_type()["type"],
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{enum_name}"}]
        else:
            prop["title"] = name.replace("_", " ").title()
            prop.update(sorted(field.type.json_type().items()))
        optional = field.type.repetition in (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
        if field.default is None and not optional:
            required.append(name)
        if field.default is not None:
            prop["default"] = field.default
        if field.type.repetition is adt.Repetition.OPTIONAL:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = int(field.ge) if float(field.ge).is_integer() else field.ge
        if field.le is not None:
            prop["maximum"] = int(field.le) if float(field.le).is_integer() else field.le
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
        properties[name] = prop
    input_schema = {"title": "Input", "type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    ref = lambda n: {"$ref": f"#/components/schemas/{n}"}  # noqa: E731
    string = lambda t: {"title": t, "type": "string"}  # noqa: E731
    schemas = {"Input": input_schema, "Output": info.output.json_type(), **enums}
    schemas["PredictionRequest"] = {
        "title": "PredictionRequest",
        "type": "object",
        "properties": {"id": string("Id"), "input": ref("Input")},
    }
    schemas["PredictionResponse"] = {
        "title": "PredictionResponse",
        "type": "object",
        "properties": {
            "input": ref("Input"),
            "output": ref("Output"),
            "id": string("Id"),
            "version": string("Version"),
            "created_at": {**string("Created At"), "format": "date-time"},
            "started_at": {**string("Started At"), "format": "date-time"},
            "completed_at": {**string("Completed At"), "format": "date-time"},
            "status": string("Status"),
            "error": string("Error"),
            "logs": string("Logs"),
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }
    schemas["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    }
    ok = lambda s: {"description": "Successful Response", "content": {"application/json": {"schema": s}}}  # noqa: E731
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": ok({})}}},
            "/health-check": {
                "get": {"summary": "Healthcheck", "operationId": "healthcheck_health_check_get", "responses": {"200": ok({})}}
            },
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "description": "Run a single prediction on the model",
                    "operationId": "predict_predictions_post",
                    "requestBody": {"content": {"application/json": {"schema": ref("PredictionRequest")}}},
                    "responses": {"200": ok(ref("PredictionResponse"))},
                }
            },
            "/predictions/{prediction_id}/cancel": {
                "post": {
                    "summary": "Cancel",
                    "operationId": "cancel_predictions__prediction_id__cancel_post",
                    "parameters": [
                        {"required": True, "schema": string("Prediction Id"), "name": "prediction_id", "in": "path"}
                    ],
                    "responses": {"200": ok({})},
                }
            },
        },
        "components": {"schemas": schemas},
    }


def write_openapi_schema(directory: str = ".") -> str:
    import json

    path = os.path.join(directory, ".cog", "openapi_schema.json")
    text = json.dumps(build_openapi_schema(), indent=2) + "\n"
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    # `python predict.py [DIR]` writes DIR/.cog/openapi_schema.json (default: cwd).
    import sys

    print(write_openapi_schema(sys.argv[1] if len(sys.argv) > 1 else "."))
elif os.environ.get("COG_FAKE_NO_SCHEMA") != "1":
    write_openapi_schema(".")
