"""Drives a running ferry server with NVIDIA's tritonclient, over HTTP (JSON and binary tensors) or gRPC (raw
tensors), and compares every output with the onnxruntime reference outputs in fixtures/. Also checks metadata,
statistics, the model repository extension and error reporting. Exits non-zero on the first mismatch.

Usage: python3 tritonclient_interop.py http|grpc HOST:PORT FIXTURES_DIR MODEL [MODEL ...]
"""

import json
import os
import ssl
import time
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from tritonclient._plugin import InferenceServerClientPlugin


def make_client(lib, url, with_client_cert=True):
    """A client for `url`; over TLS when FERRY_TLS_CA is set (with FERRY_TLS_CERT/KEY as the client certificate)."""
    ca = os.environ.get("FERRY_TLS_CA")
    if not ca:
        return lib.InferenceServerClient(url=url)
    cert = os.environ.get("FERRY_TLS_CERT") if with_client_cert else None
    key = os.environ.get("FERRY_TLS_KEY") if with_client_cert else None
    if lib is grpcclient:
        return lib.InferenceServerClient(url=url, ssl=True, root_certificates=ca, private_key=key,
                                         certificate_chain=cert)

    def context():
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    return lib.InferenceServerClient(url=url, ssl=True, ssl_context_factory=context)


def wait_ready(client):
    """A TLS test server cannot be polled with plain HTTP by the harness; wait here (bounded: 60 s)."""
    for _ in range(600):
        try:
            if client.is_server_ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready within 60 s")


class BearerKey(InferenceServerClientPlugin):
    """Sends ferry's API key on every call (HTTP header or gRPC metadata)."""

    def __init__(self, key):
        self._value = "Bearer " + key

    def __call__(self, request):
        request.headers["authorization"] = self._value

NP = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_, "BF16": ml_dtypes.bfloat16,
}


def as_array(t):
    if t["datatype"] == "BYTES":
        return np.array([s.encode() for s in t["data"]], dtype=np.object_).reshape(t["shape"])
    return np.array(t["data"], dtype=NP[t["datatype"]]).reshape(t["shape"])


def check(model, case, binary, client, lib):
    # Over HTTP, tritonclient carries BF16 only as binary data: in JSON mode those tensors travel binary in the same
    # request, which exercises mixed JSON and binary bodies. Over gRPC every tensor is raw.
    http = lib is httpclient
    inputs = []
    for t in case["inputs"]:
        i = lib.InferInput(t["name"], t["shape"], t["datatype"])
        if http:
            i.set_data_from_numpy(as_array(t), binary_data=binary or t["datatype"] == "BF16")
        else:
            i.set_data_from_numpy(as_array(t))
        inputs.append(i)
    wanted = case["outputs"]
    if http:
        outputs = [lib.InferRequestedOutput(t["name"], binary_data=binary or t["datatype"] == "BF16") for t in wanted]
    else:
        outputs = [lib.InferRequestedOutput(t["name"]) for t in wanted]
    result = client.infer(model, inputs, outputs=outputs, request_id="interop-1")
    response = result.get_response() if http else result.get_response(as_json=True)
    assert response["model_name"] == model, response
    assert response["model_version"] == "1", response
    assert response.get("id") == "interop-1", response
    for t in wanted:
        got = result.as_numpy(t["name"])
        want = as_array(t)
        assert got is not None, f"{model}: no output {t['name']}"
        assert list(got.shape) == list(want.shape), f"{model} {t['name']}: shape {got.shape} != {want.shape}"
        if t["datatype"] in ("FP16", "FP32", "FP64", "BF16"):
            ok = np.allclose(got.astype(np.float64), want.astype(np.float64), atol=1e-4, rtol=1e-4, equal_nan=True)
        elif t["datatype"] == "BYTES":
            # JSON answers decode to str, binary ones stay bytes (as with Triton itself).
            norm = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])
            ok = np.array_equal(norm(got), want)
        else:
            ok = np.array_equal(got, want)
        assert ok, f"{model} {t['name']} (binary={binary}): {got!r} != {want!r}"


def main():
    protocol, url, fixtures, models = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    lib = httpclient if protocol == "http" else grpcclient
    client = make_client(lib, url)
    if os.environ.get("FERRY_TLS_CA"):
        wait_ready(client)
        if os.environ.get("FERRY_TLS_CERT"):
            # Mutual TLS: without a client certificate the handshake itself is refused.
            try:
                make_client(lib, url, with_client_cert=False).is_server_live()
                raise AssertionError("a client without a certificate got through mutual TLS")
            except InferenceServerException:
                pass
            except Exception as e:  # noqa: BLE001 - the HTTP client raises the ssl error itself
                assert "SSL" in type(e).__name__ or "ssl" in str(e).lower() or "certificate" in str(e).lower(), repr(e)
    key = os.environ.get("FERRY_API_KEY")
    if key:
        # Without the key, management calls are refused with the protocol's "unauthenticated" error.
        try:
            client.get_model_repository_index()
            raise AssertionError("the repository index answered without an API key")
        except InferenceServerException as e:
            assert "API key" in str(e), str(e)
            if lib is grpcclient:
                assert e.status() == "StatusCode.UNAUTHENTICATED", e.status()
        client.register_plugin(BearerKey(key))
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    if lib is grpcclient:
        meta = {"name": meta.name, "extensions": list(meta.extensions)}
    assert meta["name"] == "ferry" and "binary_tensor_data" in meta["extensions"], meta
    manifest = {f["name"]: f for f in json.loads((fixtures / "manifest.json").read_text())["fixtures"]}
    checked = 0
    for model in models:
        assert client.is_model_ready(model), model
        md = client.get_model_metadata(model)
        names = [i["name"] for i in md["inputs"]] if lib is httpclient else [i.name for i in md.inputs]
        cases = json.loads((fixtures / manifest[model]["cases"]).read_text())
        assert names == [t["name"] for t in cases[0]["inputs"]], md
        for case in cases:
            for binary in ((False, True) if lib is httpclient else (True,)):
                check(model, case, binary, client, lib)
                checked += 1

    # Statistics: every request above was counted.
    stats = client.get_inference_statistics(models[0])
    if lib is grpcclient:
        stats = {"model_stats": [{"inference_stats": {"success": {"count": s.inference_stats.success.count}},
                                  "execution_count": s.execution_count} for s in stats.model_stats]}
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 2, stats
    assert stats["model_stats"][0]["execution_count"] >= 1, stats

    # A client mistake comes back as an exception carrying the server's message, and the server stays healthy.
    bad = lib.InferInput("nope", [1], "FP32")
    bad.set_data_from_numpy(np.zeros([1], dtype=np.float32))
    try:
        client.infer(models[0], [bad])
        raise AssertionError("an unknown input was accepted")
    except InferenceServerException as e:
        assert "has no input" in str(e), str(e)
        if lib is grpcclient:
            assert e.status() == "StatusCode.INVALID_ARGUMENT", e.status()
    assert client.is_server_ready()

    # Model repository extension: unload, see it unavailable, load it back.
    last = models[-1]
    client.unload_model(last)
    assert not client.is_model_ready(last)
    index = client.get_model_repository_index()
    if lib is grpcclient:
        index = [{"name": m.name, "state": m.state} for m in index.models]
    assert {"name": last, "state": "UNAVAILABLE"} in [{"name": m["name"], "state": m["state"]} for m in index], index
    client.load_model(last)
    assert client.is_model_ready(last)
    print(f"tritonclient {protocol} interop: {checked} checks passed on {', '.join(models)}")


if __name__ == "__main__":
    main()
