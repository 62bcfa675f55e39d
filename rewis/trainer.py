"""The accelerate trainer: prepares the mode's students, optimizers and data, sums the mode's named losses,
steps, logs, evaluates, checkpoints and exports. All method math lives in the modes (rewis/modes).

Run folder (cfg.run.out): config.yaml (resolved config), metrics.jsonl (one JSON object per logged step and
per evaluation), logs/ (TensorBoard / W&B), checkpoints/step_N (accelerate save_state: students, optimizers,
RNG states, plus registered objects: schedulers, teachers, trainer state), export/ (best 2D model by val mIoU,
a standard SegFormer folder), summary.json.

Exact resume: data order and per-sample augmentation depend only on (seed, epoch, index) (rewis/data.py);
torch's global RNG (strong 2D augmentation, dropout) is restored by load_state; checkpoints are taken at
optimizer-step boundaries and the resumed epoch skips the batches already consumed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from pathlib import Path

import torch

from recon.errors import InputError
from rewis.config import Config, flat_dict, save_config, to_dict
from rewis.modes import MODES, Mode, StepInfo

CHECKPOINTS = "checkpoints"


class TrainerState:
    """Counters checkpointed with the run."""

    def __init__(self):
        self.step, self.best_miou, self.best_step = 0, -1.0, -1

    def state_dict(self) -> dict:
        return {"step": torch.tensor(self.step), "best_miou": torch.tensor(self.best_miou),
                "best_step": torch.tensor(self.best_step)}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.best_miou = int(state["step"]), float(state["best_miou"])
        self.best_step = int(state["best_step"])


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoints/step_N under a run folder (or `folder` itself if it is a checkpoint)."""
    folder = Path(folder)
    if folder.name.startswith("step_") and folder.is_dir():
        return folder
    found = sorted((p for p in (folder / CHECKPOINTS).glob("step_*") if p.is_dir()), key=lambda p: int(p.name[5:]))
    return found[-1] if found else None


