// Parse the AsyncAPI document (docs/asyncapi.json, or the path given) with @asyncapi/parser, as CI does.
// Every diagnostic goes to stderr. Exit 1 when one is an error or there is no document; otherwise print a
// one-line summary (with the channel count) on stdout.
//
//   node tools/node/check-asyncapi.mjs [path]
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { DiagnosticSeverity, Parser } from '@asyncapi/parser';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const file = path.resolve(process.argv[2] ?? path.join(root, 'docs', 'asyncapi.json'));
const relative = path.relative(process.cwd(), file);
const label = relative && !relative.startsWith('..') ? relative : file;

function show(diagnostic) {
  const severity = DiagnosticSeverity[diagnostic.severity] ?? diagnostic.severity;
  const where = diagnostic.path.length ? diagnostic.path.join('.') : '(document)';
  return `${severity} ${diagnostic.code} at ${where}: ${diagnostic.message}`;
}

const { document, diagnostics } = await new Parser().parse(await readFile(file, 'utf8'), { source: file });
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const diagnostic of diagnostics) {
  console.error(show(diagnostic));
}
if (errors.length > 0 || document === undefined) {
  console.error(`${label}: invalid AsyncAPI document (${errors.length} error(s))`);
  process.exit(1);
}
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning).length;
console.log(
  `${label}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages, ` +
    `${warnings} warning(s), ${diagnostics.length - warnings} note(s)`,
);
