// Render TeX to MathML with KaTeX at build time, so that a deck needs no math fonts or scripts.
// Reads a JSON array of [tex, display] pairs on stdin; writes a JSON array of MathML strings.
// A formula KaTeX cannot parse is reported with its text and makes the build fail.
const katex = require("katex");
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = [], errors = [];
  for (const [tex, display] of JSON.parse(input)) {
    try { out.push(katex.renderToString(tex, { output: "mathml", displayMode: display, throwOnError: true })); }
    catch (e) { errors.push(`${JSON.stringify(tex)}: ${e.message}`); out.push(""); }
  }
  if (errors.length) { process.stderr.write(errors.join("\n") + "\n"); process.exit(1); }
  process.stdout.write(JSON.stringify(out));
});
