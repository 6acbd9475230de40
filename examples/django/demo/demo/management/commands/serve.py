"""Serve the project with the standard library's WSGI server.

One access-log line per request on stderr, naming the TCP peer and the
client address doorman_django derives from it, so a test can tell which
sources reached Django. Static files (the admin's CSS) are served too.
Threaded; for the demo and the tests, not for production.
"""

import socketserver
import sys
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.management.base import BaseCommand
from django.core.wsgi import get_wsgi_application

from doorman_django import client_ip


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass  # the app below logs with the client address instead

    def log_message(self, format, *args):
        sys.stderr.write("serve: %s\n" % (format % args))


def access_log(app):
    def wrapped(environ, start_response):
        status = []

        def sr(s, headers, exc_info=None):
            status.append(s.split(" ", 1)[0])
            return start_response(s, headers, exc_info)

        result = app(environ, sr)
        client = client_ip(SimpleNamespace(META=environ))
        sys.stderr.write("access peer=%s client=%s method=%s path=%s status=%s\n" % (
            environ.get("REMOTE_ADDR"), client, environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"), status[0] if status else "-"))
        sys.stderr.flush()
        return result

    return wrapped


class Command(BaseCommand):
    help = "Serve the demo with wsgiref (threaded) on ADDR:PORT, default 127.0.0.1:8000."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args, **options):
        host, _, port = options["addrport"].rpartition(":")
        host = host.strip("[]")
        app = access_log(StaticFilesHandler(get_wsgi_application()))
        httpd = make_server(host or "127.0.0.1", int(port), app,
                            server_class=ThreadingWSGIServer, handler_class=QuietHandler)
        sys.stderr.write("serving on http://%s:%s/\n" % (host, httpd.server_port))
        sys.stderr.flush()
        httpd.serve_forever()
