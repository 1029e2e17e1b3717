"""What a daemon process imports: leaving out the TLS libraries a configuration does not need.

Twisted imports pyOpenSSL, and with it cryptography, as soon as the reactor or
``twisted.internet.endpoints`` is imported, if they are installed (treq installs them),
whether or not a TLS endpoint is used; PyJWT imports cryptography for its asymmetric
algorithms. Together they are about 13 MB of every process's idle RSS (bench/README.md,
"Idle RSS per process"). Both import them only if they can, and go without otherwise:
the reactor then has no ``listenSSL``, PyJWT only the HMAC algorithms.

This module is the one place that keeps them out: ``leave_out_tls`` marks them as not
importable (a ``None`` entry in ``sys.modules``, which Python's import system defines to
mean exactly that) in a process that has not yet imported the reactor and whose
configuration needs neither TLS listeners nor an asymmetric JWT algorithm.
``tests/test_footprint.py`` checks both sides with a real twistd.

For the same reason, libraries that only some requests need are imported where they are
first used, not at module level: the multipart parser and the BlurHash encoder (with
cffi) on the first upload, filetype on the first refused one, Pillow's ImageCms (with
LittleCMS) on the first source with an embedded ICC profile, Jinja2 on the first page,
pillow_heif on the first HEIF source. Together about 1.5 MB of every process's idle RSS.
"""

from __future__ import annotations

import sys

from imagehost.config import Config

#: The modules that are left out, and what imports them optionally.
TLS_LIBRARIES = ("OpenSSL", "cryptography")  # Twisted's TLS; PyJWT's RSA/EC/EdDSA

#: Endpoint types that need no TLS library; anything else (``ssl:``, an endpoint plugin)
#: keeps them, as it may.
PLAIN_ENDPOINTS = ("tcp", "tcp6", "unix")


def needs_tls(config: Config) -> bool:
    """Whether ``config`` may need pyOpenSSL or cryptography: a listener other than plain
    tcp or unix, or a JWT algorithm other than HMAC (HS256/384/512)."""
    plain = all(e.split(":", 1)[0].strip().lower() in PLAIN_ENDPOINTS
                for e in config.server.listen)
    return not plain or not config.auth.jwt_algorithm.upper().startswith("HS")


def leave_out_tls(config: Config) -> bool:
    """Unless ``config`` needs them, make importing pyOpenSSL and cryptography fail from now
    on in this process. True if they are left out.

    Does nothing in a process that has already imported the reactor (Twisted decided then,
    and the libraries are loaded) or any of them (a test process, ``twistd --reactor``).
    """
    if needs_tls(config) or "twisted.internet.reactor" in sys.modules or any(
            name in sys.modules for name in TLS_LIBRARIES):
        return False
    for name in TLS_LIBRARIES:
        sys.modules[name] = None
    return True
