# syntax=docker/dockerfile:1
# One image for every role, chosen by its command (compose.yaml):
#   web      django-admin serve --host 0.0.0.0 --port 8000 --no-worker   (the default)
#   worker   django-admin qcluster
#   migrate  django-admin migrate --noinput
# Installed as scripts/run installs it: the project from pyproject.toml, no extra
# (tests/deploy/test_image.py holds the two to the same target).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlplatform ./mlplatform
COPY predictions ./predictions
COPY accounts ./accounts
# Wheels of the project and of every dependency, so the final stage needs no index.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=mlplatform.settings \
    MLPLATFORM_VAR_DIR=/var/lib/mlplatform \
    STATIC_ROOT=/opt/mlplatform/static
# media/ exists in the image, owned by the user, so that a volume mounted there is writable.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mlplatform --create-home \
    mlplatform \
    && install -d -o mlplatform -g mlplatform /var/lib/mlplatform/media
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/mlplatform-*.whl
# Static files collected at build time: whitenoise serves them, compressed, from the manifest.
# The throw-away keys and var dir only let the settings load; nothing of them stays.
RUN SECRET_KEY=build-only JWT_SIGNING_KEY=build-only-jwt MLPLATFORM_VAR_DIR=/tmp/build-var \
    django-admin collectstatic --noinput \
    && rm -rf /tmp/build-var
USER 10001
WORKDIR /var/lib/mlplatform
EXPOSE 8000
# Liveness only: readiness (/ready) is the load balancer's health check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["django-admin", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
