"""The built package: twistd finds the plugin from an installed (non-editable) copy."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed with pip (not editable) into a fresh folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        check=True, cwd=target)
    return target


def run_installed(target: Path, code: str) -> str:
    """Run Python with only the installed copy (not the checkout) importable."""
    result = subprocess.run([sys.executable, "-c", code], cwd=target, capture_output=True,
                            text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_installed_package_provides_the_twistd_plugin(installed):
    assert (installed / "twisted" / "plugins" / "imagehost_plugin.py").is_file()
    assert not (installed / "twisted" / "__init__.py").exists()
    assert not (installed / "twisted" / "plugins" / "__init__.py").exists()
    out = run_installed(installed, (
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "import imagehost\n"
        "print(imagehost.__file__)\n"
        "print(sorted(p.tapname for p in getPlugins(IServiceMaker)))\n"))
    module_file, plugins = out.splitlines()
    assert module_file.startswith(str(installed))
    assert "'imagehost'" in plugins


def test_installed_twistd_lists_imagehost_and_its_options(installed):
    help_text = run_installed(installed, (
        "import sys\nsys.argv = ['twistd', 'imagehost', '--help']\n"
        "from twisted.scripts.twistd import run\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"))
    for option in ("--listen", "--data-dir", "--config"):
        assert option in help_text


def test_installed_package_ships_migrations_and_the_cli(installed):
    versions = installed / "imagehost" / "db" / "migrations" / "versions"
    assert (versions / "0001_initial.py").is_file()
    assert (installed / "imagehost" / "db" / "alembic.ini").is_file()
    assert (installed / "imagehost_cli").is_dir()
    assert not (installed / "cli").exists()


def test_installed_package_ships_the_web_pages_templates_and_static_files(installed):
    web = installed / "imagehost" / "web"
    for name in ("base.html", "upload.html", "image.html", "account.html", "admin.html",
                 "error.html"):
        assert (web / "templates" / name).is_file(), name
    assert (web / "static" / "app.css").is_file() and (web / "static" / "app.js").is_file()
