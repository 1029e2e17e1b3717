"""Blob storage for originals and rendered variants.

``Storage`` (``interface``) is what the services need; ``LocalStorage`` (``local``) keeps
everything in the data directory, ``S3Storage`` (``s3``, needs boto3) keeps originals and
shared variants in an S3-compatible bucket. Both keep this daemon's variant cache (the
fast first level, see ``imagehost.service.variant_cache``) in ``<data_dir>/cache``. Every
method that may touch the disk or the network blocks: call it on the I/O pool,
never on the reactor. Failures are ``errors.StorageError``s (or ``FileNotFoundError``
for a missing original); this package knows nothing of the service layer or HTTP.
"""

from imagehost.storage.errors import StorageError, StorageUnavailable
from imagehost.storage.files import TEMP_PREFIX, atomic_write, sweep_temp_files
from imagehost.storage.interface import Storage, StoredObject, original_name
from imagehost.storage.local import LocalStorage

__all__ = [
    "TEMP_PREFIX",
    "LocalStorage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredObject",
    "atomic_write",
    "original_name",
    "sweep_temp_files",
]
