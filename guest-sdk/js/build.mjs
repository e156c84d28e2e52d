#!/usr/bin/env node
/**
 * Builds a JavaScript (or TypeScript) weir handler into a component:
 *
 *     node guest-sdk/js/build.mjs [options] <entry.js> <out.wasm>
 *
 * 1. bundles the entry module, its own modules and this SDK (`weir`, `weir/state`) into one ES
 *    module with rolldown, leaving `weir:handler/*` to the component's bindings;
 * 2. makes that module a component of weir's `handler` world with componentize-js. A handler
 *    whose bundle never imports `weir:handler/state` is built against the same world less that
 *    import, so its component does not import state and weir keeps none for it.
 *
 * Options:
 *   --wit DIR       weir's WIT (default: the repository's wit/, found from this file)
 *   --world NAME    the world (default: handler)
 *   --with-http     keep componentize-js's wasi:http (fetch); by default it is left out, since
 *                   weir denies every request anyway
 *   --keep-bundle   keep the bundled module and say where
 *
 * Needs Node.js 20.19 or later, rolldown, @bytecodealliance/componentize-js and
 * @bytecodealliance/preview2-shim, in the node_modules of this file's directory or one above it
 * (the repository's, or a project's).
 */

import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
const DEFAULT_WIT = resolve(SDK_DIR, '../../wit');
const ALLOWED_IMPORTS = ['weir:handler/host@0.2.0', 'weir:handler/state@0.2.0'];
const STATE_IMPORT = 'weir:handler/state@0.2.0';

/** This package's entry points (as package.json exports them), for `import ... from 'weir'`. */
const SDK_ENTRIES = {
  weir: 'index.js',
  'weir/state': 'state.js',
};

class BuildError extends Error {}

function usage() {
  return 'usage: node build.mjs [--wit DIR] [--world NAME] [--with-http] [--keep-bundle] <entry.js> <out.wasm>';
}

function parseArgs(argv) {
  const opts = { wit: DEFAULT_WIT, world: 'handler', withHttp: false, keepBundle: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--wit' || arg === '--world') {
      const value = argv[++i];
      if (value === undefined) throw new BuildError(`${arg} needs a value\n${usage()}`);
      opts[arg.slice(2)] = arg === '--wit' ? resolve(value) : value;
    } else if (arg === '--with-http') {
      opts.withHttp = true;
    } else if (arg === '--keep-bundle') {
      opts.keepBundle = true;
    } else if (arg === '-h' || arg === '--help') {
      console.log(usage());
      process.exit(0);
    } else if (arg.startsWith('-')) {
      throw new BuildError(`unknown option ${arg}\n${usage()}`);
    } else {
      opts.files.push(arg);
    }
  }
  if (opts.files.length !== 2) throw new BuildError(usage());
  return opts;
}

/**
 * Imports a build tool from the node_modules of this file's directory or one above it (the
 * repository's, or a project's that `weir init` wrote), saying what was missing if it cannot.
 */
async function tool(name, hint) {
  try {
    return await import(name);
  } catch (error) {
    if (error?.code !== 'ERR_MODULE_NOT_FOUND') throw error;
    // The tool itself, or something it imports (componentize-js 0.23.0 imports
    // @bytecodealliance/preview2-shim without depending on it).
    throw new BuildError(`cannot load ${name} (${String(error.message).split('\n')[0]}): ${hint}`);
  }
}

function seconds(since) {
  return `${((performance.now() - since) / 1000).toFixed(1)}s`;
}

