"""``atomic_write``: a file appears whole or not at all, and a failed write leaves nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from imagehost.storage import atomic_write


def test_a_write_makes_the_folder_it_needs_and_replaces_an_old_file_whole(tmp_path):
    path = tmp_path / "ab" / "abcdef" / "w320_q80.jpg"
    atomic_write(path, b"first", durable=False)
    assert path.read_bytes() == b"first"
    with open(path, "rb") as reader:  # a reader of the old file keeps reading it
        atomic_write(path, b"second version")
        assert reader.read() == b"first"
    assert path.read_bytes() == b"second version"
    assert sorted(p.name for p in path.parent.iterdir()) == ["w320_q80.jpg"]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_write_cut_short_leaves_neither_the_file_nor_a_temp_file(tmp_path):
    # A file size limit stands in for a full disk: the first write() is cut short at
    # 10 000 bytes, the next one fails with EFBIG. In a child: the limit is per process.
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from imagehost.storage import atomic_write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        try:
            atomic_write(Path({str(tmp_path)!r}) / "old.jpg", bytes(30_000), durable=False)
        except OSError as e:
            print(e.errno)
    """)
    (tmp_path / "old.jpg").write_bytes(b"the old file")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "27", done  # EFBIG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jpg"]
    assert (tmp_path / "old.jpg").read_bytes() == b"the old file"


def test_a_write_that_fails_before_the_rename_removes_its_temp_file(tmp_path):
    path = tmp_path / "w320_q80.jpg"
    try:
        atomic_write(path, "not bytes", durable=False)  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        raise AssertionError("a str was written")
    assert list(tmp_path.iterdir()) == []
