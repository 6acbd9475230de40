// doorman's gate: passkey sign-in and registration through
// navigator.credentials. Served by doorman itself; no third party.
"use strict";
(function () {
  function b64u(buf) {
    var s = "", bytes = new Uint8Array(buf);
    for (var i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function unb64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  var root = document.getElementById("gate");
  var csrf = root.dataset.csrf, rd = root.dataset.rd || "/";
  function say(msg) { document.getElementById("status").textContent = msg; }
  function post(path, body) {
    return fetch(path, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-Doorman-CSRF": csrf},
      body: body === undefined ? "{}" : JSON.stringify(body)}).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
        return j;
      });
    });
  }
  function done(j) { say("Signed in."); window.location.assign(j.rd || rd); }
  function fail(e) { say("Refused: " + e.message); }

  var signin = document.getElementById("passkey-signin");
  if (signin) signin.addEventListener("click", function () {
    say("Waiting for your passkey…");
    post("/_doorman/gate/passkey/begin").then(function (o) {
      var pk = o.publicKey;
      pk.challenge = unb64u(pk.challenge);
      (pk.allowCredentials || []).forEach(function (c) { c.id = unb64u(c.id); });
      return navigator.credentials.get({publicKey: pk});
    }).then(function (c) {
      return post("/_doorman/gate/passkey/finish?rd=" + encodeURIComponent(rd), {
        id: c.id, rawId: b64u(c.rawId), type: c.type,
        response: {
          clientDataJSON: b64u(c.response.clientDataJSON),
          authenticatorData: b64u(c.response.authenticatorData),
          signature: b64u(c.response.signature),
          userHandle: c.response.userHandle ? b64u(c.response.userHandle) : null
        }
      });
    }).then(done, fail);
  });

  var register = document.getElementById("passkey-register");
  if (register) register.addEventListener("click", function () {
    say("Creating your passkey…");
    post("/_doorman/enroll/passkey/begin").then(function (o) {
      var pk = o.publicKey;
      pk.challenge = unb64u(pk.challenge);
      pk.user.id = unb64u(pk.user.id);
      (pk.excludeCredentials || []).forEach(function (c) { c.id = unb64u(c.id); });
      return navigator.credentials.create({publicKey: pk});
    }).then(function (c) {
      return post("/_doorman/enroll/passkey/finish", {
        id: c.id, rawId: b64u(c.rawId), type: c.type,
        response: {
          clientDataJSON: b64u(c.response.clientDataJSON),
          attestationObject: b64u(c.response.attestationObject),
          transports: c.response.getTransports ? c.response.getTransports() : []
        }
      });
    }).then(done, fail);
  });
})();
