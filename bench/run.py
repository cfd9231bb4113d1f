"""Reproduces every figure in BENCHMARKS.md: builds ferry and the echo server in release mode, starts each server in
turn on loopback, drives it with wrk at several concurrencies, and records requests/s, latency percentiles, server
CPU-seconds per 1000 requests and peak RSS; then measures onnxruntime's in-process ceiling for the same model.

Usage (from the repository root): python3 bench/run.py [--seconds 10] [--out BENCHMARKS.md]
Needs: wrk (Debian package), and `python3 -m pip install -r requirements.txt fastapi uvicorn`.
Every load loop is bounded in time; every server is stopped at the end.
"""

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
CONCURRENCY = [1, 8, 32, 64]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in (200, 405):
                    return
        except Exception as e:  # noqa: BLE001 - connection refused while starting
            if getattr(e, "code", None) == 405:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def tree_pids(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [pid]
    for child in out:
        pids += tree_pids(int(child))
    return pids


def cpu_seconds(pid):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / tick


def rss_mb(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except FileNotFoundError:
            pass
    return total / 1024


def wrk(url, body_file, header_len, conc, seconds):
    env = dict(os.environ, BODY_FILE=str(body_file), HEADER_LEN=str(header_len or ""))
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench/wrk_post.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "total": total, "errors": errors, "p50": pct(50), "p90": pct(90), "p99": pct(99)}


class Server:
    def __init__(self, name, cmd, url, env=None, ready=None):
        self.name, self.cmd, self.url, self.env, self.ready = name, cmd, url, env or {}, ready

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, env=dict(os.environ, **self.env), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
        wait_http(self.ready or self.url)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(server, body_file, header_len, seconds):
    rows = []
    peak = 0.0
    with server as s:
        wrk(s.url, body_file, header_len, 8, 2)  # warm-up, not reported
        for conc in CONCURRENCY:
            cpu0 = cpu_seconds(s.proc.pid)
            r = wrk(s.url, body_file, header_len, conc, seconds)
            cpu1 = cpu_seconds(s.proc.pid)
            r["cpu_ms_per_1000"] = (cpu1 - cpu0) * 1000 * 1000 / max(r["total"], 1)
            r["rss_mb"] = rss_mb(s.proc.pid)
            peak = max(peak, r["rss_mb"])
            r["conc"] = conc
            rows.append(r)
            if r["errors"]:
                raise RuntimeError(f"{server.name} answered {r['errors']} errors at concurrency {conc}")
            print(f"  {server.name:<28} c={conc:<3} {r['rps']:>9.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
                  f"  errors {r['errors']}", flush=True)
    return rows


def in_process_ceiling(model, seconds=3):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    width = sess.get_inputs()[0].shape[1]
    out = {}
    for batch in (1, 8, 32):
        x = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            sess.run(None, {name: x})
            n += 1
        out[batch] = n * batch / (time.perf_counter() - start)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "ferry", "-p", "ferry-bench-echo"], cwd=ROOT,
                   check=True)
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    mlp = ROOT / "fixtures/models/mlp_classifier.onnx"
    tiny = ROOT / "fixtures/models/tiny_add.onnx"
    case = json.loads((ROOT / "fixtures/models/mlp_classifier.cases.json").read_text())[0]["inputs"][0]
    mlp_json = tmp / "mlp.json"
    mlp_json.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                                                "data": case["data"]}]}))
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 120}}],
                         "parameters": {"binary_data_output": True}}).encode()
    import numpy as np
    mlp_bin = tmp / "mlp.bin"
    mlp_bin.write_bytes(header + np.asarray(case["data"], dtype=np.float32).tobytes())
    tiny_json = tmp / "tiny.json"
    tiny_json.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                                 "data": [1, 2, 3, 4]}]}))

    def repo(label, name, model, config):
        d = tmp / f"repo-{label}" / name
        (d / "1").mkdir(parents=True)
        shutil.copy(model, d / "1" / "model.onnx")
        (d / "config.toml").write_text(config)
        return str(d.parent)

    def ferry(label, name, model, config):
        port = free_port()
        models = repo(label, name, model, config)
        # The peers have no authentication; anonymous inference keeps the comparison like for like.
        cmd = [str(TARGET / "ferry"), "serve", "--model-repository", models, "--allow-anonymous-inference",
               "--data-dir", str(Path(models) / ".ferry-data"),
               "--http-port", str(port), "--grpc-port", str(free_port())]
        return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                      ready=f"http://127.0.0.1:{port}/v2/health/ready")

    def fastapi(label, handler, model):
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "fastapi_server:app", "--workers", "2", "--port", str(port),
               "--log-level", "warning", "--app-dir", str(ROOT / "bench/peers")]
        return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/mlp/infer",
                      env={"MODEL": str(model), "HANDLER": handler})

    echo_port = free_port()
    echo = Server("axum echo (no model)", [str(TARGET / "ferry-bench-echo"), f"127.0.0.1:{echo_port}"],
                  f"http://127.0.0.1:{echo_port}/v2/models/echo/infer")
    runs = [
        ("axum echo (no model)", echo, mlp_json, None),
        ("ferry JSON, batching on", ferry("ferry-json-batch", "mlp", mlp, 'engine = "onnxruntime"\n'), mlp_json, None),
        ("ferry JSON, batching off", ferry("ferry-json-nobatch", "mlp", mlp,
                                           'engine = "onnxruntime"\ndynamic_batching = false\n'), mlp_json, None),
        ("ferry binary, batching on", ferry("ferry-binary-batch", "mlp", mlp, 'engine = "onnxruntime"\n'), mlp_bin,
         len(header)),
        ("ferry tiny model, batching off", ferry("ferry-tiny", "tiny_add", tiny,
                                                 'engine = "onnxruntime"\ndynamic_batching = false\n'), tiny_json, None),
        ("FastAPI async def, 2 workers", fastapi("fastapi-async", "async", mlp), mlp_json, None),
        ("FastAPI def, 2 workers", fastapi("fastapi-def", "def", mlp), mlp_json, None),
    ]
    results = {}
    for label, server, body, header_len in runs:
        print(label, flush=True)
        results[label] = measure(server, body, header_len, args.seconds)
    ceiling = in_process_ceiling(mlp)
    write_report(Path(args.out), results, ceiling, args.seconds)


