"""What keeps the demo safe to leave running: upload limits and allowed types, per-session temp folders removed
when the session ends, readable error messages instead of stack traces, one training job at a time."""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from recon.dataset import IMAGE_SUFFIXES
from recon.errors import InputError

log = logging.getLogger("rewis.demo")


@dataclass(frozen=True)
class Limits:
    max_file_mb: int = 25  # per uploaded file, enforced by Gradio before the file reaches a handler
    max_images: int = 40  # images per request (Segment, Reconstruct)
    max_pixels: int = 4096 * 4096  # per decoded image
    max_zip_members: int = 400
    max_zip_mb: int = 400  # uncompressed total of a zip's images (zip bombs)
    queue_size: int = 64  # waiting requests before new ones are refused
    session_max_age_min: int = 180  # session folders idle this long are swept (API clients never "unload")
    concurrency: int = 2  # requests that run at once per event (the heavy tabs run one at a time)
    max_points: int = 2_000_000  # per uploaded point cloud (a KITTI scan has about 120k)
    max_shown_points: int = 150_000  # the 3D viewer draws a subsample of bigger clouds; every point is labelled


CLOUD_SUFFIXES = (".bin", ".npy", ".ply", ".pcd")  # what rewis.model3d.read_cloud reads


ALLOWED_IMAGE_TYPES = sorted(IMAGE_SUFFIXES)
ALLOWED_UPLOAD_TYPES = ALLOWED_IMAGE_TYPES + [".zip"]


# ---------------------------------------------------------------------------------------------- errors

def readable_errors(fn):
    """Wrap a Gradio handler so every failure reaches the page as one readable line (gr.Error) and never as a
    stack trace; unexpected errors are logged in full on the server. Generators stay generators, and the
    signature is kept so Gradio still injects gr.Progress and gr.Request."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001  (every error becomes a message)
                raise as_readable(e, fn.__name__) from None
        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise as_readable(e, fn.__name__) from None
    return wrapper


def as_readable(error: Exception, where: str) -> gr.Error:
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, InputError):
        return gr.Error(str(error), print_exception=False)
    log.exception("demo handler %s failed", where)
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return gr.Error(f"Something went wrong ({type(error).__name__}{': ' + detail if detail else ''}). "
                    "The server log has the details.", print_exception=False)


# ---------------------------------------------------------------------------------------------- uploads

def uploaded_paths(files) -> list[Path]:
    """Gradio's File value (None, a path, or a list of paths / file objects) as a list of Paths."""
    if not files:
        return []
    files = files if isinstance(files, (list, tuple)) else [files]
    return [Path(getattr(f, "name", f)) for f in files]


def check_images(paths: list[Path], limits: Limits) -> list[Path]:
    """Refuse wrong types, too many files and files that do not decode as images, naming the first bad file."""
    if not paths:
        raise InputError("no images: upload one or more images (png, jpg, ...) or pick the bundled example")
    if len(paths) > limits.max_images:
        raise InputError(f"{len(paths)} images: at most {limits.max_images} per request")
    for path in paths:
        check_image_file(path, limits)
    return paths


def check_image_file(path: Path, limits: Limits) -> None:
    from PIL import Image

    name = original_name(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"'{name}' is not an image file; allowed types: {', '.join(ALLOWED_IMAGE_TYPES)}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > limits.max_pixels:
                raise InputError(f"'{name}' is {im.width}x{im.height} pixels; at most {limits.max_pixels:,} pixels")
            im.verify()  # reads the whole file: truncated and fake images fail here, not inside a batch
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"'{name}' is not a readable image (corrupt file, or not really a "
                         f"{path.suffix.lower().lstrip('.')} image); upload png or jpg images") from None


def read_point_cloud(path: Path, limits: Limits):
    """(N, 4) float32 x, y, z, remission of an uploaded cloud and whether it had remission; refuses wrong types,
    unreadable files, too many points and non-finite coordinates, naming the file."""
    import numpy as np

    from rewis.model3d import read_cloud

    name = original_name(path)
    if path.suffix.lower() not in CLOUD_SUFFIXES:
        raise InputError(f"'{name}' is not a point cloud file; allowed types: {', '.join(CLOUD_SUFFIXES)}")
    _check_point_count(path, name, limits)
    try:
        points, has_remission = read_cloud(path)
    except InputError as e:
        raise InputError(f"'{name}': {str(e).split(': ', 1)[-1]}") from None
    except (OSError, ValueError, RuntimeError):
        raise InputError(f"'{name}' is not a readable {path.suffix.lower().lstrip('.')} point cloud") from None
    if len(points) > limits.max_points:
        raise InputError(f"'{name}' holds {len(points):,} points; at most {limits.max_points:,}")
    if not len(points):
        raise InputError(f"'{name}' holds no points")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise InputError(f"'{name}': {int(bad.sum()):,} points have NaN or infinite values; remove them first")
    return points, has_remission


