"""Video in: sample a video into a sequence folder (SEQ/images/000000.png, 000001.png, ... in time order).

Frames are taken at F frames per second: the time since the first frame is cut into intervals [k/F, (k+1)/F),
and of the frames decoded in each interval the sharpest is kept (variance of the Laplacian of a small grey
copy), so a motion-blurred frame is skipped wherever its interval holds a sharper one. Decoding is PyAV's
(FFmpeg); the PNGs are Pillow's. The folder is written beside --out and renamed into place at the end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.error import FFmpegError
from PIL import Image
from tqdm import tqdm

from recon.atomic import check_writable, staged_folder
from recon.errors import InputError

SHARPNESS_SIDE = 480  # the sharpness is measured on a grey copy at most this many pixels on its long side
MIN_SIDE, MAX_SIDE = 16, 8192
ASPECT_TOLERANCE = 0.01  # --size may differ this much (relative) from the video's aspect ratio


@dataclass(frozen=True)
class FrameOptions:
    fps: float                          # frames kept per second of video
    max_side: int                       # downscale so the long side is at most this; 0 keeps the video's size
    size: tuple[int, int] | None = None  # exact output size (width, height), same aspect as the video; wins
    max_frames: int | None = None       # stop after this many frames
    progress: bool = True


@dataclass(frozen=True)
class FramesWritten:
    frames: int
    size: tuple[int, int]
    images: Path


def parse_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360); a one-line InputError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT such as 640x360")
    width, height = int(match.group(1)), int(match.group(2))
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InputError(f"--size {text}: width and height must be between {MIN_SIDE} and {MAX_SIDE} pixels")
    return width, height


def check_options(options: FrameOptions) -> None:
    if not (options.fps > 0 and math.isfinite(options.fps)):
        raise InputError(f"--fps {options.fps:g}: must be a positive number of frames per second, e.g. --fps 2")
    if options.max_frames is not None and options.max_frames < 1:
        raise InputError(f"--max-frames {options.max_frames}: must be >= 1 (or leave it out to keep every frame)")
    if options.max_side < 0 or 0 < options.max_side < MIN_SIDE:
        raise InputError(f"--max-side {options.max_side}: must be 0 (keep the video's size) or at least "
                         f"{MIN_SIDE} pixels, e.g. --max-side 1280")


def video_to_sequence(video: Path, out: Path, options: FrameOptions, overwrite: bool = False) -> FramesWritten:
    """Write the sampled frames of `video` to out/images/ (see the module docstring); nothing is written on error."""
    video, out = Path(video), Path(out)
    check_options(options)
    check_writable(out, overwrite)
    with open_video(video) as container:
        frames = sampled_frames(video, container, container.streams.video[0], options)
        try:
            count, size = _write(video, frames, out, options, overwrite)
        finally:
            frames.close()  # closes the progress bar too
    return FramesWritten(frames=count, size=size, images=out / "images")


def _write(video: Path, frames: Iterator[av.VideoFrame], out: Path, options: FrameOptions,
           overwrite: bool) -> tuple[int, tuple[int, int]]:
    first = next(frames, None)  # decoded before anything is written: an undecodable video fails here
    if first is None:
        raise InputError(f"{video}: no video frame could be decoded; check that the file plays, or re-encode it "
                         f"(e.g. ffmpeg -i {video.name} -c:v libx264 fixed.mp4)")
    first_image = upright(first)
    size = output_size(first_image.size, options)
    limit = options.max_frames or math.inf
    count = 0
    with staged_folder(out, overwrite) as staging:
        images = staging / "images"
        images.mkdir()
        for image in _chain_images(first_image, frames):
            if count >= limit:
                break
            save_frame(image, size, images / f"{count:06d}.png")
            count += 1
    return count, size


def _chain_images(first: Image.Image, frames: Iterator[av.VideoFrame]) -> Iterator[Image.Image]:
    yield first
    for frame in frames:
        yield upright(frame)


def open_video(video: Path) -> av.container.InputContainer:
    """The opened container, checked to hold a video stream; one-line InputErrors for what cannot be read."""
    if not video.is_file():
        what = "is a folder" if video.is_dir() else "file not found"
        raise InputError(f"{video}: {what}; give the path of a video file (mp4, mov, mkv, ...)")
    try:
        container = av.open(str(video))
    except FFmpegError as e:
        raise InputError(f"{video}: not a video that FFmpeg can read ({_reason(e)}); check the file, or re-encode "
                         f"it (e.g. ffmpeg -i {video.name} -c:v libx264 fixed.mp4)") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{video}: holds no video stream; give a video file (mp4, mov, mkv, ...)")
    return container


def sampled_frames(video: Path, container, stream, options: FrameOptions) -> Iterator[av.VideoFrame]:
    """The sharpest decoded frame of each sampling interval that holds a frame, in time order."""
    fps = Fraction(options.fps).limit_denominator(100000)
    best = best_score = None
    current = start = None
    for index, frame in enumerate(decoded_frames(video, container, stream, options.progress)):
        time = frame_time(frame, index, stream)
        start = time if start is None else start
        interval = max(math.floor((time - start) * fps), current or 0)  # timestamps that step back stay put
        if current is not None and interval != current:
            yield best
            best = None
        score = sharpness(frame)
        if best is None or score > best_score:
            best, best_score = frame, score
        current = interval
    if best is not None:
        yield best


def decoded_frames(video: Path, container, stream, progress: bool) -> Iterator[av.VideoFrame]:
    stream.thread_type = "AUTO"
    bar = tqdm(total=stream.frames or None, desc="decode", unit="frame", disable=not progress, leave=False)
    try:
        for frame in container.decode(stream):
            bar.update()
            yield frame
    except FFmpegError as e:
        raise InputError(f"{video}: decoding failed after {bar.n} frames ({_reason(e)}); the file may be "
                         f"damaged: re-encode it (e.g. ffmpeg -i {video.name} -c:v libx264 fixed.mp4)") from None
    finally:
        bar.close()


def frame_time(frame: av.VideoFrame, index: int, stream) -> Fraction:
    """Presentation time in seconds, exact; from the frame rate where the frame carries no timestamp."""
    time_base = frame.time_base or stream.time_base
    if frame.pts is not None and time_base:
        return frame.pts * Fraction(time_base)
    rate = stream.average_rate or stream.guessed_rate or 25
    return Fraction(index) / Fraction(rate)


def sharpness(frame: av.VideoFrame) -> float:
    """Variance of the 4-neighbour Laplacian of a grey copy (long side <= SHARPNESS_SIDE); low = blurred."""
    width, height = fit(frame.width, frame.height, SHARPNESS_SIDE)
    grey = frame.reformat(width=width, height=height, format="gray").to_ndarray().astype(np.float32)
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]) - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var()) if laplacian.size else 0.0


def upright(frame: av.VideoFrame) -> Image.Image:
    """RGB image turned the way a player shows it (phones store portrait video sideways plus a rotation)."""
    return rotate(frame.to_image(), getattr(frame, "rotation", 0))  # older PyAV: no rotation


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Rotate counterclockwise by `degrees` rounded to a multiple of 90 (a display matrix's rotation)."""
    turns = round((degrees or 0) / 90) % 4
    return image if turns == 0 else image.transpose(
        (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[turns - 1])


def output_size(video_size: tuple[int, int], options: FrameOptions) -> tuple[int, int]:
    width, height = video_size
    if options.size is None:
        return fit(width, height, options.max_side) if options.max_side else (width, height)
    out_w, out_h = options.size
    if abs((out_w / out_h) / (width / height) - 1) > ASPECT_TOLERANCE:
        raise InputError(f"--size {out_w}x{out_h}: changes the aspect ratio of the {width}x{height} video (SfM "
                         f"assumes square pixels); use --size {out_w}x{max(1, round(out_w * height / width))} "
                         f"or --max-side {max(out_w, out_h)}")
    return out_w, out_h


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so the long side is at most `max_side`; never scaled up."""
    scale = max_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def save_frame(image: Image.Image, size: tuple[int, int], path: Path) -> None:
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    image.save(path)


def _reason(error: FFmpegError) -> str:
    return str(getattr(error, "strerror", None) or error).strip().rstrip(".").lower() or "unknown error"
