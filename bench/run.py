"""Reproduces every serving figure in BENCHMARKS.md, ferry and its peers in one run: builds ferry and the echo server
in release mode, starts each server in turn on loopback, drives it over HTTP with wrk and, where it speaks KServe v2
gRPC, with h2load, at several concurrencies; records requests/s, latency percentiles, server CPU-seconds per 1000
requests and peak RSS; then measures onnxruntime's in-process ceiling for the same model.

Servers: an axum echo server (no model), ferry (JSON and binary, batching on and off, a one-node model), FastAPI +
uvicorn (async and plain handlers), Seldon MLServer with a small onnxruntime runtime (adaptive batching off and on),
and NVIDIA Triton through PyTriton (dynamic batching on and off). All serve the MLP fixture as model "mlp".

Usage (from the repository root):
    python3 bench/run.py [--seconds 10] [--repeats 3] [--only SUBSTRING ...] [--skip-build] [--out BENCHMARKS.md]

  --repeats N     each (server, concurrency) cell is measured N times; the report gives the median req/s, its range,
                  and the latency percentiles of the median run.
  --only S        run only the servers whose label contains S (case-insensitive; repeatable), e.g. --only MLServer.
  --skip-build    don't call cargo; use the binaries already in $CARGO_TARGET_DIR/release (or target/release).
                  cargo is not called either when no selected server needs ferry or the echo server.

Needs:
  - wrk and h2load (Debian packages wrk and nghttp2-client); without h2load the gRPC cells are skipped.
  - `python3 -m pip install -r requirements.txt` for this interpreter (onnxruntime, numpy, tritonclient[grpc]):
    the in-process ceiling, the gRPC request frames and the gRPC check calls use it.
  - The peers run from their own venvs, which this script creates when missing (python -m venv + pip install -r the
    pinned files; a few minutes the first time): $FERRY_BENCH_VENVS (default ~/.cache/ferry)/peers-venv from
    bench/peers/requirements-peers.txt (MLServer, and FastAPI + uvicorn for the FastAPI peers) and pytriton-venv from
    bench/peers/requirements-pytriton.txt (PyTriton needs numpy < 2, so it can't share). See bench/peers.md.
A server that can't be set up or started, or that answers errors, is reported as not run, with the reason; the run
goes on. Every load run, start-up wait and install is bounded in time; every server is stopped at the end.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
VENVS = Path(os.environ.get("FERRY_BENCH_VENVS", Path.home() / ".cache/ferry"))
CONCURRENCY = [1, 8, 32, 64]
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
# venv directory and pinned requirements for each peer environment.
PEER_VENVS = {
    "peers": ("peers-venv", "bench/peers/requirements-peers.txt"),
    "pytriton": ("pytriton-venv", "bench/peers/requirements-pytriton.txt"),
}
PIP_TIMEOUT = 1800


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=8):
    try:
        return " | ".join(Path(path).read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def wait_http(url, proc, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in (200, 405):
                    return
        except Exception as e:  # noqa: BLE001 - connection refused while starting
            if getattr(e, "code", None) == 405:  # GET on a POST-only infer route: the server is up
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready within {limit} s")


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


def ensure_venv(dirname, requirements):
    """Returns the python of the venv VENVS/dirname, creating it and installing the pinned requirements first when
    that hasn't been done for this exact requirements file (a stamp in the venv records the file's content)."""
    venv = VENVS / dirname
    python = venv / "bin/python"
    stamp = venv / ".ferry-requirements"
    wanted = (ROOT / requirements).read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"  setting up {venv}: pip install -r {requirements} (a few minutes the first time)", flush=True)
    if not python.exists():
        r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
        if r.returncode:
            raise RuntimeError(f"python -m venv {venv} failed: {r.stderr.strip()[-500:]}")
    try:
        r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(ROOT / requirements)],
                           capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip install -r {requirements} into {venv} took over {PIP_TIMEOUT} s") from None
    if r.returncode:
        last = " | ".join(r.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"pip install -r {requirements} into {venv} failed: {last}")
    stamp.write_text(wanted)
    return python


_venv_pythons = {}


def venv_python(name):
    """The python of a peer venv, set up once per run; a failed set-up is remembered and raised for every peer
    that needs it, so it is tried only once."""
    if name not in _venv_pythons:
        try:
            _venv_pythons[name] = ensure_venv(*PEER_VENVS[name])
        except Exception as e:  # noqa: BLE001 - reported as the reason the peer could not run
            _venv_pythons[name] = e
    if isinstance(_venv_pythons[name], Exception):
        raise _venv_pythons[name]
    return _venv_pythons[name]


def wrk(url, body_file, header_len, conc, seconds):
    env = dict(os.environ, BODY_FILE=str(body_file), HEADER_LEN=str(header_len or ""))
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "bench/wrk_post.lua"), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30).stdout
    if not (m := re.search(r"Requests/sec:\s+([\d.]+)", out)):
        raise RuntimeError(f"wrk printed no result: {out.strip()[-300:]}")
    rps = float(m.group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "total": total, "errors": errors, "p50": pct(50), "p90": pct(90), "p99": pct(99)}


def h2load(port, frame_file, answer_len, conc, seconds, log_file):
    """gRPC load: h2load posts the prebuilt frame on `conc` HTTP/2 connections, one stream each (as wrk keeps one
    request per connection). Latency percentiles come from h2load's per-request log, since its summary has only
    min/max/mean/sd."""
    cmd = ["h2load", "-t1", f"-c{conc}", "-m1", f"-D{seconds}", "-d", str(frame_file),
           "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log_file),
           f"http://127.0.0.1:{port}{GRPC_PATH}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    req = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                    r"(\d+) timeout", out)
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    if not (m and req and data):
        raise RuntimeError(f"h2load printed no result: {out.strip()[-300:]}")
    succeeded = int(req.group(1))
    errors = sum(int(req.group(i)) for i in (2, 3, 4))
    # h2load counts every HTTP 200 as a success, but a gRPC error is an HTTP 200 whose trailers carry the status and
    # which has no message; so a shortfall in received message bytes is the count of requests that failed in gRPC.
    received = int(data.group(1))
    if received < succeeded * answer_len:
        errors += succeeded - received // answer_len
    times = []
    for line in Path(log_file).read_text().splitlines():
        _, status, micros = line.split("\t")[:3]
        if status != "-1":
            times.append(int(micros) / 1000)
    Path(log_file).unlink()
    times.sort()

    def pct(p):  # nearest rank
        return times[max(0, math.ceil(p / 100 * len(times)) - 1)] if times else float("nan")

    return {"rps": float(m.group(1)), "total": succeeded, "errors": errors, "p50": pct(50), "p90": pct(90),
            "p99": pct(99)}


def grpc_message(case):
    """The protobuf bytes of inference.ModelInferRequest for one MLP row, in typed contents (fp32_contents): the
    protobuf counterpart of the JSON request's "data", and a form every KServe v2 server accepts."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 30])
    tensor.contents.fp32_contents.extend(case["inputs"][0]["data"])
    return request.SerializeToString()


