"""The training loop: AdamW + one per-step cosine schedule, EMA weights, crop training, exact resume.

`train(config)` writes to `config.out`: `last.pt` (every `checkpoint_every` steps: weights, optimiser,
EMA, RNG and step, for `--resume`), `best.pt` (the EMA weights of the best val mAP@[.5:.95]),
`metrics.json` (config, init, per-epoch history with cumulative training minutes) and `curves.png`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

import facemask_sdk
from facemask_sdk.errors import FacemaskError
from facemask_sdk.files import write_atomically
from facemask_sdk.voc import VocDataset
from facemask_tools.training.augment import AugmentConfig
from facemask_tools.training.checkpoint import read_checkpoint, save_checkpoint
from facemask_tools.training.config import RARE_CLASS, RUNTIME_FIELDS, TrainConfig
from facemask_tools.training.data import (
    DetectionDataset,
    collate,
    epoch_indices,
    inverse_class_frequencies,
    repeat_factors,
    steps_per_epoch,
)
from facemask_tools.training.device import resolve_amp, resolve_device
from facemask_tools.training.ema import WeightAverage
from facemask_tools.training.evaluate import evaluate_network
from facemask_tools.training.loss import ClassWeightedDetectionLoss, class_weights_for
from facemask_tools.training.model import count_parameters, create_network, make_spec, train_bench
from facemask_tools.training.plots import plot_curves
from facemask_tools.training.pretrained import InitReport, checkpoint_spec, initialise

LR_FROM_BACKBONE = 1e-2
"""BiFPN and heads start random (ImageNet backbone, or none): measured best of 1e-3..3e-2 on short runs
(docs/training-log.md, "Learning rate and warm-up")."""
LR_FROM_DETECTOR = 1e-3
"""Fine-tuning detector weights (COCO, or a checkpoint of ours): the seed recipe's rate."""


def default_lr(init: InitReport) -> float:
    """The learning rate a run gets when none is given: the network's starting point decides it."""
    return LR_FROM_DETECTOR if init.detector_weights else LR_FROM_BACKBONE


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    raise FacemaskError(f"unknown optimizer {config.optimizer!r}; choose adamw or sgd")


def _resume_state(config: TrainConfig, resume: str | None, epochs: int | None, log) -> tuple[TrainConfig, dict | None]:
    """The run's recorded config and state for `--resume`; refuses to clobber an earlier run otherwise."""
    out = Path(config.out)
    if not resume:
        earlier = [name for name in RUN_FILES if (out / name).exists()]
        if earlier:
            raise FacemaskError(
                f"{out} already holds a training run ({', '.join(earlier)}); pass --resume {out} or choose another --out"
            )
        return config, None
    resume_path = Path(resume)
    resume_path = resume_path / "last.pt" if resume_path.is_dir() else resume_path
    state = read_checkpoint(resume_path)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise FacemaskError(
            f"{resume_path} cannot be resumed: it lacks {', '.join(missing)}; resume from a run's last.pt"
        )
    saved = {k: v for k, v in dict(state["train_config"]).items() if k in TrainConfig.__dataclass_fields__}
    if "data" not in saved:
        raise FacemaskError(f"{resume_path} records no training data folder; it cannot be resumed")
    if epochs and epochs != saved.get("epochs"):
        raise FacemaskError(
            f"the schedule was fixed at {saved.get('epochs')} epochs when the run started; resuming keeps it "
            f"(start a new run with --pretrained {resume_path} for a longer one)"
        )
    saved.update({k: getattr(config, k) for k in RUNTIME_FIELDS if getattr(config, k) is not None})
    # the thread count changes float reduction order: keeping the recorded one keeps a resume exact
    log(f"resuming {resume_path} at step {state['step']} of {state['total_steps']}")
    return TrainConfig(**saved), state


RUN_FILES = ("last.pt", "best.pt", "metrics.json", "curves.png")
RESUME_KEYS = ("optimizer", "step", "total_steps", "train_config")


def train(
    config: TrainConfig,
    resume: str | None = None,
    progress: bool = True,
    log=print,
    epochs: int | None = None,
    stop_after_minutes: float | None = None,
    stop_after_steps: int | None = None,
) -> dict:
    """Run (or resume) a training run; returns the metrics dict also written to metrics.json.

    The schedule's length is fixed when a run starts; a resumed run continues at the exact step it
    stopped (optimiser, EMA, RNG and sampler position restored). `stop_after_minutes` / `_steps` end
    this stint cleanly with a checkpoint, to be resumed later.
    """
    config, state = _resume_state(config, resume, epochs, log)
    if state is None:
        config = _inherit_geometry(config, log)
    run = _Run(config, state, log)
    stint = _Stint(time.time(), stop_after_minutes, stop_after_steps)
    summary: dict = run.summary() if run.history else {}
    while run.step < run.total_steps:
        epoch, first = divmod(run.step, run.per_epoch)
        sums, seen, seconds, stopped = run.train_epoch(epoch, first, stint, progress)
        if stopped and run.step % run.per_epoch:
            log(f"stopped at step {run.step} of {run.total_steps}; continue with --resume {run.out}")
            return summary
        summary = run.end_epoch(epoch, sums, seen, seconds, progress)
        if stopped:
            log(f"stopped at step {run.step} of {run.total_steps}; continue with --resume {run.out}")
            break
    return summary


