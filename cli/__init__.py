"""The ``imagehost`` operator CLI, installed as the ``imagehost_cli`` package.

The folder is called ``cli/`` in the checkout; setup.cfg maps it to the import name
``imagehost_cli`` (``package_dir``) so that no generic top-level ``cli`` module is
installed. Modules here import each other as ``imagehost_cli.<module>``.
"""
