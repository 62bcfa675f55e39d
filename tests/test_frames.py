"""`rewis frames VIDEO --out SEQ`: a video becomes a sequence folder that `rewis recon` reads; the sharpest frame of
each 1/FPS s is kept; bad input gives one line and exit code 2 and writes nothing."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image, ImageFilter

from apps.cli import main
from recon.sources import open_sequence
from recon.video import rotate

FPS_VIDEO, SECONDS, WIDTH, HEIGHT = 10, 3, 96, 64
PER_INTERVAL = FPS_VIDEO // 2  # frames of the video in each 0.5 s interval of --fps 2


def sharp_index(interval: int) -> int:
    """The one sharp frame of each interval; its place in the interval changes, so neither 'first' nor 'middle'
    picks it by luck."""
    return interval * PER_INTERVAL + interval % PER_INTERVAL


def render_frames() -> np.ndarray:
    """(30, 64, 96, 3): a blocky random texture sliding 3 px a frame, Gaussian-blurred except in sharp_index()."""
    rng = np.random.default_rng(0)
    texture = np.kron(rng.integers(0, 256, (HEIGHT // 4, 100), dtype=np.uint8), np.ones((4, 4), np.uint8))
    frames = []
    for i in range(FPS_VIDEO * SECONDS):
        grey = texture[:, 3 * i:3 * i + WIDTH]
        rgb = np.stack([grey, np.roll(grey, 7, axis=1), 255 - grey], axis=-1)
        if i != sharp_index(i // PER_INTERVAL):
            rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(3)))
        frames.append(rgb)
    return np.stack(frames)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render_frames()
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS_VIDEO)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = WIDTH, HEIGHT, "yuv420p", 4_000_000
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path, frames


def written(seq) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((seq / "images").iterdir())]


def source_index(image: np.ndarray, frames: np.ndarray) -> int:
    """Which frame of the video `image` is: the nearest in mean squared difference."""
    return int(((frames.astype(np.float32) - image.astype(np.float32)) ** 2).mean(axis=(1, 2, 3)).argmin())


def run_bad(capfd, argv, out) -> str:
    """Exit code 2, exactly one line on stderr (FFmpeg's own log included, hence capfd), nothing written."""
    assert main(argv) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rewis frames: error:"), err
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return err[0]


def test_two_fps_keeps_the_sharp_frame_of_each_half_second(video, tmp_path, capfd):
    path, frames = video
    seq = tmp_path / "seq"
    assert main(["frames", str(path), "--fps", "2", "--out", str(seq), "--quiet"]) == 0
    assert capfd.readouterr().out.strip() == f"rewis frames: wrote 6 frames (2 fps, 96x64) to {seq / 'images'}"
    assert [p.name for p in sorted((seq / "images").iterdir())] == [f"{i:06d}.png" for i in range(6)]
    images = written(seq)
    assert all(image.shape == (HEIGHT, WIDTH, 3) for image in images)
    # 3 s at 2 fps: intervals [0, 0.5), [0.5, 1), ... [2.5, 3), five frames each, one of them sharp
    assert [source_index(image, frames) for image in images] == [sharp_index(k) for k in range(6)]
    assert [p.name for p in open_sequence(seq).images] == [f"{i:06d}.png" for i in range(6)]  # what recon reads


def test_downscale_keeps_the_aspect_and_max_frames_stops_early(video, tmp_path):
    path, frames = video
    for size_args in (["--max-side", "48"], ["--size", "48x32"]):
        seq = tmp_path / size_args[0].strip("-")
        assert main(["frames", str(path), "--out", str(seq), "--max-frames", "4", "--quiet", *size_args]) == 0
        images = written(seq)
        assert [image.shape for image in images] == [(32, 48, 3)] * 4


def test_fps_above_the_video_rate_keeps_every_frame_once(video, tmp_path):
    path, frames = video
    assert main(["frames", str(path), "--fps", "25", "--out", str(tmp_path / "seq"), "--quiet"]) == 0
    images = written(tmp_path / "seq")
    assert [source_index(image, frames) for image in images] == list(range(len(frames)))


def test_corrupt_video(tmp_path, capfd):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    msg = run_bad(capfd, ["frames", str(bad), "--out", str(tmp_path / "seq")], tmp_path / "seq")
    assert str(bad) in msg and "re-encode" in msg


def test_missing_video(tmp_path, capfd):
    msg = run_bad(capfd, ["frames", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "seq")], tmp_path / "seq")
    assert "nope.mp4: file not found" in msg


@pytest.mark.parametrize("fps", ["0", "-1", "nan"])
def test_fps_must_be_positive(video, tmp_path, capfd, fps):
    msg = run_bad(capfd, ["frames", str(video[0]), "--fps", fps, "--out", str(tmp_path / "seq")], tmp_path / "seq")
    assert "--fps" in msg and "positive" in msg


def test_size_that_changes_the_aspect_is_refused(video, tmp_path, capfd):
    msg = run_bad(capfd, ["frames", str(video[0]), "--size", "64x64", "--out", str(tmp_path / "seq"), "--quiet"],
                  tmp_path / "seq")
    assert "aspect" in msg and "--size 64x43" in msg


def test_existing_output_is_kept_without_overwrite(video, tmp_path, capfd):
    out = tmp_path / "seq"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["frames", str(video[0]), "--out", str(out)]) == 2
    assert "--overwrite" in capfd.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["frames", str(video[0]), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert not (out / "keep.txt").exists() and len(list((out / "images").iterdir())) == 6


def test_rotation_turns_the_frame_as_a_player_shows_it():
    image = np.zeros((2, 3), np.uint8)
    image[0, 0] = 255  # top-left
    clockwise = np.asarray(rotate(Image.fromarray(image), -90))  # display matrix of a phone held upright
    assert clockwise.shape == (3, 2) and clockwise[0, 1] == 255  # now top-right
    assert np.asarray(rotate(Image.fromarray(image), 0)).shape == (2, 3)
