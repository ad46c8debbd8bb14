#!/usr/bin/env node
// Render every $$...$$ display block of a Markdown page (read on stdin) with KaTeX, as a Markdown
// viewer would, and the inline $...$ of the prose. Exits 1 naming the first formula KaTeX rejects
// (throwOnError), 2 when the page has no display math at all.
"use strict";

const katex = require("katex");

function render(kind, blocks, displayMode) {
  for (const [index, block] of blocks.entries()) {
    try {
      katex.renderToString(block, { displayMode, throwOnError: true, strict: "error" });
    } catch (error) {
      console.error(`${kind} math ${index + 1} of ${blocks.length} does not render: ${error.message}`);
      console.error(block.trim());
      return false;
    }
  }
  return true;
}

function main(markdown) {
  const display = [...markdown.matchAll(/\$\$([\s\S]+?)\$\$/g)].map((match) => match[1]);
  if (display.length === 0) {
    console.error("no $$...$$ display math found on stdin");
    return 2;
  }
  // Inline $...$ in the prose around the displays, rendered in text style.
  const prose = markdown.replace(/\$\$[\s\S]+?\$\$/g, "");
  const inline = [...prose.matchAll(/\$([^$]+?)\$/g)].map((match) => match[1]);
  if (!render("display", display, true) || !render("inline", inline, false)) {
    return 1;
  }
  console.log(`rendered ${display.length} display and ${inline.length} inline formulas with KaTeX ${katex.version}`);
  return 0;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => process.exit(main(input)));
