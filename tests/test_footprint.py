"""What a default daemon loads: a real twistd process on an installation that exists.

Every process reports the modules it loads (``PYTHONVERBOSE``, which the workers inherit:
``import 'name' # loader`` once a module is loaded, nothing for an import that fails, unlike
``-X importtime``) into the one log twistd and its workers write.
"""

import datetime
import io
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

from imagehost.assembly import database_revision
from imagehost.config import load_config
from imagehost.db import HEAD_REVISION
from tests.conftest import image_bytes
from tests.test_daemon import REPO, free_port, stop_cleanly, wait_for_health
from tests.test_imaging_render import swapped_primaries_profile

# Optional extras and one-off tools: boto3 only with S3 storage, Alembic only to migrate.
NOT_FOR_A_DEFAULT_DAEMON = ("boto3", "botocore", "alembic", "mako")
# Imported only when needed (imagehost.footprint): TLS listeners or an asymmetric JWT
# algorithm; the templates on the first page; the multipart parser and the BlurHash
# encoder on the first upload, filetype for the first refused one, PyJWT with the first
# access token.
NOT_AT_IDLE = (*NOT_FOR_A_DEFAULT_DAEMON, "OpenSSL", "cryptography", "jinja2", "multipart",
               "blurhash", "filetype", "jwt")
# Pillow's colour management, on the first source with an embedded ICC profile.
PIL_NOT_AT_IDLE = ("PIL.ImageCms",)
# The CLI's backup, verify and gc: no daemon process runs them.
CLI_ONLY = ("imagehost.service.backup", "imagehost.service.integrity",
            "imagehost.service.collector")


def started_daemon(tmp_path, log, *listen: str, workers: int = 1,
                   env: dict | None = None) -> subprocess.Popen:
    listeners = [arg for endpoint in listen for arg in ("--listen", endpoint)]
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "imagehost", "--workers", str(workers), *listeners,
         "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ACCESS_ALLOW_GUEST_UPLOADS="true",
                 PYTHONVERBOSE="1", **(env or {})))


def test_a_default_daemon_imports_neither_boto3_nor_alembic(tmp_path):
    port = free_port()
    log_path = tmp_path / "twistd.log"
    listen = f"tcp:{port}:interface=127.0.0.1"
    with log_path.open("wb") as log:
        first = started_daemon(tmp_path, log, listen)
        wait_for_health(f"http://127.0.0.1:{port}")
        migrating = imports(stop_cleanly(first, log_path))
        # The first start creates and migrates the database in a child process: twistd
        # does not keep Alembic.
        assert "sqlalchemy" in migrating and "alembic" not in migrating
        assert database_revision(load_config(None, overrides={
            ("server", "data_dir"): str(tmp_path / "data")})) == HEAD_REVISION
        log.truncate(0)
        log.seek(0)
        # Two processes, as workers = auto starts on two cores: twistd and one worker.
        daemon = started_daemon(tmp_path, log, listen, workers=2)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_health(base)
            wait_for_line(log_path, "imagehost worker 1 (pid")
            idle = loads(log_path.read_text())
            image_id = upload(base, image_bytes("JPEG", (640, 480)))
            for path in (f"/image/{image_id}.webp?w=100", f"/image/{image_id}.jpg"):
                get(base + path)
            serving_images = imports(log_path.read_text())
            # What loads on first use still works: a refused upload names what it got, a
            # source in a foreign colour space is converted to sRGB.
            status, refusal = post_upload(base, b"%PDF-1.4\n" + bytes(64))
            assert status == 422 and "application/pdf" in json.dumps(refusal["error"])
            profiled = upload(base, image_bytes("PNG", (64, 48), (255, 0, 0),
                                                icc_profile=swapped_primaries_profile()))
            assert rendered_pixel(base + f"/image/{profiled}.png?w=32") == (0, 255, 0)
            used_once = imports(log_path.read_text())
            for _ in range(2):  # one page from each process (connections go in turn)
                get(base + "/")
        finally:
            text = stop_cleanly(daemon, log_path)
    assert idle.count("imagehost.assembly") == 2  # twistd and the worker
    assert top_level(idle) & set(NOT_AT_IDLE) == set()
    assert set(idle) & set(PIL_NOT_AT_IDLE) == set()
    assert "imagehost.web.api" in serving_images and "PIL.WebPImagePlugin" in serving_images
    assert {"multipart", "blurhash"} <= top_level(serving_images)  # the upload
    assert top_level(serving_images) & (set(NOT_AT_IDLE) - {"multipart", "blurhash"}) == set()
    assert serving_images & set(PIL_NOT_AT_IDLE) == set()  # no ICC profile yet
    assert {"filetype", *PIL_NOT_AT_IDLE} <= used_once
    imported = imports(text)
    assert "jinja2" in imported  # the first page loads the templates
    assert top_level(imported) & set(NOT_FOR_A_DEFAULT_DAEMON) == set()
    assert top_level(imported) & {"OpenSSL", "cryptography"} == set()
    assert imported & set(CLI_ONLY) == set()
    # Each process, once serving, leaves its start-up heap out of garbage collection.
    frozen = dict(re.findall(r"imagehost (twistd|worker 1) \(pid \d+\): (\d+) start-up "
                             r"objects left out of garbage collection", text))
    assert frozen.keys() == {"twistd", "worker 1"}, text[-3000:]
    assert all(int(n) > 50_000 for n in frozen.values()), frozen


