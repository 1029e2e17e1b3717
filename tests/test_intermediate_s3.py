"""With S3 storage the intermediate is shared: a second daemon renders from it without
fetching or decoding the original, and deleting the image removes it from the bucket."""

from __future__ import annotations

import pytest_twisted

from tests.conftest import image_bytes
from tests.test_delivery import upload
from tests.test_intermediate_delivery import RED, intermediate_file, is_red, photo_webp
from tests.test_scaleout import bucket, eventually, keys, pair, s3_client, s3_endpoint

__all__ = ["bucket", "pair", "s3_endpoint"]  # fixtures used here


@pytest_twisted.ensureDeferred
async def test_with_s3_the_other_daemon_takes_it_from_the_bucket(pair, reactor):
    image_id = await upload(await pair.a.admin(), photo_webp())
    await pair.a.imagehost.delivery.rendered_ahead(image_id)
    shared = f"variants/{image_id}/i1-1536"
    await eventually(reactor, lambda: shared in keys(pair.endpoint, pair.bucket, "variants/"))
    # B never decodes the original: a red one in the bucket does not show.
    s3_client(pair.endpoint).put_object(
        Bucket=pair.bucket, Key=f"originals/{image_id[:2]}/{image_id[2:4]}/{image_id}.webp",
        Body=image_bytes("WEBP", size=(2200, 1650), color=RED))
    on_b = await pair.b.client.get(f"/image/{image_id}.jpg?w=400")
    assert on_b.code == 200 and not is_red(on_b.body)
    b = pair.b.imagehost.delivery
    assert (b.intermediates.made, b.intermediate_renders) == (0, 1)
    assert intermediate_file(pair.b, image_id).exists()  # kept in B's own cache
    deleted = await (await pair.b.admin()).request("DELETE", f"/api/image/{image_id}")
    assert deleted.code in (200, 204)
    assert not keys(pair.endpoint, pair.bucket, f"variants/{image_id}/")
