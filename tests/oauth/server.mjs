// Real OAuth2 authorization server for the idm-gateway integration tests.
//
// Configured entirely from the environment:
//   PORT               port to listen on (127.0.0.1), required
//   CLIENT_ID          the single registered client, default "gateway"
//   CLIENT_SECRET      its secret, default "gateway-secret"
//   TOKEN_AUTH_METHOD  client_secret_basic (default) or client_secret_post
//   SCOPES             space separated scopes the client may request
//   TOKEN_TTL          client_credentials access token lifetime in seconds (default 3600)
//   EXTRA_CLIENTS      JSON array of more client_credentials clients
//                      [{"client_id","client_secret","scope"}] (client_secret_basic)
//   ACCESS_TOKEN_FORMAT opaque (default) or jwt: RS256 JWT access tokens for
//                      AUDIENCE, verifiable with the keys at <issuer>/jwks
//   AUDIENCE           the JWT access tokens' audience (default "idm-gateway")
//
// Client-credentials tokens carry the client id as their subject (`sub`), as
// ForgeRock AM's do, so a resource server can map the client to a local user.
//
// Prints a line "READY <issuer>" on stdout once it is listening.
// Token endpoint: <issuer>/token, introspection: <issuer>/token/introspection.

import crypto from 'node:crypto';
import process from 'node:process';
import Provider from 'oidc-provider';

const port = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`invalid or missing PORT: ${process.env.PORT}`);
  process.exit(2);
}

const clientId = process.env.CLIENT_ID || 'gateway';
const clientSecret = process.env.CLIENT_SECRET || 'gateway-secret';
const authMethod = process.env.TOKEN_AUTH_METHOD || 'client_secret_basic';
if (!['client_secret_basic', 'client_secret_post'].includes(authMethod)) {
  console.error(`unsupported TOKEN_AUTH_METHOD: ${authMethod}`);
  process.exit(2);
}
const scopes = (process.env.SCOPES || '').split(/\s+/).filter(Boolean);
const ttl = Number.parseInt(process.env.TOKEN_TTL || '3600', 10);
if (!Number.isInteger(ttl) || ttl <= 0) {
  console.error(`invalid TOKEN_TTL: ${process.env.TOKEN_TTL}`);
  process.exit(2);
}

const issuer = `http://127.0.0.1:${port}`;

let extraClients = [];
try {
  extraClients = JSON.parse(process.env.EXTRA_CLIENTS || '[]');
} catch (e) {
  console.error(`invalid EXTRA_CLIENTS: ${e.message}`);
  process.exit(2);
}
const tokenFormat = process.env.ACCESS_TOKEN_FORMAT || 'opaque';
if (!['opaque', 'jwt'].includes(tokenFormat)) {
  console.error(`unsupported ACCESS_TOKEN_FORMAT: ${tokenFormat}`);
  process.exit(2);
}
const audience = process.env.AUDIENCE || 'idm-gateway';
// JWT access tokens: a fresh signing key per run (nothing secret is stored with the
// tests). Opaque tokens need none (oidc-provider's own development keys sign nothing
// the tests read).
let jwks;
if (tokenFormat === 'jwt') {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' }] };
}

const client = {
  client_id: clientId,
  client_secret: clientSecret,
  token_endpoint_auth_method: authMethod,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
};
if (scopes.length > 0) {
  // Restricts what the client may request; requesting anything else is invalid_scope.
  client.scope = scopes.join(' ');
}

const allScopes = new Set(scopes);
const clients = [client];
for (const c of extraClients) {
  const extra = {
    client_id: c.client_id,
    client_secret: c.client_secret,
    token_endpoint_auth_method: authMethod,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  };
  if (c.scope) {
    extra.scope = c.scope;
    for (const s of c.scope.split(/\s+/).filter(Boolean)) allScopes.add(s);
  }
  clients.push(extra);
}

const provider = new Provider(issuer, {
  clients,
  ...(jwks ? { jwks } : {}),
  // Requested scopes are filtered down to the statically known ones, so every
  // scope the tests use must be listed here to end up in the issued token.
  scopes: ['openid', 'offline_access', ...allScopes],
  extraTokenClaims: async (_ctx, token) => (
    token.kind === 'ClientCredentials' && !token.accountId ? { sub: token.clientId } : undefined
  ),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // Opaque tokens: no audience / resource server needed. JWT tokens: one
    // resource server (the gateway), the default resource of every request.
    resourceIndicators: tokenFormat === 'jwt' ? {
      enabled: true,
      defaultResource: async () => `urn:${audience}`,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: [...allScopes].join(' '),
        audience,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    } : { enabled: false },
  },
  ttl: {
    ClientCredentials: ttl,
  },
  // Fixed, test-only cookie keys (no cookies are used by client_credentials anyway).
  cookies: { keys: ['idm-gateway-test-only-cookie-key'] },
});

// oidc-provider accepts client_secret_basic and client_secret_post
// interchangeably for a client registered with either. The tests want to
// prove the gateway uses the configured method, so enforce it strictly here:
// a client_secret_basic client must send HTTP Basic, a client_secret_post
// client must not (its credentials go in the form body).
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path.startsWith('/token')) {
    const basic = /^basic\s/i.test(ctx.get('authorization'));
    if ((authMethod === 'client_secret_basic') !== basic) {
      ctx.status = 401;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = {
        error: 'invalid_client',
        error_description: `client authentication must use ${authMethod}`,
      };
      console.error(`rejected ${ctx.path}: client did not use ${authMethod}`);
      return;
    }
  }
  await next();
});

provider.on('server_error', (ctx, err) => {
  console.error('server_error', err);
});
provider.on('grant.error', (ctx, err) => {
  console.error('grant.error', err.message, err.error_description ?? '');
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});

const shutdown = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// Exit when the parent (the Rust test) closes our stdin, so no orphan node
// process survives a test that panicked before its Drop ran.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