def _inherit_geometry(config: TrainConfig, log) -> TrainConfig:
    """A run from a facemask-sdk checkpoint of the same architecture keeps its input size and anchor scale where
    --image-size / --anchor-scale are not given (effdet's defaults would silently re-assign every anchor)."""
    if config.image_size is not None and config.anchor_scale is not None:
        return config
    spec = checkpoint_spec(config.pretrained)
    if spec is None:
        return config
    if spec.architecture != config.model:
        log(f"from {config.pretrained}: nothing inherited (a {spec.architecture} checkpoint, training {config.model})")
        return config
    inherited = {}
    if config.image_size is None:
        inherited["image_size"] = int(spec.image_size[0])
    if config.anchor_scale is None:
        inherited["anchor_scale"] = float(spec.anchors.anchor_scale)
    said = ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in inherited.items())
    log(f"from {config.pretrained}: {said} (inherited; --image-size / --anchor-scale override)")
    return replace(config, **inherited)


@dataclass
class _Stint:
    """This sitting's limits: a stint ends cleanly (checkpoint written) after so many minutes or steps."""

    started: float
    minutes: float | None
    steps: int | None
    done: int = 0

    def over(self) -> bool:
        return bool(
            (self.steps and self.done >= self.steps)
            or (self.minutes and time.time() - self.started >= 60 * self.minutes)
        )


