# sam3-serve on Ray's image: the image of every Ray pod in k8s/ (head, workers, autoscaler).
#
#   GPU (default):  docker build -t sam3-serve:0.1.0-gpu .
#   CPU:            docker build -t sam3-serve:0.1.0-cpu \
#                     --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311 \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# RAY_IMAGE must carry the Ray pinned in pyproject.toml (ray[serve]==2.60.0) and Python 3.11;
# tests/k8s/test_dockerfile.py checks the default against pyproject and the manifests.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# Ray's image user `ray` (uid 1000, group users): pip installs into its Python, and the pods
# run as it (k8s/ sets runAsUser 1000, runAsNonRoot).
USER 1000:100

# torch and torchvision pinned as a pair (timm, which sam3 imports, needs them to match),
# inside pyproject.toml's ranges. Without TORCH_INDEX_URL they come from PyPI, whose Linux
# wheels bundle their CUDA runtime (the node's NVIDIA driver must support it); a
# download.pytorch.org index picks another CUDA (whl/cu126) or the CPU-only build (whl/cpu).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=""
RUN if [ -n "${TORCH_INDEX_URL}" ]; then \
        pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    else \
        pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    fi

# The package only (.dockerignore keeps the rest out). pip keeps the torch above, which fits
# pyproject's ranges, and the image's Ray, which is the pinned one; the import proves the
# installed package loads without its source tree, and carries the annotation page.
RUN mkdir /home/ray/sam3-serve
COPY --chown=1000:100 pyproject.toml README.md /home/ray/sam3-serve/
COPY --chown=1000:100 sam3_core /home/ray/sam3-serve/sam3_core
COPY --chown=1000:100 deployments /home/ray/sam3-serve/deployments
RUN pip install --no-cache-dir /home/ray/sam3-serve \
    && rm -rf /home/ray/sam3-serve \
    && python -c "import deployments.app, sam3_core.engine, ray; assert ray.__version__ == '2.60.0', ray.__version__" \
    && python -c "from deployments.page import WEB; assert (WEB / 'index.html').is_file(), WEB"

# KubeRay supplies the command (`ray start ...`); the autoscaler sidecar uses this image too.
WORKDIR /home/ray
