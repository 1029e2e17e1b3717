"""Keeping the library safe: ``imagehost verify`` on the data directory and on S3."""

from __future__ import annotations

import os
import time

import pytest_twisted

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes, start_server
from tests.test_cli import local_cli
from tests.test_scaleout import bucket, keys, s3_client, s3_endpoint, s3_sections, upload

__all__ = ["bucket", "s3_endpoint"]  # fixtures used here


async def three_images(server) -> list[str]:
    admin = await server.admin()
    return [await upload(admin, image_bytes("PNG", color=(c, 2, 3))) for c in (10, 20, 30)]


def problems(report: dict) -> dict[str, list[str]]:
    return {kind: [p["imageId"] for p in report[kind]]
            for kind in ("missing", "corrupt", "unrecorded")}


# -- verify -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_verify_finds_a_flipped_byte_a_missing_file_and_a_stray_file(server):
    from imagehost.storage import LocalStorage

    storage = LocalStorage(server.data_dir)
    flipped, gone, fine = await three_images(server)
    cli = local_cli(server)
    clean = await cli.json("verify")
    assert (clean["clean"], clean["checked"], clean["recorded"]) == (True, 3, 3)
    assert problems(clean) == {"missing": [], "corrupt": [], "unrecorded": []}
    assert (await cli.ok("verify")).stdout.startswith("Checked 3 of 3 originals")

    path = storage.original_path(flipped, "png")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    storage.original_path(gone, "png").unlink()
    stray, fresh = "e5" + "0" * 34, "f6" + "0" * 34
    for image_id in (stray, fresh):
        storage.put_original(image_id, "png", image_bytes("PNG"))
    an_hour_ago = time.time() - 3700
    os.utime(storage.original_path(stray, "png"), (an_hour_ago, an_hour_ago))

    report = await cli.json("verify", code=1)
    assert report["clean"] is False and report["checked"] == 3
    assert problems(report) == {"missing": [gone], "corrupt": [flipped], "unrecorded": [stray]}
    corrupt = report["corrupt"][0]
    assert corrupt["path"] == f"originals/{flipped[0:2]}/{flipped[2:4]}/{flipped}.png"
    assert corrupt["expected"] != corrupt["actual"] and len(corrupt["actual"]) == 64
    # An upload in flight (a file a moment old) is unrecorded only without a grace period.
    recent = await cli.json("verify", "--older-than", "0", code=1)
    assert sorted(problems(recent)["unrecorded"]) == [stray, fresh]

    human = await cli("verify")
    assert human.exit_code == 1 and "Traceback" not in human.output
    for image_id in (flipped, gone, stray):
        assert image_id in human.stdout
    assert "1 missing, 1 corrupt, 1 unrecorded" in " ".join(human.stdout.split())
    assert human.stderr.strip().splitlines()[-1] == (
        "Error: 3 problems found in 3 originals checked (listed above).")
    assert fine not in human.stdout


@pytest_twisted.ensureDeferred
async def test_local_commands_leave_the_daemons_writes_in_flight_alone(server):
    # An upload's original is a temp file until it is renamed into place; a command run
    # beside the daemon used to sweep it away, and the upload failed with a 500.
    in_flight = server.data_dir / "originals" / "ab" / "cd" / ".tmp-upload"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"half an upload")
    await local_cli(server).json("verify")
    await local_cli(server).json("user", "list")
    assert in_flight.read_bytes() == b"half an upload"


@pytest_twisted.ensureDeferred
async def test_verify_sample_checks_a_random_subset(server):
    await three_images(server)
    cli = local_cli(server)
    report = await cli.json("verify", "--sample", "2")
    assert (report["checked"], report["recorded"], report["sample"]) == (2, 3, 2)
    assert (await cli.json("verify", "--sample", "10"))["checked"] == 3
    assert "--sample" in await cli.fails("verify", "--sample", "0", code=2)


@pytest_twisted.ensureDeferred
async def test_verify_on_s3_finds_a_flipped_byte_a_missing_object_and_a_stray(
        tmp_path, reactor, s3_endpoint, bucket):
    server = await start_server(tmp_path, reactor, s3_sections(s3_endpoint, bucket))
    try:
        flipped, gone, fine = await three_images(server)
        cli = local_cli(server)
        assert (await cli.json("verify"))["clean"] is True
        s3 = s3_client(s3_endpoint)
        key = f"originals/{flipped[0:2]}/{flipped[2:4]}/{flipped}.png"
        data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[-5] ^= 0x80
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
        s3.delete_object(Bucket=bucket, Key=f"originals/{gone[0:2]}/{gone[2:4]}/{gone}.png")
        stray = "e5" + "0" * 34
        s3.put_object(Bucket=bucket, Key=f"originals/e5/00/{stray}.png", Body=b"stray")
        assert len(keys(s3_endpoint, bucket, "originals/")) == 3

        # Objects cannot be backdated: the grace period is tested on local disk.
        report = await cli.json("verify", "--older-than", "0", code=1)
        assert report["store"] == f"s3://{bucket}"
        assert problems(report) == {"missing": [gone], "corrupt": [flipped],
                                    "unrecorded": [stray]}
        assert report["corrupt"][0]["path"] == key
        assert fine not in str(report)
    finally:
        await server.service.stopService()
