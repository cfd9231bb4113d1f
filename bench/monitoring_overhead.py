"""What watching costs: the same registry-served model, the same wrk load, with monitoring on (drift capture of every
request at sample rate 1.0, predictions kept for feedback, latency baselines, the monitor loop) and off
(`[monitoring] enabled = false, feedback = false`), in alternating rounds within one run, so that both see the same
machine state. The target is throughput with monitoring on >= 95% of off.

Usage (from the repository root, after `cargo build --release`):
    python3 bench/monitoring_overhead.py [--seconds 10] [--rounds 3] [--concurrency 8 32]
    python3 bench/monitoring_overhead.py --paired 40 --seconds 2   # both servers at once, loaded in turn; the median
                                                                   # of the pairs' ratios with a 95% bootstrap interval
    python3 bench/monitoring_overhead.py --processes 12 --slices 4 --seconds 2   # as --paired, but every pair of
                                                                   # ratios from a fresh pair of server processes
Needs: wrk (Debian package). Every load loop is bounded in time; every server is stopped at the end.
"""

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, TARGET, Server, free_port, wrk  # noqa: E402

ADMIN_KEY = "fk_bench_admin_key_0123456789abcdef"
FIXTURES = ROOT / "fixtures" / "tabular"


def ferry(*args, cwd, env=None):
    subprocess.run([str(TARGET / "ferry"), *args], cwd=cwd, check=True, env=dict(os.environ, **(env or {})),
                   stdout=subprocess.DEVNULL)


MODES = {
    "on": {},
    "off": {"FERRY_MONITORING__ENABLED": "false", "FERRY_MONITORING__FEEDBACK": "false"},
    "drift only": {"FERRY_MONITORING__FEEDBACK": "false"},
    "feedback only": {"FERRY_MONITORING__ENABLED": "false"},
}


