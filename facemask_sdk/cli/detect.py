"""`facemask-sdk detect SOURCE...`: detect masks, write annotated images/videos, JSONL and a summary.

Outputs in `--out` (default: a fresh `runs/detect/expN`):
- annotated images under their own names, or one annotated `.mp4` (mp4v) per video, camera or stream;
- `detections.jsonl`: one line per image or frame (source, frame, size, detections, timing in ms);
- `summary.json`: frames, faces per class, compliance rate and speed, also printed at the end;
- with `--track`: `people.jsonl`, one line per person (id, first and last frame and time, class by
  vote, that class's share of the person's frames, mean score), and `events.jsonl`, one line the moment
  a person without a mask (or wearing it incorrectly) is confirmed, flushed at once for an app to tail.
`--blur` makes faces unrecognisable in every image and video written; `--no-media` writes none.
An `--out` that already has files is refused unless `--force`; inputs are never overwritten.

Reading, detecting, tracking, failures and totals are the library's one frame loop (`Detector.stream`,
`DetectionStream.events()`); this command hangs its files, progress bars and messages on its events.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import click
import cv2
import numpy as np
from tqdm import tqdm

from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK, describe
from facemask_sdk.detections import COMPLIANT_CLASS
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.privacy import BLUR_CHOICES, BLUR_METHODS
from facemask_sdk.sources import DEFAULT_TIMEOUT_S, Frame, ImageSource, Source, VideoSource, resolve_sources
from facemask_sdk.stages import TIMINGS
from facemask_sdk.stream import (
    DetectionStream,
    FrameDetected,
    FrameFailed,
    SourceEnded,
    SourceStarted,
    StreamEvent,
)

# FFmpeg's own log lines ("moov atom not found", ...) would bury our one-line errors; read before
# OpenCV first opens a video. Set OPENCV_FFMPEG_LOGLEVEL yourself to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

DEFAULT_RUNS_DIR = Path("runs") / "detect"
JSONL_NAME = "detections.jsonl"
SUMMARY_NAME = "summary.json"
PEOPLE_NAME = "people.jsonl"
EVENTS_NAME = "events.jsonl"
WINDOW = "facemask-sdk"


@click.command("detect")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model file (.onnx or .engine). Default: the shipped model.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder. Default: a new runs/detect/expN.",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=128),
    default=None,
    help="Side of the network's input, a multiple of 128 (smaller: faster, misses more small faces; see the "
    "model card's table). Needs a model exported with --dynamic-size, as the shipped one. Default: its trained size.",
)
@click.option(
    "--score-threshold", type=click.FloatRange(0.0, 1.0), default=PostprocessConfig.score_threshold, show_default=True
)
@click.option(
    "--iou-threshold", type=click.FloatRange(0.0, 1.0), default=PostprocessConfig.iou_threshold, show_default=True
)
@click.option(
    "--max-detections", type=click.IntRange(min=1), default=PostprocessConfig.max_detections, show_default=True
)
@click.option(
    "--class-aware",
    is_flag=True,
    help="Keep overlapping boxes of different classes (effdet's NMS). Default: one box per face, its best class.",
)
@click.option(
    "--no-closeup-check",
    is_flag=True,
    help=f"Skip the {describe(DEFAULT_CLOSEUP_CHECK)} (on by default: the model alone gets close-ups' classes "
    "wrong more often; --class-aware turns it off too).",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Stop each video, camera or stream after this many frames.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds a stream may take to open or deliver a frame before it counts as timed out.",
)
@click.option(
    "--track",
    is_flag=True,
    help="Follow faces across frames and count people, not frames: people.jsonl, events.jsonl, ids on the boxes. "
    "The images of a folder or glob count as the frames of one scene, in name order.",
)
@click.option(
    "--blur",
    type=click.Choice(BLUR_CHOICES),
    default="none",
    show_default=True,
    help="Faces to make unrecognisable in the images and videos written (unmasked: every face not wearing a mask right).",
)
@click.option("--blur-method", type=click.Choice(BLUR_METHODS), default="pixelate", show_default=True)
@click.option("--no-media", is_flag=True, help="Write no images or videos, only the JSON outputs.")
@click.option("--show", is_flag=True, help="Show annotated frames in a window (needs a display; q or Esc stops).")
@click.option(
    "--force",
    is_flag=True,
    help="Write into an --out folder that already has files, replacing only the outputs of an earlier detect run.",
)
def detect(
    sources: tuple[str, ...],
    model: str | None,
    out: Path | None,
    input_size: int | None,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    class_aware: bool,
    no_closeup_check: bool,
    max_frames: int | None,
    timeout: float,
    track: bool,
    blur: str,
    blur_method: str,
    no_media: bool,
    show: bool,
    force: bool,
) -> None:
    """Detect face masks in SOURCE: image files, folders, globs, video files, a camera index (0) or an
    rtsp/http(s) URL. Example: facemask-sdk detect samples/

    An image that cannot be read is skipped and named on stderr and in summary.json; the others are
    processed. Exit status: 0 when every input was processed, 1 when some input failed, 2 for bad
    arguments or when nothing could run."""
    from facemask_sdk.detector import Detector

    resolved = resolve_sources(sources, timeout_s=timeout)
    window = False
    stopped_by = 0
    try:
        out_dir = _choose_out_dir(out, force)
        plan = _plan_outputs(resolved, out_dir)
        stale = _check_replaceable(out_dir, ([] if no_media else plan) + ([PEOPLE_NAME, EVENTS_NAME] if track else []))
        with Detector(
            model,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            class_agnostic=not class_aware,
            input_size=input_size,
            closeup_check=False if no_closeup_check else None,
        ) as detector:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in stale:  # an earlier run's outputs this one will not rewrite (say its unblurred images)
                (out_dir / name).unlink(missing_ok=True)
            window = show and _display_available()
            run = _Run(
                detector.stream(resolved, max_frames=max_frames, track=track),
                plan,
                out_dir,
                window,
                blur=blur,
                blur_method=blur_method,
                media=not no_media,
            )
            try:
                with _sigterm_as_stop():
                    run.run()
            except (KeyboardInterrupt, _Terminated) as stop:
                run.interrupted = True
                stopped_by = STOP_EXIT_CODES[type(stop)]
                click.echo("interrupted; writing what was done so far", err=True)
            finally:
                run.finish()
            summary = run.summary([str(s) for s in sources], detector)
    finally:
        for source in resolved:
            source.close()
        if window:
            cv2.destroyAllWindows()
    _write_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    for line in _summary_lines(summary, out_dir):
        click.echo(line)
    if summary["failures"]:
        click.echo(f"error: {len(summary['failures'])} input(s) failed (listed in {out_dir / SUMMARY_NAME})", err=True)
        sys.exit(stopped_by or 1)
    if stopped_by:
        sys.exit(stopped_by)


class _Terminated(Exception):
    """SIGTERM arrived (`docker stop`, a service manager): stop like Ctrl-C, with the outputs written."""


STOP_EXIT_CODES = {KeyboardInterrupt: 130, _Terminated: 143}
"""128 + the signal's number, as a shell reports a process that the signal ended."""


