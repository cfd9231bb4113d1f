"""Times `ferry drift` against Evidently 0.7.23's `Report([DataDriftPreset()])` on the same data, checks that both give
each column the same test, score and verdict, and prints a Markdown snippet for BENCHMARKS.md.

Usage (from the repository root, with a Python that has bench/drift/requirements.txt installed):
    cargo build --release -p ferry --locked
    python3 bench/drift/run.py [--rows 1000000] [--cols 20] [--repeat 1] [--ferry PATH] [--workdir DIR]

The data: a reference and a current CSV file of --rows rows each (deterministic seed), 70% numerical columns
(normal, some shifted in the current file), 15% small integer columns (3, 5 or 10 values) and 15% categorical text
columns (4, 12 or 50 labels). With more than 1,000 reference rows Evidently's default tests are the normed
Wasserstein distance (numbers with more than 5 values) and the Jensen–Shannon distance (the rest); that is what is
compared.

What is timed, each run in a process of its own (peak RSS from wait4, through bench/drift/measure.py):
- ferry: `ferry drift --reference ref.csv --current cur.csv --json`, wall time end to end (CSV parsing included);
- Evidently: `pd.read_csv` of both files (load), then `Report.run` on the frames (report), timed inside the process.
Times are the median over --repeat runs; peak RSS the largest.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_FERRY = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "ferry"
SEED = 20261201


def columns_for(cols):
    """Column names by kind: about 70% numerical, 15% small integers, 15% categorical."""
    n_cat = round(cols * 3 / 20)
    n_int = round(cols * 3 / 20)
    n_num = max(1, cols - n_cat - n_int)
    return (
        [f"num_{i:02d}" for i in range(n_num)],
        [f"int_{i:02d}" for i in range(n_int)],
        [f"cat_{i:02d}" for i in range(n_cat)],
    )


def generate(rows, cols, workdir):
    """Writes ref.csv and cur.csv; returns the column kinds for Evidently's data definition."""
    rng = np.random.default_rng(SEED)
    numerical, integers, categorical = columns_for(cols)
    ref, cur = {}, {}
    for i, name in enumerate(numerical):
        mu, sigma = i * 1.5 - 10.0, 0.5 + 0.25 * i
        ref[name] = np.round(rng.normal(mu, sigma, rows), 4)
        # Every third column shifted by a quarter of a standard deviation (drift), every third a little (none).
        shift, scale = [(0.25, 1.0), (0.03, 1.02), (0.0, 1.0)][i % 3]
        cur[name] = np.round(rng.normal(mu + shift * sigma, sigma * scale, rows), 4)
    for i, name in enumerate(integers):
        k = [3, 5, 10][i % 3]
        weights = np.linspace(1.0, 2.0, k)
        ref[name] = rng.choice(k, rows, p=weights / weights.sum())
        # The second of each three reweighted (drift), the others not.
        moved = weights[::-1] if i % 3 == 1 else weights
        cur[name] = rng.choice(k, rows, p=moved / moved.sum())
    for i, name in enumerate(categorical):
        k = [4, 12, 50][i % 3]
        labels = np.array([f"{name}_label_{j:02d}" for j in range(k)])
        weights = 1.0 / np.arange(1, k + 1)
        ref[name] = rng.choice(labels, rows, p=weights / weights.sum())
        # The first of each three reweighted (drift), the others not.
        moved = weights[::-1] if i % 3 == 0 else weights
        cur[name] = rng.choice(labels, rows, p=moved / moved.sum())
    order = numerical + integers + categorical
    for data, file in ((ref, "ref.csv"), (cur, "cur.csv")):
        pd.DataFrame(data, columns=order).to_csv(workdir / file, index=False, float_format="%.4f")
    return {"numerical": numerical + integers, "categorical": categorical}


