"""Start and stop the servers under test as real subprocesses on 127.0.0.1.

imagehost runs as ``twistd -n imagehost`` from this checkout, thumbor from its own
virtualenv (installed from PyPI on first use), and the ceiling as ``twistd -n web``
(a bare ``twisted.web.static.File``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THUMBOR_VERSION = "thumbor>=7,<8"
#: Left out of every server's environment: a machine that sets it (this sandbox does)
#: makes a ``-OO`` daemon compile every module from source at each start, as its
#: ``.opt-2.pyc`` caches are never written, while thumbor (no ``-O``) still loads the
#: caches pip wrote. Without it both run as on a default machine: Python writes the
#: caches on the first start, and a restart loads them (bench/README.md, "seventh pass").
NOT_INHERITED = ("PYTHONDONTWRITEBYTECODE",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess listening on ``port``; ``stop()`` ends it (and only it)."""

    def __init__(self, name: str, argv: list[str], port: int, log: Path,
                 env: dict[str, str] | None = None, ready_path: str = "/"):
        self.name = name
        self.port = port
        self.log = log
        with open(log, "ab") as out:
            inherited = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            env={**inherited, **(env or {})})
        self._wait_ready(ready_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log}")
            try:
                urllib.request.urlopen(self.base_url + path, timeout=2).read()
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start within {timeout}s; see {self.log}")

    def peak_rss(self) -> int:
        """VmHWM: the most resident memory since start or since ``reset_peak``, in bytes."""
        return _status_kb(self.pid, "VmHWM") * 1024

    def rss(self) -> int:
        return _status_kb(self.pid, "VmRSS") * 1024

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), of every process
        of the tree."""
        for pid in self.tree():
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def tree(self) -> list[int]:
        """This server's pid and those of its descendants (``--workers`` processes)."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    todo += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        return pids

    def tree_rss(self) -> int:
        """Resident memory of the whole process tree, in bytes."""
        return sum(_status_kb(pid, "VmRSS") for pid in self.tree()) * 1024

    def tree_peak_rss(self) -> int:
        """Sum of every process's VmHWM since ``reset_peak`` (an upper bound of the tree's
        peak: the processes need not peak at the same moment)."""
        return sum(_status_kb(pid, "VmHWM") for pid in self.tree()) * 1024

    def tree_pss(self) -> int:
        """Proportional set size of the whole tree, in bytes: each page shared by n
        processes counts 1/n in each (``/proc/PID/smaps_rollup``), so pages the processes
        share (the interpreter, shared libraries) are counted once, unlike in the RSS sum."""
        total = 0
        for pid in self.tree():
            try:
                total += smaps_kb(pid, "Pss")
            except FileNotFoundError:
                pass  # a child that ended since tree() listed it
        return total * 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def smaps_kb(pid: int, field: str) -> int:
    """A field of ``/proc/PID/smaps_rollup`` (Pss, Private_Dirty, ...), in kB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/smaps_rollup")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


# -- imagehost -------------------------------------------------------------------

def start_imagehost(data_dir: Path, logs: Path, repo: Path = REPO,
                    **settings: str) -> Server:
    """``twistd -n imagehost`` on a data dir as the README starts it (every other setting
    at its default: process count, access log through twistd's log), guest uploads on;
    extra ``section_key=value``. ``repo``: the checkout whose code runs (this one)."""
    port = free_port()
    env = {"PYTHONPATH": str(repo), "IMAGEHOST_ACCESS_ALLOW_GUEST_UPLOADS": "true",
           "IMAGEHOST_IMAGE_MAX_SIZE": "60000000",
           # The load generator is one client address: measure uploads, not the abuse limit.
           "IMAGEHOST_LIMITS_GUEST_UPLOADS_PER_MINUTE_PER_IP": "0"}
    env.update({f"IMAGEHOST_{key.upper()}": value for key, value in settings.items()})
    twistd = str(Path(sys.executable).with_name("twistd"))
    argv = [twistd, "-n", "--pidfile=", f"--logfile={logs / 'imagehost.log'}", "imagehost",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(data_dir)]
    return Server("imagehost", argv, port, logs / "imagehost.out", env, "/health")


def upload(base_url: str, path: Path) -> str:
    """Guest-upload one file; returns its id."""
    boundary = uuid.uuid4().hex
    body = multipart_body(boundary, path.name, path.read_bytes())
    request = urllib.request.Request(
        base_url + "/api/guest/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["id"]


def multipart_body(boundary: str, file_name: str, data: bytes) -> bytes:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode()


# -- thumbor ---------------------------------------------------------------------

def ensure_thumbor(venv: Path, log=print) -> Path:
    """A virtualenv with thumbor 7 from PyPI; returns its ``thumbor`` executable."""
    executable = venv / "bin" / "thumbor"
    if executable.exists():
        return executable
    log(f"installing {THUMBOR_VERSION} into {venv} (one time) ...")
    shutil.rmtree(venv, ignore_errors=True)
    # thumbor 7.8 supports CPython 3.9-3.13; use the interpreter running the benchmark.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    with open(venv.parent / "thumbor-install.log", "wb") as out:
        subprocess.run([*pip, THUMBOR_VERSION], check=True, stdout=out, stderr=out)
    return executable


def start_thumbor(executable: Path, image_root: Path, work: Path, threads: int,
                  result_storage: bool, extra: tuple[str, ...] = (),
                  name: str | None = None) -> Server:
    """thumbor with its file loader on ``image_root``; file result storage on or off;
    ``extra`` configuration lines; ``name`` of its config file (default by storage)."""
    port = free_port()
    name = name or ("cached" if result_storage else "uncached")
    conf = work / f"thumbor-{name}.conf"
    lines = [
        "LOADER = 'thumbor.loaders.file_loader'",
        f"FILE_LOADER_ROOT_PATH = {str(image_root)!r}",
        # Originals come from the file loader; a second copy in storage would only cost.
        "STORAGE = 'thumbor.storages.no_storage'",
        f"ENGINE_THREADPOOL_SIZE = {threads}",
        "ALLOW_UNSAFE_URL = True",
        "QUALITY = 80",
    ]
    if result_storage:
        lines += [
            "RESULT_STORAGE = 'thumbor.result_storages.file_storage'",
            f"RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {str(work / 'thumbor-results')!r}",
            "RESULT_STORAGE_STORES_UNSAFE = True",
            "RESULT_STORAGE_EXPIRATION_SECONDS = 0",
        ]
    conf.write_text("\n".join([*lines, *extra]) + "\n")
    argv = [str(executable), "--ip=127.0.0.1", f"--port={port}", f"--conf={conf}",
            "--log-level=warning"]
    return Server("thumbor", argv, port, work / f"thumbor-{name}.out",
                  ready_path="/healthcheck")


# -- the ceiling -----------------------------------------------------------------

def start_static(folder: Path, logs: Path) -> Server:
    """``twistd -n web --path folder``: a bare twisted.web.static.File."""
    port = free_port()
    twistd = str(Path(sys.executable).with_name("twistd"))
    argv = [twistd, "-n", "--pidfile=", f"--logfile={logs / 'static.log'}", "web",
            "--path", str(folder), "--listen", f"tcp:{port}:interface=127.0.0.1"]
    return Server("static", argv, port, logs / "static.out")
