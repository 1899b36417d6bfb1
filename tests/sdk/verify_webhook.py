"""Verifies a captured Easel callback with the official Standard Webhooks library (standardwebhooks,
pinned in requirements.txt). Run by the Rust test `sdk::callbacks_verify_with_the_standard_webhooks_library`.

Environment: SIGNING_SECRET (whsec_...), WEBHOOK_HEADERS (JSON object of the request's headers),
WEBHOOK_BODY_FILE (the raw body). Exits non-zero on the first failed check.
"""

import json
import os
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    secret = os.environ["SIGNING_SECRET"]
    headers = json.loads(os.environ["WEBHOOK_HEADERS"])
    with open(os.environ["WEBHOOK_BODY_FILE"], "rb") as file:
        body = file.read()

    payload = Webhook(secret).verify(body, headers)
    if payload.get("type") != "image_generation.complete":
        sys.exit(f"FAILED: unexpected payload type {payload.get('type')!r}")

    for name, tampered_body, tampered_headers in [
        ("a changed body", body.replace(b"COMPLETE", b"FAILED_"), headers),
        ("another webhook-id", body, {**headers, "webhook-id": headers["webhook-id"] + "x"}),
        ("another timestamp", body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}),
    ]:
        try:
            Webhook(secret).verify(tampered_body, tampered_headers)
        except WebhookVerificationError:
            continue
        sys.exit(f"FAILED: the signature still verified with {name}")

    try:
        Webhook("whsec_" + "A" * 43 + "=").verify(body, headers)
        sys.exit("FAILED: the signature verified under another secret")
    except WebhookVerificationError:
        pass
    print("signature verified")


if __name__ == "__main__":
    main()
