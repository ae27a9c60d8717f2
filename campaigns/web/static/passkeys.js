// Security keys and passkeys (WebAuthn) for staff sign-in and the account page.
// The server makes the options and checks the answer (campaigns/passkeys.py); this file only
// hands them between the server and the browser's authenticator. No inline script: the
// staff pages' Content-Security-Policy allows scripts from this site only.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function toBytes(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    var raw = atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    json.challenge = toBytes(json.challenge);
    json.user.id = toBytes(json.user.id);
    (json.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return json;
  }

  function requestOptions(json) {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    json.challenge = toBytes(json.challenge);
    (json.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return json;
  }

  function answer(credential) {
    if (typeof credential.toJSON === "function") { return credential.toJSON(); }
    var response = credential.response;
    var out = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) }
    };
    if (response.attestationObject) {
      out.response.attestationObject = toText(response.attestationObject);
      if (response.getTransports) { out.response.transports = response.getTransports(); }
    } else {
      out.response.authenticatorData = toText(response.authenticatorData);
      out.response.signature = toText(response.signature);
      if (response.userHandle) { out.response.userHandle = toText(response.userHandle); }
    }
    return out;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: body === undefined ? "{}" : JSON.stringify(body)
    }).then(function (reply) {
      return reply.json().then(function (data) {
        if (!reply.ok) { throw new Error(data.problem || data.detail || "The server refused it."); }
        return data;
      });
    });
  }

  function showProblem(error) {
    var box = document.getElementById("passkey-problem");
    if (!box) { return; }
    box.textContent = error && error.message ? error.message : "That did not work. Try again.";
    box.hidden = false;
  }

  var signIn = document.getElementById("passkey-sign-in");
  if (signIn) {
    signIn.addEventListener("click", function () {
      post(signIn.dataset.options)
        .then(function (options) {
          return navigator.credentials.get({ publicKey: requestOptions(options) });
        })
        .then(function (credential) { return post(signIn.dataset.answer, answer(credential)); })
        .then(function (result) { window.location.assign(result.next); })
        .catch(showProblem);
    });
  }

  var register = document.getElementById("passkey-register");
  if (register) {
    register.addEventListener("click", function () {
      var name = document.getElementById("passkey-name");
      post(register.dataset.options)
        .then(function (options) {
          return navigator.credentials.create({ publicKey: creationOptions(options) });
        })
        .then(function (credential) {
          return post(register.dataset.answer, {
            credential: answer(credential),
            name: name ? name.value : ""
          });
        })
        .then(function (result) {
          if (!result.recovery_codes) { window.location.assign(result.next); return; }
          var list = document.getElementById("passkey-code-list");
          result.recovery_codes.forEach(function (code) {
            var item = document.createElement("li");
            var text = document.createElement("code");
            text.textContent = code;
            item.appendChild(text);
            list.appendChild(item);
          });
          document.getElementById("passkey-continue").setAttribute("href", result.next);
          document.getElementById("passkey-codes").hidden = false;
        })
        .catch(showProblem);
    });
  }
})();
