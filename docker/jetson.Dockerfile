# facemask-sdk on a Jetson (JetPack 6.1+, L4T r36.x): TensorRT 10.3, CUDA 12.6 and Python 3.10 come
# with the base image; pycuda is built here against its CUDA. No engine is shipped: the entry point
# builds one on the device at first start (docker/engine-entrypoint.sh), or run it yourself:
#   docker run --rm --runtime nvidia -v facemask-engines:/engines --entrypoint facemask-sdk IMAGE \
#       build-engine --onnx <shipped facemask.fp16.onnx> --fp16 --out /engines/facemask.fp16.engine
#
#   docker build -f docker/jetson.Dockerfile -t facemask-sdk:jetson .      (on the Jetson, arm64)
#   docker run --rm --runtime nvidia -v facemask-engines:/engines -v "$PWD/samples/images:/data:ro" \
#       facemask-sdk:jetson /data --out /engines/run
ARG BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0

FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# pycuda's setup looks for nvcc on PATH, which a stock JetPack shell does not have
ENV PATH=/opt/facemask/bin:/usr/local/cuda/bin:$PATH \
    CUDA_ROOT=/usr/local/cuda \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facemask_sdk facemask_sdk
COPY facemask_tools facemask_tools
COPY models/facemask.onnx models/facemask.fp16.onnx models/facemask.int8.onnx models/MODEL_CARD.md models/
COPY docker/constraints-gpu.txt docker/engine-entrypoint.sh /opt/
# --system-site-packages: TensorRT's Python bindings are the system's (python3-libnvinfer)
RUN python3 -m venv --system-site-packages /opt/facemask \
    && pip install --no-cache-dir -c /opt/constraints-gpu.txt setuptools wheel \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation -w /tmp/wheels . \
    && pip install --no-cache-dir -c /opt/constraints-gpu.txt "$(echo /tmp/wheels/facemask_sdk-*.whl)[trt]" \
    && python3 -c "import tensorrt, pycuda; print('TensorRT', tensorrt.__version__)" \
    && rm -rf /tmp/wheels /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin --groups video facemask \
    && mkdir -p /engines && chown facemask /engines
USER 10001
WORKDIR /home/facemask
VOLUME ["/engines"]
ENTRYPOINT ["/opt/engine-entrypoint.sh"]
CMD ["--help"]
