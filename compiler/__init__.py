"""lwc: ahead-of-time compiler for ONNX models to edge CPUs and Jetson GPUs, on Apache TVM."""

__version__ = "0.1.0"
