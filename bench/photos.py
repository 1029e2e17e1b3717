"""The benchmark's source images, made from Debian's gnome-backgrounds on first use.

Debian 12's gnome-backgrounds ships 4096x4096 WebPs only, so the sources are derived
from them with Pillow: 4 MP JPEGs (the common case), PNG and WebP copies of a few,
2-5 MB JPEGs for uploads, and 14 MP / ~48 MP JPEGs for the memory part.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# Flat vector renderings compress unlike photos; the tiny vnc-*.webp are not 2 MP.
_SKIP = ("vnc-", "symbolic-", "truchet-")
_SOURCE_SIZE = (2304, 1728)  # 4.0 MP, 4:3
_BIG_SIZE = (4320, 3240)  # 14.0 MP
_HUGE_SIZE = (8000, 6000)  # 48.0 MP


@dataclass(frozen=True)
class PhotoSet:
    """Paths of every prepared source image, all inside ``root``."""

    root: Path
    jpeg: list[Path]  # 4 MP
    png: list[Path]
    webp: list[Path]
    upload: list[Path]  # 2-5 MB JPEGs
    big: list[Path]  # 14 MP JPEGs
    huge: list[Path]  # ~48 MP JPEGs

    @property
    def mixed(self) -> list[Path]:
        return self.jpeg[: len(self.png) + len(self.webp)] + self.png + self.webp


def prepare(cache: Path, log=print) -> PhotoSet:
    """Fetch gnome-backgrounds if missing and derive every source (idempotent)."""
    originals = _gnome_backgrounds(cache / "gnome-backgrounds", log)
    root = cache / "photos"
    done = root / ".complete"
    if not done.exists():
        log(f"deriving benchmark sources into {root} ...")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _derive(originals, root)
        done.touch()
    return PhotoSet(
        root=root,
        jpeg=sorted(root.glob("src-*.jpg")),
        png=sorted(root.glob("src-*.png")),
        webp=sorted(root.glob("src-*.webp")),
        upload=sorted(root.glob("upload-*.jpg")),
        big=sorted(root.glob("big-*.jpg")),
        huge=sorted(root.glob("huge-*.jpg")),
    )


def _gnome_backgrounds(folder: Path, log) -> list[Path]:
    backgrounds = folder / "usr/share/backgrounds/gnome"
    if not backgrounds.is_dir():
        log("fetching gnome-backgrounds with apt-get download ...")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            # Download into a folder the _apt user may write to, or apt warns and falls back.
            Path(tmp).chmod(0o777)
            subprocess.run(["apt-get", "download", "-q", "gnome-backgrounds"], cwd=tmp,
                           check=True, stdout=subprocess.DEVNULL)
            deb = next(Path(tmp).glob("gnome-backgrounds_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(folder)], check=True)
    found = [p for p in sorted(backgrounds.iterdir())
             if p.suffix in (".jpg", ".png", ".webp") and not p.name.startswith(_SKIP)]
    if len(found) < 4:
        raise RuntimeError(f"expected photos in {backgrounds}, found {len(found)}")
    return found


def _derive(originals: list[Path], root: Path) -> None:
    for index, path in enumerate(originals):
        with Image.open(path) as im:
            photo = _crop_to(im.convert("RGB"), 4 / 3)
        name = path.stem
        source = photo.resize(_SOURCE_SIZE, Image.Resampling.LANCZOS)
        source.save(root / f"src-{name}.jpg", quality=90)
        if index % 4 == 1:
            source.save(root / f"src-{name}.png", compress_level=6)
        if index % 4 == 3:
            source.save(root / f"src-{name}.webp", quality=90)
        if index < 6:
            # Full 12.6 MP at q95 4:4:4: 2-3 MB, the size of a phone photo.
            photo.save(root / f"upload-{name}.jpg", quality=95, subsampling=0)
        if index < 3:
            photo.resize(_BIG_SIZE, Image.Resampling.BICUBIC).save(
                root / f"big-{name}.jpg", quality=90)
        if index < 2:
            photo.resize(_HUGE_SIZE, Image.Resampling.BICUBIC).save(
                root / f"huge-{name}.jpg", quality=90)


def _crop_to(im: Image.Image, aspect: float) -> Image.Image:
    width, height = im.size
    new_height = min(height, round(width / aspect))
    top = (height - new_height) // 2
    return im.crop((0, top, width, top + new_height))
