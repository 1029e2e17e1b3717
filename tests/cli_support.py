"""Import the checkout's ``cli/`` folder under its installed name, ``imagehost_cli``.

setup.cfg installs ``cli/`` as the package ``imagehost_cli``. Tests import ``imagehost``
from the checkout, so they take the CLI from the same checkout (never from a possibly
older installed copy): the folder is registered as ``imagehost_cli`` before any test
imports it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import imagehost

CHECKOUT_CLI = Path(imagehost.__file__).resolve().parent.parent / "cli"


def register_checkout_cli() -> None:
    """Make ``import imagehost_cli`` load ``cli/`` next to the imported ``imagehost``."""
    if "imagehost_cli" in sys.modules or not (CHECKOUT_CLI / "__init__.py").is_file():
        return
    spec = importlib.util.spec_from_file_location(
        "imagehost_cli", CHECKOUT_CLI / "__init__.py",
        submodule_search_locations=[str(CHECKOUT_CLI)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["imagehost_cli"] = module
    spec.loader.exec_module(module)


register_checkout_cli()
