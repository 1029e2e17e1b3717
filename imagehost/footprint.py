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

Every process runs without docstrings and asserts (``-OO``) and without the column
ranges of traceback lines: the workers are started so, and twistd starts itself again
so (``run_lean``) once its options are parsed, which is after ``--help`` has printed
the option help that twistd makes of docstrings. It starts again as
``imagehost.lean_twistd``, which is twistd knowing only the imagehost plugin: the scan of
every installed twistd plugin imports ``unittest`` and ``argparse`` among others.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from imagehost.config import KEEP_INTERPRETER_ENV, Config

#: The modules that are left out, and what imports them optionally.
TLS_LIBRARIES = ("OpenSSL", "cryptography")  # Twisted's TLS; PyJWT's RSA/EC/EdDSA

#: How every daemon process's interpreter runs: without docstrings and asserts (``-OO``;
#: docstrings alone are about 3.4 MB of a process's idle RSS, half of them SQLAlchemy's
#: and Twisted's) and without the column ranges of traceback lines (0.3-0.6 MB). Nothing
#: the daemon runs after its options are parsed reads a docstring or needs an assert to
#: be correct. bench/README.md has the measurements.
LEAN_INTERPRETER_OPTIONS = ("-OO", "-X", "no_debug_ranges")

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


def freeze_startup_heap(process: str) -> int:
    """Collect garbage once, then leave every object alive now out of all later
    collections (``gc.freeze``); logs and returns how many objects that is. ``process``
    names this process in the log line.

    Called in every daemon process once it serves. A full collection walks every tracked
    object, and the process serves nothing meanwhile: a daemon that has just started
    holds about 80,000 to 100,000 of them (modules, classes, the object graph), and one
    collection of them took 65 ms here, more than the 50 ms a cached hit may wait
    (bench/README.md, "eighth pass"). They live as long as the process, so a collection
    that scans them finds nothing to free.
    """
    from twisted.logger import Logger

    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    Logger().info("{process} (pid {pid}): {n} start-up objects left out of garbage "
                  "collection", process=process, pid=os.getpid(), n=frozen)
    return frozen


def run_lean() -> None:
    """Unless it already does, run this twistd again, in place (same process id, same
    arguments and environment), with ``LEAN_INTERPRETER_OPTIONS`` and as
    ``imagehost.lean_twistd`` (twistd without its plugin scan); returns only when it
    does not: not started as ``twistd`` or ``python -m twisted`` (a test, an embedding
    program), already lean, or ``IMAGEHOST_KEEP_INTERPRETER`` set.

    Called once the options are parsed and checked, before anything is opened, listened
    on or written: the new interpreter parses them again and goes on from there.
    """
    if sys.flags.optimize >= 2 or os.environ.get(KEEP_INTERPRETER_ENV) or not _started_as_twistd():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *LEAN_INTERPRETER_OPTIONS,
                              "-m", "imagehost.lean_twistd", *sys.argv])


def _started_as_twistd() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return Path(sys.argv[0]).name == "twistd" or (spec is not None and spec.name in (
        "twisted", "twisted.__main__"))
