# One image for every service; the compose file picks the command (python -m ingress|router|executor|notifier).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingress ./ingress
COPY router ./router
COPY executor ./executor
COPY notifier ./notifier
COPY analytics ./analytics
COPY orderflow ./orderflow
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --no-create-home app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY infra ./infra
USER app
CMD ["python", "-m", "ingress"]