class _Run:
    """One training run's state: data, networks, optimiser, EMA, schedule position and history, set up
    fresh or from a resume state, with its checkpoints (`last.pt`, `best.pt`) and per-epoch records."""

    def __init__(self, config: TrainConfig, state: dict | None, log) -> None:
        self.config, self.log, self.out = config, log, Path(config.out)
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.spec = spec = make_spec(config.model, config.image_size, anchor_scale=config.anchor_scale)
        crop = min(config.crop_size or spec.image_size[0], spec.image_size[0])  # a crop never exceeds the canvas
        if crop % 2**spec.anchors.max_level:
            raise FacemaskError(f"--crop-size must be a multiple of {2**spec.anchors.max_level}, got {crop}")
        train_set = VocDataset(config.data, "train", spec.classes, config.val_fraction, config.seed)
        val_set = VocDataset(config.data, "val", spec.classes, config.val_fraction, config.seed)
        for problem in train_set.report.problems + val_set.report.problems:
            log(f"data: {problem}")
        self.val_records = val_set.records[: config.max_val_images] if config.max_val_images else val_set.records

        self.network = create_network(replace(spec, image_size=(crop, crop)))
        self.evaluated = create_network(spec)
        self.ema = (
            WeightAverage(self.evaluated, config.ema_decay, config.ema_ramp_steps) if config.ema_decay > 0 else None
        )
        self._restore(state)  # a fresh run's learning rate is chosen here, by its initialisation
        config = self.config
        self.amp_dtype = resolve_amp(config.amp, self.device)
        log(
            f"model: {spec.architecture} @ {spec.image_size[0]} px (training crops {crop} px), "
            f"{count_parameters(self.network) / 1e6:.2f} M parameters, anchor scale {spec.anchors.anchor_scale:g}"
            + (f"; faces at the scales of {', '.join(map(str, config.multi_scale))} px" if config.multi_scale else "")
        )
        log(f"init: {self.init}")
        log(
            f"device: {self.device}; precision: {self.amp_dtype or 'fp32'}{', channels_last' if config.channels_last else ''}; "
            f"train images: {len(train_set)}; val images: {len(self.val_records)}"
        )

        self.bench = train_bench(self.network)
        if config.rare_class_weight != 1.0:
            if RARE_CLASS not in spec.classes:
                raise FacemaskError(f"--rare-class-weight weights {RARE_CLASS}, which this model's classes lack")
            weights = class_weights_for(spec.classes, {RARE_CLASS: config.rare_class_weight})
            self.bench.loss_fn = ClassWeightedDetectionLoss(self.network.config, weights)
        self.bench.to(self.device)
        self.evaluated.to(self.device)
        if config.channels_last:
            self.network.to(memory_format=torch.channels_last)
        paste_class = spec.classes.index(RARE_CLASS) if RARE_CLASS in spec.classes else -1
        self.dataset = DetectionDataset(
            train_set.records,
            spec,
            replace(
                AugmentConfig.strength(config.augment),
                photometric=config.photometric,
                zoom_max_upscale=config.zoom_max_upscale,
                canvas_scales=tuple(size / spec.image_size[0] for size in config.multi_scale),
                zoom_class_weights=(
                    inverse_class_frequencies(train_set.records, spec.num_classes, config.zoom_balance_power)
                    if config.zoom_balance
                    else None
                ),
            ),
            config.seed,
            (crop, crop),
            mosaic=config.mosaic,
            copy_paste=config.copy_paste,
            paste_class=paste_class,
            zoom=config.zoom,
        )
        self.factors = repeat_factors(train_set.records, spec.num_classes, config.repeat_threshold)
        self.per_epoch = steps_per_epoch(self.factors, config.batch_size)
        if config.max_steps:
            self.per_epoch = min(self.per_epoch, config.max_steps)
        self.total_steps = int(state["total_steps"]) if state else self.per_epoch * config.epochs
        if state is not None:
            torch.set_rng_state(state["torch_rng"])
        self.out.mkdir(parents=True, exist_ok=True)

    def _restore(self, state: dict | None) -> None:
        """Fresh initialisation, or the resume state (with best.pt chosen anew if the evaluation changed)."""
        if state is None:
            report = initialise(self.network, self.spec, self.config.pretrained)
            self.init = report.describe()
            if self.config.lr is None:
                self.config = replace(self.config, lr=default_lr(report))
                self.log(
                    f"lr: {self.config.lr:g} (the default for "
                    f"{'detector weights' if report.detector_weights else 'random BiFPN and heads'}; --lr sets it)"
                )
            self.optimizer = _optimizer(self.network.parameters(), self.config)
            self.history: list[dict] = []
            self.step, self.best_map, self.elapsed = 0, -1.0, 0.0
            if self.ema:
                self.ema.copy_from(self.network)
            return
        self.network.load_state_dict(state["state_dict"])
        self.optimizer = _optimizer(self.network.parameters(), self.config)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.init, self.history = state["init"], state["history"]
        self.step, self.best_map = int(state["step"]), float(state.get("best_map", -1.0))
        self.elapsed = float(state.get("train_seconds", 0.0))
        if state.get("evaluation") != evaluation_description():
            # val mAP of different post-processing is not comparable: best.pt is chosen anew from here
            earlier = state.get("evaluation") or "not recorded"
            self.log(
                f"the evaluation changed since this run started ({earlier} -> {evaluation_description()}); "
                f"best.pt will be replaced by the next epoch's weights"
            )
            self.best_map = -1.0
            self.history = [{**entry, "evaluation": entry.get("evaluation", earlier)} for entry in self.history]

    def payload(self, epoch: int) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "train_config": asdict(self.config),
            "init": self.init,
            "epoch": epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "history": self.history,
            "best_map": self.best_map,
            "train_seconds": round(self.elapsed, 1),
            "code_version": facemask_sdk.__version__,
            "evaluation": evaluation_description(),
        }

    def save_last(self, epoch: int) -> None:
        save_checkpoint(
            self.out / "last.pt",
            {
                **self.payload(epoch),
                "state_dict": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "torch_rng": torch.get_rng_state(),
            },
        )

    def _loader(self, epoch: int, first: int):
        """This epoch's batches from step `first` on: the sampler's order is a function of the epoch alone."""
        config = self.config
        self.dataset.epoch = epoch
        order = epoch_indices(self.factors, epoch, config.seed)
        order = (order * math.ceil(self.per_epoch * config.batch_size / len(order)))[
            : self.per_epoch * config.batch_size
        ]
        return torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, order[first * config.batch_size :]),
            batch_size=config.batch_size,
            shuffle=False,
            num_workers=config.workers,
            collate_fn=collate,
            drop_last=False,
            generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG for the steps alone
        )

    def train_epoch(self, epoch: int, first: int, stint: _Stint, progress: bool) -> tuple[dict, int, float, bool]:
        """Steps from `first` to the epoch's end (or the stint's): loss sums, steps, seconds, stopped."""
        config = self.config
        self.bench.train()
        sums = {"loss": 0.0, "class_loss": 0.0, "box_loss": 0.0}
        seen, started, stopped = 0, time.time(), False
        epoch_started = started
        bar = tqdm(
            self._loader(epoch, first),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress,
            initial=first,
            total=self.per_epoch,
        )
        for images, target in bar:
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, self.total_steps, config)
            losses = _train_step(self.bench, self.optimizer, images, target, self.device, self.amp_dtype, config)
            if not math.isfinite(losses["loss"]):
                raise FacemaskError(f"loss became {losses['loss']} at step {self.step + 1}; lower --lr")
            if self.ema:
                self.ema.update(self.network)
            self.step, seen, stint.done = self.step + 1, seen + 1, stint.done + 1
            for key in sums:
                sums[key] += losses[key]
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            stopped = stint.over()
            if stopped or self.step % config.checkpoint_every == 0 or self.step == self.total_steps:
                self.elapsed += time.time() - started
                started = time.time()
                self.save_last(epoch)
            if stopped:
                break
        self.elapsed += time.time() - started
        return sums, seen, time.time() - epoch_started, stopped

    def end_epoch(self, epoch: int, sums: dict, seen: int, seconds: float, progress: bool) -> dict:
        """Evaluate the (EMA) weights on val, record the epoch, keep best.pt, checkpoint, write metrics."""
        if not self.ema:
            self.evaluated.load_state_dict(self.network.state_dict())
        metrics, _ = evaluate_network(
            self.evaluated, self.spec, self.val_records, self.config.eval_batch_size, self.device, progress
        )
        self.history.append(
            {
                "epoch": epoch + 1,
                "step": self.step,
                **{f"train_{k}": v / max(1, seen) for k, v in sums.items()},
                "lr_end": self.optimizer.param_groups[0]["lr"],
                "train_seconds": round(seconds, 1),
                "train_minutes_total": round(self.elapsed / 60, 2),
                "val": metrics,
                "evaluation": evaluation_description(),
            }
        )
        self.log(
            f"epoch {epoch + 1} (step {self.step}/{self.total_steps}, {self.elapsed / 60:.1f} min): "
            f"loss {sums['loss'] / max(1, seen):.4f}  val mAP {metrics['map']:.4f}  mAP@.5 {metrics['map50']:.4f}"
        )
        if metrics["map"] > self.best_map:
            self.best_map = metrics["map"]
            save_checkpoint(
                self.out / "best.pt",
                {**self.payload(epoch + 1), "state_dict": self.evaluated.state_dict(), "metrics": metrics},
            )
        self.save_last(epoch + 1)
        summary = self.summary()
        _write_json(self.out / "metrics.json", summary)
        plot_curves(self.history, self.out / "curves.png")
        return summary

    def summary(self) -> dict:
        return _summary(self.config, self.spec, self.init, self.history, self.network, self.step, self.total_steps)


