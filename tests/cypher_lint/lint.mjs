// Lints Cypher statements with Neo4j's own Cypher front end (@neo4j-cypher/language-support:
// Neo4j's parser and semantic analysis, compiled to JavaScript).  One process for all statements.
//
// usage:  node lint.mjs <folder holding node_modules/@neo4j-cypher/language-support> < statements.json
// stdin:  JSON [{name, query, parameters?: [names]}]
// stdout: JSON {version, catalogue, results: [{name, diagnostics: [{severity, message, line, column}],
//          parameters, writeRules, procedures: [{name, mode, admin}], functions: [{name, builtIn}]}]}
//
// - Statements are analysed as Cypher 5 (Neo4j 5's default language).
// - `parameters`: names to declare; when absent, every $parameter of the statement is declared
//   (found by Neo4j's parser), so "Parameter $x is not defined" never fires for those.
// - Functions and procedures are checked against the catalogue the package ships
//   (testData.mockSchema: a Neo4j 5 server's built-ins, procedures and plugins), without the
//   plugin namespaces apoc.* and gds.* (a stock Neo4j has neither): a misspelt or
//   ArcadeDB-only function or procedure is an error.  Labels, relationship types and property
//   keys are not given, so nothing is reported about them.
// - writeRules: the parse-tree rules of Neo4j's grammar that make the statement a write or an
//   administration command (clauses CREATE, INSERT, MERGE, SET, REMOVE, DELETE, FOREACH,
//   LOAD CSV, CALL {...} IN TRANSACTIONS; schema / admin commands; TERMINATE).
// - procedures: each procedure a CALL names, with its mode in the catalogue (READ, WRITE,
//   SCHEMA, DBMS, DEFAULT) and whether it is an admin procedure (both null when the catalogue
//   has no such procedure; looked up ignoring case, as ArcadeDB resolves names).
// - functions: each namespaced function call, with whether the catalogue has it as a built-in.
// - Neo4j's semantic analysis takes 10 ms to 1 s a statement: they are shared among worker
//   threads, one per core (at most 8; CYPHER_LINT_THREADS=n to choose).
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const PKG = '@neo4j-cypher/language-support';
const folder = resolve(isMainThread ? (process.argv[2] ?? '.cypher-lint') : workerData.folder);
const pkgDir = join(folder, 'node_modules', PKG);
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const ls = await import(pathToFileURL(join(pkgDir, pkg.exports['.'].import)).href);
const { lintCypherQuery, parseParameters, getDebugTree, testData } = ls;
const VERSION = 'CYPHER 5';
const PLUGINS = /^(apoc|gds)\./i;

function catalogue() {
  const ms = testData?.mockSchema;
  const pick = (reg) => Object.fromEntries(Object.entries(reg?.[VERSION] ?? {}).filter(([n]) => !PLUGINS.test(n)));
  if (!ms?.functions?.[VERSION] || !ms?.procedures?.[VERSION]) return null;
  return { functions: { [VERSION]: pick(ms.functions) }, procedures: { [VERSION]: pick(ms.procedures) } };
}

const WRITE_RULES = new Set([
  'createClause', 'insertClause', 'mergeClause', 'setClause', 'removeClause', 'deleteClause',
  'foreachClause', 'loadCSVClause', 'subqueryInTransactionsParameters',
  // schema and administration commands (SHOW ... is read: showAdminCommand, composableShowCommandClauses)
  'createCommand', 'dropCommand', 'alterCommand', 'renameCommand', 'denyCommand', 'revokeCommand',
  'grantCommand', 'startDatabase', 'stopDatabase', 'enableServerCommand', 'allocationCommand',
  'terminateCommand',
]);

function text(node) {
  // the source text of a subtree (terminals are leaves; whitespace is not in the tree)
  if (!node.children || node.children.length === 0) return node.name;
  return node.children.map(text).join('');
}

