"""The client address rules and the webhook calls.

Settings (all optional):

DOORMAN_API_URL          doorman's API, default "http://127.0.0.1:9181";
                         empty disables reporting.
DOORMAN_API_TOKEN        sent as "Authorization: Bearer <token>" when set.
DOORMAN_TIMEOUT          seconds per socket operation of one call, default 0.5.
DOORMAN_TRUSTED_PROXIES  IPs or CIDRs (list, or one comma-separated string)
                         whose DOORMAN_CLIENT_IP_HEADER is believed; default
                         "127.0.0.0/8,::1/128" like doorman's own default.
DOORMAN_CLIENT_IP_HEADER the header the trusted proxy overwrites with the
                         client address, default "X-Real-IP".
DOORMAN_CLIENT_IP_SOURCE where a trusted proxy's client address is read:
                         "header" (default): DOORMAN_CLIENT_IP_HEADER;
                         "x-forwarded-for": the rightmost X-Forwarded-For
                         address not in DOORMAN_TRUSTED_PROXIES, as doorman's
                         /forward-auth reads it; "remote-addr": REMOTE_ADDR
                         always, no header read.
DOORMAN_FAIL_CLOSED      refuse a login when doorman cannot answer
                         /v1/attempts (down, slower than DOORMAN_TIMEOUT, an
                         error, a confused answer); default False: the login
                         goes on, with a warning (at most one a minute).
DOORMAN_BLOCK_ON_BAN     when the failure webhook answers "banned": true, the
                         login attempt itself is answered 403; default False.
DOORMAN_TRUST_UNIX_PEER  treat an empty REMOTE_ADDR (an app server on a unix
                         socket, e.g. gunicorn --bind unix:...) as a trusted
                         proxy, so DOORMAN_CLIENT_IP_HEADER is read; default
                         False. Only when nothing but the proxy can reach the
                         socket.
DOORMAN_DEVICE_COOKIE    the cookie holding the device token doorman issues
                         at a successful login, default "doorman_device".
"""

import functools
import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.request

from django.conf import settings

logger = logging.getLogger("doorman_django")

DEFAULT_API_URL = "http://127.0.0.1:9181"
DEFAULT_TIMEOUT = 0.5
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
DEFAULT_CLIENT_IP_HEADER = "X-Real-IP"
DEFAULT_DEVICE_COOKIE = "doorman_device"
CLIENT_IP_SOURCES = ("header", "x-forwarded-for", "remote-addr")

# doorman refuses usernames over 256 bytes (UTF-8) and bodies over 4 KiB.
MAX_USERNAME = 256
# A device token is 66 characters; anything much longer is not one.
MAX_DEVICE = 128
MAX_REQUEST_ID = 128  # doorman refuses a longer "request_id"
MAX_ANSWER = 64 * 1024

def _setting(name, default):
    return getattr(settings, name, default)


def _as_tuple(value):
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v and v.strip())


@functools.lru_cache(maxsize=8)
def parse_networks(entries):
    """Parse a tuple of IPs/CIDRs; a bare IP is a /32 or /128.

    Raises ValueError naming the bad entry.
    """
    nets = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e, strict=False))
        except ValueError:
            raise ValueError("DOORMAN_TRUSTED_PROXIES: %r is not an IP or CIDR" % e) from None
    return tuple(nets)


