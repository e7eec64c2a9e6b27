"""The energy-window term of the self-supervised loss (``window_loss``), case by case.

``python benchmarks/ablation_window_loss.py CASE WEIGHT:CHANNELS [WEIGHT:CHANNELS ...]``

e.g. ``python benchmarks/ablation_window_loss.py fept_core_shell_tem 0:16 0.25:16 1:16``.
Each ``WEIGHT:CHANNELS`` trains a fresh default ``n2s_eds.Denoiser`` (seed 0) with
``window_loss=WEIGHT, window_channels=CHANNELS`` on the benchmark case and scores its output
with the benchmark's protocol; it is ``ablation_options.py`` with these two options (one
Markdown row per setting: cube / maps gain in dB, worst element-map count ratio, seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablation_options import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__)
        return 2
    specs = []
    for spec in argv[1:]:
        weight, channels = spec.split(":")
        specs.append(f"window_loss={weight},window_channels={channels}")
    run([argv[0]], specs, "python benchmarks/ablation_window_loss.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
