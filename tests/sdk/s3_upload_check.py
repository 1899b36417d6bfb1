"""The init image upload flow through the official Python SDK when Easel's storage is an
S3-compatible bucket: the policy names the bucket, the file goes straight there, and a
generation starts from it. Run by `init_images::the_python_sdk_uploads_straight_to_the_bucket`
with EASEL_URL, EASEL_KEY and S3_ENDPOINT set; the helpers are python_sdk_check's."""

import os

from leonardo_ai_sdk import LeonardoAiSDK

from python_sdk_check import BASE, KEY, check, checked, download, png, policy_fields, upload, wait_for

S3_ENDPOINT = os.environ["S3_ENDPOINT"]


def main():
    with LeonardoAiSDK(bearer_auth=KEY, server_url=f"{BASE}/api/rest/v1", timeout_ms=30_000) as leo:
        policy = checked(leo.init_images.upload_init_image(request={"extension": "png"}), "uploadInitImage")
        policy = policy.upload_init_image
        check(policy.url.startswith(S3_ENDPOINT), f"uploadInitImage: {policy.url} is not the bucket")
        fields = policy_fields(policy.fields, policy.key, "uploadInitImage")
        check(fields.get("x-amz-algorithm") == "AWS4-HMAC-SHA256", f"uploadInitImage: not a SigV4 policy: {fields}")
        picture = png(64, 64, (20, 20, 230))
        status, body = upload(policy.url, fields, picture)
        check(200 <= status < 300, f"upload to the bucket: status {status}: {body}")

        found = checked(leo.init_images.get_init_image_by_id(id=policy.id), "getInitImageById").init_images_by_pk
        check(download(found.url, "init image", "image/png") == picture, "the bucket does not hold the upload")
        job = checked(
            leo.image.create_generation(
                request={"prompt": "p", "width": 64, "height": 64, "num_images": 1, "init_image_id": policy.id,
                         "init_strength": 0.9}
            ),
            "createGeneration",
        ).sd_generation_job
        done = wait_for(
            lambda: checked(leo.image.get_generation_by_id(id=job.generation_id), "getGenerationById").generations_by_pk,
            lambda g: g.status.value != "PENDING",
            "image-to-image from the bucket",
        )
        check(done.status.value == "COMPLETE", f"image-to-image from the bucket: {done.status}")
    print("s3 upload check passed")


if __name__ == "__main__":
    main()
