"""Check that two source trees of n2s_eds denoise alike: ``python benchmarks/same_results.py``.

Runs the public API of each tree (``--before`` and ``--after``, e.g. a ``git worktree`` of the
previous commit beside this checkout) in a fresh interpreter of the same environment, on the
same inputs, and compares the denoised cubes:

* ``fept``: the real FePt core-shell scan, ``n2s_eds.denoise(s)`` with the defaults;
* ``phantom_guided``: a 64 x 64 TEM phantom at 20 counts/px with its HAADF guide;
* ``phantom_lazy_binned``: the same phantom as a lazy signal, ``bin_ev=40``, tiles of 32 px.

Prints the largest absolute difference of each cube relative to its largest count; exit code
1 when any is at or above ``--tolerance`` (default 1e-4).

Example::

    git worktree add /tmp/n2s_before HEAD~1
    python benchmarks/same_results.py --before /tmp/n2s_before --after .
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Run inside each tree's interpreter: writes one .npz of the denoised cubes.
WORKER = r"""
import sys, time
import numpy as np
import hyperspy.api as hs
import n2s_eds
from n2s_eds.datasets import data_path
from n2s_eds.simulate import phantom

out, cases = sys.argv[1], sys.argv[2].split(",")
res = {}
if "fept" in cases:
    s = hs.load(data_path("fept_core_shell_tem"))
    t0 = time.perf_counter()
    res["fept"] = n2s_eds.denoise(s, progress=False).data
    print(f"fept {time.perf_counter() - t0:.1f} s", flush=True)
ph = phantom("tem", dose=20.0, shape=(64, 64), n_channels=512, seed=11)
if "phantom_guided" in cases:
    t0 = time.perf_counter()
    res["phantom_guided"] = n2s_eds.denoise(ph.noisy, haadf=ph.haadf, progress=False).data
    print(f"phantom_guided {time.perf_counter() - t0:.1f} s", flush=True)
if "phantom_lazy_binned" in cases:
    lazy = ph.noisy.as_lazy()
    lazy.data = lazy.data.rechunk((32, 32, -1))
    t0 = time.perf_counter()
    den = n2s_eds.denoise(lazy, progress=False, bin_ev=40, tile=32, steps=60)
    res["phantom_lazy_binned"] = np.asarray(den.data.compute())
    print(f"phantom_lazy_binned {time.perf_counter() - t0:.1f} s", flush=True)
np.savez(out, **res)
"""

CASES = ("fept", "phantom_guided", "phantom_lazy_binned")


def run_tree(tree: Path, out: Path, cases: tuple[str, ...]) -> None:
    """Denoise ``cases`` with the n2s_eds found in ``tree``, writing ``out`` (.npz)."""
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    env.setdefault("N2S_EDS_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    code = f"import n2s_eds, sys; assert n2s_eds.__file__.startswith({str(tree.resolve())!r})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tempfile.gettempdir())
    subprocess.run(
        [sys.executable, "-c", WORKER, str(out), ",".join(cases)],
        env=env,
        check=True,
        cwd=tempfile.gettempdir(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree of the old code")
    parser.add_argument("--after", type=Path, default=Path("."), help="source tree of the new code")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--work", type=Path, default=None, help="keep the .npz files here")
    ns = parser.parse_args(argv)
    cases = tuple(c for c in ns.cases.split(",") if c)
    work = ns.work or Path(tempfile.mkdtemp(prefix="n2s_same_"))
    work.mkdir(parents=True, exist_ok=True)
    outs = {}
    for name, tree in (("before", ns.before), ("after", ns.after)):
        outs[name] = work / f"{name}.npz"
        if not outs[name].exists():
            print(f"== {name}: {tree}", flush=True)
            run_tree(tree, outs[name], cases)
    a, b = np.load(outs["before"]), np.load(outs["after"])
    worst = 0.0
    print("| case | shape | max count | max abs diff / max count |")
    print("|---|---|---|---|")
    for case in cases:
        x, y = a[case], b[case]
        if x.shape != y.shape:
            print(f"| {case} | {x.shape} vs {y.shape} | – | shapes differ |")
            worst = float("inf")
            continue
        scale = float(np.abs(x).max()) or 1.0
        rel = float(np.abs(x.astype(np.float64) - y).max()) / scale
        worst = max(worst, rel)
        print(f"| {case} | {x.shape} | {scale:.3f} | {rel:.2e} |")
    ok = worst < ns.tolerance
    print(f"{'SAME' if ok else 'DIFFERENT'}: worst {worst:.2e} (tolerance {ns.tolerance:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
