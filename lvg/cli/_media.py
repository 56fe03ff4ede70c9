"""What ``lvg infer`` reads and writes besides one image: folders of images, and videos through PyAV.

Videos need the ``video`` extra (``pip install 'latent-vg[video]'``, PyAV). Frames are decoded to RGB
arrays with their index and presentation time in seconds; an overlay video is encoded with the input's frame
rate into a temporary file beside its name and renamed when complete, like every other output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lvg.core.atomic import atomic_output
from lvg.errors import InputError, require

__all__ = ["VIDEO_SUFFIXES", "Frame", "VideoWriter", "folder_images", "is_video", "read_video", "video_info"]

#: Suffixes read (and, for ``--out``, written) as videos.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")


@dataclass(frozen=True)
class Frame:
    """One decoded video frame: ``index`` (from 0), ``time`` in seconds (``None`` when the stream has no
    timestamps) and ``rgb``, uint8 (H, W, 3)."""

    index: int
    time: float | None
    rgb: np.ndarray


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def folder_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by the suffixes Pillow reads), sorted by name; hidden files
    (such as lvg's own temporary outputs) are left out."""
    known = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list {folder}: {exc.strerror or exc}") from None
    files = [p for p in entries if p.suffix.lower() in known and not p.name.startswith(".") and p.is_file()]
    if not files:
        raise InputError(f"{folder} holds no image file")
    return files


def _av() -> Any:
    return require("av", extra="video", purpose="reading and writing videos")


def _open(path: Path) -> Any:
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"cannot read the video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream")
    return container


def video_info(path: Path) -> tuple[int | None, Fraction]:
    """``(frame count or None when the container does not say, frame rate)`` of a video."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return (int(stream.frames) or None), Fraction(rate)


def read_video(path: Path) -> Iterator[Frame]:
    """The frames of ``path``'s first video stream, in order, decoded to RGB.

    Raises:
        MissingDependencyError: PyAV is not installed (names the ``video`` extra).
        InputError: the file is not a readable video, or its data is damaged.
    """
    av = _av()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            time = None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base)
            yield Frame(index, time, frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot decode the video {path}: {exc}") from None
    finally:
        container.close()


class VideoWriter:
    """Encodes RGB frames into a video file, written whole or not at all (use as a context manager).

    The codec follows the container: H.264 for ``.mp4`` / ``.mov`` / ``.m4v`` / ``.mkv`` when the PyAV
    build has an encoder for it (MPEG-4 part 2 otherwise), VP9 for ``.webm``, MPEG-4 for ``.avi``.
    """

    def __init__(self, path: Path, rate: Fraction) -> None:
        self.path, self.rate = path, rate
        self._ctx: Any = None
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        self._ctx = atomic_output(self.path)
        self._tmp = self._ctx.__enter__()
        return self

    def _start(self, height: int, width: int) -> None:
        av = _av()
        fmt = {".mkv": "matroska", ".m4v": "mp4", ".webm": "webm"}.get(self.path.suffix.lower(),
                                                                       self.path.suffix.lower()[1:])
        try:
            self._container = av.open(str(self._tmp), mode="w", format=fmt)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"cannot write the video {self.path}: {exc}") from None
        suffix = self.path.suffix.lower()
        choices = ["libvpx-vp9", "libvpx"] if suffix == ".webm" else (["mpeg4"] if suffix == ".avi" else
                                                                        ["libx264", "h264", "mpeg4"])
        for codec in choices:
            try:
                self._stream = self._container.add_stream(codec, rate=self.rate)
                break
            except (av.error.FFmpegError, ValueError, LookupError):
                continue
        if self._stream is None:
            raise InputError(f"cannot write {self.path}: this PyAV build has no encoder for {suffix}")
        # Most encoders need even sizes for yuv420p; one pixel of padding is invisible.
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        """Add one uint8 (H, W, 3) RGB frame."""
        av = _av()
        if self._stream is None:
            self._start(*rgb.shape[:2])
        h, w = self._stream.height, self._stream.width
        if rgb.shape[:2] != (h, w):
            rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)))  # (H, W, 3) -> even size
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self._container.mux(packet)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._container is not None:
                if exc_type is None and self._stream is not None:
                    for packet in self._stream.encode():  # flush the encoder's delayed frames
                        self._container.mux(packet)
                self._container.close()
        finally:
            self._ctx.__exit__(exc_type, exc, tb)


def frame_name(folder: Path, index: int) -> Path:
    """Where frame ``index`` goes in an output folder: ``frame_000000.png``."""
    return folder / f"frame_{index:06d}.png"


def same_place(a: Path, b: Path) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (OSError, ValueError):
        return False
