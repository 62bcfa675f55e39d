"""Shared fixtures. Synthetic sequences are rendered once per test session and shared: treat them as
read-only (copy with shutil.copytree before writing into one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def single_torch_thread():
    """One intra-op thread for every test: the models and tensors here are tiny, and a second OpenMP thread on
    a busy 2-core machine only adds contention (measured 10-50x slower steps). Code that runs its own threads
    (recon.projection's per-view workers) still does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA} (the checkout must sit beside shared/)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_sequence(tmp_path_factory):
    """make(preset, frames, seed, size, lidar) -> path of a rendered sequence folder (cached per session)."""
    cache: dict[tuple, Path] = {}

    def make(preset: str = "street", frames: int = 8, seed: int = 0, size: tuple[int, int] = (240, 180),
             lidar: bool = False, **kwargs) -> Path:
        key = (preset, frames, seed, tuple(size), lidar, tuple(sorted(kwargs.items())))
        if key not in cache:
            from recon.synth import generate

            out = tmp_path_factory.mktemp(f"synth_{preset}_{seed}") / "seq"
            generate(preset=preset, out=out, frames=frames, seed=seed, size=tuple(size), lidar=lidar,
                     progress=False, **kwargs)
            cache[key] = out
        return cache[key]

    return make