@contextlib.contextmanager
def _sigterm_as_stop() -> Iterator[None]:
    """Turn SIGTERM into `_Terminated` in the main thread meanwhile (signals reach only the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """The CLI's side of one `detect` run, hung on the library's `DetectionStream` events: the JSONL
    files, the annotated images and videos, the progress bars, the window and the messages."""

    def __init__(
        self,
        stream: DetectionStream,
        plan: list[Path | list[Path]],
        out_dir: Path,
        show: bool,
        blur: str = "none",
        blur_method: str = "pixelate",
        media: bool = True,
    ) -> None:
        self.stream = stream
        self.tracker = stream.tracker
        self.totals = stream.totals  # the library's totals: one summary for CLI and SDK
        self.targets = {id(source): _by_frame(source, target) for source, target in zip(stream.sources, plan)}
        self.out_dir = out_dir
        self.show = show
        self.blur, self.blur_method, self.media = blur, blur_method, media
        self.events_jsonl = _open_for_writing(out_dir / EVENTS_NAME) if self.tracker is not None else None
        self.written: list[str] = []
        self.interrupted = False
        self.stopped = False
        self.started = time.perf_counter()
        self.jsonl = _open_for_writing(out_dir / JSONL_NAME)
        self.writer: cv2.VideoWriter | None = None
        self.bar: tqdm | None = None

    def run(self) -> None:
        """Follow the stream to its end, or until q or Esc in the window stops it."""
        try:
            with contextlib.closing(self.stream.events()) as events:
                for event in events:
                    self._on(event)
                    if self.stopped:
                        return
        finally:
            self._end_source()

    def _on(self, event: StreamEvent) -> None:
        """What the CLI adds to each event; the stream has already read, detected and counted."""
        match event:
            case SourceStarted(source=source):
                self._start_source(source)
            case FrameDetected():
                self.bar.update()
                self._handle(event)
            case FrameFailed(frame=frame):
                self.bar.update()
                tqdm.write(f"error: skipped: {frame.error}", file=sys.stderr)
            case SourceEnded(warning=warning):
                self._end_source()
                if warning is not None:
                    tqdm.write(f"warning: {warning}", file=sys.stderr)

    def _start_source(self, source: Source) -> None:
        """Its progress bar, and the --track warning for images taken as the frames of one scene."""
        if isinstance(source, ImageSource):
            if self.tracker is not None and len(source) > 1:
                tqdm.write(
                    f"warning: --track follows faces across the {len(source)} images of {source.argument} in name "
                    "order, as the frames of one scene",
                    file=sys.stderr,
                )
            self.bar = tqdm(total=len(source), desc=source.argument, unit="img", disable=len(source) < 2 or None)
            return
        total, limit = source.frame_count, self.stream.max_frames
        if limit is not None:
            total = min(total or limit, limit)
        self.bar = tqdm(total=total, desc=str(source.target), unit="frame", disable=None)

    def _end_source(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._close_writer()

    def _handle(self, event: FrameDetected) -> None:
        from facemask_sdk.annotation import annotate, draw_summary
        from facemask_sdk.privacy import blur_faces

        frame, detections = event.frame, event.detections
        verdicts = None
        if self.tracker is not None:
            verdicts = self.tracker.verdicts()
            self._report_events(frame, event.time_s)
        record = {
            "source": frame.source,
            "frame": frame.index,
            "width": int(frame.image.shape[1]),
            "height": int(frame.image.shape[0]),
            "faces": len(detections),
            "detections": detections.to_dict(),
            "timing_ms": {key[:-3]: round(event.timing[key], 3) for key in TIMINGS},
        }
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()  # a reader tailing the file, or a run stopped by a signal, sees every frame done
        if not (self.media or self.show):
            return
        image = frame.image
        if self.blur != "none":
            image = blur_faces(image, detections, self.blur, self.blur_method, verdicts)
            if self.tracker is not None:  # people the detector missed in this frame, where they should be
                image = blur_faces(image, self.tracker.hidden_people(), self.blur, self.blur_method, verdicts)
        annotated = annotate(image, detections, verdicts=verdicts)
        if isinstance(event.source, VideoSource):  # a banner with the frame's counts, on video frames only
            annotated = draw_summary(annotated, detections.summary())
        if self.media:
            self._write(event.source, frame, annotated)
        if self.show:
            cv2.imshow(WINDOW, annotated)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self.stopped = True

    def _report_events(self, frame: Frame, time_s: float | None) -> None:
        """One line in events.jsonl (and on stderr) for each person confirmed without a mask worn right."""
        for person in self.tracker.confirmed_now:
            if person.label == COMPLIANT_CLASS:
                continue
            event = {
                "event": "person_without_mask",
                "person": person.id,
                "label": person.label,
                "source": frame.source,
                "frame": frame.index,
                "time_s": None if time_s is None else round(time_s, 3),
                "mean_score": round(person.mean_score, 4),
            }
            self.events_jsonl.write(json.dumps(event) + "\n")
            self.events_jsonl.flush()
            when = f"{time_s:.1f} s" if time_s is not None else f"frame {frame.index}"
            tqdm.write(f"event: person {person.id} {person.label} at {when} in {frame.source}", file=sys.stderr)

    def _write(self, source: Source, frame: Frame, image: np.ndarray) -> None:
        target = self.targets[id(source)]
        if isinstance(target, dict):
            self._write_image(target[frame.source], image)
        else:
            self._write_frame(target, image, source.fps)

    def _write_image(self, path: Path, image: np.ndarray) -> None:
        ok, data = cv2.imencode(path.suffix or ".png", image)
        if not ok:
            raise FacemaskError(f"cannot encode {path.name} as {path.suffix}")
        try:
            data.tofile(str(path))
        except OSError as exc:
            raise FacemaskError(f"cannot write {path}: {exc.strerror}") from None
        self.written.append(path.name)

    def _write_frame(self, path: Path, image: np.ndarray, fps: float) -> None:
        if self.writer is None:
            height, width = image.shape[:2]
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            if not self.writer.isOpened():
                self.writer = None
                raise FacemaskError(
                    f"cannot write video {path} (OpenCV has no mp4v encoder or the folder is not writable)"
                )
            self.written.append(path.name)
        self.writer.write(image)

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def finish(self) -> None:
        self._close_writer()
        self.jsonl.close()
        if self.tracker is not None:
            self.events_jsonl.close()
            _write_text(
                self.out_dir / PEOPLE_NAME,
                "".join(json.dumps(person.to_dict()) + "\n" for person in self.tracker.people),
            )
        self.seconds = time.perf_counter() - self.started

    def summary(self, arguments: list[str], detector) -> dict:
        totals = self.totals.summary()
        frames, detector_ms = self.totals.frames, self.totals.stage_ms["total_ms"]
        return {
            "sources": arguments,
            "model": str(detector.model_path),
            "input_size": detector.spec.image_size[0],
            "backend": detector.backend,
            "providers": detector.providers,
            "score_threshold": detector.config.score_threshold,
            "iou_threshold": detector.config.iou_threshold,
            "max_detections": detector.config.max_detections,
            "class_agnostic_nms": detector.config.class_agnostic,
            "closeup_check": None if detector.closeup_check is None else asdict(detector.closeup_check),
            **{
                key: totals[key]
                for key in (
                    "frames",
                    "faces",
                    "faces_per_frame",
                    "frames_with_faces",
                    "compliance_over_frames",
                    "per_class",
                    "compliance_rate",
                )
            },
            "seconds": round(self.seconds, 3),
            "fps": round(frames / self.seconds, 2) if self.seconds > 0 else None,
            "detector_fps": round(1e3 * frames / detector_ms, 2) if detector_ms else None,
            "mean_ms": totals["mean_ms"],
            **({"people": totals["people"]} if self.tracker is not None else {}),
            "blur": self.blur if self.media else "no media written",
            "outputs": {
                "annotated": self.written,
                "jsonl": JSONL_NAME,
                **({"people": PEOPLE_NAME, "events": EVENTS_NAME} if self.tracker is not None else {}),
            },
            "interrupted": self.interrupted or self.stopped,
            "failures": self.totals.failures,
            "warnings": self.totals.warnings,
        }


def _by_frame(source: Source, target: Path | list[Path]) -> Path | dict[str, Path]:
    """A video's output file, or each image's output path by the name its frames carry (`Frame.source`)."""
    if isinstance(source, ImageSource):
        return dict(zip(map(str, source.paths), target))
    return target


def _choose_out_dir(out: Path | None, force: bool) -> Path:
    """The output folder (created later, once the model has loaded); refuses one that already has files."""
    if out is None:
        return _next_run_dir(DEFAULT_RUNS_DIR)
    if out.exists() and not out.is_dir():
        raise FacemaskError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FacemaskError(
            f"--out {out} already has files (an earlier run?); pass --force to overwrite them or choose another --out"
        )
    return out


def _check_replaceable(out_dir: Path, plan: list[Path | list[Path] | str]) -> list[str]:
    """`--force` replaces only what an earlier detect run wrote there (its summary.json lists it); returns
    the earlier run's outputs this run will not write again, which `--force` removes, so the folder never
    mixes two runs (a run with `--blur` or `--no-media` must not leave the earlier faces behind)."""
    if not out_dir.is_dir():
        return []
    ours = _earlier_outputs(out_dir)
    planned = [item if isinstance(item, list) else [item] for item in plan]
    targets = [SUMMARY_NAME, JSONL_NAME] + [Path(p).name for item in planned for p in item]
    foreign = sorted(name for name in set(targets) if (out_dir / name).exists() and name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FacemaskError(
            f"--out {out_dir} holds files that no earlier detect run wrote ({shown}); --force replaces only "
            "detect's own outputs: choose another --out"
        )
    return sorted(name for name in ours - set(targets) if "/" not in name and (out_dir / name).is_file())


def _earlier_outputs(out_dir: Path) -> set[str]:
    """Names an earlier detect run wrote in `out_dir`, from its summary.json (empty if there is none of ours)."""
    try:
        summary = json.loads((out_dir / SUMMARY_NAME).read_text(encoding="utf-8"))
        outputs = summary["outputs"]
        names = {str(n) for n in outputs["annotated"]} | {str(outputs["jsonl"])}
        names |= {str(outputs[key]) for key in ("people", "events") if key in outputs}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(summary.get("frames"), int) or "model" not in summary:
        return set()
    return names | {SUMMARY_NAME}


def _next_run_dir(root: Path) -> Path:
    """`root/expN` with N one more than the largest existing one."""
    taken = [int(p.name[3:]) for p in root.glob("exp*") if p.name[3:].isdigit()] if root.is_dir() else []
    return root / f"exp{max(taken, default=0) + 1}"


def _plan_outputs(sources: list[Source], out_dir: Path) -> list[Path | list[Path]]:
    """Output path of every image (same name; `name_2.png` on clashes) and every video (`stem.mp4`).

    Refuses outputs that would replace one of the inputs (e.g. --out pointing at the image folder).
    """
    used: set[str] = {JSONL_NAME, SUMMARY_NAME, PEOPLE_NAME, EVENTS_NAME}
    inputs = {p.resolve() for s in sources if isinstance(s, ImageSource) for p in s.paths}
    inputs |= {Path(str(s.target)).resolve() for s in sources if isinstance(s, VideoSource) and s.kind == "video"}
    plan: list[Path | list[Path]] = []

    def claim(name: str) -> Path:
        stem, suffix = os.path.splitext(name)
        candidate, n = name, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{stem}_{n}{suffix}"
        used.add(candidate.lower())
        path = out_dir / candidate
        if path.resolve() in inputs:
            raise FacemaskError(f"writing {path} would overwrite an input; choose another --out")
        return path

    for source in sources:
        if isinstance(source, ImageSource):
            plan.append([claim(p.name) for p in source.paths])
        else:
            plan.append(claim(f"{source.name}.mp4"))
    return plan


def _display_available() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        reason = "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    else:
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
            return True
        except cv2.error:
            reason = "this OpenCV build has no GUI support (opencv-python-headless)"
    click.echo(f"warning: --show ignored: {reason}; results are still written", err=True)
    return False


def _open_for_writing(path: Path):
    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise FacemaskError(f"cannot write {path}: {exc.strerror}") from None


def _write_text(path: Path, text: str) -> None:
    with _open_for_writing(path) as handle:
        handle.write(text)


def _summary_lines(summary: dict, out_dir: Path) -> list[str]:
    per_class = ", ".join(f"{name} {count}" for name, count in summary["per_class"].items())
    rate = summary["compliance_rate"]
    mean = summary["mean_ms"]
    lines = [
        f"frames: {summary['frames']}  faces: {summary['faces']} ({per_class})"
        + (f", a sum over frames: {summary['faces_per_frame']:.2f} per frame" if summary["frames"] > 1 else ""),
        f"compliance rate: {'n/a (no faces)' if rate is None else f'{100 * rate:.1f}%'}"
        + (
            f" of all faces; {100 * summary['compliance_over_frames']:.1f}% mean over {summary['frames_with_faces']} "
            "frames with faces"
            if summary["frames"] > 1 and summary["compliance_over_frames"] is not None
            else ""
        ),
    ]
    if "people" in summary:
        people = summary["people"]
        counts = ", ".join(f"{name} {count}" for name, count in people["per_class"].items())
        rate = people["compliance_rate"]
        lines.append(
            f"people: {people['people']} ({counts}); compliance over people: "
            f"{'n/a' if rate is None else f'{100 * rate:.1f}%'}"
        )
    if summary["frames"]:
        lines.append(
            f"speed: {summary['fps']} FPS end to end; per frame {mean['preprocess']:.1f} ms pre-processing, "
            f"{mean['inference']:.1f} ms inference, {mean['postprocess']:.1f} ms post-processing ({summary['backend']})"
        )
    if summary["interrupted"]:
        lines.append("stopped early")
    outputs = summary["outputs"]
    extra = "".join(f", {outputs[key]}" for key in ("people", "events") if key in outputs)
    lines.append(f"results: {out_dir} ({len(outputs['annotated'])} annotated, {JSONL_NAME}{extra}, {SUMMARY_NAME})")
    return lines
