"""The training loop: AdamW + per-step cosine schedule, validation mAP every epoch, atomic checkpoints.

`train(config)` writes to `config.out`: `last.pt` (with optimiser state, for `--resume`), `best.pt`
(best val mAP@[.5:.95]), `metrics.json` (config, init, per-epoch history, best) and `curves.png`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import facemask_sdk
from facemask_sdk.errors import FacemaskError
from facemask_sdk.voc import VocDataset
from training.augment import AugmentConfig
from training.checkpoint import read_checkpoint, save_checkpoint
from training.data import DetectionDataset, collate, epoch_indices, repeat_factors, steps_per_epoch
from training.evaluate import evaluate_network
from training.model import count_parameters, create_network, make_spec, train_bench
from training.pretrained import initialise


@dataclass
class TrainConfig:
    """Every knob of a run; recorded in each checkpoint and in metrics.json. Defaults = product recipe."""

    data: str
    out: str
    model: str = "tf_efficientdet_d0"
    image_size: int | None = None  # None: the architecture's own (512 for D0, 320 for Lite0)
    batch_size: int = 16
    epochs: int = 5
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 disables clipping
    pretrained: str = "auto"
    augment: str = "medium"
    repeat_threshold: float = 0.3  # LVIS repeat-factor sampling for rare classes; 0 disables
    seed: int = 0
    val_fraction: float = 0.2
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests)
    max_val_images: int | None = None
    eval_batch_size: int = 8
    extra: dict = field(default_factory=dict)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacemaskError(f"--device {name} asked for, but CUDA is not available to torch here")
    return name


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


def train(
    config: TrainConfig, resume: str | None = None, progress: bool = True, log=print, epochs: int | None = None
) -> dict:
    """Run (or resume) a training run; returns the final metrics dict also written to metrics.json.

    On resume the run's recorded config is used; `epochs` may extend it (the cosine schedule is then
    re-spread over the new total).
    """
    out = Path(config.out)
    state = None
    if resume:
        resume_path = Path(resume)
        resume_path = resume_path / "last.pt" if resume_path.is_dir() else resume_path
        state = read_checkpoint(resume_path)
        if "optimizer" not in state:
            raise FacemaskError(f"{resume_path} has no optimiser state; resume from a last.pt")
        saved = dict(state["train_config"])
        saved.update({"out": config.out, "device": config.device, "workers": config.workers, "threads": config.threads})
        if epochs:
            saved["epochs"] = epochs
        config = TrainConfig(**saved)
        log(f"resuming {resume_path} after epoch {state['epoch']}")
    elif (out / "last.pt").exists():
        raise FacemaskError(f"{out} already holds a training run; pass --resume {out} or choose another --out")

    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    spec = make_spec(config.model, config.image_size)
    train_set = VocDataset(config.data, "train", spec.classes, config.val_fraction, config.seed)
    val_set = VocDataset(config.data, "val", spec.classes, config.val_fraction, config.seed)
    for problem in train_set.report.problems + val_set.report.problems:
        log(f"data: {problem}")
    val_records = val_set.records[: config.max_val_images] if config.max_val_images else val_set.records

    network = create_network(spec)
    if state is None:
        init = initialise(network, spec, config.pretrained).describe()
        history: list[dict] = []
        start_epoch, best_map = 0, -1.0
    else:
        network.load_state_dict(state["state_dict"])
        init, history = state["init"], state["history"]
        start_epoch, best_map = state["epoch"], state.get("best_map", -1.0)
    log(f"model: {spec.architecture} @ {spec.image_size[0]} px, {count_parameters(network) / 1e6:.2f} M parameters")
    log(f"init: {init}")
    log(f"device: {device}; train images: {len(train_set)}; val images: {len(val_records)}")

    bench = train_bench(network).to(device)
    optimizer = _optimizer(network.parameters(), config)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    dataset = DetectionDataset(train_set.records, spec, AugmentConfig.strength(config.augment), config.seed)
    factors = repeat_factors(train_set.records, spec.num_classes, config.repeat_threshold)
    per_epoch = steps_per_epoch(factors, config.batch_size)
    if config.max_steps:
        per_epoch = min(per_epoch, config.max_steps)
    total_steps = per_epoch * config.epochs
    out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch, config.epochs):
        dataset.epoch = epoch
        order = epoch_indices(factors, epoch, config.seed)[: per_epoch * config.batch_size]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order), batch_size=config.batch_size, shuffle=False,
            num_workers=config.workers, collate_fn=collate, drop_last=False,
        )
        bench.train()
        sums = {"loss": 0.0, "class_loss": 0.0, "box_loss": 0.0}
        seen, started = 0, time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", disable=not progress)
        for i, (images, target) in enumerate(bar):
            step = epoch * per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            output = bench(images.to(device), {k: v.to(device) for k, v in target.items()})
            loss = output["loss"]
            if not torch.isfinite(loss):
                raise FacemaskError(f"loss became {loss.item()} at epoch {epoch + 1} step {i + 1}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.grad_clip)
            optimizer.step()
            seen += 1
            for key in sums:
                sums[key] += float(output[key].detach())
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        train_time = time.time() - started
        network.eval()
        metrics, _ = evaluate_network(network, spec, val_records, config.eval_batch_size, device, progress)
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(1, seen) for k, v in sums.items()},
            "lr_end": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_time, 1),
            "val": metrics,
        }
        history.append(record)
        log(
            f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mAP {metrics['map']:.4f}  "
            f"mAP@.5 {metrics['map50']:.4f}  ({train_time / 60:.1f} min)"
        )
        payload = {
            "state_dict": network.state_dict(),
            "spec": spec.to_dict(),
            "train_config": asdict(config),
            "init": init,
            "epoch": epoch + 1,
            "history": history,
            "metrics": metrics,
            "code_version": facemask_sdk.__version__,
        }
        if metrics["map"] > best_map:
            best_map = metrics["map"]
            save_checkpoint(out / "best.pt", {**payload, "best_map": best_map})
        save_checkpoint(out / "last.pt", {**payload, "best_map": best_map, "optimizer": optimizer.state_dict()})
        summary = _write_metrics(out, config, spec, init, history, network)
        plot_curves(history, out / "curves.png")
    return summary


def _write_metrics(out: Path, config: TrainConfig, spec, init: str, history: list[dict], network) -> dict:
    best = max(history, key=lambda h: h["val"]["map"])
    summary = {
        "config": asdict(config),
        "spec": spec.to_dict(),
        "init": init,
        "parameters": count_parameters(network),
        "epochs_done": len(history),
        "best_epoch": best["epoch"],
        "best": best["val"],
        "last": history[-1]["val"],
        "history": history,
        "code_version": facemask_sdk.__version__,
    }
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "metrics.json")
    return summary


def plot_curves(history: list[dict], path: Path) -> Path:
    """Training loss and val mAP per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "total"), ("train_class_loss", "class"), ("train_box_loss", "box")):
        ax_loss.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_loss.legend()
    ax_map.plot(epochs, [h["val"]["map"] for h in history], marker="o", label="mAP@[.5:.95]")
    ax_map.plot(epochs, [h["val"]["map50"] for h in history], marker="o", label="mAP@.5")
    ax_map.set(title="validation", xlabel="epoch", ylabel="mAP", ylim=(0, 1))
    ax_map.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