def check_grpc(port, message, expected, limit=20):
    """Sends the exact message h2load will send, once, with grpcio, and compares the answer with the fixture's
    expected outputs. Returns the length of the answer's gRPC frame (5-byte prefix + message), which h2load's
    received byte count is checked against."""
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2

    deadline = time.time() + limit
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        # Identity (de)serializers: the bytes on the wire are exactly the prebuilt message and the raw answer.
        infer = channel.unary_unary(GRPC_PATH, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        while True:
            try:
                raw = infer(message, timeout=5)
                break
            except grpc.RpcError as e:
                if time.time() > deadline:  # the gRPC port may open a moment after the HTTP one
                    raise RuntimeError(f"gRPC ModelInfer failed: {e.code().name}: {e.details()}") from None
                time.sleep(0.5)
    response = service_pb2.ModelInferResponse.FromString(raw)
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    got = {}
    for k, out in enumerate(response.outputs):
        if response.raw_output_contents:
            got[out.name] = np.frombuffer(response.raw_output_contents[k], dtypes[out.datatype])
        else:
            got[out.name] = np.asarray(out.contents.fp32_contents if out.datatype == "FP32"
                                       else out.contents.int64_contents)
    for want in expected:
        have = got.get(want["name"])
        if have is None or have.size != len(want["data"]) or not np.allclose(have, want["data"], atol=1e-5):
            raise RuntimeError(f"gRPC ModelInfer answered {want['name']} = {have}, expected {want['data']}")
    return len(raw) + 5


class Server:
    def __init__(self, name, cmd, url, env=None, ready=None, grpc_port=None, ready_timeout=60):
        self.name, self.cmd, self.url, self.env, self.ready = name, cmd, url, env or {}, ready
        self.grpc_port, self.ready_timeout = grpc_port, ready_timeout

    def __enter__(self):
        self.log = LOGS / (re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-") + ".log")
        with open(self.log, "wb") as log:
            try:
                # A session of its own, so that whatever it spawns (workers, tritonserver) can be stopped as a group.
                self.proc = subprocess.Popen(self.cmd, env=dict(os.environ, **self.env), stdout=log,
                                             stderr=subprocess.STDOUT, cwd=tempfile.gettempdir(),
                                             start_new_session=True)
            except OSError as e:
                raise RuntimeError(f"could not be started: {e}") from None
        try:
            wait_http(self.ready or self.url, self.proc, self.ready_timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"did not start: {e}; its log ends: {tail(self.log) or '(empty)'}") from None
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)  # Triton takes about 7 s to unload and exit
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in its process group (a stuck server, orphaned helpers)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)


