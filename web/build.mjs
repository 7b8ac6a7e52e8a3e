// Builds the run view into dist/: app.js (the bundle, dagre included), app.css and
// index.html. The binary embeds dist/, which is committed; CI rebuilds it and fails when
// the result differs from what is committed.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'iife',
  target: ['es2022'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  outfile: 'dist/app.js',
  logLevel: 'warning',
});
await build({
  entryPoints: ['src/app.css'],
  bundle: true,
  minify: true,
  charset: 'utf8',
  outfile: 'dist/app.css',
  logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