def trusted_proxies():
    return parse_networks(_as_tuple(_setting("DOORMAN_TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES)))


def meta_key(header):
    """"X-Real-IP" -> "HTTP_X_REAL_IP" (a META key is accepted as is)."""
    if header.startswith("HTTP_"):
        return header
    return "HTTP_" + header.upper().replace("-", "_")


def parse_ip(value):
    """One IP address, IPv4-mapped IPv6 unmapped, zone dropped; None if bad."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if "%" in value:
        value = value.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


_unix_peer_warned = False


def _warn_unix_peer_once():
    global _unix_peer_warned
    if _unix_peer_warned:
        return
    _unix_peer_warned = True
    logger.warning(
        "doorman: REMOTE_ADDR is empty, as behind an app server on a unix socket (gunicorn --bind unix:...); "
        "logins are not reported to doorman. If only the proxy (nginx) can reach that socket, set "
        "DOORMAN_TRUST_UNIX_PEER = True in settings so that its %s header is read. (Said once.)",
        _setting("DOORMAN_CLIENT_IP_HEADER", DEFAULT_CLIENT_IP_HEADER) or DEFAULT_CLIENT_IP_HEADER)


def client_ip(request):
    """The client address of request as a string, or None.

    REMOTE_ADDR is the client unless it is a trusted proxy; then the
    proxy's DOORMAN_CLIENT_IP_HEADER is the client. A trusted proxy that
    sent no usable header gives None: reporting the proxy's own address
    would ban the proxy. X-Forwarded-For is never read: any client can
    write it, and proxies append to it rather than overwrite it.

    An empty (or missing) REMOTE_ADDR is the peer of a unix socket: a
    trusted proxy only with DOORMAN_TRUST_UNIX_PEER; without it, None, and
    a warning (once) saying what to set.
    """
    if request is None:
        return None
    remote = request.META.get("REMOTE_ADDR")
    if remote is None or remote == "":
        if not _setting("DOORMAN_TRUST_UNIX_PEER", False):
            _warn_unix_peer_once()
            return None
        peer = None
    else:
        peer = parse_ip(remote)
        if peer is None:
            return None
        if not any(peer in net for net in trusted_proxies() if net.version == peer.version):
            return str(peer)
    source = client_ip_source()
    if source == "remote-addr":
        return None if peer is None else str(peer)
    if source == "x-forwarded-for":
        return _forwarded_for(request.META.get("HTTP_X_FORWARDED_FOR"), peer)
    header = _setting("DOORMAN_CLIENT_IP_HEADER", DEFAULT_CLIENT_IP_HEADER)
    if not header:
        return None if peer is None else str(peer)
    # A repeated header arrives joined with commas and does not parse.
    ip = parse_ip(request.META.get(meta_key(header)))
    return None if ip is None else str(ip)


def client_ip_source():
    """DOORMAN_CLIENT_IP_SOURCE, lower case; ValueError naming a bad value."""
    source = _setting("DOORMAN_CLIENT_IP_SOURCE", "header")
    if not isinstance(source, str) or source.strip().lower() not in CLIENT_IP_SOURCES:
        raise ValueError("DOORMAN_CLIENT_IP_SOURCE: %r is not one of %s" % (source, ", ".join(CLIENT_IP_SOURCES)))
    return source.strip().lower()


def _forwarded_for(value, peer):
    """The client in a trusted proxy's X-Forwarded-For, as doorman's
    /forward-auth reads it: walking from the right, the first address not
    in DOORMAN_TRUSTED_PROXIES. Each hop appends the address it saw, so what
    stands left of that one came from the client and is never read.

    Fail closed: a missing or empty header, an element the walk has to read
    that is not a bare IP (a port, brackets, "unknown", an empty element),
    or trusted proxies only give the peer, the trusted proxy itself (None on
    a unix socket), never an address a client chose. Several header lines
    reach Django joined with commas (by the WSGI server), which cannot be
    told from one line; see docs/django.md.
    """
    fallback = None if peer is None else str(peer)
    if not isinstance(value, str) or not value.strip():
        return fallback
    nets = trusted_proxies()
    for elem in reversed(value.split(",")):
        elem = elem.strip(" \t")
        if "%" in elem:
            return fallback  # doorman's walk takes no zone either
        ip = parse_ip(elem)
        if ip is None:
            return fallback
        if not any(ip in net for net in nets if net.version == ip.version):
            return str(ip)
    return fallback


def post(path, payload):
    """POST payload as JSON to doorman; the decoded answer, or None on any error."""
    return _post(path, payload)[1]


def _post(path, payload):
    """POST payload as JSON; (HTTP status or None, decoded answer or None)."""
    base = _setting("DOORMAN_API_URL", DEFAULT_API_URL)
    if not base:
        return None, None
    data = json.dumps(payload).encode()
    token = _setting("DOORMAN_API_TOKEN", "")
    # No proxies: an http_proxy variable in the environment must not route
    # the token and the client addresses through some other host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        timeout = float(_setting("DOORMAN_TIMEOUT", DEFAULT_TIMEOUT))
        req = urllib.request.Request(base.rstrip("/") + path, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with opener.open(req, timeout=timeout) as resp:
            body = resp.read(MAX_ANSWER)
    except urllib.error.HTTPError as e:
        logger.warning("doorman: POST %s: HTTP %s", path, e.code)
        return e.code, None
    except Exception as e:  # timeouts, refused connections, bad settings: never break the login
        logger.warning("doorman: POST %s: %s", path, e)
        return None, None
    try:
        answer = json.loads(body)
    except ValueError:
        logger.warning("doorman: POST %s: answer is not JSON", path)
        return 200, None
    return 200, (answer if isinstance(answer, dict) else None)


def _no_client(request):
    header = _setting("DOORMAN_CLIENT_IP_HEADER", DEFAULT_CLIENT_IP_HEADER)
    meta = getattr(request, "META", None) or {}
    if not meta.get("REMOTE_ADDR") and not _setting("DOORMAN_TRUST_UNIX_PEER", False):
        return  # a unix socket's peer: said once, with what to set
    logger.warning("doorman: no usable client address (REMOTE_ADDR=%r, %s=%r); login not reported",
                   meta.get("REMOTE_ADDR"), header, meta.get(meta_key(header)) if header else None)


def cut_username(username):
    """The username as doorman takes it: a string of at most MAX_USERNAME
    bytes in UTF-8, cut on a character boundary; None when empty."""
    if username is None:
        return None
    name = str(username).encode("utf-8", "replace")[:MAX_USERNAME].decode("utf-8", "ignore")
    return name or None


def device_token(request):
    """The device token in the request's DOORMAN_DEVICE_COOKIE, or None."""
    cookies = getattr(request, "COOKIES", None) or {}
    token = cookies.get(_setting("DOORMAN_DEVICE_COOKIE", DEFAULT_DEVICE_COOKIE))
    if not token or not isinstance(token, str) or len(token) > MAX_DEVICE:
        return None
    return token


def request_id(request):
    """The proxy's id of the request (nginx: proxy_set_header X-Request-Id
    $request_id), or None. doorman counts a login it also learned from the
    proxy's record once (docs/learn.md). A client's own X-Request-Id, where
    the proxy does not set it, can only make its own failures count twice."""
    meta = getattr(request, "META", None) or {}
    rid = meta.get("HTTP_X_REQUEST_ID")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID or not rid.isprintable():
        return None
    return rid


def _account_payload(ip, request, username):
    payload = {"ip": ip}
    rid = request_id(request)
    if rid:
        payload["request_id"] = rid
    name = cut_username(username)
    if name:
        payload["username"] = name
        token = device_token(request)
        if token:
            payload["device"] = token
    return payload


def report_failure(request, username=None):
    """Report a failed login, with the username and the device cookie's
    token; doorman's answer (a dict) or None."""
    ip = client_ip(request)
    if ip is None:
        _no_client(request)
        return None
    payload = _account_payload(ip, request, username)
    status, answer = _post("/v1/failures", payload)
    if status == 400 and "username" in payload:
        # doorman refused the username (it grew past 256 bytes when
        # normalised, say): the address's failure must count all the same.
        logger.warning("doorman: failure with username %r refused; reporting the address alone", payload["username"])
        status, answer = _post("/v1/failures", {k: v for k, v in payload.items() if k in ("ip", "request_id")})
    return answer


def report_success(request, username=None):
    """Report a successful login, which resets the address's failure count;
    doorman's answer (with "device" and "device_expires" when it issued a
    device token for the account) or None."""
    ip = client_ip(request)
    if ip is None:
        _no_client(request)
        return None
    return post("/v1/successes", _account_payload(ip, request, username))


def check_attempt(request, username=None):
    """Ask doorman whether this login attempt may go on, before any password
    is checked. doorman's answer ({"allow": bool, "reason": ..., ...}), or
    None when there is no answer (no client address, doorman down, slow or
    confused): the attempt then goes on."""
    return ask_attempt(request, username)[0]


def ask_attempt(request, username=None):
    """check_attempt's answer, and whether doorman was asked and could not
    answer (down, slow, an error, a confused answer): (answer or None,
    unanswered). Not asked (no client address, DOORMAN_API_URL empty) is
    (None, False)."""
    ip = client_ip(request)
    if ip is None:
        _no_client(request)
        return None, False
    if not _setting("DOORMAN_API_URL", DEFAULT_API_URL):
        return None, False
    answer = post("/v1/attempts", _account_payload(ip, request, username))
    if answer is None or not isinstance(answer.get("allow"), bool):
        if answer is not None:
            logger.warning("doorman: POST /v1/attempts: answer without \"allow\"")
        return None, True
    return answer, False


def fail_closed():
    return bool(_setting("DOORMAN_FAIL_CLOSED", False))


class _EveryMinute:
    """Logs a warning at most once per interval, with how many times it
    happened since the last line."""

    def __init__(self, interval=60.0, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.lock = threading.Lock()
        self.last = None
        self.unsaid = 0

    def __call__(self, msg):
        with self.lock:
            self.unsaid += 1
            now = self.clock()
            if self.last is not None and now - self.last < self.interval:
                return
            count, self.unsaid, self.last = self.unsaid, 0, now
        logger.warning("%s (%d time(s) since the last such line; said at most once a minute)", msg, count)


fail_open_log = _EveryMinute()
