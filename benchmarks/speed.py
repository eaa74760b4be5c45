"""Time and memory to a denoised tomogram, for cet-monai and its peers, against the tomogram's size.

Each (method, size) runs in its own child process (``python benchmarks/speed.py --child ...``),
so its peak resident memory (``VmHWM`` of that child's address space, libraries included;
polled by the parent for a child that is killed) and a hard time limit are clean. The child loads a simulated tomogram of that size
(``simulate_tomogram(mode="fast")``, written once by the parent, not timed), then times training
(trained methods, at ``--iterations``; their patches are 32^3, so training cost does not grow
with the tomogram) and inference over the whole tomogram. A method that hits ``--limit`` is
reported as such, and its larger sizes are skipped. The exponent ``b`` of ``seconds = a *
voxels^b`` is fitted by least squares in log-log over the sizes that finished, for the total
and for inference alone.

    python benchmarks/speed.py                                  # CPU sizes of docs/benchmarks.md
    python benchmarks/speed.py --sizes 64 64 64 128 128 128 --methods gaussian f2f-split
    python benchmarks/speed.py --device-sizes                   # + up to 200x512x512 (GPU machines)

Results: Markdown tables on stdout, ``speed.csv`` / ``speed.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import denoisers as D  # noqa: E402

CPU_SIZES = [(64, 64, 64), (128, 128, 128), (128, 256, 256)]
GPU_SIZES = [(200, 512, 512)]
SPEED_METHODS = ("gaussian", "topaz", "bm4d", "f2f-split", "s2s")


def child(method: str, path: str, iterations: int, threads: int) -> dict:
    """Runs in the child: denoise the tomogram at ``path`` (``.npz`` with noisy/even/odd) once."""
    D.set_threads(threads)
    data = np.load(path)
    kwargs = {}
    if method in D.TRAINED:
        kwargs.update(iterations=iterations, seed=0)
    if method == "n2n":
        kwargs.update(even=data["even"], odd=data["odd"])
    noisy = data["noisy"]
    try:
        vol, info = D.denoise(method, noisy, **kwargs)
    except D.NotInstalled as e:
        return {"status": f"not installed ({e})"}
    assert vol.shape == noisy.shape and np.isfinite(vol).all()
    return {"status": "ok", "train_s": info["train_s"], "infer_s": info["infer_s"], "peak_rss_mib": _vm_hwm_mib(os.getpid())}


def _vm_hwm_mib(pid) -> float | None:
    """Peak resident memory (``VmHWM``) of process ``pid`` in MiB, or None if it is gone.

    ``VmHWM`` belongs to the process's address space, which ``exec`` replaces: unlike
    ``ru_maxrss``, it does not inherit the parent's resident size at ``fork``.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_child(method, path, iterations, threads, limit) -> dict:
    """Start the child, wait at most ``limit`` seconds; ``status``, times and peak RSS (MiB)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, path, "--iterations", str(iterations), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    timed_out, hwm = False, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        hwm = _vm_hwm_mib(proc.pid) or hwm  # the last reading before a kill
        if time.perf_counter() - t0 > limit:
            os.killpg(proc.pid, 9)
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    rss = hwm
    if timed_out:
        return {"status": f"hit the {limit:.0f} s limit", "wall_s": wall, "peak_rss_mib": rss}
    try:
        res = json.loads(out.strip().splitlines()[-1])
        res["peak_rss_mib"] = res.get("peak_rss_mib") or rss
    except (IndexError, json.JSONDecodeError):
        tail = err.strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed: {tail[0][:120]}", "wall_s": wall, "peak_rss_mib": rss}
    res.update(wall_s=wall)
    return res


def fit_exponent(voxels, seconds) -> float | None:
    """``b`` of ``seconds = a * voxels^b`` (least squares in log-log); None with fewer than 2 points."""
    pts = [(v, s) for v, s in zip(voxels, seconds) if s is not None and s > 0]
    if len(pts) < 2:
        return None
    v, s = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(v, s, 1)[0])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description="Seconds (training + inference) and peak RAM to denoise one tomogram, per method and size, "
        "each in a clean child process with a time limit; inference voxels/s; exponent of cost against volume.",
        epilog="Example: python benchmarks/speed.py --limit 600 --methods f2f-split n2n. Peers that are not installed are reported as such.",
    )
    p.add_argument("--methods", nargs="+", default=list(SPEED_METHODS), choices=D.METHODS, help="methods to time")
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                   help="tomogram shapes as Z Y X triples (default: 64^3, 128^3, 128x256x256)")
    p.add_argument("--device-sizes", action="store_true", help="add 200x512x512 (for a machine with a GPU)")
    p.add_argument("--iterations", type=int, default=100, help="training iterations of the trained methods")
    p.add_argument("--limit", type=float, default=200.0, help="seconds per (method, size) before the child is killed")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads in each child")
    p.add_argument("--out", default="out/benchmarks/speed", help="folder for speed.csv/.json and the simulated inputs")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "NPZ"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.iterations, args.threads)), flush=True)
        return {}
    if args.sizes:
        if len(args.sizes) % 3:
            p.error("--sizes takes Z Y X triples")
        sizes = [tuple(args.sizes[i:i + 3]) for i in range(0, len(args.sizes), 3)]
    else:
        sizes = list(CPU_SIZES)
    import torch

    if args.device_sizes:
        sizes += GPU_SIZES
    from quality import machine  # noqa: E402

    D.set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = "a CUDA GPU is available" if torch.cuda.is_available() else "no GPU on this machine: GPU sizes not run"
    print(f"machine: {machine()}; {gpu}", flush=True)

    from cet_monai.data import simulate_tomogram

    inputs = {}
    for shape in sizes:
        path = out / f"input_{'x'.join(map(str, shape))}.npz"
        if not path.exists():
            sim = simulate_tomogram(shape=shape, snr=0.05, seed=0, mode="fast")
            np.savez(path, **{k: getattr(sim, k) for k in ('noisy', 'even', 'odd') if getattr(sim, k) is not None})
        inputs[shape] = str(path)

    rows = []
    for method in args.methods:
        stopped = None
        for shape in sizes:
            n = int(np.prod(shape))
            row = {"method": method, "shape": "x".join(map(str, shape)), "voxels": n}
            if stopped:
                row["status"] = f"skipped ({stopped} at a smaller size)"
                rows.append(row)
                continue
            res = run_child(method, inputs[shape], args.iterations, args.threads, args.limit)
            row.update(res)
            if res["status"] == "ok":
                row["total_s"] = res["train_s"] + res["infer_s"]
                row["infer_vox_per_s"] = n / res["infer_s"] if res["infer_s"] > 0 else None
            elif res["status"].startswith("hit"):
                stopped = res["status"]
            elif res["status"].startswith("not installed"):
                stopped = res["status"]
            rows.append(row)
            print(f"  {method} {row['shape']}: {row['status']} {row.get('total_s', row.get('wall_s', 0)):.1f} s "
                  f"peak {row.get('peak_rss_mib') or 0:.0f} MiB", flush=True)

    fits = []
    for method in args.methods:
        ok = [r for r in rows if r["method"] == method and r.get("status") == "ok"]
        fits.append({"method": method, "sizes": len(ok),
                     "b_total": fit_exponent([r["voxels"] for r in ok], [r["total_s"] for r in ok]),
                     "b_infer": fit_exponent([r["voxels"] for r in ok], [r["infer_s"] for r in ok]),
                     "b_rss": fit_exponent([r["voxels"] for r in ok], [r["peak_rss_mib"] for r in ok])})

    from quality import markdown  # noqa: E402

    print(f"\n## Time and peak memory to a denoised tomogram ({args.iterations} training iterations, "
          f"{args.threads} thread(s), limit {args.limit:.0f} s)\n")
    print(markdown(rows, [("method", "method", ""), ("shape (Z x Y x X)", "shape", ""), ("train (s)", "train_s", ".1f"),
                          ("infer (s)", "infer_s", ".1f"), ("total (s)", "total_s", ".1f"),
                          ("inference voxels/s", "infer_vox_per_s", ".3g"), ("peak RSS (MiB)", "peak_rss_mib", ".0f"),
                          ("status", "status", "")]))
    print("\n## Growth with volume: exponent b of cost ~ voxels^b (log-log least squares over the sizes that finished)\n")
    print(markdown(fits, [("method", "method", ""), ("sizes", "sizes", "d"), ("b (total time)", "b_total", ".2f"),
                          ("b (inference time)", "b_infer", ".2f"), ("b (peak RSS)", "b_rss", ".2f")]))
    if not torch.cuda.is_available():
        print(f"\n{gpu}.")
    result = {"machine": machine(), "gpu": gpu, "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "rows": rows, "fits": fits}
    (out / "speed.json").write_text(json.dumps(result, indent=1, default=str))
    with open(out / "speed.csv", "w", newline="") as fh:
        keys = ["method", "shape", "voxels", "train_s", "infer_s", "total_s", "infer_vox_per_s", "peak_rss_mib", "status"]
        w = csv.DictWriter(fh, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return result


if __name__ == "__main__":
    main()