class Trainer:
    def __init__(self, cfg: Config, resume: str | None = None):
        from accelerate import Accelerator
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed

        self.cfg, self.run_dir = cfg, Path(cfg.run.out)
        self.resume_from = self._resume_path(resume)
        log_with = self._tracker()
        self.acc = Accelerator(cpu=cfg.run.cpu, mixed_precision=cfg.run.mixed_precision, log_with=log_with,
                               gradient_accumulation_plugin=GradientAccumulationPlugin(
                                   num_steps=cfg.run.grad_accum, sync_with_dataloader=False),
                               project_config=ProjectConfiguration(project_dir=str(self.run_dir),
                                                                   logging_dir=str(self.run_dir / "logs")))
        if cfg.run.cpu_threads > 0:
            torch.set_num_threads(cfg.run.cpu_threads)
        set_seed(cfg.seed)
        self.state = TrainerState()
        self._setup()

    # ------------------------------------------------------------------------------------------ setup
    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        where = self.run_dir if resume in ("", "latest", "auto") else Path(resume)
        ckpt = latest_checkpoint(where)
        if ckpt is None:
            raise InputError(f"--resume {where}: no checkpoints/step_N there to resume from")
        if resume not in ("", "latest", "auto") and ckpt.parent.name == CHECKPOINTS:
            self.run_dir = ckpt.parent.parent
            self.cfg.run.out = str(self.run_dir)
        return ckpt

    def _tracker(self):
        kind = self.cfg.run.logger
        if kind == "none":
            return None
        import importlib.util

        module = "tensorboard" if kind == "tensorboard" else "wandb"
        if importlib.util.find_spec(module) is None and not (kind == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            warnings.warn(f"run.logger={kind} but {module} is not installed: metrics go to metrics.jsonl only "
                          f"(pip install {module}, or set run.logger=none)")
            return None
        return kind

    def _setup(self) -> None:
        cfg, acc = self.cfg, self.acc
        classes = self._classes()
        self.mode: Mode = MODES[cfg.mode](cfg, classes)
        self.train_set, self.val_set, collate = self.mode.make_datasets()
        from torch.utils.data import DataLoader

        from rewis.data import EpochSampler

        self.sampler = EpochSampler(len(self.train_set), cfg.seed)
        loader = DataLoader(self.train_set, batch_size=cfg.data.batch_size, sampler=self.sampler, drop_last=True,
                            collate_fn=collate, num_workers=cfg.data.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed),
                            persistent_workers=False, pin_memory=acc.device.type == "cuda")
        names = list(self.mode.students)
        optims = self.mode.optimizers(cfg.run.max_steps)
        self.opt_names = list(optims)
        prepared = acc.prepare(*[self.mode.students[n] for n in names], *[optims[n][0] for n in self.opt_names], loader)
        for n, m in zip(names, prepared[:len(names)]):
            self.mode.students[n] = m
        self.optimizers = list(prepared[len(names):len(names) + len(self.opt_names)])
        self.loader = prepared[-1]
        self.schedulers = [optims[n][1] for n in self.opt_names]
        for name, obj in self.mode.teachers.items():
            obj.to(acc.device)
        for s in self.schedulers:
            if s is not None:
                acc.register_for_checkpointing(s)
        for obj in self.mode.state_objects().values():
            acc.register_for_checkpointing(obj)
        acc.register_for_checkpointing(self.state)
        self.batches_per_epoch = len(self.loader)
        self.steps_per_epoch = self.batches_per_epoch // cfg.run.grad_accum
        if self.steps_per_epoch < 1:
            raise InputError(f"{cfg.source}: {len(self.train_set)} training frames give {self.batches_per_epoch} "
                             f"batches per epoch, fewer than run.grad_accum={cfg.run.grad_accum}; lower "
                             "data.batch_size or run.grad_accum, or raise data.epoch_repeats")

    def _classes(self):
        from recon.dataset import read_classes
        from recon.scene import Scene

        if not self.cfg.data.train:
            raise InputError(f"{self.cfg.source or 'config'}: data.train is empty; list scene or sequence folders")
        first = Path(self.cfg.data.train[0])
        if (first / "scene.json").is_file():
            return Scene.load(first).classes
        if (first / "classes.json").is_file():
            return read_classes(first)
        raise InputError(f"data.train: {first} is neither a scene folder (scene.json) nor a sequence (classes.json)")

    # ------------------------------------------------------------------------------------------ training
    def fit(self) -> dict:
        cfg, acc = self.cfg, self.acc
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        if self.resume_from is not None:
            acc.load_state(str(self.resume_from))
            acc.step = 0  # checkpoints sit on optimizer-step boundaries
            self._truncate_metrics(self.state.step)
        if acc.log_with:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                       for k, v in flat_dict(to_dict(cfg)).items()}
            acc.init_trackers("rewis", config=hparams)
        from tqdm import tqdm

        bar = tqdm(total=cfg.run.max_steps, initial=self.state.step, desc=f"train {cfg.mode}", unit="step",
                   disable=not (cfg.run.progress and acc.is_main_process), dynamic_ncols=True)
        stage_ends, stage_names = self._stage_ends()
        current_stage = None
        self.mode.train()
        last_eval = None
        start = time.perf_counter()
        while self.state.step < cfg.run.max_steps:
            epoch, in_epoch = divmod(self.state.step, self.steps_per_epoch)
            # The prepared loader, not just our sampler: accelerate's loader re-sets the sampler's epoch from its
            # own counter on every iteration, which would replay epoch 0's samples forever.
            self.loader.set_epoch(epoch)
            loader = acc.skip_first_batches(self.loader, in_epoch * cfg.run.grad_accum) if in_epoch else self.loader
            sums, micro = {}, 0
            for batch in loader:
                stage = stage_names[next(i for i, e in enumerate(stage_ends) if self.state.step < e)]
                if stage != current_stage:
                    self.mode.begin_stage(stage, self)
                    current_stage = stage
                info = StepInfo(self.state.step, epoch, in_epoch, self.steps_per_epoch, stage, cfg.run.max_steps)
                losses = self._micro_step(batch, info)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                micro += 1
                if not acc.sync_gradients:
                    continue
                for s in self.schedulers:
                    if s is not None:
                        s.step()
                self.mode.after_step(info)
                self.state.step += 1
                in_epoch += 1
                bar.update(1)
                self._after_step({k: v / micro for k, v in sums.items()}, bar)
                sums, micro = {}, 0
                step = self.state.step
                if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < cfg.run.max_steps:
                    last_eval = self.evaluate()
                if cfg.run.save_every and step % cfg.run.save_every == 0 and step < cfg.run.max_steps:
                    self.save()
                if step >= cfg.run.max_steps or in_epoch >= self.steps_per_epoch:
                    break
        bar.close()
        seconds = time.perf_counter() - start
        if self.val_set is not None and (last_eval is None or last_eval["step"] != self.state.step):
            last_eval = self.evaluate()
        self.save()
        if cfg.run.export and acc.is_main_process and (self.val_set is None or self.state.best_step < 0):
            self.export({})
        summary = {"mode": cfg.mode, "steps": self.state.step, "seconds": round(seconds, 2),
                   "best_miou": self.state.best_miou if self.state.best_step >= 0 else None,
                   "best_step": self.state.best_step if self.state.best_step >= 0 else None,
                   "final": last_eval, "run": str(self.run_dir)}
        if acc.is_main_process:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        acc.end_training()
        return summary

    def _micro_step(self, batch: dict, info: StepInfo) -> dict:
        """Forward, backward and (at a sync step) optimizer steps. Returns the detached losses as tensors: they
        become Python floats only when logged, so a GPU is not synchronised every step."""
        acc = self.acc
        students = list(self.mode.students.values())
        with acc.accumulate(*students):
            self.mode.logs = {}
            with acc.autocast():
                losses = self.mode.losses(batch, info)
            total = sum(losses.values())
            acc.backward(total)
            shared_scaler = acc.sync_gradients and acc.scaler is not None and len(self.optimizers) > 1
            if shared_scaler:
                inner = [o.optimizer for o in self.optimizers]
                for opt in inner:
                    acc.scaler.unscale_(opt)
            if acc.sync_gradients and self.cfg.run.grad_clip > 0:
                params = [p for m in students for p in m.parameters()]
                if shared_scaler:  # already unscaled above (accelerate's clip would unscale a second time)
                    torch.nn.utils.clip_grad_norm_(params, self.cfg.run.grad_clip)
                else:
                    acc.clip_grad_norm_(params, self.cfg.run.grad_clip)
            if shared_scaler:
                step_unscaled(inner, acc.scaler)
            else:
                for opt in self.optimizers:
                    opt.step()
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
        out = {k: v.detach() for k, v in losses.items()}
        out["loss"] = total.detach()
        return out

    def _after_step(self, losses: dict, bar) -> None:
        step = self.state.step
        if not (step % max(1, self.cfg.run.log_every) == 0 or step == 1 or step == self.cfg.run.max_steps):
            return
        losses = {k: float(v) for k, v in losses.items()}
        if self.acc.num_processes > 1:  # the mean over processes (every process reaches this line)
            keys = sorted(losses)
            mean = self.acc.reduce(torch.tensor([losses[k] for k in keys], device=self.acc.device), "mean")
            losses = dict(zip(keys, mean.tolist()))
        values = dict(losses)
        values.update({k: float(v) for k, v in self.mode.logs.items()})  # tensors kept on device until now
        for name, opt in zip(self.opt_names, self.optimizers):
            values[f"lr/{name}"] = opt.param_groups[0]["lr"]
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            warnings.warn(f"step {step}: non-finite losses {bad}")
        bar.set_postfix(loss=f"{losses['loss']:.4f}")
        self._log({"type": "train", "step": step, **values})

    def _log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.acc.log_with:
            self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                         step=record["step"])

    def _truncate_metrics(self, step: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not self.acc.is_main_process or not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))

    def _stage_ends(self) -> tuple[list[int], list[str]]:
        ends, names, total = [], [], 0
        for name, steps in self.mode.stages():
            total += steps
            ends.append(total)
            names.append(name)
        ends[-1] = max(ends[-1], self.cfg.run.max_steps)
        return ends, names

    # ------------------------------------------------------------------------------------------ eval / save
    def evaluate(self) -> dict | None:
        """Score the mode's evaluation forward on the val split (main process); export on a new best."""
        from segment.metrics import ConfusionMeter

        acc, result = self.acc, None
        if self.val_set is None:
            return None
        if acc.is_main_process:
            from torch.utils.data import DataLoader

            self.mode.eval()
            meter = ConfusionMeter(self.mode.classes.num_classes)
            loader = DataLoader(self.val_set, batch_size=1, num_workers=self.cfg.data.num_workers)
            with torch.no_grad(), acc.autocast():
                for batch in loader:
                    batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    pred, target = self.mode.eval_pairs(batch)
                    meter.update(pred, target)
            self.mode.train()
            summary = meter.summary(list(self.mode.classes.names))
            result = {"type": "eval", "step": self.state.step, "miou": summary["miou"],
                      "pixel_accuracy": summary["pixel_accuracy"], "iou": summary["iou"]}
            self._log(result)
            if summary["miou"] > self.state.best_miou:
                self.state.best_miou, self.state.best_step = summary["miou"], self.state.step
                if self.cfg.run.export:
                    self.export({"val mIoU": summary["miou"], "step": self.state.step})
        acc.wait_for_everyone()
        if acc.num_processes > 1:  # keep the best-model counters identical on every process
            best = torch.tensor([self.state.best_miou, float(self.state.best_step)], device=acc.device)
            best = acc.reduce(best, "max")
            self.state.best_miou, self.state.best_step = float(best[0]), int(best[1])
        return result

    def export(self, metrics: dict) -> Path:
        card = {"mode": self.cfg.mode, "data": ", ".join(self.cfg.data.train), "metrics": metrics,
                "config": str(self.run_dir / "config.yaml")}
        return self.mode.export(self.run_dir / "export", card)

    def save(self) -> Path:
        out = self.run_dir / CHECKPOINTS / f"step_{self.state.step}"
        self.acc.save_state(str(out))
        if self.acc.is_main_process and self.cfg.run.keep_checkpoints > 0:
            found = sorted((p for p in (self.run_dir / CHECKPOINTS).glob("step_*")), key=lambda p: int(p.name[5:]))
            for old in found[:-self.cfg.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return out


def step_unscaled(optimizers: list, scaler) -> None:
    """fp16 with several optimizers on one GradScaler, as PyTorch documents it: once every optimizer's gradients
    are unscaled, step each (an optimizer whose gradients overflowed skips its step alone), then update the scale
    once. accelerate's optimizer wrapper updates the scale after every optimizer, so a later optimizer would
    unscale its gradients by a scale that an earlier one's overflow had just halved."""
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()


def train(cfg: Config, resume: str | None = None) -> dict:
    return Trainer(cfg, resume).fit()
