"""The accelerate trainer: runs a mode's stages (rewis/modes/base.py), sums its named losses, steps, logs,
evaluates, checkpoints and exports. All method math, data, evaluation and export live in the mode.

Run folder (cfg.run.out): config.yaml (resolved config), metrics.jsonl (one JSON object per logged step and
per evaluation), logs/ (TensorBoard / W&B), checkpoints/step_N (rewis/checkpoint.py: students, teachers,
optimizers, schedulers, RNG, counters), stages/<name>/ (products of a stage's offline step), export/ (the
best model by val mIoU, or the last one without val data), summary.json. `rewis train` refuses a run folder
that is not empty unless asked to resume it or to overwrite it.

Exact resume: data order and per-sample augmentation depend only on (seed, epoch, index) (rewis/data.py);
the RNG states are restored from the checkpoint; checkpoints are taken at optimizer-step boundaries and the
resumed epoch skips the batches already consumed. Offline steps run with a forked RNG, so whether one ran
in this process or before a resume changes nothing downstream.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from recon.atomic import staged_folder
from recon.errors import InputError
from rewis.checkpoint import latest_checkpoint, load_modules, load_objects, load_rng, read_state, remove_partial
from rewis.checkpoint import step_folders, write_checkpoint
from rewis.config import Config, flat_dict, save_config, to_dict
from rewis.ema import unwrap
from rewis.modes import MODES, Mode, OfflineContext, Stage, StepInfo

CHECKPOINTS = "checkpoints"


@dataclass
class RunState:
    """Counters checkpointed with the run (state.json)."""
    step: int = 0
    best_miou: float = -1.0
    best_step: int = -1
    last_eval_step: int = -1
    offline_done: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "RunState":
        return cls(**{k: data[k] for k in asdict(cls()) if k in data})


def stage_bounds(stages: list[Stage], cfg: Config) -> list[tuple[int, int]]:
    """(first step, end step) of each stage; the stages must add up to run.max_steps."""
    bounds, total = [], 0
    for stage in stages:
        if stage.steps < 1:
            raise InputError(f"{cfg.source or 'config'}: stage '{stage.name}' of mode {cfg.mode} has {stage.steps} "
                             "steps; every stage needs at least one")
        bounds.append((total, total + stage.steps))
        total += stage.steps
    if total != cfg.run.max_steps:
        listed = ", ".join(f"{s.name} {s.steps}" for s in stages)
        raise InputError(f"{cfg.source or 'config'}: the stages of mode {cfg.mode} ({listed}) add up to {total} "
                         f"steps but run.max_steps is {cfg.run.max_steps}; make them equal")
    return bounds


class Trainer:
    def __init__(self, cfg: Config, resume: str | None = None, overwrite: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed

        self.cfg, self.run_dir = cfg, Path(cfg.run.out)
        self.resume_from = self._resume_path(resume)
        self.acc = Accelerator(cpu=cfg.run.cpu, mixed_precision=cfg.run.mixed_precision, log_with=self._tracker(),
                               gradient_accumulation_plugin=GradientAccumulationPlugin(
                                   num_steps=cfg.run.grad_accum, sync_with_dataloader=False),
                               project_config=ProjectConfiguration(project_dir=str(self.run_dir),
                                                                   logging_dir=str(self.run_dir / "logs")))
        self._claim_run_folder(overwrite)
        if cfg.run.cpu_threads > 0:
            torch.set_num_threads(cfg.run.cpu_threads)
        set_seed(cfg.seed)
        mode_class = MODES[cfg.mode]
        self.mode: Mode = mode_class(cfg, mode_class.read_classes(cfg))
        self.stages = self.mode.stages()
        self.bounds = stage_bounds(self.stages, cfg)
        self.initial = self._initial_weights()
        self._prepare_students()
        self.state = RunState()
        self.optimizers, self.opt_names, self.schedulers = None, [], []

    # ------------------------------------------------------------------------------------------ setup
    def _resume_path(self, resume: str | None) -> Path | None:
        if resume is None:
            return None
        where = self.run_dir if resume in ("", "latest", "auto") else Path(resume)
        ckpt = latest_checkpoint(where)
        if ckpt is None:
            raise InputError(f"--resume {where}: no complete checkpoints/step_N there to resume from")
        if resume not in ("", "latest", "auto") and ckpt.parent.name == CHECKPOINTS:
            self.run_dir = ckpt.parent.parent
            self.cfg.run.out = str(self.run_dir)
        return ckpt

    def _claim_run_folder(self, overwrite: bool) -> None:
        """A new run needs an empty (or absent) run folder: nothing of an earlier run is mixed in or lost."""
        folder = self.run_dir
        if self.resume_from is not None or not folder.is_dir() or not any(folder.iterdir()):
            return
        if not overwrite:
            raise InputError(f"{folder}: the run folder is not empty; pass --resume to continue that run, "
                             "--overwrite to replace it, or set run.out to a new folder")
        if self.acc.is_main_process:
            shutil.rmtree(folder)
        self.acc.wait_for_everyone()

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

    def _initial_weights(self) -> dict[str, dict] | None:
        """Students' and teachers' weights before training, kept when a stage starts from fresh weights."""
        if not any(s.fresh_students or s.fresh_teachers for s in self.stages):
            return None
        return {name: {k: v.detach().clone() for k, v in unwrap(m).state_dict().items()}
                for name, m in self._modules().items()}

    def _prepare_students(self) -> None:
        names = list(self.mode.students)
        prepared = self.acc.prepare(*[self.mode.students[n] for n in names])
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        self.mode.students.update(zip(names, prepared))
        for teacher in self.mode.teachers.values():
            teacher.to(self.acc.device)

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {**{f"student.{n}": m for n, m in self.mode.students.items()},
                **{f"teacher.{n}": m for n, m in self.mode.teachers.items()}}

    def _optim_objects(self) -> dict[str, object]:
        objs = {f"optim.{n}": o for n, o in zip(self.opt_names, self.optimizers)}
        objs.update({f"sched.{n}": s for n, s in zip(self.opt_names, self.schedulers) if s is not None})
        if self.acc.scaler is not None:
            objs["scaler"] = self.acc.scaler
        return objs

    def _extra_objects(self) -> dict[str, object]:
        return {f"extra.{n}": o for n, o in self.mode.state_objects().items()}

    # ------------------------------------------------------------------------------------------ training
    def fit(self) -> dict:
        cfg, acc = self.cfg, self.acc
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        ckpt = self.resume_from
        if ckpt is not None:
            self.state = RunState.from_dict(read_state(ckpt))
            self._truncate_metrics(self.state.step)
            if acc.is_main_process:
                remove_partial(self.run_dir / CHECKPOINTS)
        if acc.log_with:
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                       for k, v in flat_dict(to_dict(cfg)).items()}
            acc.init_trackers("rewis", config=hparams)
        from tqdm import tqdm

        bar = tqdm(total=cfg.run.max_steps, initial=self.state.step, desc=f"train {cfg.mode}", unit="step",
                   disable=not (cfg.run.progress and acc.is_main_process), dynamic_ncols=True)
        self.last_eval = None
        start = time.perf_counter()
        for index in range(len(self.stages)):
            if self.state.step < self.bounds[index][1]:
                self._run_stage(index, ckpt, bar)
                ckpt = None
        bar.close()
        seconds = time.perf_counter() - start
        if self.state.last_eval_step != self.state.step:
            self.evaluate()
        self.save()
        if cfg.run.export and acc.is_main_process and self.state.best_step < 0:
            self.export({})
        summary = {"mode": cfg.mode, "steps": self.state.step, "seconds": round(seconds, 2),
                   "best_miou": self.state.best_miou if self.state.best_step >= 0 else None,
                   "best_step": self.state.best_step if self.state.best_step >= 0 else None,
                   "final": self.last_eval, "run": str(self.run_dir)}
        if acc.is_main_process:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        acc.end_training()
        return summary

    def _run_stage(self, index: int, ckpt: Path | None, bar) -> None:
        """Enter stage `index` (its offline step, data and optimizers; the checkpoint when resuming; fresh
        weights at its first step), then train it to its last step."""
        stage, (first, end) = self.stages[index], self.bounds[index]
        self.mode.begin_stage(stage, self._offline_products(index))
        dataset, collate = self.mode.train_data(stage)
        self.loader, steps_per_epoch = self._loader(dataset, collate)
        at_start = self.state.step == first
        if self.optimizers is None or (at_start and stage.fresh_optimizers):
            self._build_optimizers(index)
        if ckpt is not None:
            self._load(ckpt, optimizers=not (at_start and stage.fresh_optimizers))
        if at_start:
            self._freshen(stage)
        self.mode.train()
        self._train_steps(stage, first, end, steps_per_epoch, bar)
        if end < self.cfg.run.max_steps and not (self.cfg.run.save_every and end % self.cfg.run.save_every == 0):
            self.save()  # every stage boundary is a resume point

    def _loader(self, dataset, collate):
        from torch.utils.data import DataLoader

        from rewis.data import EpochSampler

        cfg = self.cfg
        loader = DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=EpochSampler(len(dataset), cfg.seed),
                            drop_last=True, collate_fn=collate, num_workers=cfg.data.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=False,
                            pin_memory=self.acc.device.type == "cuda")
        loader = self.acc.prepare(loader)
        steps_per_epoch = len(loader) // cfg.run.grad_accum
        if steps_per_epoch < 1:
            raise InputError(f"{cfg.source}: {len(dataset)} training samples give {len(loader)} batches per epoch, "
                             f"fewer than run.grad_accum={cfg.run.grad_accum}; lower data.batch_size or "
                             "run.grad_accum, or raise data.epoch_repeats")
        return loader, steps_per_epoch

    def _build_optimizers(self, index: int) -> None:
        """The mode's optimizers for the schedule span that holds stage `index`: from the last stage at or before
        it that starts fresh optimizers (or the first) to the next one that does."""
        owner = max(i for i in range(index + 1) if i == 0 or self.stages[i].fresh_optimizers)
        after = next((i for i in range(owner + 1, len(self.stages)) if self.stages[i].fresh_optimizers),
                     len(self.stages))
        span = self.bounds[after - 1][1] - self.bounds[owner][0]
        optims = self.mode.optimizers(span)
        self.opt_names = list(optims)
        self.optimizers = [self.acc.prepare_optimizer(opt) for opt, _ in optims.values()]
        self.acc._optimizers[:] = self.optimizers  # the scaler and clipping must not see a finished stage's
        self.schedulers = [sched for _, sched in optims.values()]

    def _freshen(self, stage: Stage) -> None:
        if self.initial is None:
            return
        if stage.fresh_students:
            for name, m in self.mode.students.items():
                unwrap(m).load_state_dict(self.initial[f"student.{name}"])
        if stage.fresh_teachers:
            for name, t in self.mode.teachers.items():
                source = unwrap(self.mode.students[name]).state_dict() if name in self.mode.students else \
                    self.initial[f"teacher.{name}"]
                t.load_state_dict(source)

    def _offline_products(self, index: int) -> dict[str, Path]:
        """Folders of the offline steps of stages up to `index`, running the ones not finished yet. A product
        folder appears only by an atomic rename once its step returned, so its presence means finished."""
        products: dict[str, Path] = {}
        for stage in self.stages[:index + 1]:
            if stage.offline is None:
                continue
            folder = self.run_dir / "stages" / stage.name
            if not folder.is_dir():
                self._run_offline(stage, folder, products)
            if stage.name not in self.state.offline_done:
                self.state.offline_done.append(stage.name)
            products[stage.name] = folder
        return products

    def _run_offline(self, stage: Stage, folder: Path, products: dict[str, Path]) -> None:
        acc = self.acc
        if acc.is_main_process:
            self.mode.eval()
            devices = [acc.device] if acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), staged_folder(folder, overwrite=True) as out:
                stage.offline(OfflineContext(out=out, device=acc.device, products=dict(products),
                                             progress=self.cfg.run.progress))
            self.mode.train()
        acc.wait_for_everyone()

    def _train_steps(self, stage: Stage, first: int, end: int, steps_per_epoch: int, bar) -> None:
        cfg, acc = self.cfg, self.acc
        while self.state.step < end:
            epoch, in_epoch = divmod(self.state.step - first, steps_per_epoch)
            # The prepared loader, not just our sampler: accelerate's loader re-sets the sampler's epoch from its
            # own counter on every iteration, which would replay epoch 0's samples forever.
            self.loader.set_epoch(epoch)
            loader = acc.skip_first_batches(self.loader, in_epoch * cfg.run.grad_accum) if in_epoch else self.loader
            sums, micro = {}, 0
            for batch in loader:
                info = StepInfo(self.state.step, epoch, in_epoch, steps_per_epoch, stage.name, cfg.run.max_steps,
                                self.state.step - first)
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
                    self.evaluate()
                if cfg.run.save_every and step % cfg.run.save_every == 0 and step < cfg.run.max_steps:
                    self.save()
                if step >= end or in_epoch >= steps_per_epoch:
                    break

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

    # ------------------------------------------------------------------------------------------ eval / save
    def evaluate(self) -> dict | None:
        """The mode's metrics on its val split (main process), logged with the split's confusion matrix; a new
        best is exported."""
        acc, result = self.acc, None
        self.state.last_eval_step = self.state.step
        if acc.is_main_process:
            self.mode.eval()
            with torch.no_grad():
                summary = self.mode.evaluate(acc.device)
            self.mode.train()
            if summary is not None:
                result = {"type": "eval", "step": self.state.step, "miou": summary["miou"],
                          "pixel_accuracy": summary.get("pixel_accuracy"), "iou": summary["iou"],
                          "confusion": summary["confusion"]}
                self._log(result)
                self.last_eval = result
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
        """The mode's deployable model, swapped into RUN/export only once it is complete."""
        card = {"mode": self.cfg.mode, "data": ", ".join(self.cfg.data.train), "metrics": metrics,
                "config": str(self.run_dir / "config.yaml")}
        target = self.run_dir / "export"
        with staged_folder(target, overwrite=True) as staging:
            self.mode.export(staging, card)
        return target

    def save(self) -> Path:
        out = self.run_dir / CHECKPOINTS / f"step_{self.state.step}"
        state = {"mode": self.cfg.mode, **asdict(self.state)}
        write_checkpoint(out, self._modules(), {**self._optim_objects(), **self._extra_objects()}, state, self.acc)
        if self.acc.is_main_process and self.cfg.run.keep_checkpoints > 0:
            for old in step_folders(self.run_dir / CHECKPOINTS)[:-self.cfg.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return out

    def _load(self, ckpt: Path, optimizers: bool) -> None:
        load_modules(ckpt, self._modules())
        load_objects(ckpt, self._extra_objects())
        if optimizers:
            load_objects(ckpt, self._optim_objects())
        load_rng(ckpt, self.acc.process_index)
        self.acc.step = 0  # checkpoints sit on optimizer-step boundaries


def step_unscaled(optimizers: list, scaler) -> None:
    """fp16 with several optimizers on one GradScaler, as PyTorch documents it: once every optimizer's gradients
    are unscaled, step each (an optimizer whose gradients overflowed skips its step alone), then update the scale
    once. accelerate's optimizer wrapper updates the scale after every optimizer, so a later optimizer would
    unscale its gradients by a scale that an earlier one's overflow had just halved."""
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()


def train(cfg: Config, resume: str | None = None, overwrite: bool = False) -> dict:
    return Trainer(cfg, resume, overwrite).fit()
