"""Image memory of renders: reused while renders go on, given back once they go idle."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagehost.assembly import build_pools
from imagehost.config import load_config
from imagehost.imaging import memory
from imagehost.imaging.render import plan_variant, render_variant


@pytest.fixture
def pillow_block_cache():
    """Pillow's block cache is global to the process: leave it as it was (off)."""
    kept = Image.core.get_blocks_max()
    yield
    Image.core.set_blocks_max(kept)
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
