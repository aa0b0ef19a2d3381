# facemask-sdk on an x86 NVIDIA GPU, from NVIDIA's TensorRT image (25.01-py3: TensorRT 10.8.0.43,
# CUDA 12.8, Ubuntu 24.04, Python 3.12); pycuda is built here against its CUDA. No engine is shipped:
# the entry point builds one on the GPU at first start (docker/engine-entrypoint.sh).
#
#   docker build -f docker/x86-gpu.Dockerfile -t facemask-sdk:gpu .
#   docker run --rm --gpus all -v facemask-engines:/engines -v "$PWD/samples/images:/data:ro" \
#       facemask-sdk:gpu /data --out /engines/run
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:25.01-py3

FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PATH=/opt/facemask/bin:/usr/local/cuda/bin:$PATH \
    CUDA_ROOT=/usr/local/cuda \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY facemask_sdk facemask_sdk
COPY facemask_tools facemask_tools
COPY models/facemask.onnx models/facemask.fp16.onnx models/facemask.int8.onnx models/MODEL_CARD.md models/
COPY docker/constraints-gpu.txt docker/engine-entrypoint.sh /opt/
# --system-site-packages: the image's TensorRT Python package stays visible to the venv
RUN python3 -m venv --system-site-packages /opt/facemask \
    && pip install --no-cache-dir -c /opt/constraints-gpu.txt setuptools wheel \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation -w /tmp/wheels . \
    && pip install --no-cache-dir -c /opt/constraints-gpu.txt "$(echo /tmp/wheels/facemask_sdk-*.whl)[trt]" \
    && python3 -c "import tensorrt, pycuda; print('TensorRT', tensorrt.__version__)" \
    && rm -rf /tmp/wheels /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin facemask \
    && mkdir -p /engines && chown facemask /engines
USER 10001
WORKDIR /home/facemask
VOLUME ["/engines"]
ENTRYPOINT ["/opt/engine-entrypoint.sh"]
CMD ["--help"]