def evaluation_description() -> str:
    """What the per-epoch val mAP measures, recorded with each checkpoint: a resumed run whose evaluation
    has changed since (as when one-box NMS became the product's) must not compare old and new figures."""
    from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, describe
    from facemask_sdk.metrics import evaluation_config

    config = evaluation_config()
    nms = "one box per face (class-agnostic NMS)" if config.class_agnostic else "class-aware NMS"
    return (
        f"{nms}, score > {config.score_threshold:g}, IoU {config.iou_threshold:g}, max {config.max_detections}, "
        f"{describe(DEFAULT_CLOSEUP_CHECK)}"
    )


def _train_step(bench, optimizer, images, target, device: str, amp_dtype, config: TrainConfig) -> dict[str, float]:
    """One forward + backward + optimiser step; the network under autocast, labels and loss in fp32."""
    images = images.to(device)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        class_out, box_out = bench.model(images)
    class_out = [c.float() for c in class_out]
    box_out = [b.float() for b in box_out]
    cls_targets, box_targets, num_positives = bench.anchor_labeler.batch_label_anchors(
        target["bbox"].to(device), target["cls"].to(device)
    )
    loss, class_loss, box_loss = bench.loss_fn(class_out, box_out, cls_targets, box_targets, num_positives)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(bench.model.parameters(), config.grad_clip)
    optimizer.step()
    return {
        "loss": float(loss.detach()),
        "class_loss": float(class_loss.detach()),
        "box_loss": float(box_loss.detach()),
    }


def _summary(config: TrainConfig, spec, init: str, history: list[dict], network, step: int, total_steps: int) -> dict:
    current = evaluation_description()
    comparable = [h for h in history if h.get("evaluation", current) == current] or history
    best = max(comparable, key=lambda h: h["val"]["map"])  # figures of another evaluation do not compete
    return {
        "config": asdict(config),
        "spec": spec.to_dict(),
        "init": init,
        "parameters": count_parameters(network),
        "epochs_done": len(history),
        "step": step,
        "total_steps": total_steps,
        "best_epoch": best["epoch"],
        "best": best["val"],
        "last": history[-1]["val"],
        "history": history,
        "code_version": facemask_sdk.__version__,
    }


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=2))
