# facemask-sdk on any CPU: the runtime with ONNX Runtime and the shipped model, `facemask-sdk detect`
# as the entry point.
#
#   podman build -f docker/cpu.Dockerfile -t facemask-sdk:cpu .          (or docker build, same flags)
#   podman run --rm -v "$PWD/samples/images:/data:ro" -v "$PWD/out:/out" facemask-sdk:cpu /data --out /out/run
#
# BASE_IMAGE: any Debian/Ubuntu image with python3 and its venv module (default: the official slim
# Python image); docker/build-cpu-image.sh builds one locally where no registry is reachable.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY docker/constraints-cpu.txt docker/
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir -c docker/constraints-cpu.txt setuptools wheel
COPY pyproject.toml README.md ./
COPY facemask_sdk facemask_sdk
COPY facemask_tools facemask_tools
COPY models/facemask.onnx models/facemask.fp16.onnx models/facemask.int8.onnx models/MODEL_CARD.md models/
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels .

FROM ${BASE_IMAGE}
ENV PATH=/opt/facemask/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=wheel /wheels /wheels
COPY docker/constraints-cpu.txt /wheels/
RUN python3 -m venv /opt/facemask \
    && pip install --no-cache-dir -c /wheels/constraints-cpu.txt "$(echo /wheels/facemask_sdk-*.whl)[onnx]" \
    && rm -rf /wheels \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin facemask
USER 10001
WORKDIR /home/facemask
ENTRYPOINT ["facemask-sdk", "detect"]
CMD ["--help"]
