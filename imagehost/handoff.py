"""The messages on the Unix socket between twistd and one ``--workers`` process.

twistd (``imagehost.processes``) sends one byte with each connection's descriptor,
saying its address family; the worker (``imagehost.worker``) answers READY once, then
TAKEN per connection, before it reads from it.
"""

from __future__ import annotations

import socket

FAMILY_BY_MARKER = {b"4": socket.AF_INET, b"6": socket.AF_INET6, b"u": socket.AF_UNIX}
MARKER_BY_FAMILY = {family: marker for marker, family in FAMILY_BY_MARKER.items()}
READY = b"r"
TAKEN = b"t"  # sent before the worker reads from the connection
