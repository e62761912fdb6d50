FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY normalizer_svc normalizer_svc
COPY registry_svc registry_svc
COPY dispatcher_svc dispatcher_svc
COPY provider_agent provider_agent
COPY contract contract
COPY svckit svckit
COPY stack stack
COPY bench bench
RUN pip install --no-cache-dir .
