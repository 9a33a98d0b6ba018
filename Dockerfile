# For Docker users only; development and CI run natively (see scripts/services.sh).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 lamassu \
    && mkdir -p /data/gopem && chown lamassu /data/gopem
USER lamassu
CMD ["python", "-m", "ca_worker"]
