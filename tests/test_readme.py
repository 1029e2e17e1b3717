"""The README as a first-time operator follows it: links that exist, the quick start in
the order it is used, and a login one-liner that says why a login failed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.conftest import ADMIN

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DOCUMENTS = [REPO / "README.md", REPO / "bench" / "README.md",
             *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_into_the_repository(document):
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (document.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO) and path.exists(), f"{document.name}: {target}"
    # A path written as code that climbs out of the checkout names nothing a clone has.
    assert not re.findall(r"`\.\./[^`]*`", document.read_text()), document.name


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.DOTALL)


def test_quick_start_runs_the_server_then_uses_it_then_the_tests():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = code_blocks(quick_start)
    assert "twistd -n imagehost --listen tcp:8080:interface=127.0.0.1" in blocks[0]
    assert "curl" in blocks[1] and "tox" not in blocks[1]
    assert blocks[-1].strip().endswith(".venv/bin/tox")
    between = quick_start.split(blocks[0], 1)[1].split(blocks[1], 1)[0]
    assert "in another terminal" in between
    assert "all interfaces" in between
    assert ".venv/bin/imagehost" in quick_start


def login_command() -> str:
    first = code_blocks(README.split("## Quick start", 1)[1])[1]
    return re.search(r"^TOKEN=\$\(.*?\)\)'\)$", first, re.MULTILINE | re.DOTALL).group(0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest_twisted.ensureDeferred
async def test_the_login_one_liner_prints_the_servers_message_on_a_wrong_password(server):
    from twisted.internet.threads import deferToThread

    port = server.base_url.rsplit(":", 1)[1]
    command = login_command().replace("localhost:8080", f"127.0.0.1:{port}") \
        .replace('"admin"', f'"{ADMIN[0]}"')

    def run(password: str) -> subprocess.CompletedProcess:
        script = command.replace("change-me", password) + '\necho "token=$TOKEN"'
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              timeout=30, check=False)

    wrong = await deferToThread(run, "not-the-password")
    assert wrong.stderr == "Invalid credentials.\n"
    assert wrong.stdout == "token=\n"
    right = await deferToThread(run, ADMIN[1])
    assert right.stderr == "" and re.fullmatch(r"token=\S{20,}\n", right.stdout)


def test_twistd_files_are_git_ignored():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert {"twistd.pid", "twistd.log"} <= set(ignored)
