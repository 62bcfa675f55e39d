"""Per-step losses of tiny fixed-seed runs of the 2D modes, as recorded from the trainer before the mode
contract was rebuilt (tests/data/train_losses_before_contract.json). `python tests/regression_losses.py OUT.json`
records them again (run it from the tests folder's parent)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

CASES = {
    "full": ["mode=full"],
    "ema": ["mode=ema", "run.grad_accum=2"],
    "rewis3d": ["mode=rewis3d", "method.cmc_start=1", "method.cmc_ramp=2"],
    "rewis3d_sparse_sky": ["mode=rewis3d", "method.cmc_start=2", "method.cmc_ramp=1", "method.sky_teacher=true",
                           "net3d.kind=sparse_unet", "net3d.voxel_size=0.2", "net3d.channels=8"],
}
STEPS = 5


def losses_of(run: Path) -> dict[str, dict[str, float]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    skip = ("lr/", "links/", "lambda", "ema_a", "w_T")
    return {str(r["step"]): {k: v for k, v in r.items() if k not in ("type", "step") and not any(s in k for s in skip)}
            for r in lines if r["type"] == "train"}


def record(case: str, scene: Path, seq: Path, out: Path) -> dict[str, dict[str, float]]:
    from test_train_data import tiny_config

    from rewis.trainer import train

    train(tiny_config(scene, seq, out, *CASES[case], f"run.max_steps={STEPS}", "run.eval_every=0",
                      "data.epoch_repeats=2"))
    return losses_of(out)


def main(path: str) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_data import make_scene

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scene, seq = make_scene(Path(tmp) / "data")
        data = {case: record(case, scene, seq, Path(tmp) / case) for case in CASES}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
