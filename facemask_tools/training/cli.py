"""`facemask-sdk train` and `facemask-sdk eval`: thin click wrappers over facemask_tools.training.trainer / evaluate."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, describe
from facemask_sdk.errors import FacemaskError
from facemask_tools.paths import DATASET, DATASET_HELP
from facemask_tools.training.config import TrainConfig

malloc_option = click.option(
    "--malloc",
    type=click.Choice(["auto", "tcmalloc", "libc"]),
    default="auto",
    show_default=True,
    help="auto: re-run on tcmalloc where it is installed (measured on CPU: eval 2.4x, a stage-H training step "
    "1.15x faster), else glibc's malloc.",
)


def choose_allocator(choice: str) -> None:
    """Switch to tcmalloc before torch is imported (may re-execute this command once) and say which malloc runs."""
    from facemask_tools.training.allocator import INSTALL_HINT, use_tcmalloc

    allocator = use_tcmalloc(choice)
    hint = f" (tcmalloc is faster on CPU: {INSTALL_HINT})" if allocator == "libc" and choice == "auto" else ""
    click.echo(f"malloc: {allocator}{hint}")


def check_iou(iou_threshold: float | None) -> None:
    """`--iou`: None (COCO's thresholds) or a value strictly between 0 and 1."""
    if iou_threshold is not None and not 0.0 < iou_threshold < 1.0:
        raise FacemaskError(f"--iou must lie between 0 and 1, not {iou_threshold}")


def default_split(data: str, preferred: str) -> str:
    """`preferred` where the folder has that split's file, else all of it."""
    return preferred if (Path(data) / "splits" / f"{preferred}.txt").is_file() else "all"


def open_dataset(data: str, split: str, classes: tuple[str, ...], payload: dict):
    """The VOC data a checkpoint is measured on (a folder without split files is split as the checkpoint's run
    split it); images left out are named, one `data:` line each."""
    from facemask_sdk.voc import VocDataset

    train_config = payload.get("train_config") or {}
    dataset = VocDataset(
        data,
        split,
        classes,
        train_config.get("val_fraction", TrainConfig.val_fraction),
        train_config.get("seed", TrainConfig.seed),
    )
    for problem in dataset.report.skipped:
        click.echo(f"data: {problem}")
    return dataset


INPUT_SIZE_STRIDE = 128
"""Input sizes are multiples of this (2 ** the P7 level): what a dynamic-size export accepts."""


def _input_sizes(value: str) -> tuple[int, ...]:
    """'512,640,768' -> (512, 640, 768); a refusal names the option (click shows it as one error line)."""
    try:
        sizes = tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected input sizes like 512,640,768, got {value!r}") from None
    if any(size <= 0 or size % INPUT_SIZE_STRIDE for size in sizes):
        raise click.BadParameter(f"input sizes are positive multiples of {INPUT_SIZE_STRIDE}, got {value!r}")
    return sizes


@click.command("train")
@click.option(
    "--data", default=str(DATASET), show_default=DATASET_HELP, help="VOC folder (images/, annotations/, splits/)."
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics, curves)."
)
@click.option(
    "--model",
    type=click.Choice(["tf_efficientdet_lite0", "tf_efficientdet_d0"]),
    default=TrainConfig.model,
    show_default=True,
    help="The shipped model is Lite0.",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=INPUT_SIZE_STRIDE),
    default=None,
    help="Input size for evaluation and export (multiple of 128); default: the model's own (512), or that of the "
    "--pretrained checkpoint.",
)
@click.option(
    "--crop-size",
    type=click.IntRange(min=0),
    default=TrainConfig.crop_size,
    show_default=True,
    help="Train on random crops of this size of the input canvas (faces keep their scale); 0: the full canvas.",
)
@click.option(
    "--mosaic",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.mosaic,
    show_default=True,
    help="Chance of a four-image mosaic per sample.",
)
@click.option(
    "--zoom",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.zoom,
    show_default=True,
    help="Chance that a sample which is no mosaic is rescaled around one face, to a size drawn evenly from tiny "
    "to close-up (the face-size buckets of eval).",
)
@click.option(
    "--zoom-balance/--no-zoom-balance",
    default=TrainConfig.zoom_balance,
    show_default=True,
    help="Zoom picks its face weighted by 1 / class frequency, so close-ups of every class are seen (most large "
    "training faces are masked).",
)
@click.option(
    "--zoom-balance-power",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.zoom_balance_power,
    show_default=True,
    help="With --zoom-balance: the weights to this power; 1: every class equally likely, 0: as often as it "
    "occurs, 0.5 in between (Kaggle train: 2573 / 494 / 96 boxes, weights 1.2 / 6.4 / 33 at 1, their square "
    "roots at 0.5).",
)
@click.option(
    "--zoom-max-upscale",
    type=click.FloatRange(min=1.0),
    default=TrainConfig.zoom_max_upscale,
    show_default=True,
    help="Zoom enlarges a face at most this much over its photo's pixels: the blur of enlarged faces the network "
    "sees (the close-up view of val enlarges its faces 3-14x, photos of close-ups from cameras about 1-2x).",
)
@click.option(
    "--photometric",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.photometric,
    show_default=True,
    help="Chance per sample of one camera degradation: defocus blur, JPEG artefacts or sensor noise.",
)
@click.option(
    "--multi-scale",
    callback=lambda ctx, param, value: _input_sizes(value),
    default=",".join(map(str, TrainConfig.multi_scale)),
    metavar="SIZES",
    help="Multi-scale training, e.g. 512,640,768: each sample's faces get the scale one of these input sizes "
    "(drawn evenly) gives them, so one set of weights serves each size; evaluation stays at --image-size. "
    "Empty: --image-size only.",
)
@click.option(
    "--copy-paste",
    type=click.FloatRange(0.0, 1.0),
    default=TrainConfig.copy_paste,
    show_default=True,
    help="Chance of pasting 1-3 mask_weared_incorrect faces into a sample.",
)
@click.option(
    "--rare-class-weight",
    type=click.FloatRange(min=0.0, min_open=True),
    default=TrainConfig.rare_class_weight,
    show_default=True,
    help="Class-loss weight of the anchors matched to mask_weared_incorrect faces (1: effdet's loss).",
)
@click.option(
    "--anchor-scale",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Smallest anchor = 8 px x this (default: effdet's, 3 for Lite0).",
)
@click.option(
    "--ema-decay",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=TrainConfig.ema_decay,
    show_default=True,
    help="Weight-average decay; the EMA weights are evaluated and shipped. 0 disables.",
)
@click.option("--ema-ramp-steps", type=click.IntRange(min=0), default=TrainConfig.ema_ramp_steps, show_default=True)
@click.option(
    "--amp",
    type=click.Choice(["auto", "off", "bf16", "fp16"]),
    default=TrainConfig.amp,
    show_default=True,
    help="Autocast for the network: auto = bf16 where the CPU has AVX-512-BF16/AMX, AMP on CUDA, else fp32.",
)
@click.option("--channels-last/--no-channels-last", default=TrainConfig.channels_last, show_default=True)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=TrainConfig.checkpoint_every,
    show_default=True,
    help="Optimiser steps between last.pt checkpoints.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=TrainConfig.epochs, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=TrainConfig.optimizer, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Peak learning rate; default: 1e-2 when BiFPN and heads start random (ImageNet backbone or --pretrained "
    "none, measured), 1e-3 from detector weights (COCO or a checkpoint).",
)
@click.option("--weight-decay", type=click.FloatRange(min=0.0), default=TrainConfig.weight_decay, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default=TrainConfig.schedule, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=TrainConfig.warmup_steps, show_default=True)
@click.option(
    "--grad-clip",
    type=click.FloatRange(min=0.0),
    default=TrainConfig.grad_clip,
    show_default=True,
    help="Max gradient norm; 0 disables.",
)
@click.option(
    "--pretrained",
    default=TrainConfig.pretrained,
    show_default=True,
    help="auto | none | imagenet-lite0 | PATH to weights.",
)
@click.option(
    "--recipe-from",
    type=click.Path(dir_okay=False),
    default=None,
    help="Take every option not given here from the training options recorded in this checkpoint (e.g. the "
    "shipped model's: --recipe-from models/facemask.pt); data, weights, seed and how this machine runs stay "
    "this command's.",
)
@click.option(
    "--augment",
    type=click.Choice(["none", "light", "medium", "strong"]),
    default=TrainConfig.augment,
    show_default=True,
)
@click.option(
    "--repeat-threshold",
    type=click.FloatRange(min=0.0),
    default=TrainConfig.repeat_threshold,
    show_default=True,
    help="Oversample images of rare classes (LVIS repeat factor); 0 disables.",
)
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=TrainConfig.val_fraction,
    show_default=True,
    help="Used when the data has no split files.",
)
@click.option("--device", default=TrainConfig.device, show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--workers", type=click.IntRange(min=0), default=TrainConfig.workers, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@malloc_option
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap steps per epoch (smoke runs).")
@click.option(
    "--max-val-images", type=click.IntRange(min=1), default=None, help="Validate on the first N val images only."
)
@click.option(
    "--resume",
    type=click.Path(),
    default=None,
    help="A run folder or its last.pt to continue at the exact step it stopped.",
)
@click.option(
    "--stop-after-minutes",
    type=float,
    default=None,
    help="End this stint cleanly (checkpoint written) after this long; --resume continues.",
)
@click.option(
    "--stop-after-steps", type=int, default=None, help="End this stint cleanly after this many optimiser steps."
)
@click.pass_context
def train(
    ctx: click.Context,
    resume: str | None,
    stop_after_minutes: float | None,
    stop_after_steps: int | None,
    malloc: str,
    **options,
) -> None:
    """Train an EfficientDet face-mask detector; EMA weights evaluated on val after every epoch.

    The schedule's length (--epochs) is fixed when a run starts; --resume continues it unchanged.
    """
    choose_allocator(malloc)
    from facemask_tools.training.trainer import train as run_training

    recipe_from = options.pop("recipe_from")
    if recipe_from:
        _take_recipe(ctx, options, recipe_from)
    options["crop_size"] = options["crop_size"] or None
    config = TrainConfig(**options)
    explicit_epochs = ctx.get_parameter_source("epochs") == click.core.ParameterSource.COMMANDLINE
    summary = run_training(
        config,
        resume=resume,
        log=click.echo,
        epochs=options["epochs"] if explicit_epochs and resume else None,
        stop_after_minutes=stop_after_minutes,
        stop_after_steps=stop_after_steps,
    )
    if not summary:
        return
    best = summary["best"]
    click.echo(
        f"best epoch {summary['best_epoch']}: mAP {best['map']:.4f}  mAP@.5 {best['map50']:.4f}  "
        f"-> {Path(config.out) / 'best.pt'}"
    )


def _take_recipe(ctx: click.Context, options: dict, checkpoint: str) -> None:
    """Fill `options` not given on the command line from the recipe recorded in `checkpoint`."""
    from facemask_tools.training.checkpoint import load_weights_file
    from facemask_tools.training.config import recipe_of

    if not Path(checkpoint).is_file():
        raise FacemaskError(f"--recipe-from: {checkpoint} does not exist")
    payload = load_weights_file(checkpoint)
    recorded = payload.get("train_config") if isinstance(payload, dict) else None
    if not isinstance(recorded, dict):
        raise FacemaskError(
            f"--recipe-from: {checkpoint} records no training options (a checkpoint from train has them)"
        )
    taken = {
        name: value
        for name, value in recipe_of(recorded).items()
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE
    }
    options.update(taken)
    click.echo(f"recipe from {checkpoint}: " + ", ".join(f"{name}={value}" for name, value in sorted(taken.items())))


@click.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="A .pt checkpoint from train.")
@click.option(
    "--data",
    default=str(DATASET),
    show_default=DATASET_HELP,
    help="VOC folder; its class names must be among the model's (a set with fewer classes is fine).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "all"]),
    default=None,
    help="Default: val where the folder has splits/val.txt, else all of it.",
)
@click.option(
    "--iou",
    "iou_threshold",
    type=float,
    default=None,
    help="Also report AP at this one IoU, and match faces at it in the size breakdown (0.3 for head-box sets such as other-cameras).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for eval.json, predictions.png and by-size.png (default: runs/eval/CHECKPOINT-DATA-SPLIT).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.eval_batch_size, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--closeup-check/--no-closeup-check",
    default=True,
    show_default=True,
    help=f"Measure with the Detector's {describe(DEFAULT_CLOSEUP_CHECK)}, as the product runs; off: the network alone.",
)
@click.option("--force", is_flag=True, help="Overwrite an earlier evaluation in --out.")
@malloc_option
def evaluate(
    checkpoint: str,
    data: str,
    split: str | None,
    iou_threshold: float | None,
    out: str | None,
    batch_size: int,
    device: str,
    closeup_check: bool,
    force: bool,
    malloc: str,
) -> None:
    """COCO mAP@[.5:.95], mAP@.5 and per-class AP of a checkpoint, found / right-class shares and the class
    confusion by face size, plus a PNG of predictions."""
    check_iou(iou_threshold)
    choose_allocator(malloc)
    from facemask_tools.training.checkpoint import load_network
    from facemask_tools.training.device import resolve_device
    from facemask_tools.training.evaluate import breakdown_lines, evaluate_network, save_prediction_grid
    from facemask_tools.training.plots import plot_by_size

    network, spec, payload = load_network(checkpoint)
    split = split or default_split(data, "val")
    out_dir = Path(out) if out else Path("runs") / "eval" / f"{Path(checkpoint).stem}-{Path(data).name}-{split}"
    report_path, grid_path, size_plot = out_dir / "eval.json", out_dir / "predictions.png", out_dir / "by-size.png"
    earlier = [path.name for path in (report_path, grid_path, size_plot) if path.exists()]
    if earlier and not force:
        raise FacemaskError(
            f"{out_dir} already holds {', '.join(earlier)}; pass --force to overwrite or choose another --out"
        )
    dataset = open_dataset(data, split, spec.classes, payload)
    check = DEFAULT_CLOSEUP_CHECK if closeup_check else None
    metrics, predictions = evaluate_network(
        network,
        spec,
        dataset.records,
        batch_size,
        resolve_device(device),
        iou_threshold=iou_threshold,
        closeup_check=check,
    )
    report = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "spec": spec.to_dict(),
        "closeup_check": None if check is None else asdict(check),
        **metrics,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    save_prediction_grid(dataset.records, predictions, spec.classes, grid_path)
    plot_by_size([(Path(checkpoint).name, report)], size_plot)
    click.echo(f"{data} ({split}): {metrics['images']} images, {metrics['ground_truth_boxes']} boxes")
    click.echo(f"mAP@[.5:.95] {metrics['map']:.4f}   mAP@.5 {metrics['map50']:.4f}   mAP@.75 {metrics['map75']:.4f}")
    if iou_threshold is not None:
        click.echo(f"AP@{iou_threshold:g} {metrics['ap_at_iou']:.4f}")
    for name in spec.classes:
        ap50, ap = metrics["ap50_per_class"][name], metrics["ap_per_class"][name]
        if ap is None:
            click.echo(f"  {name:<24} (not labelled in this set)")
            continue
        at_iou = (
            f"   AP@{iou_threshold:g} {metrics['ap_at_iou_per_class'][name]:.4f}" if iou_threshold is not None else ""
        )
        click.echo(f"  {name:<24} AP@.5 {ap50:.4f}   AP {ap:.4f}{at_iou}")
    for line in breakdown_lines(metrics["by_size"]):
        click.echo(line)
    click.echo(f"wrote {report_path}, {grid_path} and {size_plot}")
