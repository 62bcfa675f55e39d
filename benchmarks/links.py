"""Where the two teachers of a finished rewis3d run disagree at the links, who is right? Loads the run's last
checkpoint, draws training samples of other epochs than any the run saw in order, and scores both teachers'
labels at the links against the scenes' ground truth (synthetic scenes):

- the share of the 3D->2D weight (3D teacher max prob x reconstruction confidence, as in L_C2D, counted at every
  link: before the rule that drops pixels the 2D teacher calls sky, whose share is reported apart) that goes to
  correct labels, to fixes (2D teacher wrong, 3D right) and to harms (2D teacher right, 3D wrong);
- the same for the 2D->3D weight (2D teacher max prob x reconstruction confidence; fixes: 3D teacher wrong, 2D
  right), and both again under the more-confident rule (where the teachers' classes differ, only the more
  confident one teaches), whatever the run was trained with;
- per class of the 2D teacher, at the links where the 3D teacher says otherwise: how often each is right.

    .venv/bin/python benchmarks/links.py RUN [--batches 12] [--json OUT.json]

RUN: a run folder of benchmarks/quality.py (config.yaml, checkpoints/step_N).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewis.modes import MODES, load_config  # noqa: E402
from rewis.data import collate  # noqa: E402
from rewis.losses import soft_targets  # noqa: E402
from rewis.modes.rewis3d import run_net3d  # noqa: E402
from rewis.checkpoint import latest_checkpoint, load_modules  # noqa: E402


@torch.no_grad()
def teacher_labels(mode, batch: dict) -> dict:
    """Both teachers' (label, max prob) at the links, the reconstruction confidence and the truth there."""
    pts, links = batch["points"], batch["links"]
    t2 = mode.teacher_logits_2d(batch["image"]).permute(0, 2, 3, 1)[links["batch"], links["v"], links["u"]]
    t3 = run_net3d(mode.teacher("3d"), pts["xyz"], pts["rgb"], pts["batch"])["logits"][links["point"]]
    y2, p2 = soft_targets(t2)
    y3, p3 = soft_targets(t3)
    return {"y2": y2, "p2": p2, "y3": mode.classmap.from_3d(y3), "p3": p3, "conf": pts["conf"][links["point"]],
            "truth": pts["truth"][links["point"]]}


def summarise(at: dict, names: list[str]) -> dict:
    known = at["truth"] != 255
    y2, y3, truth = at["y2"][known], at["y3"][known], at["truth"][known]
    weight = (at["p3"] * at["conf"])[known]
    no3d_sky = at["no3d"][known]
    total = weight.sum()

    def share(mask):
        return round(float(weight[mask].sum() / total), 4)

    right3, right2 = y3 == truth, y2 == truth
    out = {"links": int(known.sum()), "acc_2d_teacher": round(float(right2.float().mean()), 4),
           "acc_3d_teacher": round(float(right3.float().mean()), 4),
           "weight_3d_to_2d": {"correct": share(right3), "fixes": share(right3 & ~right2),
                               "harms": share(~right3 & right2),
                               "on_pixels_the_2d_teacher_calls_no3d": share(no3d_sky)},
           "rules": rule_shares(at, known), "disagreements": {}}
    for c, name in enumerate(names):
        m = (y2 == c) & (y3 != y2)
        if m.any():
            out["disagreements"][name] = {"links": int(m.sum()), "3d_right": round(float(right3[m].float().mean()), 3),
                                          "2d_right": round(float(right2[m].float().mean()), 3)}
    return out


def rule_shares(at: dict, known: torch.Tensor) -> dict:
    """Fixes and harms of each CMC direction as shares of its Rewis3d weight (sky pixels excluded, as trained),
    under Rewis3d's weighting and under the more-confident rule (only the surer teacher teaches where the
    two disagree; measured in training and discarded, benchmarks/RESULTS.md)."""
    y2, y3, p2, p3, conf, truth = (at[k][known] for k in ("y2", "y3", "p2", "p3", "conf", "truth"))
    usable = ~at["no3d"][known]
    agree = y2 == y3
    directions = {"3d_to_2d": (p3, y3, y2, agree | (p3 > p2)), "2d_to_3d": (p2, y2, y3, agree | (p2 >= p3))}
    out = {}
    for name, (prob, teacher, other, more_confident) in directions.items():
        weight = prob * conf * usable
        total = weight.sum()
        fixes, harms = (teacher == truth) & (other != truth), (teacher != truth) & (other == truth)
        for rule, w in (("rewis3d", weight), ("more_confident", weight * more_confident)):
            out[f"{name}/{rule}"] = {"weight": round(float(w.sum() / total), 4),
                                     "fixes": round(float((w * fixes).sum() / total), 4),
                                     "harms": round(float((w * harms).sum() / total), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    checkpoint = latest_checkpoint(args.run)
    if checkpoint is None or not (args.run / "config.yaml").is_file():
        parser.exit(2, f"{args.run}: no config.yaml and checkpoints/step_N; give a finished rewis3d run folder\n")
    cfg = load_config(args.run / "config.yaml", ["run.logger=none", "data.num_workers=0", "run.progress=false"])
    torch.set_num_threads(1)
    mode = MODES[cfg.mode](cfg, MODES[cfg.mode].read_classes(cfg))
    load_modules(checkpoint, {f"teacher.{name}": teacher for name, teacher in mode.teachers.items()})
    data, _ = mode.train_data(mode.stages()[0])
    rng = np.random.default_rng(1)
    parts = []
    for _ in range(args.batches):
        batch = collate([data[len(data) * 1000 + int(i)] for i in rng.integers(0, len(data), cfg.data.batch_size)])
        parts.append(teacher_labels(mode, batch))
    at = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    at["no3d"] = mode.classmap.no_3d_mask(at["y2"])
    names = list(mode.classes.names)
    result = {"run": str(args.run), "checkpoint": checkpoint.name, **summarise(at, names)}
    w = result["weight_3d_to_2d"]
    print(f"{args.run} ({checkpoint.name}): {result['links']} links, teachers right {result['acc_2d_teacher']:.3f} "
          f"(2D) / {result['acc_3d_teacher']:.3f} (3D)")
    print(f"3D->2D weight: correct {w['correct']:.3f}, fixes {w['fixes']:.4f}, harms {w['harms']:.4f}, on pixels "
          f"the 2D teacher calls a class without 3D {w['on_pixels_the_2d_teacher_calls_no3d']:.4f}")
    print("| direction / rule | weight kept | fixes | harms |\n|---|---|---|---|")
    for name, d in result["rules"].items():
        print(f"| {name} | {d['weight']:.3f} | {d['fixes']:.4f} | {d['harms']:.4f} |")
    print("| 2D teacher's class | links where the 3D teacher disagrees | 3D right | 2D right |\n|---|---|---|---|")
    for name, d in result["disagreements"].items():
        print(f"| {name} | {d['links']} | {d['3d_right']:.2f} | {d['2d_right']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
