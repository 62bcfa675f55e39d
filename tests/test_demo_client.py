"""The demo driven by a scripted client (gradio_client), against a real server in a subprocess on a free
loopback port: the Scribble tab flow end to end (acceptance 2), and ten concurrent Segment requests with the
server's memory back near its idle level afterwards (acceptance 3)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import REPO, demo_server
from PIL import Image

EXAMPLE_ARGS = ["--example-size", "160x120", "--example-frames", "6"]
# Tiny models and crops: the flow is what is tested here, not the quality of a few-step run.
TINY_TRAINING = {
    "data": {"height": 60, "crop": [60, 80], "num_points": 512, "batch_size": 2},
    "model2d": {"size": "b0", "overrides": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1],
                                            "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 16}},
    "net3d": {"kind": "mlp", "channels": 16},
    "method": {"cmc_start": 1, "cmc_ramp": 2},
}
TRAIN_STEPS = 4
FULL_SIZE_MODEL = "b0_random"
REQUEST_TIMEOUT = 120  # seconds per client call; every wait below is bounded


def export_tiny_model(folder: Path) -> Path:
    """A random SegFormer of a few thousand parameters with the street classes, as an exported folder."""
    from recon.synth.scene_street import CLASSES
    from segment.models import build_model, build_processor, export_model

    model = build_model("b0", CLASSES, seed=0, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                        num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    return export_model(model, folder, build_processor(64), {"mode": "test"})


def export_b0_model(folder: Path) -> Path:
    """A random full-size SegFormer-b0 (3.7 M parameters) at the untrained demo model's input size: the memory
    test runs a model of realistic size."""
    from apps.demo.models import UNTRAINED_INPUT
    from recon.synth.scene_street import CLASSES
    from segment.models import build_model, build_processor, export_model

    return export_model(build_model("b0", CLASSES, seed=0), folder, build_processor(UNTRAINED_INPUT), {"mode": "test"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_client")
    model = export_tiny_model(root / "tiny_model")
    export_b0_model(root / "models" / FULL_SIZE_MODEL)
    (root / "train.yaml").write_text(yaml.safe_dump(TINY_TRAINING))
    args = ["--model", str(model), "--models-dir", str(root / "models"), "--cache-dir", str(root / "cache"),
            "--train-config", str(root / "train.yaml"), "--train-steps", str(TRAIN_STEPS), *EXAMPLE_ARGS]
    with demo_server(args, root / "server.log") as (url, proc):
        yield url, proc, root


def client_for(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def painted_layer(label: np.ndarray, palette, path: Path) -> Path:
    """Scribbles as the editor sends them: an RGBA layer in the class colours, transparent elsewhere."""
    rgba = np.zeros((*label.shape, 4), np.uint8)
    drawn = label != 255
    rgba[drawn, :3] = np.asarray(palette, np.uint8)[label[drawn]]
    rgba[drawn, 3] = 255
    Image.fromarray(rgba).save(path)
    return path


def file_path(value) -> str:
    return value["path"] if isinstance(value, dict) else str(value)


def test_scribble_flow_trains_predicts_every_frame_and_exports(server, tmp_path):
    from gradio_client import handle_file

    from recon.dataset import read_classes, read_label
    from rewis.weak_labels import frame_rng, make_scribbles

    url, _, root = server
    client = client_for(url)
    client.predict(api_name="/scribble_example")
    seq = next((root / "cache").iterdir())  # the example rendered by the server on first use
    classes, frames = read_classes(seq), sorted((seq / "images").glob("*.png"))
    painted = {}
    for image in frames[:2]:
        client.predict(image.stem, None, api_name="/scribble_frame")
        label = make_scribbles(read_label(seq / "labels" / image.name), frame_rng(0, image.stem, "scribbles"))
        layer = painted_layer(label, classes.palette, tmp_path / f"layer_{image.stem}.png")
        value = {"background": handle_file(str(image)), "layers": [handle_file(str(layer))], "composite": None}
        status = client.predict(value, api_name="/scribble_save")
        painted[image.stem] = int((label != 255).sum())
        assert f"{image.stem} ({painted[image.stem]} px)" in status, status

    job = client.submit(None, TRAIN_STEPS, api_name="/train")  # no unsaved strokes
    summary, gallery = job.result(timeout=REQUEST_TIMEOUT * 2)[:2]
    assert f"for {TRAIN_STEPS} steps" in summary
    assert len(gallery) == len(frames)  # a prediction for every frame

    archive = Path(file_path(client.predict(api_name="/scribble_export")))
    model_dir = tmp_path / "model"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(model_dir)
    exported = next(p.parent for p in model_dir.rglob("config.json"))
    out = tmp_path / "predicted"
    done = subprocess.run([sys.executable, "-m", "apps.cli", "predict", "--model", str(exported),
                           "--input", str(seq / "images"), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=REQUEST_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert len(list((out / "masks").glob("*.png"))) == len(frames)


def test_train_without_scribbles_is_a_readable_error(server):
    from gradio_client.exceptions import AppError

    url, _, _ = server
    client = client_for(url)
    client.predict(api_name="/scribble_example")
    with pytest.raises(AppError, match="no scribbles yet"):
        client.predict(None, TRAIN_STEPS, api_name="/train")


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


class PeakSampler:
    """Samples a process's RSS every 50 ms in a thread while the block runs."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        return False


def test_ten_concurrent_segment_requests_then_memory_returns_to_idle(server):
    from gradio_client import handle_file

    url, proc, root = server
    seq = _example(url, root)
    image = handle_file(str(min((seq / "images").glob("*.png"))))
    warm = client_for(url)
    warm.predict([image], FULL_SIZE_MODEL, api_name="/segment")  # loads the model once: part of "idle"
    time.sleep(2)
    idle = rss(proc.pid)

    clients = [client_for(url) for _ in range(10)]
    with PeakSampler(proc.pid) as sampler:
        jobs = [c.submit([image], FULL_SIZE_MODEL, api_name="/segment") for c in clients]
        results = []
        for job in jobs:
            try:
                results.append(job.result(timeout=REQUEST_TIMEOUT))
            except FutureTimeout:
                pytest.fail("a Segment request did not finish in time")
    peak = max(idle, sampler.peak)
    assert len(results) == 10
    assert all(r[3] and "Segmented 1 image" in r[5] for r in results)

    after = rss(proc.pid)
    deadline = time.monotonic() + 30  # the allocator may need a moment to give pages back
    while after > 1.10 * idle and time.monotonic() < deadline:
        time.sleep(1)
        after = rss(proc.pid)
    print(f"server RSS: idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, after {after / 2**20:.0f} MiB "
          f"({100 * (after / idle - 1):+.1f} %)")
    assert after <= 1.10 * idle


def _example(url: str, root: Path) -> Path:
    """The example sequence (rendered by the server on first use)."""
    client_for(url).predict(api_name="/segment_example")
    return next((root / "cache").iterdir())
