"""
A real OpenID Connect provider (node-oidc-provider, pinned in tests/package.json) on a free
loopback port, with a client for the gateway and a few accounts whose groups the tests pick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.fake_upstream import _free_port, wait_for_http

TESTS = Path(__file__).resolve().parent
CLIENT_ID = "llmapi-portal"
CLIENT_SECRET = "portal-client-secret-for-tests"  # noqa: S105 (a throw-away provider's)


def node_modules_ready() -> bool:
    return (TESTS / "node_modules" / "oidc-provider" / "package.json").is_file()


def install_node_modules() -> None:
    """`npm ci` from the lock file, once (scripts/test does it too)."""
    if node_modules_ready():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the OpenID Connect provider (Debian: npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TESTS, check=True)


@dataclass
class OidcProvider:
    issuer: str
    process: subprocess.Popen
    log_path: Path

    def gateway_env(self, **extra: str) -> dict[str, str]:
        """The gateway's settings for signing in through this provider."""
        return {
            "OIDC__ISSUER": self.issuer,
            "OIDC__CLIENT_ID": CLIENT_ID,
            "OIDC__CLIENT_SECRET": CLIENT_SECRET,
            "OIDC__SCOPES": "openid email profile groups",
            "OIDC__PROVIDER_NAME": "Test IdP",
            **extra,
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_provider(*, accounts: dict, log_path: Path) -> OidcProvider:
    install_node_modules()
    port = _free_port()
    config = {
        "port": port,
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                # Any loopback port is accepted (see oidc_provider.mjs): the gateways' ports are
                # picked after the provider starts.
                "redirect_uris": ["http://127.0.0.1/oidc/callback/"],
                "post_logout_redirect_uris": ["http://127.0.0.1/portal/login"],
                "token_endpoint_auth_method": "client_secret_post",
            }
        ],
        "accounts": accounts,
    }
    env = {**os.environ, "OIDC_TEST_CONFIG": json.dumps(config)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [shutil.which("node") or "/usr/bin/node", str(TESTS / "oidc_provider.mjs")],
            cwd=TESTS,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    issuer = f"http://127.0.0.1:{port}"
    provider = OidcProvider(issuer, process, log_path)
    try:
        wait_for_http(f"{issuer}/.well-known/openid-configuration", process=process, log=log_path)
    except RuntimeError:
        provider.stop()
        raise
    return provider
