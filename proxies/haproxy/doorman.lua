-- doorman.lua: an HAProxy action (HAProxy 2.6 or later, Lua 5.3) that asks
-- doorman whether the client may reach a protected path.
--
-- Load it in the global section and run it on the requests to protect:
--
--     global
--         lua-load /etc/haproxy/doorman.lua
--     frontend www
--         http-request lua.doorman if { path,url_dec,lower -m sub /admin }
--
-- The action sends GET <DOORMAN_DECIDE_URL> with one header, X-Real-IP, set
-- to HAProxy's `src`: the TCP peer, or the address that the PROXY protocol or
-- `http-request set-src` made it. No header of the client is passed on, so no
-- client can choose the address doorman judges. DOORMAN_DECIDE_URL is read
-- from the haproxy process's environment when the file is loaded; the default
-- is http://127.0.0.1:9180/decide. HAProxy's address must be in doorman's
-- DOORMAN_TRUSTED_PROXIES (the default, loopback, covers a local doorman).
--
-- It sets two transaction variables and never answers the client itself:
--   txn.doorman_verdict      "allow": doorman answered 204;
--                            "deny":  doorman answered 403;
--                            "error": doorman unreachable, too slow (see
--                                     TIMEOUT_MS), or any other answer.
--   txn.doorman_retry_after  doorman's Retry-After (whole seconds) on a ban;
--                            unset otherwise.
-- The configuration decides what to do with them; haproxy.cfg.example answers
-- 403 on deny and 503 on error or on no verdict at all: fail closed.

-- doorman answers in microseconds; one that does not answer within this many
-- milliseconds is broken, and the request fails (closed) rather than waits.
-- HAProxy 2.6's httpclient retries a refused or timed-out request 3 times
-- (1 s apart when refused), so a frozen doorman fails a request after about
-- 4 x TIMEOUT_MS, a stopped one after about 3 s.
local TIMEOUT_MS = 500

local DEFAULT_URL = "http://127.0.0.1:9180/decide"

local url = os.getenv("DOORMAN_DECIDE_URL")
if url == nil or url == "" then
    url = DEFAULT_URL
end
-- The URL is checked once, here: a bad one stops HAProxy at start rather than
-- failing every request. httpclient resolves no names without a resolvers
-- section, so the host must be an address.
if not string.match(url, "^http://[%d%.]+:%d+/") and not string.match(url, "^http://%[[%x:%.]+%]:%d+/") then
    error("doorman.lua: DOORMAN_DECIDE_URL " .. string.format("%q", url) ..
          " is not http://ADDRESS:PORT/PATH (an IPv4 or [IPv6] address, not a name)")
end

-- first returns the first value of a response header in the table the
-- httpclient builds (name -> list of values), or nil.
local function first(headers, name)
    local values = headers and headers[name]
    if type(values) ~= "table" then
        return nil
    end
    for _, v in pairs(values) do
        return v
    end
    return nil
end

local function decide(txn)
    local verdict = "error"
    local src = txn.f:src()
    if src ~= nil and src ~= "" then
        local ok, res = pcall(function()
            return core.httpclient():get{
                url = url,
                headers = { ["x-real-ip"] = { tostring(src) } },
                timeout = TIMEOUT_MS,
            }
        end)
        if ok and type(res) == "table" then
            if res.status == 204 then
                verdict = "allow"
            elseif res.status == 403 then
                verdict = "deny"
                local ra = first(res.headers, "retry-after")
                if ra ~= nil and string.match(ra, "^%d+$") then
                    txn:set_var("txn.doorman_retry_after", ra)
                end
            end
        end
    end
    txn:set_var("txn.doorman_verdict", verdict)
end

core.register_action("doorman", { "http-req" }, decide, 0)
