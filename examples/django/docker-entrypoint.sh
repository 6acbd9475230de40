#!/bin/sh
# Prepare the demo database and superuser, then serve on 0.0.0.0:8000.
set -eu
cd /app/demo
/usr/bin/python3 manage.py migrate --noinput -v 0
/usr/bin/python3 manage.py demo_superuser
exec /usr/bin/python3 manage.py serve "${DEMO_LISTEN:-0.0.0.0:8000}"