function size(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** Bundles `entry` into `file`; returns the external modules the bundle imports. */
async function bundle(entry, file) {
  const { rolldown } = await tool('rolldown', 'install it (npm install rolldown), or run npm ci in weir');
  const warnings = [];
  const build = await rolldown({
    input: entry,
    platform: 'browser',
    external: [/^weir:handler\//],
    treeshake: {
      // An import of weir's state that the handler never uses is dropped, so the component
      // does not import state.
      moduleSideEffects: [{ test: /^weir:handler\//, external: true, sideEffects: false }],
    },
    plugins: [
      {
        name: 'weir-sdk',
        resolveId(source) {
          const own = SDK_ENTRIES[source];
          return own === undefined ? null : join(SDK_DIR, own);
        },
      },
    ],
    onLog(level, log) {
      if (level === 'warn') warnings.push(log.message);
    },
  }).catch((e) => {
    throw new BuildError(`bundling failed: ${e?.message ?? e}`);
  });
  let output;
  try {
    ({ output } = await build.write({ file, format: 'es', codeSplitting: false }));
  } catch (e) {
    throw new BuildError(`bundling failed: ${e?.message ?? e}`);
  } finally {
    await build.close();
  }
  for (const warning of warnings) console.error(`build.mjs: warning: ${warning}`);
  const chunk = output.find((o) => o.type === 'chunk');
  // What the bundle's code imports (the chunk's `imports` also names externals whose every
  // use was shaken out).
  const { parseAst } = await tool('rolldown/parseAst', 'install rolldown');
  const imports = [];
  const visit = (node) => {
    if (node === null || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(visit);
    const isImport =
      node.type === 'ImportDeclaration' ||
      node.type === 'ExportAllDeclaration' ||
      node.type === 'ExportNamedDeclaration' ||
      node.type === 'ImportExpression';
    if (isImport && node.source) {
      const source = node.source.type === 'Literal' ? node.source.value : '(a computed module name)';
      if (!imports.includes(source)) imports.push(source);
    }
    for (const key of Object.keys(node)) if (key !== 'source') visit(node[key]);
  };
  visit(parseAst(chunk.code, { sourceType: 'module' }));
  const foreign = imports.filter((i) => !ALLOWED_IMPORTS.includes(i));
  if (foreign.length > 0) {
    throw new BuildError(
      `${relative(process.cwd(), entry)} imports ${foreign.join(', ')}, which a component cannot: ` +
        `inside weir there are only ${ALLOWED_IMPORTS.join(' and ')} (no node: modules)`,
    );
  }
  return imports;
}

/**
 * A copy of the WIT package at `wit` with a world `<world>-stateless`: `world` without its
 * `import state;`. Undefined if `world` has no such line.
 */
async function statelessWit(wit, world, dir) {
  const files = (await stat(wit)).isDirectory()
    ? (await readdir(wit)).filter((f) => f.endsWith('.wit')).map((f) => join(wit, f))
    : [wit];
  const worldStart = new RegExp(`^(\\s*)world\\s+${world.replace(/[-]/g, '\\-')}\\s*\\{`, 'm');
  await mkdir(dir, { recursive: true });
  let found;
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    await copyFile(file, join(dir, basename(file)));
    const match = worldStart.exec(text);
    if (!match) continue;
    // The world's body, to its closing brace (worlds hold no nested braces but `{...}` in
    // `use` lists, which are balanced).
    let depth = 0;
    let end = match.index + match[0].length - 1;
    for (; end < text.length; end++) {
      if (text[end] === '{') depth++;
      else if (text[end] === '}' && --depth === 0) break;
    }
    const body = text.slice(match.index, end + 1);
    const without = body.replace(/^\s*import\s+state\s*;[^\n]*\n/m, '');
    if (without === body) return undefined;
    const pkg = /^\s*package\s+([^;]+);/m.exec(text);
    if (!pkg) return undefined;
    found = `package ${pkg[1]};\n\n${without.replace(worldStart, `$1world ${world}-stateless {`)}\n`;
  }
  if (found === undefined) return undefined;
  await writeFile(join(dir, 'weir-js-stateless.wit'), found);
  return { wit: dir, world: `${world}-stateless` };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const entry = resolve(opts.files[0]);
  const out = resolve(opts.files[1]);
  await stat(entry).catch(() => {
    throw new BuildError(`no such file: ${opts.files[0]}`);
  });
  await stat(opts.wit).catch(() => {
    throw new BuildError(`no WIT at ${opts.wit} (give --wit DIR)`);
  });
  const work = await mkdtemp(join(tmpdir(), 'weir-js-'));
  try {
    const started = performance.now();
    const bundled = join(work, 'handler.js');
    console.log(`bundling ${relative(process.cwd(), entry) || entry} with the weir SDK (rolldown)`);
    const imports = await bundle(entry, bundled);
    const bundleBytes = (await stat(bundled)).size;
    console.log(`  ${size(bundleBytes)}, imports ${imports.join(', ') || 'nothing of weir'}`);

    let wit = opts.wit;
    let world = opts.world;
    if (!imports.includes(STATE_IMPORT)) {
      const stateless = await statelessWit(opts.wit, opts.world, join(work, 'wit'));
      if (stateless) {
        ({ wit, world } = stateless);
        console.log(`  uses no state: building against ${world} (${opts.world} without import state)`);
      } else {
        console.log(`  uses no state, but world ${opts.world} has no "import state;" to leave out`);
      }
    }

    const { componentize } = await tool(
      '@bytecodealliance/componentize-js',
      'install it (npm install @bytecodealliance/componentize-js@0.23.0), or run npm ci in weir',
    );
    const disableFeatures = opts.withHttp ? [] : ['http', 'fetch-event'];
    console.log(
      `componentizing against world ${world} of ${relative(process.cwd(), opts.wit) || opts.wit}` +
        (disableFeatures.length ? ' (without wasi:http)' : '') +
        ' (componentize-js)',
    );
    const componentStarted = performance.now();
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: bundled,
        witPath: wit,
        worldName: world,
        disableFeatures,
      }));
    } catch (e) {
      throw new BuildError(`componentize-js failed: ${e?.message ?? e}`);
    }
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, component);
    console.log(
      `wrote ${relative(process.cwd(), out) || out}: ${size(component.length)} ` +
        `(componentized in ${seconds(componentStarted)}, ${seconds(started)} in all)`,
    );
    if (opts.keepBundle) {
      const kept = out.replace(/\.wasm$/, '') + '.bundle.js';
      await copyFile(bundled, kept);
      console.log(`kept the bundle: ${relative(process.cwd(), kept)}`);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  if (e instanceof BuildError) {
    console.error(`build.mjs: ${e.message}`);
  } else {
    console.error(`build.mjs: ${e?.stack ?? e}`);
  }
  process.exit(1);
});
