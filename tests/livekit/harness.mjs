#!/usr/bin/env node
// SPDX-License-Identifier: MPL-2.0
//
// LiveKit E2EE harness: reads one JSON request on stdin, writes one JSON response on stdout.
// See README.md for the request and response format.

import { handleFramesRequest, RequestError } from './lib/requests.mjs';
import { layoutReport } from './lib/layout.mjs';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Writes the response and exits: LiveKit's worker leaves timers behind (a 2 s watchdog after a
 * decrypt pipe closes) that would otherwise keep the process alive for nothing.
 */
function respond(response, exitCode) {
  process.stdout.write(`${JSON.stringify(response)}\n`, () => process.exit(exitCode));
}

function fail(message, exitCode) {
  respond({ ok: false, error: message }, exitCode);
}

async function main() {
  let req;
  try {
    req = JSON.parse(await readStdin());
  } catch (e) {
    return fail(`request is not JSON: ${e.message}`, 2);
  }
  if (!req || typeof req !== 'object') return fail('request must be a JSON object', 2);
  let response;
  try {
    if (req.op === 'encrypt' || req.op === 'decrypt') {
      response = await handleFramesRequest(req);
    } else if (req.op === 'layout') {
      response = await layoutReport();
    } else {
      return fail(`op must be "encrypt", "decrypt" or "layout", got ${JSON.stringify(req.op)}`, 2);
    }
  } catch (e) {
    if (e instanceof RequestError) return fail(e.message, 2);
    return fail(`harness failure: ${e.stack ?? e}`, 1);
  }
  respond(response, 0);
}

await main();