def _check_point_count(path: Path, name: str, limits: Limits) -> None:
    """The point count of .bin and .npy files from their size or header, before anything is read."""
    import numpy as np

    suffix = path.suffix.lower()
    if suffix not in (".bin", ".npy"):
        return
    try:
        count = path.stat().st_size // 16 if suffix == ".bin" else len(np.load(path, mmap_mode="r"))
    except (OSError, ValueError, TypeError):  # TypeError: a 0-d array
        raise InputError(f"'{name}' is not a readable {suffix.lstrip('.')} point cloud") from None
    if count > limits.max_points:
        raise InputError(f"'{name}' holds {count:,} points; at most {limits.max_points:,}")


def original_name(path: Path) -> str:
    # Gradio keeps the uploaded file's own name as the last path component of its cache copy.
    return Path(path).name


def extract_zip_images(archive: Path, dest: Path, limits: Limits) -> list[Path]:
    """The images of a zip, flattened into `dest` (member folders dropped, so no path can escape `dest`);
    other members are ignored. Sizes are checked from the zip directory before anything is written."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"'{original_name(archive)}' is not a readable zip file") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES
                   and not Path(m.filename).name.startswith(".")]
        if len(members) > limits.max_zip_members:
            raise InputError(f"'{original_name(archive)}' holds {len(members)} images; at most {limits.max_zip_members}")
        if sum(m.file_size for m in members) > limits.max_zip_mb * 2**20:
            raise InputError(f"'{original_name(archive)}' unpacks to more than {limits.max_zip_mb} MB of images")
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for i, member in enumerate(sorted(members, key=lambda m: m.filename)):
            target = dest / f"{i:05d}_{Path(member.filename).name}"
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out.append(target)
    return out


# ---------------------------------------------------------------------------------------------- sessions

class SessionFolders:
    """One temp folder per browser session under one root; a session's folder is removed when it ends
    (Gradio's unload event, about 15 s after the page closes) or when idle for `max_age_s` (scripted clients
    have no page to close), and the root when the server shuts down."""

    def __init__(self, root: Path | None = None, max_age_s: float = 3 * 3600):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="rewis-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        atexit.register(self.close)

    def folder(self, request: gr.Request | None) -> Path:
        session = getattr(request, "session_hash", None) or "anonymous"
        path = self.root / _safe_name(session)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def fresh(self, request: gr.Request | None, name: str) -> Path:
        """An empty sub-folder of the session's folder (the previous result of the same kind is dropped)."""
        self.sweep()
        path = self.folder(request) / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        os.utime(path.parent)  # the session's folder records its last activity
        return path

    def sweep(self) -> None:
        """Remove session folders idle for longer than max_age_s."""
        cutoff = time.time() - self.max_age_s
        for folder in (p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else ():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:  # removed by its own unload meanwhile
                pass

    def end_session(self, request: gr.Request | None) -> None:
        session = getattr(request, "session_hash", None)
        if session:
            shutil.rmtree(self.root / _safe_name(session), ignore_errors=True)
        release_memory()

    def sessions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _safe_name(session: str) -> str:
    return "".join(c for c in session if c.isalnum() or c in "-_")[:64] or "anonymous"


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so the server's memory returns to its idle
    level after a burst of requests (glibc keeps freed arenas otherwise). Runs now and once more shortly after
    the last request, when Gradio has dropped the outputs it was still sending."""
    _trim_now()
    _trim_later.schedule()


def _trim_now() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Fewer glibc malloc arenas: request threads then share heaps that malloc_trim can return, instead of
    each of Gradio's worker threads keeping an arena of its own (the server's memory creeps up otherwise).
    Call before the server starts its threads."""
    m_arena_max = -8  # mallopt parameter number from glibc's malloc.h
    try:
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, int(arenas))
    except (OSError, AttributeError):  # not glibc
        pass


class _Debounced:
    """Run `fn` once, `delay` seconds after the last `schedule()` call."""

    def __init__(self, fn, delay: float):
        self.fn, self.delay = fn, delay
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def schedule(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay, self.fn)
            self._timer.daemon = True
            self._timer.start()


_trim_later = _Debounced(_trim_now, 2.0)


# ---------------------------------------------------------------------------------------------- jobs

class SingleJob:
    """At most one long job (training) at a time across all sessions; a second request is refused with a
    message instead of queueing for minutes behind the first. The job's worker thread releases it, so a
    visitor who closes the page does not free the slot while the job still runs."""

    def __init__(self, what: str):
        self.what = what
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise InputError(f"another {self.what} is running right now (one at a time); try again in a few minutes")

    def release(self) -> None:
        if self._lock.locked():
            self._lock.release()

    @property
    def busy(self) -> bool:
        return self._lock.locked()
