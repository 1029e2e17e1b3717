"""Originals and shared variants in an S3-compatible bucket (AWS, MinIO, Ceph, R2, ...).

boto3 blocks, so every method here runs on an I/O-pool thread. A boto3 client is safe to
share between threads (a Session is not), so one client serves all of them. Retries use
botocore's "standard" mode: every call here is idempotent (a PUT of a key replaces it
whole, a DELETE of a missing key succeeds), so retrying one is always safe.

Layout: ``<originals_prefix><id[0:2]>/<id[2:4]>/<id>.<ext>`` and
``<variants_prefix><id>/<variant key>`` (one prefix per image, so deleting an image's
variants is one listing). A PUT is atomic: readers see the old object or the whole new one.
This daemon's variant cache (the first level) stays on local disk, in ``cache_root``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imagehost.storage.errors import StorageUnavailable
from imagehost.storage.files import sweep_temp_files
from imagehost.storage.interface import StoredObject, original_name

_MISSING = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes


@dataclass(frozen=True)
class S3Settings:
    """Where the bucket is and how to reach it ([storage] s3_* keys)."""

    bucket: str
    endpoint_url: str = ""
    region: str = ""
    access_key: str = ""
    secret_key: str = ""
    path_style: bool = False
    originals_prefix: str = "originals/"
    variants_prefix: str = "variants/"


def s3_client(settings: S3Settings, max_connections: int = 10):
    """A boto3 S3 client; empty credentials mean boto3's usual chain (env, profile, role)."""
    options = dict(
        retries={"mode": "standard", "max_attempts": 4},
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        connect_timeout=5, read_timeout=30, max_pool_connections=max_connections)
    try:
        # botocore >= 1.36 adds CRC checksums to every upload by default, which several
        # S3-compatible stores reject; send them only where the API requires one.
        config = BotoConfig(**options, request_checksum_calculation="when_required",
                            response_checksum_validation="when_required")
    except TypeError:
        config = BotoConfig(**options)
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint_url or None, region_name=settings.region or None,
        aws_access_key_id=settings.access_key or None,
        aws_secret_access_key=settings.secret_key or None, config=config)


class S3Storage:
    """Originals and shared variants in one bucket; the variant cache in ``cache_root``."""

    def __init__(self, cache_root: Path, settings: S3Settings, max_connections: int = 10):
        self.cache = Path(cache_root)
        self.settings = settings
        self.bucket = settings.bucket
        self._client = s3_client(settings, max_connections)

    def prepare(self, sweep: bool = True) -> None:
        """Create the local cache folder and (``sweep``) remove temp files left by a crash."""
        self.cache.mkdir(parents=True, exist_ok=True)
        if sweep:
            sweep_temp_files(self.cache)

    def variants_dir(self, image_id: str) -> Path:
        """The local folder holding this daemon's cached variants of one image."""
        return self.cache / image_id[0:2] / image_id

    def original_key(self, image_id: str, ext: str) -> str:
        return (f"{self.settings.originals_prefix}{image_id[0:2]}/{image_id[2:4]}/"
                f"{image_id}.{ext}")

    def original_location(self, image_id: str, ext: str) -> str:
        """The original's key in the bucket (as listings give it)."""
        return self.original_key(image_id, ext)

    def variant_key(self, image_id: str, key: str) -> str:
        return f"{self._variants_of(image_id)}{key}"

    def _variants_of(self, image_id: str) -> str:
        return f"{self.settings.variants_prefix}{image_id}/"

    # -- originals --

    def put_original(self, image_id: str, ext: str, data: bytes) -> None:
        """Upload an original (one PUT: atomic)."""
        self._call("store the original", self._client.put_object, Bucket=self.bucket,
                   Key=self.original_key(image_id, ext), Body=data)

    def local_original(self, image_id: str, ext: str) -> None:
        """Originals are not on local disk: read them with ``read_original``."""
        return None

    def read_original(self, image_id: str, ext: str) -> bytes:
        """The original's bytes; FileNotFoundError if the object is gone."""
        return self._get("read the original", self.original_key(image_id, ext))

    def delete_original(self, image_id: str, ext: str) -> None:
        """Remove an original; a missing object is not an error."""
        self._call("delete the original", self._client.delete_object, Bucket=self.bucket,
                   Key=self.original_key(image_id, ext))

    # -- shared variants --

    def get_variant(self, image_id: str, key: str) -> bytes | None:
        """A variant another daemon (or this one) rendered, or None."""
        try:
            return self._get("read a variant", self.variant_key(image_id, key))
        except FileNotFoundError:
            return None

    def put_variant(self, image_id: str, key: str, data: bytes) -> None:
        """Share a rendered variant with the other daemons."""
        self._call("store a variant", self._client.put_object, Bucket=self.bucket,
                   Key=self.variant_key(image_id, key), Body=data)

    def delete_variants(self, image_id: str) -> None:
        """Remove an image's variants: this daemon's cached files and the shared objects."""
        shutil.rmtree(self.variants_dir(image_id), ignore_errors=True)
        keys = self._listed(self._variants_of(image_id))
        for start in range(0, len(keys), _DELETE_BATCH):
            objects = [{"Key": key} for key in keys[start:start + _DELETE_BATCH]]
            self._call("delete variants", self._client.delete_objects, Bucket=self.bucket,
                       Delete={"Objects": objects, "Quiet": True})

    # -- listings, for garbage collection --

    def stored_originals(self) -> Iterator[StoredObject]:
        """Every original object, with or without a record."""
        for obj in self._objects("list originals", self.settings.originals_prefix):
            parsed = original_name(obj["Key"].rpartition("/")[2])
            if parsed is not None:
                yield StoredObject(*parsed, obj["Size"], obj["LastModified"].timestamp(),
                                   obj["Key"])

    def shared_variants(self) -> Iterator[StoredObject]:
        """Every shared variant object (one per image and variant)."""
        prefix = self.settings.variants_prefix
        for obj in self._objects("list variants", prefix):
            image_id = obj["Key"][len(prefix):].partition("/")[0]
            yield StoredObject(image_id, "", obj["Size"], obj["LastModified"].timestamp(),
                               obj["Key"])

    def _objects(self, what: str, prefix: str) -> list[dict]:
        def pages():
            paginator = self._client.get_paginator("list_objects_v2")
            return [obj for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for obj in page.get("Contents", ())]
        return self._call(what, pages)

    def _listed(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in self._objects("list variants", prefix)]

    def is_healthy(self) -> bool:
        """The local cache folder is writable and the bucket answers."""
        if not (self.cache.is_dir() and os.access(self.cache, os.W_OK)):
            return False
        try:
            self._call("reach the bucket", self._client.head_bucket, Bucket=self.bucket)
        except StorageUnavailable:
            return False
        return True

    # -- errors --

    def _get(self, what: str, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with response["Body"] as body:
                return body.read()
        return self._call(what, read)

    def _call(self, what: str, fn, *args, **kwargs):
        """Call boto3; a missing object becomes FileNotFoundError, anything else from the
        store becomes StorageUnavailable with a sentence saying what failed."""
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "error"))
            if code in _MISSING:
                raise FileNotFoundError(f"s3://{self.bucket}: no such object") from e
            raise StorageUnavailable(
                f"The image store could not {what} (bucket {self.bucket!r}: {code}); "
                "retry shortly.") from e
        except BotoCoreError as e:
            raise StorageUnavailable(
                f"The image store cannot be reached to {what} ({type(e).__name__}); "
                "retry shortly.") from e
