"""What twistd runs itself again as (``footprint.run_lean``):
``python -OO -X no_debug_ranges -m imagehost.lean_twistd TWISTD ARGS...``.

It is twistd (``twisted.scripts.twistd.run``) with one difference: its option parser
knows only the ``imagehost`` plugin instead of scanning every twistd plugin. The scan
imports each installed plugin and the interfaces its cache names (Twisted's trial with
``unittest`` and ``argparse``, words, cred's checkers), about 0.7 MB of twistd's idle
RSS, for a subcommand the first parse has already chosen: ``run_lean`` is only reached
from the imagehost plugin's own options, so the arguments name it.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run twistd on ``sys.argv[1:]`` (its own path first, then its arguments) with
    the imagehost plugin as its only subcommand."""
    from twisted.application import app
    from twisted.plugins.imagehost_plugin import imagehost
    from twisted.scripts import twistd

    class ImagehostServerOptions(twistd.ServerOptions):
        _getPlugins = staticmethod(lambda interface, package=None: [imagehost])

    sys.argv[:] = sys.argv[1:]
    app.run(twistd.runApp, ImagehostServerOptions)


if __name__ == "__main__":
    main()
