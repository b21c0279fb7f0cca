"""Running a model: inputs validated and encoded, ONNX conversion, runtimes, batching, metrics."""
