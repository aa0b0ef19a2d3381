"""`facemask-sdk data-info PATH`: what is in a dataset and what is wrong with it."""

from __future__ import annotations

import json

import click

from facemask_sdk.voc import SPLITS, VocDataset


@click.command("data-info")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(SPLITS), default="all", show_default=True)
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Used when there are no split files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split when there are no split files.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-image-check", is_flag=True, help="Skip decoding every image.")
def data_info(path: str, split: str, val_fraction: float, seed: int, as_json: bool, no_image_check: bool) -> None:
    """Images, boxes per class, box sizes and problems of the VOC dataset at PATH."""
    dataset = VocDataset(path, split=split, val_fraction=val_fraction, seed=seed)
    info = dataset.summary(check_images=not no_image_check)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"dataset: {info['root']}  split: {info['split']}")
    click.echo(f"images: {info['images']}  boxes: {info['boxes']}")
    for name, count in info["boxes_per_class"].items():
        click.echo(f"  {name:<24} {count:>6}")
    sizes = info["box_size_sqrt_area"]
    click.echo(
        f"box size (sqrt area, px): min {sizes['min']:.1f}  median {sizes['median']:.1f}  max {sizes['max']:.1f}"
    )
    for bucket, count in sizes["histogram"].items():
        click.echo(f"  {bucket:>9} px {count:>6}")
    click.echo(
        f"clipped boxes: {info['clipped_boxes']}  dropped boxes: {info['dropped_boxes']}  "
        f"skipped images: {info['skipped_images']}"
    )
    if info["problems"]:
        click.echo(f"problems ({len(info['problems'])}):")
        for line in info["problems"]:
            click.echo(f"  {line}")
    else:
        click.echo("problems: none")
