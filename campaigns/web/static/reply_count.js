// The live count of a one-text box (a staff reply, a broadcast's text): characters of one
// SMS, as campaigns/rules/content.py counts them (GSM-7: 160, the extended characters count
// twice; anything else: UCS-2, 70), with what we add around the words: the clinic's name in
// front (data-prefix) and, when a radio button says so (data-suffix-if="purpose=marketing"),
// the opt-out at the end (data-suffix). The count goes to the element named by data-count.
// Progressive enhancement only: the server checks the words again.
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

  function suffixApplies(box) {
    var rule = box.getAttribute("data-suffix-if");
    if (!rule) { return true; }
    var parts = rule.split("=");
    var chosen = box.form && box.form.querySelector("input[name='" + parts[0] + "']:checked");
    return Boolean(chosen) && chosen.value === parts[1];
  }

  function watch(box) {
    var out = document.getElementById(box.getAttribute("data-count"));
    if (!out) { return; }
    var prefix = box.getAttribute("data-prefix") || "";
    var suffix = box.getAttribute("data-suffix") || "";

    function update() {
      var words = oneLine(box.value);
      var end = suffixApplies(box) ? suffix : "";
      var found = count(prefix + words + end);
      var left = found.limit - found.units;
      var text = found.units + " of " + found.limit + " characters (with “" + prefix.trim() + "” in front";
      text += end ? " and “" + end.trim() + "” at the end)" : ")";
      if (!found.plain) { text += ": an emoji or special letter limits a text to 70"; }
      text += left >= 0 ? " · " + left + " left · 1 text" : " · " + (-left) + " too many: it would need 2 texts";
      out.textContent = text;
      out.classList.toggle("error", left < 0);
    }

    box.addEventListener("input", update);
    if (box.form) { box.form.addEventListener("change", update); }
    update();
  }

  var boxes = document.querySelectorAll("textarea[data-count]");
  for (var i = 0; i < boxes.length; i++) { watch(boxes[i]); }
})();
