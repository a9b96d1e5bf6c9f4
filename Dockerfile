# One image for every SpikeFed process of a deployment: flower-superlink, flower-supernode,
# flower-superexec (which runs the ServerApp and the ClientApps) and the flwr CLI.
#
#   docker build -t spikefed .                                   # CPU torch
#   docker build -t spikefed --build-arg TORCH=cuda .            # CUDA torch (PyPI's build)
#   docker build -t spikefed --build-arg BASE_IMAGE=my/python:3.11 .
ARG BASE_IMAGE=python:3.11-slim

# The project's wheel, built from the whole context: its packages are the ones pyproject.toml
# finds, the one package list (this stage is not part of the image).
FROM ${BASE_IMAGE} AS wheel
COPY . /src
RUN python3 -m venv /tmp/venv && /tmp/venv/bin/pip wheel --quiet --no-deps --wheel-dir /dist /src

FROM ${BASE_IMAGE}

# cpu: a torch wheel from docker/wheels/ when one lies there, else PyTorch's CPU index;
# cuda: PyPI's CUDA build. torch is pinned to what gets installed here, so that installing
# the project afterwards cannot swap it for another build.
ARG TORCH=cpu
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLWR_HOME=/home/app/.flwr FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
RUN python3 -m venv /opt/venv
COPY docker/wheels/ /tmp/wheels/
RUN set -e; case "$TORCH" in \
      cpu) if ls /tmp/wheels/torch-*.whl >/dev/null 2>&1; then pip install /tmp/wheels/torch-*.whl; \
           else pip install --index-url https://download.pytorch.org/whl/cpu "torch<=2.14.1" torchvision; fi ;; \
      cuda) pip install "torch<=2.14.1" torchvision ;; \
      *) echo "TORCH must be 'cpu' or 'cuda', got '$TORCH'" >&2; exit 2 ;; \
    esac; \
    pip list --format=freeze | grep -E '^torch(vision)?==' > /opt/torch-constraints.txt; rm -rf /tmp/wheels

WORKDIR /app
# Dependencies first (a layer that survives source edits), then the project itself.
COPY pyproject.toml README.md ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
    && pip install -c /opt/torch-constraints.txt -r /tmp/requirements.txt \
    && { python3 -c "import torchvision" 2>/dev/null || pip uninstall -y torchvision; }
# PyPI's torchvision is built against PyPI's torch and cannot load beside a CPU wheel from
# docker/wheels; it is removed then (digits, ESVAE and DDA need none, MNIST/CIFAR-10 do).
# The app folder, which `flwr run /app` packs, holds what the wheel ships (no wheels, no data).
COPY --from=wheel /dist/ /tmp/dist/
COPY docker/flwr-config.toml /tmp/flwr-config.toml
RUN pip install --no-deps /tmp/dist/*.whl && python3 -m zipfile -e /tmp/dist/*.whl /app \
    && rm -rf /app/*.dist-info /tmp/dist \
    && groupadd --gid 49999 app && useradd --uid 49999 --gid app --create-home app \
    && mkdir -p /app/results "$FLWR_HOME" && mv /tmp/flwr-config.toml "$FLWR_HOME/config.toml" \
    && chown -R app:app /app/results /home/app
# Unprivileged, like Flower's own images: give uid 49999 read access to mounted certs/.
USER app