def write_report(path, results, ceiling, seconds):
    def at(label, conc):
        return next(r for r in results[label] if r["conc"] == conc)

    echo32 = at("axum echo (no model)", 32)
    fa32 = max(at("FastAPI async def, 2 workers", 32)["rps"], at("FastAPI def, 2 workers", 32)["rps"])
    fa_cpu = at("FastAPI async def, 2 workers", 32)["cpu_ms_per_1000"]
    lines = [
        "# Benchmarks",
        "",
        "Reproduce: `python3 bench/run.py` (see its docstring). All figures below come from one run of that script;",
        f"each cell is one {seconds}-second wrk run (`wrk -t1 -cN --latency`), after a 2-second warm-up per server.",
        "The load generator shares the machine's cores with the server, as the targets assume.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}. Model: the MLP fixture (scaler + 30→64→3 MLP, scikit-learn via skl2onnx), "
        "1 row per request; the tiny model is one Add node.",
        "",
        "## Ratios at concurrency 32 (HTTP JSON unless noted)",
        "",
        "| comparison | ratio | target |",
        "|---|---|---|",
    ]

    def ratio(label, target):
        r = at(label, 32)
        lines.append(f"| {label} ÷ axum echo | {r['rps'] / echo32['rps']:.2f} | {target} |")

    ratio("ferry JSON, batching on", "≥ 0.75")
    ratio("ferry JSON, batching off", "≥ 0.50")
    ratio("ferry tiny model, batching off", "≥ 0.80")
    best = at("ferry JSON, batching on", 32)
    lines.append(f"| ferry JSON, batching on ÷ best FastAPI | {best['rps'] / fa32:.1f} | ≥ 5 |")
    lines.append(f"| ferry CPU per request ÷ FastAPI async's | {best['cpu_ms_per_1000'] / fa_cpu:.3f} | ≤ 0.167 |")
    lines.append(f"| ferry p99 − echo p99 | {best['p99'] - echo32['p99']:+.2f} ms | ≤ +1 ms |")
    rss = max(r["rss_mb"] for r in results["ferry JSON, batching on"])
    lines.append(f"| ferry RSS with the MLP loaded | {rss:.1f} MB | ≤ 50 MB |")
    lines += ["", "## Absolute figures", "",
              "| server | conc | req/s | p50 ms | p90 ms | p99 ms | CPU ms / 1000 req | RSS MB | errors |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, rows in results.items():
        for r in rows:
            lines.append(f"| {label} | {r['conc']} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | "
                         f"{r['cpu_ms_per_1000']:.1f} | {r['rss_mb']:.1f} | {r['errors']} |")
    lines += ["", "## In-process ceiling (onnxruntime `session.run`, one thread, same model)", "",
              "| batch | rows/s |", "|---|---|"]
    for batch, rate in ceiling.items():
        lines.append(f"| {batch} | {rate:.0f} |")
    # The hand-written analysis below "## Notes" survives a re-run.
    notes = ""
    if path.exists() and "\n## Notes" in path.read_text():
        notes = "\n## Notes" + path.read_text().split("\n## Notes", 1)[1]
    path.write_text("\n".join(lines) + "\n" + notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
