FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent_client ./agent_client
COPY cli ./cli
COPY config ./config
COPY listener ./listener
COPY policies ./policies
COPY rublon ./rublon
COPY simulator ./simulator
COPY store ./store
COPY tasks ./tasks
COPY web ./web
COPY flowerconfig.py Procfile ./
RUN pip install . && useradd --create-home mfagate && mkdir -p /var/lib/mfa-gate && chown mfagate /var/lib/mfa-gate
USER mfagate