function qualifiedName(node) {
  // procedureName / functionName: namespace symbolicNameString, where namespace is
  // (symbolicNameString '.')* and may be an empty rule (a leaf that is not a token)
  const [ns, last] = node.children;
  return ((ns.children ?? []).map(text).join('') + text(last)).replace(/`/g, '');
}

function walk(node, out) {
  if (WRITE_RULES.has(node.name)) out.writeRules.add(node.name);
  if (node.name === 'callClause') {
    const p = node.children.find((c) => c.name === 'procedureName');
    if (p) out.procedures.add(qualifiedName(p));
  } else if (node.name === 'functionInvocation') {
    const f = node.children.find((c) => c.name === 'functionName');
    if (f) {
      const name = qualifiedName(f);
      if (name.includes('.')) out.functions.add(name);
    }
  }
  for (const c of node.children ?? []) walk(c, out);
}

const cat = catalogue();
const procs = cat?.procedures[VERSION] ?? {};
const funcs = cat?.functions[VERSION] ?? {};
const procsLower = Object.fromEntries(Object.values(procs).map((p) => [p.name.toLowerCase(), p]));
const builtIn = new Set(Object.values(funcs).filter((f) => f.isBuiltIn).map((f) => f.name.toLowerCase()));

function check({ name, query, parameters }) {
  const found = parseParameters(query, false);
  const declared = parameters ?? found;
  const schema = { defaultLanguage: VERSION, parameters: Object.fromEntries(declared.map((p) => [p, null])), ...(cat ?? {}) };
  let diagnostics;
  try {
    diagnostics = lintCypherQuery(query, schema, { consoleCommandsEnabled: false }).diagnostics.map((d) => ({
      severity: d.severity === 1 ? 'error' : d.severity === 2 ? 'warning' : 'info',
      message: d.message,
      line: d.range.start.line + 1,
      column: d.range.start.character + 1,
    }));
  } catch (e) {
    diagnostics = [{ severity: 'error', message: `the linter failed: ${e}`, line: 1, column: 1 }];
  }
  const out = { writeRules: new Set(), procedures: new Set(), functions: new Set() };
  try {
    walk(getDebugTree(query), out);
  } catch {
    /* no tree: the diagnostics say why */
  }
  return {
    name,
    diagnostics,
    parameters: found,
    writeRules: [...out.writeRules].sort(),
    procedures: [...out.procedures].map((p) => {
      const known = procs[p] ?? procsLower[p.toLowerCase()]; // the console's allow-list is lower case
      return { name: p, mode: known?.mode ?? null, admin: known?.admin ?? null };
    }),
    functions: [...out.functions].map((f) => ({ name: f, builtIn: builtIn.has(f.toLowerCase()) })),
  };
}

if (!isMainThread) {
  // a worker: check its share, send the results back
  parentPort.postMessage(workerData.items.map(([i, item]) => [i, check(item)]));
} else {
  // the statements are shared among the threads, longest first
  const input = JSON.parse(readFileSync(0, 'utf8'));
  const order = input.map((item, i) => [i, item]).sort((a, b) => b[1].query.length - a[1].query.length);
  const n = Number(process.env.CYPHER_LINT_THREADS) || Math.max(1, Math.min(8, availableParallelism(), Math.ceil(input.length / 8)));
  const shares = Array.from({ length: n }, () => []);
  order.forEach((entry, k) => shares[k % n].push(entry));
  const results = new Array(input.length);
  const script = fileURLToPath(import.meta.url);
  const workers = shares.slice(1).map(
    (items) =>
      new Promise((ok, fail) => {
        const w = new Worker(script, { workerData: { folder, items } });
        w.once('message', (r) => {
          r.forEach(([i, x]) => (results[i] = x));
          ok();
        });
        w.once('error', fail);
        w.once('exit', (code) => (code === 0 ? ok() : fail(new Error(`worker exited with ${code}`))));
      }),
  );
  for (const [i, item] of shares[0]) results[i] = check(item); // this thread's share, while the workers run
  await Promise.all(workers);
  process.stdout.write(JSON.stringify({
    version: pkg.version,
    catalogue: cat ? { functions: Object.keys(funcs).length, procedures: Object.keys(procs).length } : null,
    workers: n,
    results,
  }));
}
