"""A minimal MLServer inference runtime for ONNX models (MLServer ships none): onnxruntime on the CPU with one
intra-op thread, answering the Open Inference Protocol like ferry does.

Used by nobatch/mlp/model-settings.json and batch/mlp/model-settings.json as "implementation": "runtime.OnnxRuntimeModel";
start with this folder on PYTHONPATH (see bench/peers.md). The model file is $MODEL when set, otherwise the
"parameters.uri" of model-settings.json (relative to that file).
"""

import os

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_datatype
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        path = os.environ.get("MODEL") or await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # With adaptive batching on, MLServer has already stacked the queued requests along the first axis and
        # splits the outputs back along it.
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            # The model's own output shapes (label [N], probabilities [N, 3]), as ferry answers; MLServer's
            # NumpyCodec.encode_output would pad the 1-D label to [N, 1].
            outputs=[
                ResponseOutput(name=name, shape=list(value.shape), datatype=to_datatype(value.dtype),
                               data=value.ravel().tolist())
                for name, value in zip(self._outputs, results)
            ],
        )
