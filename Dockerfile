# The service on the embedded defaults (state under /var/lib/sitetune, a volume).
# CPU image: pass the PyTorch CPU wheel index as a build argument, e.g.
#   docker build --build-arg TORCH_INDEX=<PyTorch CPU wheel index URL> -t sitetune .
# GPU image: build FROM an NVIDIA CUDA runtime image, with TORCH_INDEX pointing at the
# matching CUDA wheel index, and add EXTRAS=gpu (onnxruntime-gpu, TensorRT).
# The console's assets, bundled by npm at build time (no CDN at run time).
FROM node:20-slim AS console
WORKDIR /console
COPY sitetune/console/package.json sitetune/console/package-lock.json sitetune/console/build.mjs ./
COPY sitetune/console/src ./src
RUN npm ci --no-audit --no-fund && npm run build

FROM python:3.11-slim
ARG TORCH_INDEX=""
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 SITETUNE_DATA_DIR=/var/lib/sitetune SITETUNE_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY sitetune ./sitetune
COPY --from=console /console/dist ./sitetune/console/dist
# torch pinned from the given index; everything else at its locked version and hash
RUN pip install torch==2.13.0 ${TORCH_INDEX:+--index-url $TORCH_INDEX} \
    && pip install --require-hashes --no-deps -r requirements.lock \
    && pip install --no-deps ".${EXTRAS:+[$EXTRAS]}"
# the service runs as an unprivileged user owning only its state volume
RUN useradd --system --uid 10001 --home-dir /var/lib/sitetune sitetune \
    && mkdir -p /var/lib/sitetune && chown sitetune:sitetune /var/lib/sitetune \
    && chmod 0700 /var/lib/sitetune
USER sitetune
EXPOSE 3000
VOLUME ["/var/lib/sitetune"]
CMD ["sitetune-serve"]
