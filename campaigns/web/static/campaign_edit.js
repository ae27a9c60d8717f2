// The step editor's live checks: a moment after staff stop typing, the form goes to the
// server's check (campaigns/web/campaign_drafts.py, draft/check; nothing is saved), which
// answers each field's problems and the text's count in both wordings; they are shown next to
// their fields. Progressive enhancement only: saving checks everything again on the server.
(function () {
  "use strict";
  var form = document.getElementById("step-form");
  if (!form) { return; }
  var url = form.getAttribute("data-check-url");
  var tokenField = form.querySelector("input[name=csrf_token]");
  var token = tokenField ? tokenField.value : "";
  var timer = null;
  var asked = 0;

  function showProblems(problems) {
    var lists = form.querySelectorAll("ul.problems");
    for (var i = 0; i < lists.length; i++) {
      var list = lists[i];
      var field = list.id.replace(/-problems$/, "");
      var found = problems[field] || [];
      list.textContent = "";
      for (var j = 0; j < found.length; j++) {
        var item = document.createElement("li");
        item.textContent = found[j];
        list.appendChild(item);
      }
    }
  }

  function showCount(counts) {
    var box = document.getElementById("sms-count");
    if (!box) { return; }
    box.textContent = "";
    for (var i = 0; i < counts.length; i++) {
      var count = counts[i];
      var line = document.createElement("span");
      line.className = "sms-count" + (count.over ? " over" : "");
      line.setAttribute("data-wording", count.wording);
      line.textContent = (count.wording === "discreet" ? "Discreet" : "Usual") + " wording: " + count.words;
      box.appendChild(line);
    }
  }

  async function check() {
    var mine = ++asked;
    try {
      var answer = await fetch(url, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRF-Token": token, "Accept": "application/json" },
        credentials: "same-origin",
      });
      if (!answer.ok || mine !== asked) { return; }
      var found = await answer.json();
      if (mine !== asked) { return; }
      showProblems(found.problems || {});
      showCount(found.sms || []);
    } catch (e) { /* the next change asks again; saving checks on the server anyway */ }
  }

  function later() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(check, 400);
  }

  form.addEventListener("input", later);
  form.addEventListener("change", later);
})();
