"""doorman_django against a fake doorman (a stdlib HTTP server in a thread)."""

import datetime
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.test import TestCase, override_settings

from doorman_django import client_ip

LOGIN = "/admin/login/"
PASSWORD = "right-password"


class FakeDoorman:
    """Records every request; answers per mode: "ok", "hang", "error", "garbage".

    In mode "ok": /v1/failures answers banned, /v1/attempts answers attempt,
    /v1/successes carries device and device_expires when device is set; a
    failure with a username is a 400 when reject_username is set.
    """

    def __init__(self, mode="ok", banned=False):
        self.mode = mode
        self.banned = banned
        self.attempt = {"allow": True}
        self.device = None
        self.device_expires = None
        self.reject_username = False
        self.requests = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fake.requests.append(SimpleNamespace(path=self.path, headers=dict(self.headers), body=body))
                if fake.mode == "hang":
                    fake.release.wait(10)
                    return
                if fake.mode == "error" or fake.reject_username and self.path == "/v1/failures" and "username" in body:
                    self.send_response(500 if fake.mode == "error" else 400)
                    self.end_headers()
                    return
                if fake.mode == "garbage":
                    answer = b"<html>not json"
                elif self.path == "/v1/attempts":
                    answer = json.dumps(fake.attempt).encode()
                elif self.path == "/v1/successes":
                    out = {"ip": body["ip"], "key": "x/32", "failures": 0}
                    if fake.device:
                        out.update(device=fake.device, device_expires=fake.device_expires)
                    answer = json.dumps(out).encode()
                else:
                    answer = json.dumps({"ip": "x", "key": "x/32", "failures": 1, "banned": fake.banned}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_port

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, path):
        return [r.body for r in self.requests if r.path == path]

    def paths(self):
        return [r.path for r in self.requests]


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LoginTestCase(TestCase):
    mode = "ok"
    banned = False

    @classmethod
    def setUpTestData(cls):
        get_user_model().objects.create_superuser("admin", "admin@example.com", PASSWORD)

    def setUp(self):
        self.doorman = FakeDoorman(self.mode, self.banned)
        self.addCleanup(self.doorman.close)
        self.settings_override = override_settings(DOORMAN_API_URL=self.doorman.url)
        self.settings_override.enable()
        self.addCleanup(self.settings_override.disable)

    def fail_login(self, **extra):
        extra.setdefault("REMOTE_ADDR", "203.0.113.5")
        return self.client.post(LOGIN, {"username": "admin", "password": "wrong"}, **extra)

    def good_login(self, **extra):
        extra.setdefault("REMOTE_ADDR", "203.0.113.5")
        return self.client.post(LOGIN, {"username": "admin", "password": PASSWORD}, **extra)


class ReportTests(LoginTestCase):
    def test_failure_posts_ip_and_username(self):
        resp = self.fail_login()
        self.assertEqual(resp.status_code, 200)
        self.assertContains(resp, "Please enter the correct username and password")
        self.assertEqual(self.doorman.bodies("/v1/failures"), [{"ip": "203.0.113.5", "username": "admin"}])
        self.assertEqual(self.doorman.bodies("/v1/successes"), [])
        self.assertEqual(self.doorman.requests[0].headers.get("Content-Type"), "application/json")

    def test_success_posts_ip_and_username(self):
        resp = self.good_login()
        self.assertEqual(resp.status_code, 302)
        self.assertEqual(self.doorman.bodies("/v1/successes"), [{"ip": "203.0.113.5", "username": "admin"}])
        self.assertEqual(self.doorman.bodies("/v1/failures"), [])

    def test_no_token_no_authorization_header(self):
        self.fail_login()
        self.assertNotIn("Authorization", self.doorman.requests[0].headers)

    def test_token_is_sent_as_bearer(self):
        with self.settings(DOORMAN_API_TOKEN="s3cret"):
            self.fail_login()
            self.good_login()
        self.assertEqual(self.doorman.paths(), ["/v1/attempts", "/v1/failures", "/v1/attempts", "/v1/successes"])
        self.assertEqual([r.headers.get("Authorization") for r in self.doorman.requests], ["Bearer s3cret"] * 4)

    def test_long_username_is_cut(self):
        self.client.post(LOGIN, {"username": "u" * 1000, "password": "x"}, REMOTE_ADDR="203.0.113.5")
        self.assertEqual(len(self.doorman.bodies("/v1/failures")[0]["username"]), 256)

    def test_empty_api_url_disables(self):
        with self.settings(DOORMAN_API_URL=""):
            self.assertEqual(self.fail_login().status_code, 200)
        self.assertEqual(self.doorman.requests, [])

    def test_proxy_environment_is_ignored(self):
        # An http_proxy variable must not route the webhook elsewhere.
        import os
        from unittest import mock
        with mock.patch.dict(os.environ, {"http_proxy": "http://127.0.0.1:%d" % closed_port(),
                                          "HTTP_PROXY": "http://127.0.0.1:%d" % closed_port(), "no_proxy": ""}):
            self.fail_login()
        self.assertEqual(len(self.doorman.bodies("/v1/failures")), 1)


