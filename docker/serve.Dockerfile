# facemask-sdk serve on any CPU: the CPU image plus the [serve] extra (PyTriton, numpy < 2), serving
# Triton's HTTP (8000) and gRPC (8001) protocol; run one per machine behind a load balancer.
#
#   docker/build-cpu-image.sh                                   (makes localhost/facemask-sdk:cpu)
#   podman build -f docker/serve.Dockerfile -t facemask-sdk:serve .
#   podman run --rm -p 8000:8000 -p 8001:8001 facemask-sdk:serve       (--help: the options)
#
# BASE_IMAGE: the CPU image built from docker/cpu.Dockerfile. The model is the shipped one; mount
# another and pass --model PATH (one exported with --dynamic-batch runs each batch in one call).
ARG BASE_IMAGE=localhost/facemask-sdk:cpu

FROM ${BASE_IMAGE}
USER 0
# Triton's Python stub links libpython3.11.so.1.0: python:3.11-slim has it; Debian's python3 needs the
# libpython3.11 package (the base that docker/build-cpu-image.sh makes with debootstrap)
RUN python3 -c 'import ctypes.util, sys; sys.exit(ctypes.util.find_library("python3.11") is None)' \
    || (apt-get update && apt-get install -y --no-install-recommends libpython3.11 && rm -rf /var/lib/apt/lists/*)
COPY docker/constraints-serve.txt /tmp/
# the installed facemask-sdk's own [serve] extra, pinned: one list of requirements (pyproject.toml)
RUN pip install --no-cache-dir -c /tmp/constraints-serve.txt "facemask-sdk[serve]" \
    && rm /tmp/constraints-serve.txt
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/models/facemask/ready', timeout=4)"]
ENTRYPOINT ["facemask-sdk", "serve", "--host", "0.0.0.0"]
CMD []
