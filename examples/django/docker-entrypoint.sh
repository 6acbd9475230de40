#!/bin/sh
# Prepare the demo database and superuser, then serve on 0.0.0.0:8000.
set -eu
cd /app/demo
python3 manage.py migrate --noinput -v 0
python3 manage.py demo_superuser
exec python3 manage.py serve "${DEMO_LISTEN:-0.0.0.0:8000}"