class ClientIPTests(LoginTestCase):
    def reported(self, **extra):
        self.doorman.requests.clear()
        self.assertEqual(self.fail_login(**extra).status_code, 200)
        return [b["ip"] for b in self.doorman.bodies("/v1/failures")]

    def test_rules(self):
        cases = [
            ("untrusted peer, headers ignored", {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_REAL_IP": "198.51.100.1",
                                                 "HTTP_X_FORWARDED_FOR": "198.51.100.2"}, None, ["203.0.113.5"]),
            ("trusted peer, X-Real-IP used", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7"},
             None, ["198.51.100.7"]),
            ("trusted peer, spoofed XFF ignored", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7",
                                                   "HTTP_X_FORWARDED_FOR": "192.0.2.1"}, None, ["198.51.100.7"]),
            ("trusted peer, only XFF: not reported", {"REMOTE_ADDR": "127.0.0.1",
                                                      "HTTP_X_FORWARDED_FOR": "192.0.2.1"}, None, []),
            ("trusted peer, no header: not reported", {"REMOTE_ADDR": "::1"}, None, []),
            ("trusted peer, repeated header: not reported", {"REMOTE_ADDR": "127.0.0.1",
                                                             "HTTP_X_REAL_IP": "198.51.100.7, 192.0.2.1"}, None, []),
            ("trusted peer, garbage header: not reported", {"REMOTE_ADDR": "127.0.0.1",
                                                            "HTTP_X_REAL_IP": "evil"}, None, []),
            ("trusted peer, IPv6 header", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "2001:db8::7"},
             None, ["2001:db8::7"]),
            ("mapped peer unmapped", {"REMOTE_ADDR": "::ffff:203.0.113.9"}, None, ["203.0.113.9"]),
            ("custom proxies as string", {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_REAL_IP": "198.51.100.8"},
             {"DOORMAN_TRUSTED_PROXIES": " 10.0.0.0/8 , 192.168.0.1"}, ["198.51.100.8"]),
            ("loopback not trusted when not listed", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.8"},
             {"DOORMAN_TRUSTED_PROXIES": ["10.0.0.0/8"]}, ["127.0.0.1"]),
            ("no proxies trusted", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.8"},
             {"DOORMAN_TRUSTED_PROXIES": []}, ["127.0.0.1"]),
            ("custom header", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.1",
                               "HTTP_X_CLIENT_IP": "198.51.100.9"},
             {"DOORMAN_CLIENT_IP_HEADER": "X-Client-IP"}, ["198.51.100.9"]),
        ]
        for name, extra, overrides, want in cases:
            with self.subTest(name), self.settings(**(overrides or {})):
                self.assertEqual(self.reported(**extra), want)

    def test_forwarded_for_source(self):
        xff = {"DOORMAN_CLIENT_IP_SOURCE": "x-forwarded-for"}
        two = {"DOORMAN_CLIENT_IP_SOURCE": "X-Forwarded-For", "DOORMAN_TRUSTED_PROXIES": "127.0.0.0/8,10.0.0.0/8"}
        cases = [
            ("untrusted peer, XFF ignored", {"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "198.51.100.2"},
             xff, ["203.0.113.5"]),
            ("the proxy's append", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.2"},
             xff, ["198.51.100.2"]),
            ("client's own entries left of it never read",
             {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.99, evil,198.51.100.2"},
             xff, ["198.51.100.2"]),
            ("X-Real-IP ignored", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "192.0.2.99",
                                   "HTTP_X_FORWARDED_FOR": "198.51.100.2"}, xff, ["198.51.100.2"]),
            ("trusted hops skipped from the right",
             {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.99,198.51.100.3,\t10.0.0.7 , 127.0.0.5"},
             two, ["198.51.100.3"]),
            ("mapped address unmapped", {"REMOTE_ADDR": "127.0.0.1",
                                         "HTTP_X_FORWARDED_FOR": "::ffff:198.51.100.4"}, xff, ["198.51.100.4"]),
            ("IPv6", {"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_FOR": "2001:db8::9"}, xff, ["2001:db8::9"]),
            # Fail closed: the peer, never an address the client wrote.
            ("no header: the peer", {"REMOTE_ADDR": "127.0.0.1"}, xff, ["127.0.0.1"]),
            ("empty header: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": " "}, xff, ["127.0.0.1"]),
            ("garbage at the read position: the peer",
             {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.99, unknown"}, xff, ["127.0.0.1"]),
            ("port: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.2:4711"},
             xff, ["127.0.0.1"]),
            ("brackets: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "[2001:db8::9]"},
             xff, ["127.0.0.1"]),
            ("zone: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "fe80::1%eth0"},
             xff, ["127.0.0.1"]),
            ("empty element: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.99,,127.0.0.2"},
             xff, ["127.0.0.1"]),
            ("trusted proxies only: the peer", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "10.0.0.1, 127.0.0.2"},
             two, ["127.0.0.1"]),
            ("remote-addr: headers never read", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "192.0.2.99",
                                                 "HTTP_X_FORWARDED_FOR": "192.0.2.98"},
             {"DOORMAN_CLIENT_IP_SOURCE": "remote-addr"}, ["127.0.0.1"]),
            ("header (the default) spelled out", {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7",
                                                  "HTTP_X_FORWARDED_FOR": "192.0.2.98"},
             {"DOORMAN_CLIENT_IP_SOURCE": "header"}, ["198.51.100.7"]),
        ]
        for name, extra, overrides, want in cases:
            with self.subTest(name), self.settings(**overrides):
                self.assertEqual(self.reported(**extra), want)

    def test_forwarded_for_on_a_unix_socket(self):
        with self.settings(DOORMAN_CLIENT_IP_SOURCE="x-forwarded-for", DOORMAN_TRUST_UNIX_PEER=True):
            self.assertEqual(client_ip(SimpleNamespace(META={"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "198.51.100.2"})),
                             "198.51.100.2")
            self.assertIsNone(client_ip(SimpleNamespace(META={"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "bad"})))

    def test_bad_source_setting(self):
        with self.settings(DOORMAN_CLIENT_IP_SOURCE="x-client-ip"):
            errors = [e for e in run_checks() if e.id == "doorman_django.E004"]
            self.assertEqual(self.fail_login(REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="198.51.100.7").status_code, 200)
        self.assertEqual(len(errors), 1)
        self.assertIn("'x-client-ip'", errors[0].msg)
        self.assertEqual(self.doorman.requests, [])

    def test_client_ip_function(self):
        self.assertIsNone(client_ip(None))
        self.assertIsNone(client_ip(SimpleNamespace(META={})))
        self.assertIsNone(client_ip(SimpleNamespace(META={"REMOTE_ADDR": "bogus"})))
        self.assertEqual(client_ip(SimpleNamespace(META={"REMOTE_ADDR": "fe80::1%eth0"})), "fe80::1")


class SlowDoormanTests(LoginTestCase):
    mode = "hang"

    def timed(self, fn):
        start = time.monotonic()
        resp = fn()
        return resp, time.monotonic() - start

    def test_login_page_renders_within_timeout(self):
        with self.settings(DOORMAN_TIMEOUT=0.3):
            resp, took = self.timed(self.fail_login)
        self.assertEqual(resp.status_code, 200)
        self.assertContains(resp, "Please enter the correct username and password")
        self.assertEqual(self.doorman.paths(), ["/v1/attempts", "/v1/failures"])
        self.assertLess(took, 3, "a hanging doorman held the login page")  # it would hang 10 s per call

    def test_login_succeeds_within_timeout(self):
        with self.settings(DOORMAN_TIMEOUT=0.3):
            resp, took = self.timed(self.good_login)
        self.assertEqual(resp.status_code, 302)
        self.assertLess(took, 3)


class BrokenDoormanTests(LoginTestCase):
    def test_down(self):
        with self.settings(DOORMAN_API_URL="http://127.0.0.1:%d" % closed_port()):
            self.assertEqual(self.fail_login().status_code, 200)
            self.assertEqual(self.good_login().status_code, 302)

    def test_bad_url(self):
        with self.settings(DOORMAN_API_URL="http://[bad"):
            self.assertEqual(self.fail_login().status_code, 200)

    def test_error_status(self):
        self.doorman.mode = "error"
        self.assertEqual(self.fail_login().status_code, 200)
        self.assertEqual(self.doorman.paths(), ["/v1/attempts", "/v1/failures"])
        self.assertEqual(self.good_login().status_code, 302)

    def test_not_json(self):
        self.doorman.mode = "garbage"
        self.assertEqual(self.fail_login().status_code, 200)

    def test_bad_trusted_proxies_setting(self):
        with self.settings(DOORMAN_TRUSTED_PROXIES="10.0.0.0/33"):
            self.assertEqual(self.fail_login(REMOTE_ADDR="127.0.0.1").status_code, 200)
            errors = [e for e in run_checks() if e.id == "doorman_django.E001"]
        self.assertEqual(len(errors), 1)
        self.assertIn("'10.0.0.0/33'", errors[0].msg)
        self.assertEqual(self.doorman.requests, [])


class BlockOnBanTests(LoginTestCase):
    banned = True

    def test_ban_answer_blocks_when_enabled(self):
        with self.settings(DOORMAN_BLOCK_ON_BAN=True):
            resp = self.fail_login()
        self.assertEqual(resp.status_code, 403)
        self.assertEqual(len(self.doorman.bodies("/v1/failures")), 1)

    def test_ban_answer_ignored_by_default(self):
        self.assertEqual(self.fail_login().status_code, 200)

    def test_no_ban_no_block(self):
        self.doorman.banned = False
        with self.settings(DOORMAN_BLOCK_ON_BAN=True):
            self.assertEqual(self.fail_login().status_code, 200)

    def test_down_doorman_does_not_block(self):
        with self.settings(DOORMAN_BLOCK_ON_BAN=True, DOORMAN_API_URL="http://127.0.0.1:%d" % closed_port()):
            self.assertEqual(self.fail_login().status_code, 200)


TOKEN = "AQAAAABp8yAfCQAAAAAAAAD__________________________________________w"  # the shape doorman issues


def is_logged_in(client):
    return "_auth_user_id" in client.session


class AttemptTests(LoginTestCase):
    def test_asked_before_the_password(self):
        self.assertEqual(self.good_login().status_code, 302)
        self.assertEqual(self.doorman.paths(), ["/v1/attempts", "/v1/successes"])
        self.assertEqual(self.doorman.bodies("/v1/attempts"), [{"ip": "203.0.113.5", "username": "admin"}])

    def test_refused_attempt_looks_like_a_wrong_password(self):
        self.doorman.attempt = {"allow": False, "reason": "account-locked", "retry_after": 900}
        right = self.good_login()
        wrong = self.fail_login()
        for resp in (right, wrong):
            self.assertEqual(resp.status_code, 200)
            self.assertContains(resp, "Please enter the correct username and password")
        self.assertFalse(is_logged_in(self.client))
        self.assertEqual(self.doorman.bodies("/v1/successes"), [])
        # The refused attempt is still a failure, for the address and the account.
        self.assertEqual(self.doorman.bodies("/v1/failures"), [{"ip": "203.0.113.5", "username": "admin"}] * 2)

    def test_refused_attempt_checks_no_password(self):
        from unittest import mock

        from django.contrib.auth.backends import ModelBackend
        self.doorman.attempt = {"allow": False, "reason": "banned", "retry_after": 60}
        with mock.patch.object(ModelBackend, "authenticate", autospec=True, return_value=None) as model:
            self.good_login()
        self.assertEqual(model.call_count, 0, "ModelBackend checked a password doorman refused")
        self.doorman.attempt = {"allow": True}
        with mock.patch.object(ModelBackend, "authenticate", autospec=True, return_value=None) as model:
            self.good_login()
        self.assertEqual(model.call_count, 1)

    def test_device_cookie_is_sent(self):
        self.client.cookies["doorman_device"] = TOKEN
        self.fail_login()
        self.assertEqual(self.doorman.bodies("/v1/attempts")[0].get("device"), TOKEN)
        self.assertEqual(self.doorman.bodies("/v1/failures")[0].get("device"), TOKEN)

    def test_custom_device_cookie_name(self):
        self.client.cookies["dd"] = TOKEN
        with self.settings(DOORMAN_DEVICE_COOKIE="dd"):
            self.fail_login()
        self.assertEqual(self.doorman.bodies("/v1/failures")[0].get("device"), TOKEN)

    def test_oversized_cookie_is_not_sent(self):
        self.client.cookies["doorman_device"] = "A" * 4000
        self.fail_login()
        self.assertNotIn("device", self.doorman.bodies("/v1/failures")[0])

    def test_doorman_down_attempt_goes_on_logged(self):
        with self.settings(DOORMAN_API_URL="http://127.0.0.1:%d" % closed_port()), \
                self.assertLogs("doorman_django", "WARNING") as logs:
            self.assertEqual(self.good_login().status_code, 302)
        self.assertTrue(is_logged_in(self.client))
        self.assertTrue(any("/v1/attempts" in line for line in logs.output), logs.output)

    def test_confused_answers_let_the_attempt_go_on(self):
        for answer in ({}, {"allow": "no"}, {"allow": None, "reason": "account-locked"}):
            with self.subTest(answer=answer):
                self.client.logout()
                self.doorman.attempt = answer
                self.assertEqual(self.good_login().status_code, 302)

    def test_without_request_nothing_is_asked(self):
        from django.contrib.auth import authenticate
        self.assertIsNotNone(authenticate(None, username="admin", password=PASSWORD))
        self.assertEqual(self.doorman.requests, [])


class DeviceCookieTests(LoginTestCase):
    def expires_in(self, seconds):
        t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def test_cookie_from_the_success_answer(self):
        self.doorman.device, self.doorman.device_expires = TOKEN, self.expires_in(720 * 3600)
        resp = self.good_login()
        self.assertEqual(resp.status_code, 302)
        c = resp.cookies.get("doorman_device")
        self.assertIsNotNone(c, "no device cookie")
        self.assertEqual(c.value, TOKEN)
        self.assertTrue(c["httponly"])
        self.assertEqual(c["samesite"], "Lax")
        self.assertEqual(c["path"], "/")
        self.assertFalse(c["secure"], "Secure over plain HTTP: the browser would drop it")
        self.assertAlmostEqual(int(c["max-age"]), 720 * 3600, delta=10)

    def test_secure_over_https(self):
        self.doorman.device, self.doorman.device_expires = TOKEN, self.expires_in(3600)
        resp = self.good_login(secure=True)
        self.assertTrue(resp.cookies["doorman_device"]["secure"])

    def test_no_cookie_without_a_good_token(self):
        for device, expires in ((None, self.expires_in(60)), ("short", self.expires_in(60)),
                                (TOKEN[:-1] + "!", self.expires_in(60)), (TOKEN, "yesterday"),
                                (TOKEN, self.expires_in(-60)), (TOKEN, "2030-01-01T00:00:00")):
            with self.subTest(device=device, expires=expires):
                self.client.logout()
                self.doorman.device, self.doorman.device_expires = device, expires
                resp = self.good_login()
                self.assertEqual(resp.status_code, 302)
                self.assertNotIn("doorman_device", resp.cookies)

    def test_no_cookie_on_failure(self):
        self.doorman.device, self.doorman.device_expires = TOKEN, self.expires_in(60)
        self.assertNotIn("doorman_device", self.fail_login().cookies)


class InstallationCheckTests(TestCase):
    def ids(self, **overrides):
        with self.settings(**overrides):
            return sorted(e.id for e in run_checks() if e.id.startswith("doorman_django.W"))

    def test_installed_as_documented(self):
        self.assertEqual(self.ids(), [])

    def test_backend_not_first(self):
        self.assertEqual(self.ids(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend",
                                                           "doorman_django.backends.DoormanBackend"]),
                         ["doorman_django.W001"])

    def test_backend_missing(self):
        self.assertEqual(self.ids(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]),
                         ["doorman_django.W001"])

    def test_middleware_missing(self):
        from django.conf import settings
        mw = [m for m in settings.MIDDLEWARE if "doorman" not in m]
        self.assertEqual(self.ids(MIDDLEWARE=mw), ["doorman_django.W002"])


class UnixPeerTests(LoginTestCase):
    def setUp(self):
        super().setUp()
        from doorman_django import client
        client._unix_peer_warned = False

    def test_trusted_with_the_setting(self):
        with self.settings(DOORMAN_TRUST_UNIX_PEER=True):
            self.fail_login(REMOTE_ADDR="", HTTP_X_REAL_IP="198.51.100.7")
        self.assertEqual(self.doorman.bodies("/v1/failures"), [{"ip": "198.51.100.7", "username": "admin"}])

    def test_trusted_but_no_header(self):
        with self.settings(DOORMAN_TRUST_UNIX_PEER=True):
            self.fail_login(REMOTE_ADDR="")
        self.assertEqual(self.doorman.requests, [])

    def test_without_the_setting_said_once(self):
        with self.assertLogs("doorman_django", "WARNING") as logs:
            for _ in range(3):
                self.assertEqual(self.fail_login(REMOTE_ADDR="", HTTP_X_REAL_IP="198.51.100.7").status_code, 200)
        self.assertEqual(self.doorman.requests, [])
        said = [line for line in logs.output if "DOORMAN_TRUST_UNIX_PEER = True" in line]
        self.assertEqual(len(said), 1, logs.output)
        self.assertEqual(len(logs.output), 1, "more than the one warning: %s" % logs.output)

    def test_setting_does_not_trust_other_peers(self):
        with self.settings(DOORMAN_TRUST_UNIX_PEER=True):
            self.fail_login(REMOTE_ADDR="203.0.113.9", HTTP_X_REAL_IP="198.51.100.7")
        self.assertEqual(self.doorman.bodies("/v1/failures")[0]["ip"], "203.0.113.9")


class UsernameTests(LoginTestCase):
    def test_cut_to_256_bytes_on_a_character(self):
        name = "é" * 200  # 400 bytes
        self.client.post(LOGIN, {"username": name, "password": "x"}, REMOTE_ADDR="203.0.113.5")
        sent = self.doorman.bodies("/v1/failures")[0]["username"]
        self.assertLessEqual(len(sent.encode()), 256)
        self.assertEqual(sent, "é" * 128)
        self.assertEqual(self.doorman.bodies("/v1/attempts")[0]["username"], sent)

    def test_refused_username_still_counts_the_address(self):
        self.doorman.reject_username = True
        self.fail_login()
        self.assertEqual(self.doorman.bodies("/v1/failures"),
                         [{"ip": "203.0.113.5", "username": "admin"}, {"ip": "203.0.113.5"}])


class FailModeTests(LoginTestCase):
    def setUp(self):
        super().setUp()
        from doorman_django import client
        client.fail_open_log.last, client.fail_open_log.unsaid = None, 0

    def down(self, **overrides):
        return self.settings(DOORMAN_API_URL="http://127.0.0.1:%d" % closed_port(), **overrides)

    def test_fail_open_by_default_and_logged(self):
        with self.down(), self.assertLogs("doorman_django", "WARNING") as logs:
            self.assertEqual(self.good_login().status_code, 302)
        self.assertTrue(is_logged_in(self.client))
        said = [line for line in logs.output if "login allowed to go on (fail open" in line]
        self.assertEqual(len(said), 1, logs.output)

    def test_fail_closed_refuses(self):
        with self.down(DOORMAN_FAIL_CLOSED=True), self.assertLogs("doorman_django", "WARNING") as logs:
            r = self.good_login()
        self.assertEqual(r.status_code, 200)
        self.assertFalse(is_logged_in(self.client))
        self.assertTrue(any("login refused (DOORMAN_FAIL_CLOSED)" in line for line in logs.output), logs.output)

    def test_fail_closed_refuses_a_confused_answer(self):
        self.doorman.attempt = {"reason": "no allow here"}
        with self.settings(DOORMAN_FAIL_CLOSED=True):
            self.assertEqual(self.good_login().status_code, 200)
        self.assertFalse(is_logged_in(self.client))

    def test_fail_closed_allows_when_doorman_answers(self):
        with self.settings(DOORMAN_FAIL_CLOSED=True):
            self.assertEqual(self.good_login().status_code, 302)

    def test_fail_open_warning_at_most_once_a_minute(self):
        from doorman_django import client
        now = [1000.0]
        client.fail_open_log.clock = lambda: now[0]
        try:
            with self.assertLogs("doorman_django", "WARNING") as logs:
                for _ in range(3):
                    client.fail_open_log("down")
                now[0] += 59
                client.fail_open_log("down")
                now[0] += 1
                client.fail_open_log("down")
        finally:
            client.fail_open_log.clock = time.monotonic
        self.assertEqual(len(logs.output), 2, logs.output)
        self.assertIn("(1 time(s) since", logs.output[0])
        self.assertIn("(4 time(s) since", logs.output[1])

    def test_check_reports_the_mode(self):
        ids = lambda: sorted(e.id for e in run_checks() if e.id in
                             ("doorman_django.I001", "doorman_django.I002", "doorman_django.W003"))
        self.assertEqual(ids(), ["doorman_django.I001"])
        with self.settings(DOORMAN_FAIL_CLOSED=True):
            self.assertEqual(ids(), ["doorman_django.I002"])
        with self.settings(DOORMAN_FAIL_CLOSED=True, DOORMAN_API_URL=""):
            self.assertEqual(ids(), ["doorman_django.W003"])


class GateSameUserTests(LoginTestCase):
    @override_settings(DOORMAN_GATE_SAME_USER=True)
    def test_only_the_gate_user_logs_in(self):
        self.assertEqual(self.good_login(HTTP_X_DOORMAN_USER="admin").status_code, 302)
        self.client.logout()
        self.assertEqual(self.good_login(HTTP_X_DOORMAN_USER="alice").status_code, 200)
        self.assertEqual(self.good_login().status_code, 200)  # no gate user at all
        # The refused ones were refused before doorman was asked.
        self.assertEqual(self.doorman.bodies("/v1/attempts"), [{"ip": "203.0.113.5", "username": "admin"}])

    def test_off_by_default(self):
        self.assertEqual(self.good_login(HTTP_X_DOORMAN_USER="alice").status_code, 302)
