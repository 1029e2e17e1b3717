"""What twistd runs itself again as (``footprint.run_lean``):
``python -OO -X no_debug_ranges -m imagehost.lean_twistd TWISTD ARGS...``.

It is twistd (``twisted.scripts.twistd.run``) with one difference: its option parser
knows only the ``imagehost`` plugin instead of scanning every twistd plugin. The scan
imports each installed plugin and the interfaces its cache names (Twisted's trial with
``unittest`` and ``argparse``, words, cred's checkers), about 0.7 MB of twistd's idle
RSS, for a subcommand the first parse has already chosen: ``run_lean`` is only reached
from the imagehost plugin's own options, so the arguments name it.

``pdb``, which ``twisted.application.app`` imports at module level for ``--debug``
alone, is a stand-in that imports the real one on its first attribute access, so only
under ``--debug``: ``pdb`` and what it imports (``bdb``, ``cmd``, ``code``, ``codeop``,
``glob``) are about 0.3 MB of twistd's idle RSS otherwise. (``importlib.util.LazyLoader``
cannot do it: the next ``import pdb`` reads the module's ``__spec__``, which loads it.)
"""

from __future__ import annotations

import importlib
import sys
import types

#: Standard-library modules twistd imports at module level but uses only under options
#: the imagehost daemon is rarely run with (``--debug``).
ON_FIRST_USE = ("pdb",)


class _ImportedOnFirstUse(types.ModuleType):
    """Stands in ``sys.modules`` for a module until one of its attributes is read; then
    imports the real module (which takes its place there) and answers from it. Its
    ``__spec__`` is None, so a later ``import`` takes it as loaded without reading more."""

    def __getattr__(self, attribute: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attribute)


def import_on_first_use(name: str) -> None:
    """Unless it is imported already, make ``import name`` give a stand-in that imports
    the module on its first attribute access."""
    if name not in sys.modules:
        sys.modules[name] = _ImportedOnFirstUse(name)


def main() -> None:
    """Run twistd on ``sys.argv[1:]`` (its own path first, then its arguments) with
    the imagehost plugin as its only subcommand."""
    for name in ON_FIRST_USE:
        import_on_first_use(name)
    from twisted.application import app
    from twisted.scripts import twistd

    from twisted.plugins.imagehost_plugin import imagehost

    class ImagehostServerOptions(twistd.ServerOptions):
        _getPlugins = staticmethod(lambda interface, package=None: [imagehost])

    sys.argv[:] = sys.argv[1:]
    app.run(twistd.runApp, ImagehostServerOptions)


if __name__ == "__main__":
    main()
