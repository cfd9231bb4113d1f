"""NVIDIA Triton Inference Server as a peer, through PyTriton (PyPI `nvidia-pytriton`, which bundles tritonserver):
a Python callable running onnxruntime (one intra-op thread) behind Triton's HTTP front end and dynamic batcher, model
name "mlp", answering the same Open Inference Protocol JSON as ferry. See bench/peers.md for the venv and ports.

Run: python pytriton_server.py --port 9100 [--grpc-port P] [--metrics-port P] [--max-batch-size 64]
         [--max-queue-delay-us 0] [--no-batching] path/to/model.onnx
Ready when GET http://127.0.0.1:PORT/v2/models/mlp/ready answers 200. SIGTERM or SIGINT stops it.
"""

import argparse
import logging
import os
import signal
import sysconfig

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: HTTP port + 1)")
    parser.add_argument("--metrics-port", type=int, default=0, help="metrics port (0: HTTP port + 2)")
    parser.add_argument("--name", default="mlp")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--no-batching", action="store_true", help="no dynamic batcher (each request alone)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    # Triton's Python backend stub links libpython3.X.so.1.0 dynamically and would find the system's copy first;
    # when this interpreter has its own (pyenv, a different patch release), a stdlib/libpython mismatch breaks the
    # stub (AttributeError: '_thread.RLock' object has no attribute '_recursion_count'). Put this interpreter's
    # libpython first on LD_LIBRARY_PATH; tritonserver and the stub inherit it.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.exists(os.path.join(libdir, sysconfig.get_config_var("INSTSONAME") or "")):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    in_meta, out_meta = session.get_inputs(), session.get_outputs()
    out_names = [o.name for o in out_meta]

    @batch
    def infer(**inputs):
        # Triton hands over the (dynamically batched) inputs stacked along the first axis.
        feeds = {i.name: inputs[i.name].astype(ORT_TO_NUMPY[i.type], copy=False) for i in in_meta}
        out = {}
        for meta, r in zip(out_meta, session.run(out_names, feeds)):
            # onnxruntime's int64 arrays can carry numpy's `longlong` type, which numpy 1.x (PyTriton needs < 2)
            # does not count as `int64`; a view with the declared type fixes that without a copy.
            r = r.view(ORT_TO_NUMPY[meta.type])
            out[meta.name] = r.reshape(-1, 1) if r.ndim == 1 else r
        return out

    def tensor(meta):
        # Shapes exclude the batch axis. Triton wants at least one dim per row, so a 1-D output such as the label
        # ([N]) is served as [N, 1] (ferry answers [N]).
        return Tensor(name=meta.name, dtype=ORT_TO_NUMPY[meta.type], shape=tuple(meta.shape[1:]) or (1,))

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port or args.port + 1,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port or args.port + 2,
        log_verbose=1 if args.verbose else 0,
    )
    batcher = None if args.no_batching else DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
    # PyTriton stops tritonserver and deletes its workspace (~/.cache/pytriton/workspace_*, 22 MB) on SIGINT only;
    # treat SIGTERM (what bench/run.py sends) the same way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[tensor(m) for m in in_meta],
            outputs=[tensor(m) for m in out_meta],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher, batching=True),
        )
        triton.serve()


if __name__ == "__main__":
    main()
