# One image for every service and the CLI; compose.yaml picks the process per service.
# For Docker users only: development and CI run natively (see scripts/services.sh).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GOPEM_DATA=/var/lib/lamassu/keys \
    EST_TLS_DIR=/var/lib/lamassu/est-tls

WORKDIR /app
# Dependencies first, at the locked versions (scripts/lock.sh), so that a code change
# does not reinstall them. Only the packages are copied: no tests, no benchmarks
# (.dockerignore keeps them out of the build context too).
COPY requirements.lock pyproject.toml ./
COPY contracts contracts
COPY runtime runtime
COPY engines engines
COPY ca_worker ca_worker
COPY dms_worker dms_worker
COPY device_worker device_worker
COPY est_gateway est_gateway
COPY va_worker va_worker
COPY alerts_worker alerts_worker
COPY cloud_proxy cloud_proxy
COPY lamassu_cli lamassu_cli
RUN pip install --no-cache-dir -c requirements.lock . \
    && rm -rf /app/build \
    && useradd --system --uid 10001 --home-dir /var/lib/lamassu --shell /usr/sbin/nologin lamassu \
    && install -d -o lamassu -g lamassu -m 0700 \
        /var/lib/lamassu /var/lib/lamassu/keys /var/lib/lamassu/est-tls \
        /var/lib/lamassu/va-keys

# Not root; the CA keys (gopem), the gateway's TLS files and the VA's responder keys
# are the only state, each on its own volume, writable by this user only (0700
# directories, 0600 keys).
USER 10001
WORKDIR /var/lib/lamassu
VOLUME ["/var/lib/lamassu/keys", "/var/lib/lamassu/est-tls", "/var/lib/lamassu/va-keys"]
CMD ["lamassu", "--help"]
