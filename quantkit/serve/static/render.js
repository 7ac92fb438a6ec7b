// Markdown with math, safely: raw HTML in the model's text is shown as text, links keep only http(s) and mailto,
// images become links (nothing is fetched from elsewhere), and the math ($…$, $$…$$, \(…\), \[…\], a bare
// \boxed{…}) goes to Temml as MathML before marked sees the text.
"use strict";

const Render = (() => {
  const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                                     '"': "&quot;", "'": "&#39;"}[c]));
  const safeHref = (href) => /^(https?:|mailto:)/i.test(href || "") ? href : null;

  marked.use({
    gfm: true,
    breaks: false,
    renderer: {
      html(token) { return escapeHtml(token.text); },
      link(token) {
        const text = this.parser.parseInline(token.tokens);
        const href = safeHref(token.href);
        return href ? `<a href="${escapeHtml(href)}" rel="noopener noreferrer" target="_blank">${text}</a>` : text;
      },
      image(token) {
        const href = safeHref(token.href);
        const text = escapeHtml(token.text || "image");
        return href ? `<a href="${escapeHtml(href)}" rel="noopener noreferrer" target="_blank">[${text}]</a>` : text;
      },
    },
  });

  // the end of a balanced {…} group starting at text[open] ("{"), or -1
  function closing(text, open) {
    let depth = 0;
    for (let i = open; i < text.length; i++) {
      if (text[i] === "\\") { i++; continue; }
      if (text[i] === "{") depth++;
      else if (text[i] === "}" && --depth === 0) return i;
    }
    return -1;
  }

  const DELIMITERS = [["$$", "$$", true], ["\\[", "\\]", true], ["\\(", "\\)", false], ["$", "$", false]];

  // text with its math replaced by placeholders; the math kept in `found`
  function takeMath(text, found) {
    let out = "";
    let i = 0;
    outer: while (i < text.length) {
      for (const [open, close, display] of DELIMITERS) {
        if (!text.startsWith(open, i)) continue;
        const end = text.indexOf(close, i + open.length);
        const body = end < 0 ? "" : text.slice(i + open.length, end);
        // a lone "$" of a price ("$5 and $6") is not math: inline $…$ must not start or end with a space
        if (end < 0 || !body.trim() || (open === "$" && (/^\s|\s$/.test(body) || body.includes("\n")))) continue;
        found.push([body, display]);
        out += `\uE000${found.length - 1}\uE001`;
        i = end + close.length;
        continue outer;
      }
      if (text.startsWith("\\boxed{", i)) {
        const end = closing(text, i + 6);
        if (end > 0) {
          found.push([text.slice(i, end + 1), false]);
          out += `\uE000${found.length - 1}\uE001`;
          i = end + 1;
          continue;
        }
      }
      out += text[i++];
    }
    return out;
  }

  // math outside code only: fenced blocks and inline code are left as they are
  function protect(text, found) {
    return text.split(/(```[\s\S]*?(?:```|$)|`[^`\n]*`)/).map((part, k) => k % 2 ? part : takeMath(part, found)).join("");
  }

  function math(tex, display) {
    try {
      return temml.renderToString(tex, {displayMode: display, throwOnError: false, trust: false});
    } catch (e) {
      return `<code>${escapeHtml(tex)}</code>`;
    }
  }

  function markdown(text) {
    const found = [];
    const html = marked.parse(protect(text || "", found));
    return html.replace(/\uE000(\d+)\uE001/g, (_, n) => math(found[+n][0], found[+n][1]));
  }

  return {markdown, escapeHtml};
})();