LOGS = Path(tempfile.gettempdir())  # replaced by the run's temp folder in main()


def run_cells(server, load, seconds, repeats):
    """Every concurrency `repeats` times, in rounds (so slow drifts of the machine spread over all cells), after a
    2-second warm-up; returns one row per concurrency: median req/s and its range, the rest from the median run."""
    load(8, 2)  # warm-up, not reported
    runs = {conc: [] for conc in CONCURRENCY}
    for round_ in range(repeats):
        for conc in CONCURRENCY:
            cpu0 = cpu_seconds(server.proc.pid)
            r = load(conc, seconds)
            cpu1 = cpu_seconds(server.proc.pid)
            r["cpu_ms_per_1000"] = (cpu1 - cpu0) * 1000 * 1000 / max(r["total"], 1)
            r["rss_mb"] = rss_mb(server.proc.pid)
            print(f"    c={conc:<3} {r['rps']:>9.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms"
                  f"  errors {r['errors']}  (round {round_ + 1}/{repeats})", flush=True)
            if r["errors"]:
                raise RuntimeError(f"answered {r['errors']} errors of {r['total'] + r['errors']} requests at "
                                   f"concurrency {conc}")
            runs[conc].append(r)
    rows = []
    for conc, rs in runs.items():
        rates = [r["rps"] for r in rs]
        median_run = sorted(rs, key=lambda r: r["rps"])[(len(rs) - 1) // 2]  # the lower median for an even count
        rows.append(dict(median_run, conc=conc, rps=statistics.median(rates), rps_min=min(rates),
                         rps_max=max(rates), runs=len(rs), rss_mb=max(r["rss_mb"] for r in rs)))
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


@dataclass
class Run:
    label: str  # row label of its HTTP cells
    make: Callable[[], Server]  # builds the server (may set up a venv); called only when the server is run
    body: Path
    header_len: Optional[int] = None
    grpc_label: Optional[str] = None  # row label of its gRPC cells; None: no gRPC load
    ferry: Optional[str] = None  # for a peer: the ferry HTTP row it is compared with
    rust: bool = False  # needs the release binaries


# ferry's gRPC rows, by the HTTP row of the same server.
FERRY_GRPC = {"ferry JSON, batching on": "ferry gRPC, batching on",
              "ferry JSON, batching off": "ferry gRPC, batching off"}


def main():
    global LOGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of one load run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (server, concurrency) cell")
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="run only servers whose label contains this (repeatable)")
    parser.add_argument("--skip-build", action="store_true", help="use the existing release binaries")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    LOGS = tmp / "logs"
    LOGS.mkdir()
    mlp = ROOT / "fixtures/models/mlp_classifier.onnx"
    tiny = ROOT / "fixtures/models/tiny_add.onnx"
    mlp_case = json.loads((ROOT / "fixtures/models/mlp_classifier.cases.json").read_text())[0]
    case = mlp_case["inputs"][0]
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

    # The gRPC request, built once: a gRPC frame is a 5-byte prefix (0 = not compressed, big-endian u32 length)
    # followed by the protobuf message; h2load posts the file as is.
    grpc_frame, grpc_message_bytes, grpc_off = tmp / "mlp.grpc", None, None
    if not shutil.which("h2load"):
        grpc_off = "h2load not found (apt-get install nghttp2-client)"
    else:
        try:
            grpc_message_bytes = grpc_message(mlp_case)
            grpc_frame.write_bytes(struct.pack(">BI", 0, len(grpc_message_bytes)) + grpc_message_bytes)
        except ImportError as e:
            grpc_off = f"tritonclient[grpc] is missing from this Python ({e}); pip install -r requirements.txt"

    def repo(label, name, model, config):
        d = tmp / f"repo-{label}" / name
        (d / "1").mkdir(parents=True)
        shutil.copy(model, d / "1" / "model.onnx")
        (d / "config.toml").write_text(config)
        return str(d.parent)

    def binary(name):
        path = TARGET / name
        if not path.exists():
            raise RuntimeError(f"{path} not found (build it: cargo build --release -p ferry -p ferry-bench-echo)")
        return str(path)

    def ferry(label, name, model, config):
        def make():
            port, grpc = free_port(), free_port()
            models = repo(label, name, model, config)
            # The peers have no authentication; anonymous inference keeps the comparison like for like.
            cmd = [binary("ferry"), "serve", "--model-repository", models, "--allow-anonymous-inference",
                   "--data-dir", str(Path(models) / ".ferry-data"), "--http-port", str(port), "--grpc-port", str(grpc)]
            return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                          ready=f"http://127.0.0.1:{port}/v2/health/ready", grpc_port=grpc)
        return make

    def echo():
        port = free_port()
        return Server("echo", [binary("ferry-bench-echo"), f"127.0.0.1:{port}"],
                      f"http://127.0.0.1:{port}/v2/models/echo/infer")

    def fastapi(label, handler):
        def make():
            # Runs from the MLServer venv, which pins fastapi, uvicorn (with uvloop), onnxruntime and numpy.
            port = free_port()
            cmd = [str(venv_python("peers")), "-m", "uvicorn", "fastapi_server:app", "--workers", "2", "--port",
                   str(port), "--log-level", "warning", "--app-dir", str(ROOT / "bench/peers")]
            return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/mlp/infer",
                          env={"MODEL": str(mlp), "HANDLER": handler}, ready_timeout=120)
        return make

    def mlserver(label, variant):
        def make():
            port, grpc = free_port(), free_port()
            env = {"PYTHONPATH": str(ROOT / "bench/peers/mlserver_onnx"), "MODEL": str(mlp),
                   "MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(grpc),
                   "MLSERVER_METRICS_PORT": str(free_port())}
            cmd = [str(venv_python("peers").parent / "mlserver"), "start",
                   str(ROOT / "bench/peers/mlserver_onnx" / variant)]
            # The HTTP port answers before the inference worker has loaded the model: wait for the model.
            return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/mlp/infer", env=env,
                          ready=f"http://127.0.0.1:{port}/v2/models/mlp/ready", grpc_port=grpc, ready_timeout=180)
        return make

    def pytriton(label, batching):
        def make():
            # pytriton_server.py puts this venv's libpython first on LD_LIBRARY_PATH itself (the Python backend
            # stub would otherwise load the system's); the wheel's other bundled libraries are found by RPATH.
            port, grpc = free_port(), free_port()
            cmd = [str(venv_python("pytriton")), str(ROOT / "bench/peers/pytriton_server.py"), "--port", str(port),
                   "--grpc-port", str(grpc), "--metrics-port", str(free_port()), str(mlp)]
            if not batching:
                cmd.insert(-1, "--no-batching")
            return Server(label, cmd, f"http://127.0.0.1:{port}/v2/models/mlp/infer",
                          ready=f"http://127.0.0.1:{port}/v2/models/mlp/ready", grpc_port=grpc, ready_timeout=180)
        return make

    runs = [
        Run("axum echo (no model)", echo, mlp_json, rust=True),
        Run("ferry JSON, batching on", ferry("ferry-json-batch", "mlp", mlp, 'engine = "onnxruntime"\n'), mlp_json,
            grpc_label=FERRY_GRPC["ferry JSON, batching on"], rust=True),
        Run("ferry JSON, batching off", ferry("ferry-json-nobatch", "mlp", mlp,
                                              'engine = "onnxruntime"\ndynamic_batching = false\n'), mlp_json,
            grpc_label=FERRY_GRPC["ferry JSON, batching off"], rust=True),
        Run("ferry binary, batching on", ferry("ferry-binary-batch", "mlp", mlp, 'engine = "onnxruntime"\n'), mlp_bin,
            len(header), rust=True),
        Run("ferry tiny model, batching off", ferry("ferry-tiny", "tiny_add", tiny,
                                                    'engine = "onnxruntime"\ndynamic_batching = false\n'), tiny_json,
            rust=True),
        # FastAPI can't batch; it is compared with ferry's default (batching on), as the targets are.
        Run("FastAPI async def, 2 workers", fastapi("FastAPI async def, 2 workers", "async"), mlp_json,
            ferry="ferry JSON, batching on"),
        Run("FastAPI def, 2 workers", fastapi("FastAPI def, 2 workers", "def"), mlp_json,
            ferry="ferry JSON, batching on"),
        # Peers that can batch are compared with ferry in the same batching mode.
        Run("MLServer, adaptive batching off", mlserver("MLServer, adaptive batching off", "nobatch"), mlp_json,
            grpc_label="MLServer gRPC, adaptive batching off", ferry="ferry JSON, batching off"),
        Run("MLServer, adaptive batching on", mlserver("MLServer, adaptive batching on", "batch"), mlp_json,
            grpc_label="MLServer gRPC, adaptive batching on", ferry="ferry JSON, batching on"),
        Run("Triton (PyTriton), dynamic batching off", pytriton("Triton (PyTriton), dynamic batching off", False),
            mlp_json, grpc_label="Triton (PyTriton) gRPC, dynamic batching off", ferry="ferry JSON, batching off"),
        Run("Triton (PyTriton), dynamic batching on", pytriton("Triton (PyTriton), dynamic batching on", True),
            mlp_json, grpc_label="Triton (PyTriton) gRPC, dynamic batching on", ferry="ferry JSON, batching on"),
    ]
    selected = [r for r in runs
                if not args.only or any(s.lower() in f"{r.label} {r.grpc_label or ''}".lower() for s in args.only)]
    if not selected:
        sys.exit(f"--only {args.only} matches none of: {', '.join(r.label for r in runs)}")
    if any(r.rust for r in selected) and not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "ferry", "-p", "ferry-bench-echo"], cwd=ROOT,
                       check=True, timeout=3 * 3600)

    http, grpc, failures = {}, {}, {}
    for run in selected:
        print(run.label, flush=True)
        try:
            server = run.make()
            with server:
                try:
                    http[run.label] = run_cells(server, lambda c, s: wrk(server.url, run.body, run.header_len, c, s),
                                                args.seconds, args.repeats)
                except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
                    failures[run.label] = f"HTTP load: {e}"
                if run.grpc_label:
                    print(run.grpc_label, flush=True)
                    try:
                        if grpc_off:
                            raise RuntimeError(grpc_off)
                        answer_len = check_grpc(server.grpc_port, grpc_message_bytes, mlp_case["outputs"])
                        log = tmp / "h2load.tsv"
                        grpc[run.grpc_label] = run_cells(
                            server, lambda c, s: h2load(server.grpc_port, grpc_frame, answer_len, c, s, log),
                            args.seconds, args.repeats)
                    except Exception as e:  # noqa: BLE001
                        failures[run.grpc_label] = f"gRPC: {e}"
        except Exception as e:  # noqa: BLE001 - could not be set up or started
            failures[run.label] = str(e)
            if run.grpc_label:
                failures[run.grpc_label] = str(e)
        for label in (run.label, run.grpc_label):
            if label in failures:
                print(f"  NOT RUN: {label}: {failures[label]}", flush=True)
    ceiling = in_process_ceiling(mlp)
    write_report(Path(args.out), http, grpc, failures, ceiling, args, selected, describe_machine())
    print(f"server logs: {LOGS}")


