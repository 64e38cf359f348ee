// Renders the math that pymdownx.arithmatex (generic mode) leaves in `.arithmatex` elements:
// inline as \( ... \), display as \[ ... \]. KaTeX and auto-render are served from assets/katex.
// Only `.arithmatex` elements are scanned, so a "$" in prose or code is never touched. Notebook pages
// (mkdocs-jupyter) keep their math as $...$ in markdown cells; those cells are rendered here too,
// so notebooks need no MathJax from a CDN either.
(function () {
  "use strict";

  function renderMath(root) {
    if (typeof renderMathInElement !== "function") return;
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      renderMathInElement(el, {
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true },
        ],
        throwOnError: false, // a bad formula shows in red instead of breaking the page
      });
    });
    root.querySelectorAll(".jupyter-wrapper .jp-RenderedMarkdown").forEach(function (el) {
      renderMathInElement(el, {
        delimiters: [
          { left: "$$", right: "$$", display: true },
          { left: "$", right: "$", display: false },
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true },
        ],
        throwOnError: false,
      });
    });
  }

  // Material's document$ emits on the first load and after every instant navigation, so
  // pages reached without a full reload are rendered too; without it, render once on load.
  if (typeof document$ !== "undefined" && document$.subscribe) {
    document$.subscribe(function (doc) {
      renderMath(doc.body || document.body);
    });
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () {
      renderMath(document.body);
    });
  } else {
    renderMath(document.body);
  }
})();
