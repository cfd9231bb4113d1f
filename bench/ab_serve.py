"""A/B of ferry builds (or environments) serving the MLP fixture, batching on: each round starts every variant in
turn, warms it for 2 s, drives it with `wrk -t1 -cCONC --latency` for SECS seconds, and reads its resident and
private (anonymous) memory from /proc/PID/smaps_rollup, idle and after the load.

Usage (from anywhere):
    [ROUNDS=3] [SECS=5] [CONC=32] [CFG='engine = "onnxruntime"'] python3 bench/ab_serve.py BINARY[,K=V...] ...
Each argument is a ferry binary, optionally followed by comma-separated environment variables for it, e.g.
    python3 bench/ab_serve.py /tmp/ferry-old /tmp/ferry-new /tmp/ferry-old,MIMALLOC_ALLOW_THP=0
Needs: wrk (Debian package). Every load run is bounded in time; every server is stopped after its run.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
specs = sys.argv[1:]  # BINARY[,K=V...]
bins = specs
rounds = int(os.environ.get("ROUNDS", "3")); secs = os.environ.get("SECS", "5"); conc = os.environ.get("CONC", "32")
tmp = Path(tempfile.mkdtemp(prefix="ferry-ab-"))
case = json.loads((ROOT / "fixtures/models/mlp_classifier.cases.json").read_text())[0]["inputs"][0]
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": case["data"]}]})
lua = tmp / "post.lua"
lua.write_text('wrk.method="POST"\nwrk.headers["Content-Type"]="application/json"\nwrk.body=' + json.dumps(body) + "\n")
cfg = os.environ.get("CFG", 'engine = "onnxruntime"\n')


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smaps(pid):
    """(resident, private anonymous) MiB of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Anonymous"):
            fields[name] = int(rest.split()[0]) / 1024
    return fields.get("Rss", 0.0), fields.get("Anonymous", 0.0)


res = {b: [] for b in bins}
for r in range(rounds):
    for b in bins:
        d = tmp / f"repo{r}-{bins.index(b)}" / "mlp" / "1"
        d.mkdir(parents=True)
        shutil.copy(ROOT / "fixtures/models/mlp_classifier.onnx", d / "model.onnx")
        (d.parent / "config.toml").write_text(cfg)
        hp, gp = port(), port()
        parts = b.split(",")
        envx = dict(os.environ, **dict(kv.split("=", 1) for kv in parts[1:]))
        p = subprocess.Popen([parts[0], "serve", "--model-repository", str(d.parent.parent), "--allow-anonymous-inference",
                              "--data-dir", str(d.parent.parent / ".data"), "--http-port", str(hp), "--grpc-port", str(gp)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=envx)
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{hp}/v2/health/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                sys.exit(f"{b} did not become ready in 20 s")
            url = f"http://127.0.0.1:{hp}/v2/models/mlp/infer"
            idle = smaps(p.pid)
            subprocess.run(["wrk", "-t1", f"-c{conc}", "-d2s", "-s", str(lua), url], capture_output=True, timeout=30)
            out = subprocess.run(["wrk", "-t1", f"-c{conc}", f"-d{secs}s", "--latency", "-s", str(lua), url],
                                 capture_output=True, text=True, timeout=int(secs) + 60).stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
            rss, anon = smaps(p.pid)
            threads = len(os.listdir(f"/proc/{p.pid}/task"))
        finally:
            p.terminate()
            p.wait(timeout=20)
        res[b].append((rps, p99, idle, (rss, anon), threads))
        print(f"round {r} {b}: {rps:.0f} req/s p99 {p99} idle rss/anon {idle[0]:.1f}/{idle[1]:.1f} MB, "
              f"loaded {rss:.1f}/{anon:.1f} MB, threads {threads}", flush=True)
for b, rs in res.items():
    rates = sorted(x[0] for x in rs)
    print(f"{b}: median {rates[len(rates) // 2]:.0f} req/s, max RSS {max(x[3][0] for x in rs):.1f} MB, "
          f"max private {max(x[3][1] for x in rs):.1f} MB")