def test_a_postgresql_daemon_does_not_load_sqlite3(tmp_path, postgres):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "twistd.log"
    with postgres.database() as url, log_path.open("wb") as log:
        env = {"IMAGEHOST_DATABASE_URL": url}
        first = started_daemon(tmp_path, log, f"tcp:{port}:interface=127.0.0.1", env=env)
        wait_for_health(base)
        stop_cleanly(first, log_path)
        log.truncate(0)
        log.seek(0)
        daemon = started_daemon(tmp_path, log, f"tcp:{port}:interface=127.0.0.1", workers=2,
                                env=env)
        try:
            wait_for_health(base)
            wait_for_line(log_path, "imagehost worker 1 (pid")
            image_id = upload(base, image_bytes("JPEG", (64, 48)))
            get(base + f"/image/{image_id}.png?w=32")
        finally:
            text = stop_cleanly(daemon, log_path)
    imported = top_level(imports(text))
    assert "psycopg" in imported and "sqlite3" not in imported


def test_the_twistd_script_serves_without_the_plugin_scan(tmp_path):
    """The installed ``twistd`` scans every twistd plugin to parse its options, then runs
    itself again as ``imagehost.lean_twistd``, which knows only ours: ``unittest`` and
    ``argparse`` (from Twisted trial's plugin) stay out of the process that serves."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "twistd.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "imagehost",
             "--workers", "2", "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONVERBOSE="1",
                     IMAGEHOST_ACCESS_ALLOW_GUEST_UPLOADS="true"))
        try:
            wait_for_health(base)
            wait_for_line(log_path, "imagehost worker 1 (pid")
            image_id = upload(base, image_bytes("JPEG", (640, 480)))
            for path in ("/", f"/image/{image_id}.webp?w=100"):
                get(base + path)
        finally:
            text = stop_cleanly(daemon, log_path)
    # Where the new interpreter reads imagehost/lean_twistd.py (its source or cached code).
    first, lean = text.split("lean_twistd", 1)
    assert {"unittest", "argparse", "twisted.trial"} <= imports(first)  # the scan, before
    assert imports(lean) & {"unittest", "argparse", "twisted.trial"} == set()
    assert imports(lean) & {"pdb", "bdb", "cmd"} == set()  # only with --debug
    assert "imagehost.web.api" in imports(lean)


def test_a_module_imported_on_first_use_is_the_real_one_once_read():
    """``pdb`` in lean twistd: ``import pdb`` gives the stand-in, reading an attribute
    imports the real module, which then takes the stand-in's place."""
    probe = (
        "import sys\n"
        "from imagehost.lean_twistd import import_on_first_use\n"
        "import_on_first_use('pdb')\n"
        "import pdb\n"
        "before = 'bdb' in sys.modules\n"
        "debugger = pdb.Pdb\n"
        "import pdb as again\n"
        "print(before, 'bdb' in sys.modules, debugger.__module__, again is sys.modules['pdb'],"
        " hasattr(again, 'post_mortem'), type(again).__name__)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
    assert out.split() == ["False", "True", "pdb", "True", "True", "module"]


def test_a_tls_listener_loads_the_tls_libraries_and_serves(tmp_path):
    key, cert = self_signed_certificate(tmp_path)
    port, tls_port = free_port(), free_port()
    log_path = tmp_path / "twistd.log"
    with log_path.open("wb") as log:
        daemon = started_daemon(tmp_path, log, f"tcp:{port}:interface=127.0.0.1",
                                f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:"
                                f"certKey={cert}")
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            context = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(f"https://127.0.0.1:{tls_port}/health", timeout=10,
                                        context=context) as response:
                assert response.status == 200
        finally:
            text = stop_cleanly(daemon, log_path)
    assert {"OpenSSL", "cryptography"} <= top_level(imports(text))


def self_signed_certificate(folder):
    """A key and a certificate for 127.0.0.1 (made with cryptography, which pyOpenSSL needs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(private, hashes.SHA256()))
    key, cert = folder / "key.pem", folder / "cert.pem"
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


def wait_for_line(log_path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {log_path.read_text()}"
        time.sleep(0.1)


def get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200


def top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def loads(log: str) -> list[str]:
    """The modules the processes loaded, once per process that loaded each (once twistd and
    a worker log their standard error, a line carries the log's time and system first)."""
    return re.findall(r"^(?:\S+ \[stderr#error\] )?import '([^']+)' # ", log, re.M)


def imports(log: str) -> set[str]:
    return set(loads(log))


def upload(base: str, data: bytes) -> str:
    status, answer = post_upload(base, data)
    assert status == 201, answer
    return answer["id"]


def post_upload(base: str, data: bytes) -> tuple[int, dict]:
    """A guest upload of ``data``: the status and the JSON answer."""
    boundary = "imagehost-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + (
        f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        base + "/api/guest/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def rendered_pixel(url: str) -> tuple[int, ...]:
    """The top left pixel of the image at ``url``, as RGB."""
    with urllib.request.urlopen(url, timeout=20) as response:
        assert response.status == 200
        return Image.open(io.BytesIO(response.read())).convert("RGB").getpixel((0, 0))


def test_what_needs_the_tls_libraries():
    from imagehost.config import load_config
    from imagehost.footprint import needs_tls

    def config(listen, algorithm="HS256"):
        return load_config(None, overrides={("server", "listen"): listen,
                                            ("auth", "jwt_algorithm"): algorithm})

    assert not needs_tls(config(["tcp:8080", "tcp6:8081", "unix:/run/imagehost.sock"]))
    assert needs_tls(config(["tcp:8080", "ssl:8443:privateKey=key.pem"]))
    assert needs_tls(config(["systemd:domain=INET:index=0"]))  # not known to be plain: kept
    assert needs_tls(config(["tcp:8080"], algorithm="RS256"))
    assert not needs_tls(config(["tcp:8080"], algorithm="HS512"))