def timed(argv, stdout):
    """Runs argv through measure.py; (wall seconds, peak RSS bytes) of that command's process alone."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as err:
        result = Path(tmp) / "measured.json"
        code = subprocess.run([sys.executable, str(HERE / "measure.py"), str(result), *argv], stdout=stdout,
                              stderr=err).returncode
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{argv[0]} failed:\n{err.read().decode(errors='replace')}")
        measured = json.loads(result.read_text())
    return measured["wall_seconds"], measured["peak_rss_bytes"]


def run_ferry(ferry, workdir):
    out = workdir / "ferry.json"
    with open(out, "w") as f:
        wall, rss = timed([str(ferry), "drift", "--reference", str(workdir / "ref.csv"), "--current",
                           str(workdir / "cur.csv"), "--json"], f)
    report = json.loads(out.read_text())
    return wall, rss, report


def run_evidently(spec_path, workdir):
    out = workdir / "evidently.json"
    wall, rss = timed([sys.executable, str(HERE / "evidently_run.py"), str(spec_path), str(out)], subprocess.DEVNULL)
    return wall, rss, json.loads(out.read_text())


def machine():
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return f"{model}, {os.cpu_count()} cores, {mem_kb / 2**20:.1f} GiB RAM, Linux {platform.release()}"


def ferry_revision():
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" + local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"


def gib(n):
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def secs(s):
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def parity(ferry_report, evidently):
    """Per column (name, ferry method, Evidently method, ferry score, Evidently score, ferry verdict, Evidently's)."""
    rows = []
    for column in ferry_report["columns"]:
        theirs = evidently["columns"].get(column["column"])
        if theirs is None:
            raise RuntimeError(f"Evidently has no result for column {column['column']!r}")
        rows.append((column["column"], column["method"], theirs["method"], column["score"], theirs["score"],
                     column["drifted"], theirs["drifted"]))
    missing = set(evidently["columns"]) - {r[0] for r in rows}
    if missing:
        raise RuntimeError(f"ferry has no result for columns {sorted(missing)}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of each file (default 1,000,000)")
    parser.add_argument("--cols", type=int, default=20, help="columns (default 20)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each tool (default 1)")
    parser.add_argument("--ferry", type=Path, default=DEFAULT_FERRY, help=f"ferry binary (default {DEFAULT_FERRY})")
    parser.add_argument("--workdir", type=Path, help="keep the CSV files here (default: a temporary directory)")
    args = parser.parse_args()
    if args.rows < 2 or args.cols < 1 or args.repeat < 1:
        sys.exit("--rows must be at least 2, --cols and --repeat at least 1")
    if not args.ferry.is_file():
        sys.exit(f"no ferry binary at {args.ferry}: run `cargo build --release -p ferry --locked` first")
    if args.ferry.parent.name != "release":
        print(f"warning: {args.ferry} may not be a release build; its times are not ferry's", file=sys.stderr)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-drift-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        kinds = generate(args.rows, args.cols, workdir)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps({"reference": str(workdir / "ref.csv"), "current": str(workdir / "cur.csv"),
                                         **kinds}))
        size = sum((workdir / f).stat().st_size for f in ("ref.csv", "cur.csv"))
        print(f"generated {args.rows:,} × {args.cols} twice ({gib(size)} of CSV) in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)

        ferry_wall, ferry_rss, ev_load, ev_report, ev_rss = [], [], [], [], []
        for i in range(args.repeat):
            wall, rss, ev = run_evidently(spec_path, workdir)
            ev_load.append(ev["load_seconds"])
            ev_report.append(ev["report_seconds"])
            ev_rss.append(rss)
            print(f"run {i + 1}: Evidently load {ev['load_seconds']:.2f} s, report {ev['report_seconds']:.2f} s, "
                  f"process {wall:.2f} s, peak RSS {gib(rss)}", file=sys.stderr)
            wall, rss, report = run_ferry(args.ferry, workdir)
            ferry_wall.append(wall)
            ferry_rss.append(rss)
            print(f"run {i + 1}: ferry {wall:.2f} s, peak RSS {gib(rss)}", file=sys.stderr)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = parity(report, ev)
    same_method = sum(r[1] == r[2] for r in rows)
    same_verdict = sum(r[5] == r[6] for r in rows)
    max_diff = max(abs(r[3] - r[4]) for r in rows)
    print("\n| column | ferry test | Evidently test | ferry score | Evidently score | abs. difference | ferry drift "
          "| Evidently drift |")
    print("|---|---|---|---|---|---|---|---|")
    for name, fm, em, fs, es, fd, ed in rows:
        print(f"| {name} | {fm} | {em} | {fs:.12g} | {es:.12g} | {abs(fs - es):.2e} | {fd} | {ed} |")
    print(f"\nparity: same test on {same_method}/{len(rows)} columns, same verdict on {same_verdict}/{len(rows)}, "
          f"max |score difference| {max_diff:.3e}; dataset drift share ferry {report['drifted_share']:.3f}, "
          f"Evidently {ev['drifted_share']:.3f}\n")

    f_wall, f_rss = statistics.median(ferry_wall), max(ferry_rss)
    e_load, e_report, e_rss = statistics.median(ev_load), statistics.median(ev_report), max(ev_rss)
    e_total = statistics.median(a + b for a, b in zip(ev_load, ev_report))
    methods = sorted({r[2] for r in rows})
    runs = "from one run" if args.repeat == 1 else f"the median of {args.repeat} runs"
    ok = same_method == len(rows) and same_verdict == len(rows)
    versions = ev["versions"]

    print(f"#### `ferry drift` vs Evidently {versions['evidently']} `DataDriftPreset`: "
          f"{args.rows:,} rows × {args.cols} columns, reference and current\n")
    print(f"**ferry is {e_total / f_wall:.1f}× faster end to end** (both CSV files to per-column verdicts), "
          f"**{e_report / f_wall:.1f}× faster than Evidently's report alone** (its frames already in memory, ferry's "
          f"time still including CSV parsing), with **{e_rss / f_rss:.1f}× less peak memory**. "
          f"{'Same' if ok else 'NOT the same'} test and verdict on {min(same_method, same_verdict)}/{len(rows)} "
          f"columns ({', '.join(methods)}), scores within {max_diff:.1e}.\n")
    print("| ferry vs Evidently | ferry | Evidently | what |")
    print("|---|---|---|---|")
    print(f"| **{e_total / f_wall:.1f}× faster** | {secs(f_wall)} | {secs(e_total)} | end to end: CSV files → "
          f"verdicts (Evidently: `pd.read_csv` ×2 + report) |")
    print(f"| **{e_report / f_wall:.1f}× faster** | {secs(f_wall)} | {secs(e_report)} | ferry end to end vs "
          f"Evidently's `Report.run` alone, on frames in memory |")
    print(f"| | | {secs(e_load)} | Evidently's CSV load alone (`pd.read_csv` ×2) |")
    print(f"| **{e_rss / f_rss:.1f}× less** | {gib(f_rss)} | {gib(e_rss)} | peak RSS of the process |")
    n_num, n_int, n_cat = (len(k) for k in columns_for(args.cols))
    print(f"\nData: {n_num} normal numerical columns (a third shifted), {n_int} integer columns (3, 5 or 10 values), "
          f"{n_cat} categorical text columns (4, 12 or 50 labels); {gib(size)} of CSV; times are {runs}.  ")
    print(f"Machine: {machine()}.  ")
    build = f"{args.ferry.parent.name} build" if args.ferry.parent.name in ("release", "debug") else str(args.ferry)
    print(f"Versions: ferry {ferry_revision()} ({build}), "
          f"Evidently {versions['evidently']}, pandas {versions['pandas']}, numpy {np.__version__}, "
          f"Python {platform.python_version()}.  ")
    print(f"Reproduce: `python3 bench/drift/run.py --rows {args.rows} --cols {args.cols} --repeat {args.repeat}`")
    if not ok:
        sys.exit("parity check failed: see the table above")


if __name__ == "__main__":
    main()
