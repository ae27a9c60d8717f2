// The error summary of a failed form (GOV.UK Design System pattern; templates/_forms.html).
// Without this file the summary still takes the focus (autofocus) and its links still jump to
// their fields; with it, a link also brings the field's label (or its group's legend) into
// view above the field, as a fragment jump alone would scroll the label off the top.
(function () {
  "use strict";
  var summary = document.querySelector(".error-summary");
  if (!summary) { return; }
  if (document.activeElement !== summary) { summary.focus(); }
  summary.addEventListener("click", function (event) {
    var link = event.target.closest("a[href^='#']");
    if (!link) { return; }
    var target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) { return; }
    event.preventDefault();
    var fieldset = target.closest("fieldset");
    var heading = fieldset ? fieldset.querySelector("legend")
      : document.querySelector("label[for='" + target.id + "']");
    (heading || target).scrollIntoView();
    target.focus({ preventScroll: true });
  });
}());
