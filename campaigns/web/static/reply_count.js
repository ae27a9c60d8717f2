// The reply box's live count: characters of one SMS, as campaigns/rules/content.py counts
// them (GSM-7: 160, the extended characters count twice; anything else: UCS-2, 70), with the
// clinic's name in front. Progressive enhancement only: the server checks the reply again.
(function () {
  "use strict";
  var BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var EXTENDED = "\f^{}\\[~]|€";

  function count(text) {
    var gsm = true, units = 0, utf16 = 0, i, c;
    var chars = Array.from(text);
    for (i = 0; i < chars.length; i++) {
      c = chars[i];
      utf16 += c.length;
      if (BASIC.indexOf(c) >= 0) { units += 1; }
      else if (EXTENDED.indexOf(c) >= 0) { units += 2; }
      else { gsm = false; }
    }
    return gsm ? { units: units, limit: 160, plain: true } : { units: utf16, limit: 70, plain: false };
  }

  function oneLine(text) {
    return text.replace(/\s+/g, " ").trim();
  }

  var box = document.getElementById("reply");
  var out = document.getElementById("reply-count");
  if (!box || !out) { return; }
  var prefix = box.getAttribute("data-prefix") || "";

  function update() {
    var words = oneLine(box.value);
    var found = count(prefix + words);
    var left = found.limit - found.units;
    var text = found.units + " of " + found.limit + " characters (with “" + prefix.trim() + "” in front)";
    if (!found.plain) { text += ": an emoji or special letter limits a text to 70"; }
    text += left >= 0 ? " · " + left + " left · 1 text" : " · " + (-left) + " too many: it would need 2 texts";
    out.textContent = text;
    out.classList.toggle("error", left < 0);
  }

  box.addEventListener("input", update);
  update();
})();
