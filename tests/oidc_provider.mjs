// A real OpenID Connect provider for the tests (node-oidc-provider), configured from the
// OIDC_TEST_CONFIG environment variable (JSON): {port, clients: [...], accounts: {login: {...}}}.
// Its development sign-in form accepts any password for a login listed in `accounts`.
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name', 'given_name', 'family_name'],
    groups: ['groups'],
  },
  cookies: { keys: ['test-cookie-key'] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: account.sub || id,
          email: account.email,
          email_verified: true,
          preferred_username: id,
          name: account.name || id,
          groups: account.groups || [],
        };
      },
    };
  },
  // A first-party client: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
});

// The gateways under test run on free ports: any loopback address is a valid redirect.
const loopback = (uri) => {
  try {
    return new URL(uri).hostname === '127.0.0.1';
  } catch {
    return false;
  }
};
provider.Client.prototype.redirectUriAllowed = loopback;
provider.Client.prototype.postLogoutRedirectUriAllowed = loopback;

provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
