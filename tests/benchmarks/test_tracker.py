"""The tracker benchmark's soak: the tracker's memory stays flat and it keeps one track per face."""

from __future__ import annotations

from facemask_tools.benchmarks.tracker import soak, synthetic_crowd


def test_soak_memory_is_flat_and_every_face_is_one_person():
    report = soak(faces=20, frames=3000)
    assert report["live_tracks_at_end"] == 20 and report["people"] == 20
    # NumPy's caches of freed buffers fill during the first frames; a leak of even 12 bytes per frame
    # would add 32 KiB over the last 2,700
    assert report["traced_kib_at_end"] - report["traced_kib_at_10pct"] < 32, report
    assert report["ms_p50"] > 0


def test_the_synthetic_crowd_adds_a_one_frame_false_box_every_50_frames():
    counts = [len(d) for d in synthetic_crowd(5, 101)]
    assert counts[0] == counts[50] == counts[100] == 6 and set(counts[1:50]) == {5}