def server(label, data_dir, mode):
    port = free_port()
    env = {"FERRY_ADMIN_KEY": ADMIN_KEY, "FERRY_DATA_DIR": str(data_dir), "FERRY_LOG_FORMAT": "json", **MODES[mode]}
    cmd = [str(TARGET / "ferry"), "serve", "--allow-anonymous-inference", "--host", "127.0.0.1",
           "--http-port", str(port), "--grpc-port", "0"]
    return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/iris/infer", env=env,
                  ready=f"http://127.0.0.1:{port}/v2/health/ready")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--parts", action="store_true", help="also measure drift capture and feedback capture alone")
    parser.add_argument("--paired", type=int, default=0, metavar="N",
                        help="instead: both servers up at once, loaded in turn, N slices of --seconds each per mode "
                             "and concurrency")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="instead: N pairs of fresh server processes (on and off, each on a fresh copy of the "
                             "registry), up at once and loaded in turn, --slices slices of --seconds each per mode and "
                             "concurrency; one ratio per pair of processes")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--watching", default="on", choices=[m for m in MODES if m != "off"],
                        help="with --processes: the mode compared with off (\"on\" is everything)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not (TARGET / "ferry").exists():
        sys.exit(f"build first: cargo build --release ({TARGET / 'ferry'} is missing)")

    work = Path(tempfile.mkdtemp(prefix="ferry-monitoring-bench-"))
    try:
        model = ROOT / "examples/models/iris/1/model.onnx"
        ferry("pack", str(model), "--name", "iris", "--reference", str(FIXTURES / "iris_reference.csv"),
              "--validation", str(FIXTURES / "iris_validation.csv"), "--label", "species", "-o", "iris.ferry",
              cwd=work)
        data = work / "data"
        # Push once; every later server serves the same registry.
        with server("push", data, "on") as s:
            base = s.url.rsplit("/v2/", 1)[0]
            ferry("push", "iris.ferry", "--alias", "production", cwd=work,
                  env={"FERRY_SERVER": base, "FERRY_API_KEY": ADMIN_KEY})
        body = work / "request.json"
        body.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                "data": [5.1, 3.5, 1.4, 0.2]}]}))
        if args.paired:
            paired(args, data, body)
            return
        if args.processes:
            processes(args, data, body)
            return
        modes = list(MODES) if args.parts else ["on", "off"]
        results = {(mode, c): [] for mode in modes for c in args.concurrency}
        dropped = {mode: [] for mode in modes}
        for r in range(args.rounds):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                with server(f"monitoring {mode}", data, mode) as s:
                    wrk(s.url, body, None, 8, 2)  # warm-up
                    for c in args.concurrency:
                        before, batches = cpu_by_thread(s.proc.pid), batch_counts(s.url)
                        machine = machine_cpu()
                        out = wrk(s.url, body, None, c, args.seconds)
                        out["cpu"] = {k: (v - before.get(k, 0)) / out["total"] * 1e6
                                      for k, v in cpu_by_thread(s.proc.pid).items()}
                        busy, steal = (now - then for now, then in zip(machine_cpu(), machine))
                        runs, rows = (now - then for now, then in zip(batch_counts(s.url), batches))
                        if out["errors"]:
                            raise RuntimeError(f"monitoring {mode}: {out['errors']} errors at c={c}")
                        results[(mode, c)].append(out)
                        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(out["cpu"].items()) if v >= 0.05)
                        print(f"  round {r + 1} monitoring {mode:<13} c={c:<3} {out['rps']:>9.0f} req/s "
                              f"p50 {out['p50']:.3f} ms p99 {out['p99']:.3f} ms; mean batch {rows / max(runs, 1):.2f}; "
                              f"CPU µs/request: {cpu}; machine busy {busy / out['total'] * 1e6:.1f}, "
                              f"steal {steal / out['total'] * 1e6:.1f}", flush=True)
                    dropped[mode].append(check_watched(s.url, mode, s.proc.pid))
        print()
        print("| monitoring | concurrency | req/s (median) | ÷ off | p99 ms (median) | server CPU µs/request (median) |")
        print("|---|---|---|---|---|---|")
        # What a throughput cannot show: monitoring that kept up, or samples it dropped (whole server runs).
        for mode in modes:
            for c in args.concurrency:
                rps = statistics.median(x["rps"] for x in results[(mode, c)])
                off = statistics.median(x["rps"] for x in results[("off", c)])
                p99 = statistics.median(x["p99"] for x in results[(mode, c)])
                cpu = statistics.median(sum(x["cpu"].values()) for x in results[(mode, c)])
                print(f"| {mode} | {c} | {rps:.0f} | **{rps / off:.3f}** | {p99:.3f} | {cpu:.1f} |")
        print()
        for mode in modes:
            if mode != "off":
                print(f"monitoring {mode}: dropped per server run (drift rows, predictions kept for feedback): "
                      + ", ".join(f"{d}/{f}" for d, f in dropped[mode]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def paired(args, data, body):
    """Both servers up at once (on, and off on a copy of the registry), loaded in turn in short slices, the order
    swapped every pair: a slow stretch of the shared host, which lasts longer than a slice, falls on both modes alike.
    The ratio is the median of each pair's on ÷ off."""
    off_data = data.parent / "data-off"
    shutil.copytree(data, off_data)
    with server("monitoring on", data, "on") as on, server("monitoring off", off_data, "off") as off:
        for s in (on, off):
            wrk(s.url, body, None, 8, 2)  # warm-up
        print("| concurrency | on req/s (median) | off req/s (median) | on ÷ off (median of pairs) | 95% interval "
              "of that median | pairs' range |")
        print("|---|---|---|---|---|---|")
        for c in args.concurrency:
            ratios, rps = [], {"on": [], "off": []}
            # Per mode: CPU seconds by kind of thread, stolen seconds, requests (over all its slices).
            cpu, steal, requests = {"on": {}, "off": {}}, {"on": 0.0, "off": 0.0}, {"on": 0, "off": 0}
            for i in range(args.paired):
                for mode, s in ([("on", on), ("off", off)] if i % 2 == 0 else [("off", off), ("on", on)]):
                    before, machine = cpu_by_thread(s.proc.pid), machine_cpu()
                    out = wrk(s.url, body, None, c, args.seconds)
                    if out["errors"]:
                        raise RuntimeError(f"monitoring {mode}: {out['errors']} errors at c={c}")
                    rps[mode].append(out["rps"])
                    for k, v in cpu_by_thread(s.proc.pid).items():
                        cpu[mode][k] = cpu[mode].get(k, 0) + v - before.get(k, 0)
                    steal[mode] += machine_cpu()[1] - machine[1]
                    requests[mode] += out["total"]
                ratios.append(rps["on"][-1] / rps["off"][-1])
            low, high = median_interval(ratios)
            print(f"| {c} | {statistics.median(rps['on']):.0f} | {statistics.median(rps['off']):.0f} | "
                  f"**{statistics.median(ratios):.3f}** | {low:.3f}–{high:.3f} | {min(ratios):.3f}–{max(ratios):.3f} |",
                  flush=True)
            for mode in ("on", "off"):
                per = ", ".join(f"{k} {v / requests[mode] * 1e6:.1f}" for k, v in sorted(cpu[mode].items())
                                if v / requests[mode] * 1e6 >= 0.05)
                print(f"  c={c} monitoring {mode}: server CPU µs/request {per}; "
                      f"stolen {steal[mode] / requests[mode] * 1e6:.1f}", flush=True)
        print()
        check_watched(on.url, "on", on.proc.pid)


def processes(args, data, body):
    """What `paired` cannot see: a server process keeps a state for its life (where the scheduler puts its threads,
    how its memory is laid out) that moves its cost per request by more than monitoring does (the async workers at
    16.2-18.4 us per request off and 16.8-19.7 on, between processes of one build). `paired` loads one process per
    mode for the whole run, so its interval covers the host's noise but not this. Here every pair of ratios comes from
    a fresh pair of processes, each on a fresh copy of the registry, both up at once and loaded in turn in slices (the
    order swapped every slice); a pair's ratio is its on requests over its off requests, and the run reports the
    median over the pairs of processes with a 95% bootstrap interval."""
    ratios = {c: [] for c in args.concurrency}
    rps = {(mode, c): [] for mode in ("on", "off") for c in args.concurrency}
    cpu = {(mode, c): {} for mode in ("on", "off") for c in args.concurrency}
    steal = {(mode, c): 0.0 for mode in ("on", "off") for c in args.concurrency}
    # The whole machine's busy CPU and the load generator's (wrk, a child of this script), to find work monitoring
    # causes outside the server: writeback of the files it writes, say.
    busy = {(mode, c): 0.0 for mode in ("on", "off") for c in args.concurrency}
    client = {(mode, c): 0.0 for mode in ("on", "off") for c in args.concurrency}
    requests = {(mode, c): 0 for mode in ("on", "off") for c in args.concurrency}
    for p in range(args.processes):
        dirs = {mode: data.parent / f"data-{mode}-{p}" for mode in ("on", "off")}
        for d in dirs.values():
            shutil.copytree(data, d)
        try:
            with server(f"monitoring {args.watching}", dirs["on"], args.watching) as on, \
                    server("monitoring off", dirs["off"], "off") as off:
                servers = {"on": on, "off": off}
                for s in (on, off) if p % 2 == 0 else (off, on):
                    wrk(s.url, body, None, 8, 1)  # warm-up
                line = []
                for c in args.concurrency:
                    done = {"on": 0, "off": 0}
                    for i in range(args.slices):
                        for mode in ("on", "off") if (p + i) % 2 == 0 else ("off", "on"):
                            s = servers[mode]
                            before, machine, children = cpu_by_thread(s.proc.pid), machine_cpu(), children_cpu()
                            out = wrk(s.url, body, None, c, args.seconds)
                            if out["errors"]:
                                raise RuntimeError(f"monitoring {mode}: {out['errors']} errors at c={c}")
                            for k, v in cpu_by_thread(s.proc.pid).items():
                                cpu[(mode, c)][k] = cpu[(mode, c)].get(k, 0) + v - before.get(k, 0)
                            now = machine_cpu()
                            busy[(mode, c)] += now[0] - machine[0]
                            steal[(mode, c)] += now[1] - machine[1]
                            client[(mode, c)] += children_cpu() - children
                            requests[(mode, c)] += out["total"]
                            done[mode] += out["total"]
                    for mode in ("on", "off"):
                        rps[(mode, c)].append(done[mode] / (args.slices * args.seconds))
                    ratios[c].append(done["on"] / done["off"])
                    line.append(f"c={c}: {done['on'] / (args.slices * args.seconds):.0f} vs "
                                f"{done['off'] / (args.slices * args.seconds):.0f} req/s, {ratios[c][-1]:.3f}")
                print(f"  processes {p + 1}: " + "; ".join(line), flush=True)
                check_watched(on.url, args.watching, on.proc.pid)
        finally:
            for d in dirs.values():
                shutil.rmtree(d, ignore_errors=True)
    print()
    print(f"| concurrency | {args.watching} req/s (median) | off req/s (median) | {args.watching} ÷ off (median over "
          "pairs of processes) | 95% interval of that median | pairs' range |")
    print("|---|---|---|---|---|---|")
    for c in args.concurrency:
        low, high = median_interval(ratios[c])
        print(f"| {c} | {statistics.median(rps[('on', c)]):.0f} | {statistics.median(rps[('off', c)]):.0f} | "
              f"**{statistics.median(ratios[c]):.3f}** | {low:.3f}–{high:.3f} | "
              f"{min(ratios[c]):.3f}–{max(ratios[c]):.3f} |")
    for c in args.concurrency:
        for mode in ("on", "off"):
            n = requests[(mode, c)]
            per = ", ".join(f"{k} {v / n * 1e6:.1f}" for k, v in sorted(cpu[(mode, c)].items()) if v / n * 1e6 >= 0.05)
            server_cpu = sum(cpu[(mode, c)].values())
            rest = busy[(mode, c)] - server_cpu - client[(mode, c)]
            label = args.watching if mode == "on" else mode
            print(f"  c={c} monitoring {label}: machine busy {busy[(mode, c)] / n * 1e6:.1f} µs/request: server "
                  f"{server_cpu / n * 1e6:.1f} ({per}), wrk {client[(mode, c)] / n * 1e6:.1f}, the rest "
                  f"{rest / n * 1e6:.1f}; stolen {steal[(mode, c)] / n * 1e6:.1f}")


def median_interval(values, resamples=10_000, seed=7):
    """A 95% bootstrap interval of the median of `values` (percentiles of the medians of resamples with replacement):
    how far the run's median could move on this host's noise alone."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def batch_counts(infer_url):
    """The model's engine runs and the requests they carried so far (`ferry_batch_size`): with greedy dynamic
    batching, work added on the serving threads can change how many requests share a run."""
    base = infer_url.rsplit("/v2/", 1)[0]
    request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()

    def total(name):
        return sum(float(x) for x in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    return total("ferry_batch_size_count"), total("ferry_batch_size_sum")


def machine_cpu():
    """CPU seconds the whole machine has been busy (all processes, kernel threads and interrupts) and has had stolen
    by the host so far, from /proc/stat: work that monitoring causes outside the server (writeback of the files it
    writes, say) shows in the first beside the server's own."""
    tick = os.sysconf("SC_CLK_TCK")
    # cpu  user nice system idle iowait irq softirq steal
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields[:3]) + fields[5] + fields[6]) / tick, fields[7] / tick