def describe_machine():
    """What the report's machine section says: hardware, OS, tools, and the peers' package versions."""

    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - a missing tool is simply not described
            return None

    def versions(python, packages):
        code = ("import importlib.metadata as m, json, sys\n"
                "v = {}\nfor p in sys.argv[1:]:\n    try: v[p] = m.version(p)\n    except Exception: pass\n"
                "print(json.dumps(v))")
        out = first_line([str(python), "-c", code, *packages])
        return ", ".join(f"{k} {v}" for k, v in json.loads(out).items()) if out and out.startswith("{") else None

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    cpu = m.group(1).strip() if (m := re.search(r"model name\s*:\s*(.+)", cpuinfo)) else platform.processor()
    mem = f"{int(m.group(1)) / 1024 ** 2:.1f} GiB RAM" if (m := re.search(r"MemTotal:\s+(\d+)", meminfo)) else ""
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    distro = m.group(1) if (m := re.search(r'PRETTY_NAME="?([^"\n]+)', os_release)) else platform.system()
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    lines = [
        f"{platform.machine()}, {cpu}, {os.cpu_count()} cores, {mem}; {distro}, Linux {platform.release()}; "
        f"Python {platform.python_version()}.",
        f"ferry at commit {commit}{' with uncommitted changes' if dirty else ''}." if commit else None,
        f"Load generators: {first_line(['wrk', '-v'])}; {first_line(['h2load', '--version'])}.",
        f"This Python (ceiling, gRPC frames and checks): "
        f"{versions(sys.executable, ['onnxruntime', 'numpy', 'tritonclient', 'grpcio', 'protobuf'])}.",
    ]
    for name, packages in (("peers", ["mlserver", "fastapi", "uvicorn", "uvloop", "onnxruntime", "numpy"]),
                           ("pytriton", ["nvidia-pytriton", "onnxruntime", "numpy"])):
        python = VENVS / PEER_VENVS[name][0] / "bin/python"
        if python.exists() and (v := versions(python, packages)):
            lines.append(f"`{PEER_VENVS[name][0]}` ({PEER_VENVS[name][1]}): {v}.")
    return [line for line in lines if line]


