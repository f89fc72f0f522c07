// AWS's Amplify AppSync simulator (graphql-js, AppSync's scalars, VTL mapping templates) with
// the Tiketo schema and a Lambda data source, behind a stand-in for Tiketo's Lambda
// authorizer (the simulator has none for a TOKEN header): `Authorization: TOKEN <t>` with the
// workspace token or a device token it issued is forwarded with the simulator's API key;
// anything else is AppSync's 401 UnauthorizedException with x-amzn-ErrorType.
//
//   node host.js SCHEMA.graphql PORT WORKSPACE_TOKEN
//
// Passes: VALID-0001 (valid), VOIDED-0001 (voided), EXPIRED-0001 (expired). A scan event for
// THROW-0001 makes the Lambda throw. GET /__events lists the recorded scan events.
const http = require('http');
const fs = require('fs');
const { AmplifyAppSyncSimulator } = require('amplify-appsync-simulator');

const [schemaPath, portArg, workspace] = process.argv.slice(2);
const port = parseInt(portArg, 10);
// AppSync's own scalars are built in: a schema that declares them is refused.
const sdl = fs.readFileSync(schemaPath, 'utf8').replace(/("[^"\n]*"\n)?scalar AWS\w+\n/g, '');
const API_KEY = 'da2-tiketo-test';
const devices = new Set();
const events = [];
const passes = {
  'VALID-0001': { id: 'pass-valid-1', templateId: 'tpl-entry', expirationDate: '2099-12-31T23:59:59Z', voided: false },
  'VOIDED-0001': { id: 'pass-voided-1', templateId: 'tpl-entry', expirationDate: null, voided: true },
  'EXPIRED-0001': { id: 'pass-expired-1', templateId: 'tpl-entry', expirationDate: '2020-01-01T00:00:00.000Z', voided: false },
  'THROW-0001': { id: 'pass-throw-1', templateId: 'tpl-entry', expirationDate: null, voided: false },
};

async function lambda(payload) {
  const args = payload.arguments || {};
  switch (payload.fieldName) {
    case 'passByScanCode': {
      const p = passes[args.code];
      return p ? { ...p, project: { id: 'proj-main', scanConfig: null } } : null;
    }
    case 'createScanEvent': {
      if (args.input.code === 'THROW-0001') throw new Error('the Lambda threw');
      if (!passes[args.input.code]) throw new Error('no pass has this scan code');
      const e = { id: 'ev-' + (events.length + 1), code: args.input.code, voided: false, data: args.input.data || null };
      events.push(e);
      return e;
    }
    case 'registerDevice': {
      const token = 'dev-' + Math.random().toString(36).slice(2);
      devices.add(token);
      return { workspaceName: 'Simulated Venue', token };
    }
    default:
      return null;
  }
}

const sim = new AmplifyAppSyncSimulator({ port: port + 1, wsPort: port + 2 });
sim.init({
  schema: { content: sdl },
  appSync: {
    name: 'tiketo',
    defaultAuthenticationType: { authenticationType: 'API_KEY' },
    apiKey: API_KEY,
    additionalAuthenticationProviders: [],
  },
  dataSources: [{ type: 'AWS_LAMBDA', name: 'lambda', invoke: lambda }],
  resolvers: [
    ['Query', 'passByScanCode'],
    ['Mutation', 'createScanEvent'],
    ['Mutation', 'registerDevice'],
  ].map(([typeName, fieldName]) => ({
    kind: 'UNIT',
    typeName,
    fieldName,
    dataSourceName: 'lambda',
    requestMappingTemplate:
      '{"version": "2018-05-29", "operation": "Invoke", "payload": {"fieldName": "$ctx.info.fieldName", "arguments": $util.toJson($ctx.args)}}',
    responseMappingTemplate: '$util.toJson($ctx.result)',
  })),
});

const authorizer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/__events') {
    res.setHeader('content-type', 'application/json');
    return res.end(JSON.stringify(events));
  }
  const auth = req.headers['authorization'] || '';
  const token = auth.startsWith('TOKEN ') ? auth.slice(6) : null;
  if (token !== workspace && !devices.has(token)) {
    res.writeHead(401, { 'content-type': 'application/json', 'x-amzn-ErrorType': 'UnauthorizedException' });
    return res.end(JSON.stringify({ errors: [{ errorType: 'UnauthorizedException', message: 'You are not authorized to make this call.' }] }));
  }
  const headers = { ...req.headers, 'x-api-key': API_KEY };
  delete headers['authorization'];
  const up = http.request({ host: '127.0.0.1', port: port + 1, path: req.url, method: req.method, headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', (e) => {
    res.writeHead(502);
    res.end(String(e));
  });
  req.pipe(up);
});

sim.start().then(() => {
  authorizer.listen(port, '127.0.0.1', () => console.log('listening http://127.0.0.1:' + port + '/graphql'));
});
process.on('SIGTERM', () => process.exit(0));
