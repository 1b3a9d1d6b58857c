"""The framework floor of the serving benchmark: a ``kserve.Model`` that answers with its input, on
``kserve.ModelServer`` (REST V1/V2 and gRPC), configured like ``kfloop serve`` (latency logging off).

What it costs is KServe's own request path (routing, decoding, encoding): the part of our latency no
model code can remove. ``python -m benchmarks.serving_echo --http_port P --grpc_port Q`` (KServe's own
argument parser reads the ports).
"""

from __future__ import annotations

from typing import Any

#: The echo model's name on the server.
NAME = "echo"


def echo_model() -> Any:
    """The model, built on first use (importing kserve parses ``sys.argv``: only the server process may)."""
    from kserve import Model
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class Echo(Model):
        def __init__(self) -> None:
            super().__init__(NAME)
            self.ready = True

        def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
            if isinstance(payload, InferRequest):
                outputs = [InferOutput(i.name, i.shape, i.datatype, i.data) for i in payload.inputs]
                return InferResponse(payload.id or "", NAME, outputs, from_grpc=payload.from_grpc)
            return {"predictions": payload["instances"]}

    return Echo()


def main() -> None:
    from kserve import ModelServer

    ModelServer(enable_latency_logging=False).start([echo_model()])


if __name__ == "__main__":
    main()