def write_report(path, http, grpc, failures, ceiling, args, selected, machine):
    def at(results, label, conc=32):
        return next((r for r in results.get(label, []) if r["conc"] == conc), None)

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    def div(a, b, key="rps"):
        return a[key] / b[key] if a and b and b[key] else None

    per_cell = (f"each cell is the median of {args.repeats} runs of {args.seconds} seconds"
                if args.repeats > 1 else f"each cell is one {args.seconds}-second run")
    lines = [
        "# Benchmarks",
        "",
        "Reproduce: `python3 bench/run.py` (see its docstring). All figures below come from one run of that script:",
        f"{per_cell} (HTTP: `wrk -t1 -cN --latency`; gRPC: `h2load -t1 -cN -m1`), after a 2-second warm-up per",
        "server and protocol; the concurrencies are run in rounds. \"range\" is the lowest and highest req/s of the",
        "runs; latencies, CPU and errors are those of the median run, RSS the highest seen.",
        "The load generator shares the machine's cores with the server, as the targets assume. Model: the MLP fixture",
        "(scaler + 30→64→3 MLP, scikit-learn via skl2onnx) as model `mlp`, 1 row per request; the tiny model is one",
        "Add node. The machine is described at the end.",
    ]
    if args.only:
        lines += ["", f"This run was limited with `--only {' --only '.join(args.only)}`: the other servers were not "
                      "measured, and ratios that need them show —."]
    lines += ["", "## Ratios at concurrency 32 (HTTP JSON unless noted)", "",
              "| comparison | ratio | target |", "|---|---|---|"]
    echo32 = at(http, "axum echo (no model)")
    best = at(http, "ferry JSON, batching on")

    def target_row(name, value, target):
        lines.append(f"| {name} | {value if value not in (None, '—') else 'not measured'} | {target} |")

    for label, target in (("ferry JSON, batching on", "≥ 0.75"), ("ferry JSON, batching off", "≥ 0.50"),
                          ("ferry tiny model, batching off", "≥ 0.80")):
        target_row(f"{label} ÷ axum echo", fmt(div(at(http, label), echo32), ".2f"), target)
    fastapi = [r for r in (at(http, "FastAPI async def, 2 workers"), at(http, "FastAPI def, 2 workers")) if r]
    fa_best = max(fastapi, key=lambda r: r["rps"]) if fastapi else None
    target_row("ferry JSON, batching on ÷ best FastAPI", fmt(div(best, fa_best), ".1f"), "≥ 5")
    fa_async = at(http, "FastAPI async def, 2 workers")
    target_row("ferry CPU per request ÷ FastAPI async's", fmt(div(best, fa_async, "cpu_ms_per_1000"), ".3f"),
               "≤ 0.167")
    target_row("ferry p99 − echo p99", f"{best['p99'] - echo32['p99']:+.2f} ms" if best and echo32 else None,
               "≤ +1 ms")
    rss = max(r["rss_mb"] for r in http["ferry JSON, batching on"]) if "ferry JSON, batching on" in http else None
    target_row("ferry RSS with the MLP loaded", f"{rss:.1f} MB" if rss is not None else None, "≤ 50 MB")
    # Every peer runs the model from Python (FastAPI, MLServer's runtime, PyTriton's callable).
    peers = [(r.label, at(http, r.label)) for r in selected if r.ferry and at(http, r.label)]
    if peers:
        name, top = max(peers, key=lambda p: p[1]["rps"])
        target_row(f"ferry JSON, batching on ÷ best Python peer ({name}, {top['rps']:.0f} req/s)",
                   fmt(div(best, top), ".1f"), "—")
        target_row("ferry CPU per request ÷ that peer's", fmt(div(best, top, "cpu_ms_per_1000"), ".3f"), "—")
    else:
        target_row("ferry JSON, batching on ÷ best Python peer", None, "—")

    lines += ["", "## ferry ÷ each peer (same run)", "",
              "Each peer against ferry in the same batching mode (FastAPI, which can't batch, against ferry's default,",
              "batching on); gRPC rows compare the gRPC ports. req/s: above 1, ferry serves more; CPU per request:",
              "below 1, ferry spends less server CPU on each request.", "",
              "| peer | protocol | ferry row | ferry req/s ÷ peer's, c=1 | c=8 | c=32 | c=64 | "
              "ferry CPU per request ÷ peer's (c=32) | p99 ms, ferry / peer (c=32) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for run in selected:
        if not run.ferry:
            continue
        rows = [("HTTP JSON", http, run.label, run.ferry)]
        if run.grpc_label:
            rows.append(("gRPC", grpc, run.grpc_label, FERRY_GRPC[run.ferry]))
        for protocol, results, label, ferry_label in rows:
            if label in failures:
                lines.append(f"| {label} | {protocol} | {ferry_label} | could not run (below) | | | | | |")
                continue
            if label not in results:
                continue
            ratios = " | ".join(fmt(div(at(results, ferry_label, c), at(results, label, c)), ".2f")
                                for c in CONCURRENCY)
            f32, p32 = at(results, ferry_label), at(results, label)
            cpu = fmt(div(f32, p32, "cpu_ms_per_1000"), ".3f")
            p99 = f"{fmt(f32 and f32['p99'], '.2f')} / {p32['p99']:.2f}"
            lines.append(f"| {label} | {protocol} | {ferry_label} | {ratios} | {cpu} | {p99} |")

    if failures:
        lines += ["", "## Not run", "", "| server | why |", "|---|---|"]
        for label, why in failures.items():
            lines.append(f"| {label} | {why.replace('|', '/')} |")

    def table(results):
        out = ["| server | conc | req/s | req/s range | p50 ms | p90 ms | p99 ms | CPU ms / 1000 req | RSS MB "
               "| errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for label, rows in results.items():
            for r in rows:
                out.append(f"| {label} | {r['conc']} | {r['rps']:.0f} | {r['rps_min']:.0f}–{r['rps_max']:.0f} | "
                           f"{r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['cpu_ms_per_1000']:.1f} | "
                           f"{r['rss_mb']:.1f} | {r['errors']} |")
        return out

    lines += ["", "## Absolute figures (HTTP)", ""] + table(http)
    lines += ["", "## gRPC (KServe v2 `ModelInfer`)", "",
              "The same row as the JSON request, as `inference.ModelInferRequest` with typed `fp32_contents`, built",
              "once into a gRPC frame and posted by h2load on N HTTP/2 connections, one stream each. h2load counts",
              "every HTTP 200 as a success, but gRPC errors arrive as trailers under HTTP 200; so before the load each",
              "server answered the same bytes once through grpcio, checked against the fixture's expected outputs,",
              "and after every run the message bytes h2load received were checked against requests × the answer's",
              "size (an error answer carries no message). h2load prints only min/max/mean/sd of request time; the",
              "percentiles here are computed from its per-request log (`--log-file`), nearest rank.", ""]
    if grpc:
        lines += ["| server | gRPC req/s ÷ its HTTP JSON req/s, c=1 | c=8 | c=32 | c=64 |", "|---|---|---|---|---|"]
        for run in selected:
            if run.grpc_label in grpc and run.label in http:
                lines.append(f"| {run.grpc_label} | " + " | ".join(
                    fmt(div(at(grpc, run.grpc_label, c), at(http, run.label, c)), ".2f") for c in CONCURRENCY) + " |")
        lines += [""] + table(grpc)
    else:
        lines.append("No gRPC cell ran (see Not run).")
    lines += ["", "## In-process ceiling (onnxruntime `session.run`, one thread, same model)", "",
              "| batch | rows/s |", "|---|---|"]
    for batch, rate in ceiling.items():
        lines.append(f"| {batch} | {rate:.0f} |")
    lines += ["", "## Machine and peers", ""] + [f"- {m}" for m in machine] + [
        "- Peers: FastAPI + uvicorn with 2 worker processes (`bench/peers/fastapi_server.py`); MLServer with the",
        "  onnxruntime runtime in `bench/peers/mlserver_onnx` (default settings: 1 inference worker; batching on =",
        "  `max_batch_size` 64, `max_batch_time` 1 ms); Triton 2.51 bundled with PyTriton, the model a Python",
        "  callable running onnxruntime behind Triton's Python backend (`bench/peers/pytriton_server.py`; batching",
        "  on = dynamic batcher, max batch 64, no queue delay). Every peer runs onnxruntime with one intra-op",
        "  thread. See bench/peers.md.",
    ]
    # The hand-written analysis below "## Notes" survives a re-run.
    notes = ""
    if path.exists() and "\n## Notes" in path.read_text():
        notes = "\n## Notes" + path.read_text().split("\n## Notes", 1)[1]
    path.write_text("\n".join(lines) + "\n" + notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