def children_cpu():
    """CPU seconds this script's ended children (the wrk runs) have used so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_by_thread(pid):
    """CPU seconds the server has used so far, per kind of thread (its name without the trailing number): a cost per
    request that a busy neighbour on the machine disturbs less than a throughput."""
    tick = os.sysconf("SC_CLK_TCK")
    per = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the thread ended
            continue
        name = re.sub(r"[-\d]+$", "", text[text.index("(") + 1:text.rindex(")")])
        fields = text[text.rindex(")") + 2:].split()
        per[name] = per.get(name, 0) + (int(fields[11]) + int(fields[12])) / tick
    return per


def check_watched(infer_url, mode, pid):
    """Monitoring really was on in `mode`: drift windows completed, predictions were kept; returns the samples it
    dropped (drift rows, kept predictions), which a throughput alone would hide. With feedback on, also waits for
    the spool of kept predictions to be indexed and prints the work deferred past the load (backlog, time, CPU)."""
    base = infer_url.rsplit("/v2/", 1)[0]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def scrape():
        with urllib.request.urlopen(urllib.request.Request(f"{base}/metrics", headers=headers), timeout=10) as r:
            return r.read().decode()

    metrics = scrape()

    def counter(name, text=None):
        m = re.search(rf"^{name} (\d+)$", text or metrics, re.M)
        return int(m.group(1)) if m else 0

    if mode in ("on", "feedback only"):
        backlog = counter("ferry_feedback_spool_backlog_bytes")
        # A truth for a prediction made behind the load's backlog: what a client sending feedback waits for.
        request = urllib.request.Request(infer_url, data=json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
        ).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            request_id = json.load(r)["id"]
        time.sleep(0.3)  # the writer spools the memory buffer every 100 ms
        request = urllib.request.Request(f"{base}/api/v1/models/iris/feedback",
                                         data=json.dumps([{"request_id": request_id, "label": 0}]).encode(),
                                         headers={**headers, "Content-Type": "application/json"})
        sent = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as r:
            report = json.load(r)
        if report.get("matched") != 1:
            raise RuntimeError(f"monitoring {mode}: the feedback did not join its prediction: {report}")
        print(f"    feedback after the load, {backlog / 2**20:.1f} MiB spooled: answered in "
              f"{(time.monotonic() - sent) * 1e3:.0f} ms", flush=True)
        before, started = cpu_by_thread(pid), time.monotonic()
        left = backlog
        while left and time.monotonic() - started < 120:
            time.sleep(0.2)
            left = counter("ferry_feedback_spool_backlog_bytes", scrape())
        cpu = cpu_by_thread(pid).get("ferry-indexer", 0) - before.get("ferry-indexer", 0)
        print(f"    spool backlog after the load: {backlog / 2**20:.1f} MiB, indexed in "
              f"{time.monotonic() - started:.1f} s using {cpu:.2f} s of CPU; {left} bytes left", flush=True)

    drift_dropped = counter("ferry_drift_samples_dropped_total")
    feedback_dropped = counter("ferry_feedback_samples_dropped_total")
    if mode in ("on", "drift only"):
        request = urllib.request.Request(f"{base}/api/v1/models/iris/monitoring", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as r:
            m = json.load(r)
        if not m["windows_completed"]:
            raise RuntimeError(f"monitoring {mode}, but no drift window completed")
        print(f"    watched: {m['windows_completed']} drift windows, {drift_dropped} rows dropped", flush=True)
    if mode in ("on", "feedback only"):
        if "ferry_feedback_samples_dropped_total" not in metrics:
            raise RuntimeError(f"monitoring {mode}, but predictions are not kept for feedback")
        print(f"    kept for feedback: {feedback_dropped} predictions dropped", flush=True)
    return drift_dropped, feedback_dropped


if __name__ == "__main__":
    main()
