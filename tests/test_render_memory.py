"""Image memory of renders: reused while renders go on, given back once they go idle."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from imagehost.assembly import build_pools
from imagehost.config import load_config
from imagehost.imaging import memory
from imagehost.imaging.render import plan_variant, render_variant


@pytest.fixture
def pillow_block_cache():
    """Pillow's block cache is global to the process: leave it as it was (off)."""
    kept, size = Image.core.get_blocks_max(), Image.core.get_block_size()
    yield
    Image.core.set_blocks_max(kept)
    Image.core.set_block_size(size)
    Image.core.clear_cache()


def _photo() -> bytes:
    """A 4 MP JPEG, the size of the benchmark's sources."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize((2400, 1600)).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def test_the_daemon_keeps_image_blocks_for_each_render_thread(tmp_path, pillow_block_cache):
    config = load_config(None, environ={"IMAGEHOST_RENDER_THREADS": "3"},
                         overrides={("server", "data_dir"): str(tmp_path)})
    pools = build_pools(config, reactor=None)
    pools.db.engine.dispose()
    assert Image.core.get_blocks_max() == memory.BLOCKS_PER_RENDER_THREAD * 3
    # Blocks of at most 2 MB: the freed blocks kept stay small after huge images.
    assert Image.core.get_block_size() == memory.IMAGE_BLOCK_SIZE


def test_renders_reuse_image_blocks_until_free_memory_is_released(pillow_block_cache):
    source = _photo()
    spec = plan_variant(2400, 1600, "JPEG", width=500, height=500, crop=None, out_ext="jpg",
                        quality=80, smart=False, focus=None)
    memory.keep_image_blocks(memory.BLOCKS_PER_RENDER_THREAD)
    render_variant(source, spec)
    first = Image.core.get_stats()
    render_variant(source, spec)
    second = Image.core.get_stats()
    # The second render maps no new block: it takes those the first one freed.
    assert second["allocated_blocks"] == first["allocated_blocks"]
    assert second["reused_blocks"] > first["reused_blocks"]
    assert second["blocks_cached"] > 0
    memory.release_free_memory()
    assert Image.core.get_stats()["blocks_cached"] == 0


# -- heavy renders: one slot per core among all the processes of an installation ---------

_HOLD_A_SLOT = """
import sys, time
from pathlib import Path
from imagehost.imaging import memory
slots = memory.RenderSlots(Path(sys.argv[1]), 1)
with slots.held(memory.HEAVY_RENDER_BYTES):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextmanager
def slot_held_by_another_process(folder: Path, seconds: float):
    """A process holding the only slot of ``folder`` for ``seconds``; yields it."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_A_SLOT, str(folder), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def one_render_slot(tmp_path):
    """This process's renders limited to one heavy render at a time, in ``tmp_path``."""
    folder = tmp_path / "render-slots"
    memory.limit_heavy_renders(memory.RenderSlots(folder, 1))
    yield folder
    memory.limit_heavy_renders(None)


def _big_png() -> bytes:
    """A 16 MP PNG: decoded in full for any variant (no draft), so a heavy render."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize((4000, 4000)).convert("RGB").save(out, "PNG",
                                                                           compress_level=1)
    return out.getvalue()


def _timed_render(source: bytes, width: int) -> float:
    spec = plan_variant(4000, 4000, "PNG", width=width, height=width, crop=None,
                        out_ext="jpg", quality=80, smart=False, focus=None)
    started = time.monotonic()
    render_variant(source, spec)
    return time.monotonic() - started


def test_a_heavy_render_waits_for_the_slot_another_process_holds(one_render_slot):
    source = _big_png()
    alone = min(_timed_render(source, 3000) for _ in range(2))
    with slot_held_by_another_process(one_render_slot, 1.5):
        waited = _timed_render(source, 3000)
    assert waited >= 1.0 + alone / 2  # it started once the other process let go


def test_a_light_render_does_not_wait_for_a_slot(one_render_slot):
    small = _photo()
    spec = plan_variant(2400, 1600, "JPEG", width=300, height=300, crop=None, out_ext="jpg",
                        quality=80, smart=False, focus=None)
    with slot_held_by_another_process(one_render_slot, 30):
        started = time.monotonic()
        render_variant(small, spec)  # drafted to 1/4: a few MB of pixels
        assert time.monotonic() - started < 5


def test_a_slot_comes_back_when_its_holder_dies(one_render_slot):
    source = _big_png()
    with slot_held_by_another_process(one_render_slot, 60) as holder:
        holder.kill()
        holder.wait()
        assert _timed_render(source, 3000) < 30


def test_the_daemon_allows_one_heavy_render_per_core(tmp_path):
    config = load_config(None, overrides={("server", "data_dir"): str(tmp_path)})
    try:
        build_pools(config, reactor=None).db.engine.dispose()
        render_variant(_big_png(), plan_variant(4000, 4000, "PNG", width=2000, height=2000,
                                                crop=None, out_ext="png", quality=None,
                                                smart=False, focus=None))
    finally:
        memory.limit_heavy_renders(None)
    slots = sorted(p.name for p in (tmp_path / "render-slots").iterdir())
    assert len(slots) >= 1 and set(slots) <= {f"slot-{n}" for n in range(os.cpu_count())}


def test_a_heavy_render_goes_ahead_where_no_slot_can_be_made(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # the slots' folder cannot be made under a file
    memory.limit_heavy_renders(memory.RenderSlots(blocked / "render-slots", 1))
    try:
        assert _timed_render(_big_png(), 3000) < 30
    finally:
        memory.limit_heavy_renders(None)
