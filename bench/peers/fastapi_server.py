"""The endpoint a user would hand-write: FastAPI + uvicorn + onnxruntime, answering the same Open Inference
Protocol JSON as ferry. HANDLER=async (an `async def` handler) or HANDLER=def (a plain `def`, run in a thread pool).

Run: MODEL=path/to/model.onnx HANDLER=async uvicorn fastapi_server:app --workers 2 --port 9100
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import Body, FastAPI, Request

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
OUTPUTS = [o.name for o in session.get_outputs()]
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
app = FastAPI()


def run(name, body):
    feeds = {
        i["name"]: np.asarray(i["data"], dtype=DTYPES[i["datatype"]]).reshape(i["shape"]) for i in body["inputs"]
    }
    results = session.run(OUTPUTS, feeds)
    return {
        "model_name": name,
        "model_version": "1",
        "outputs": [
            {"name": n, "datatype": "INT64" if r.dtype == np.int64 else "FP32", "shape": list(r.shape),
             "data": r.ravel().tolist()}
            for n, r in zip(OUTPUTS, results)
        ],
    }


if os.environ.get("HANDLER", "async") == "async":
    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        return run(name, await request.json())
else:
    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: dict = Body(...)):
        return run(name, body)
