"""What safe change costs the primary's callers: the same registry-served model under the same wrk load, with no
deployment, with a 90/10 weighted split between two versions, and with a shadow that gets a copy of 10% or 100% of
requests (the caller only ever waits for the primary). Monitoring is off in every mode, so that only routing and
shadowing differ. Modes alternate within one server and one run, so that all see the same machine state.

Usage (from the repository root, after `cargo build --release -p ferry`):
    python3 bench/rollout_overhead.py [--seconds 6] [--rounds 3] [--concurrency 8 32]
Needs: wrk (Debian package). Every load loop is bounded in time; the server is stopped at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, TARGET, Server, free_port, wrk  # noqa: E402

ADMIN_KEY = "fk_bench_admin_key_0123456789abcdef"
FIXTURES = ROOT / "fixtures" / "tabular"

MODES = {
    "no deployment": None,
    "split 90/10": {"variants": [{"target": "1", "weight": 90}, {"target": "2", "weight": 10}]},
    "shadow 10%": {"variants": [{"target": "1", "weight": 100}], "shadow": {"target": "2", "percent": 10}},
    "shadow 100%": {"variants": [{"target": "1", "weight": 100}], "shadow": {"target": "2", "percent": 100}},
}


def ferry(*args, cwd, env=None):
    subprocess.run([str(TARGET / "ferry"), *args], cwd=cwd, check=True, env=dict(os.environ, **(env or {})),
                   stdout=subprocess.DEVNULL)


def api(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/api/v1{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def set_mode(base, mode):
    spec = MODES[mode]
    if spec is None:
        status, _ = api(base, "DELETE", "/models/iris/deployment")
        if status not in (200, 204, 404):
            raise RuntimeError(f"deleting the deployment: {status}")
    else:
        status, answer = api(base, "PUT", "/models/iris/deployment", spec)
        if status != 200:
            raise RuntimeError(f"{mode}: {status} {answer}")


def shadow_copies(base):
    """Copies the shadow answered so far, and those shed (from the monitoring API)."""
    status, m = api(base, "GET", "/models/iris/monitoring")
    shadows = (m or {}).get("shadow") or [] if status == 200 else []
    return sum(s.get("requests", 0) for s in shadows), sum(s.get("shed", 0) for s in shadows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    if not (TARGET / "ferry").exists():
        sys.exit(f"build first: cargo build --release -p ferry ({TARGET / 'ferry'} is missing)")

    work = Path(tempfile.mkdtemp(prefix="ferry-rollout-bench-"))
    try:
        model = ROOT / "examples/models/iris/1/model.onnx"
        for file, description in (("v1.ferry", "first"), ("v2.ferry", "second")):
            ferry("pack", str(model), "--name", "iris", "--description", description, "-o", file, cwd=work)
        port = free_port()
        env = {"FERRY_ADMIN_KEY": ADMIN_KEY, "FERRY_DATA_DIR": str(work / "data"), "FERRY_LOG_FORMAT": "json",
               "FERRY_MONITORING__ENABLED": "false", "FERRY_MONITORING__FEEDBACK": "false"}
        cmd = [str(TARGET / "ferry"), "serve", "--allow-anonymous-inference", "--host", "127.0.0.1",
               "--http-port", str(port), "--grpc-port", "0"]
        body = work / "request.json"
        body.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                "data": [5.1, 3.5, 1.4, 0.2]}]}))
        results = {(mode, c): [] for mode in MODES for c in args.concurrency}
        with Server("ferry", cmd, f"http://127.0.0.1:{port}/v2/models/iris/infer", env=env,
                    ready=f"http://127.0.0.1:{port}/v2/health/ready") as s:
            base = s.url.rsplit("/v2/", 1)[0]
            client = {"FERRY_SERVER": base, "FERRY_API_KEY": ADMIN_KEY}
            ferry("push", "v1.ferry", "--alias", "production", cwd=work, env=client)
            ferry("push", "v2.ferry", cwd=work, env=client)
            wrk(s.url, body, None, 8, 2)  # warm-up
            modes = list(MODES)
            for r in range(args.rounds):
                for mode in (modes if r % 2 == 0 else modes[::-1]):
                    set_mode(base, mode)
                    wrk(s.url, body, None, 8, 1)
                    for c in args.concurrency:
                        before = shadow_copies(base)
                        out = wrk(s.url, body, None, c, args.seconds)
                        copies, shed = (a - b for a, b in zip(shadow_copies(base), before))
                        if out["errors"]:
                            raise RuntimeError(f"{mode}: {out['errors']} errors at c={c}")
                        out["copies"], out["shed"] = copies, shed
                        results[(mode, c)].append(out)
                        print(f"  round {r + 1} {mode:<13} c={c:<3} {out['rps']:>9.0f} req/s p50 {out['p50']:.3f} ms "
                              f"p99 {out['p99']:.3f} ms; shadow answered {copies}, shed {shed}", flush=True)
        print()
        print("| mode | concurrency | req/s (median) | ÷ no deployment | req/s range | p50 ms | p99 ms | p99 added, ms | "
              "shadow copies answered / shed (last round) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for mode in MODES:
            for c in args.concurrency:
                runs = results[(mode, c)]
                plain = results[("no deployment", c)]
                rps = statistics.median(x["rps"] for x in runs)
                p50 = statistics.median(x["p50"] for x in runs)
                p99 = statistics.median(x["p99"] for x in runs)
                added = p99 - statistics.median(x["p99"] for x in plain)
                base_rps = statistics.median(x["rps"] for x in plain)
                low, high = min(x["rps"] for x in runs), max(x["rps"] for x in runs)
                print(f"| {mode} | {c} | {rps:.0f} | **{rps / base_rps:.3f}** | {low:.0f}–{high:.0f} | {p50:.3f} | {p99:.3f} | "
                      f"{added:+.3f} | {runs[-1]['copies']} / {runs[-1]['shed']} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
