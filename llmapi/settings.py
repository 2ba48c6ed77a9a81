"""
Django settings for llmapi.

Everything a deployment changes comes from the environment (or a `.env` file beside
`manage.py`), read once here with django-environ. `.env.example` documents every name.
"""

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# ENV_FILE lets tests and deployments pick another file (or /dev/null for none).
_env_file = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if _env_file.is_file():
    environ.Env.read_env(_env_file)


def _setting(cast: str, name: str, default):
    """Read a typed variable; an empty value (`NAME=` in .env) means the default."""
    if not env.str(name, default="").strip():
        return default
    return getattr(env, cast)(name)


# --- Django core -----------------------------------------------------------------------------

# SECRET_KEY signs what Django signs (password reset tokens, the admin's session hashes).
# Unset, it is random per run: staff sessions then end when the server restarts. The
# generated key goes into the environment so that `serve --workers N`'s worker processes,
# started from it, share it.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
DEBUG = _setting("bool", "DJANGO_DEBUG", False)
# Host names this server answers to (a request for any other gets a 400 naming this setting):
# by default the address `serve` binds and the loopback names. Behind a proxy or a DNS name,
# list the names clients use (`api.example.com`; `.example.com` for its subdomains too).
_LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# Addresses that bind every interface: they name no host a client would send.
SERVER_WILDCARD_ADDRESSES = ("0.0.0.0", "::")  # noqa: S104 (compared with, not bound)
_serve_host = env.str("SERVER__HOST", default="127.0.0.1")
ALLOWED_HOSTS_FROM_ENVIRONMENT = [
    host.strip() for host in env.str("ALLOWED_HOSTS", default="").split(",") if host.strip()
]
ALLOWED_HOSTS = ALLOWED_HOSTS_FROM_ENVIRONMENT or [
    *_LOOPBACK_HOSTS,
    *(
        []
        if _serve_host in ("", "::1", *SERVER_WILDCARD_ADDRESSES, *_LOOPBACK_HOSTS)
        else [f"[{_serve_host}]" if ":" in _serve_host else _serve_host]
    ),
]
# Behind a TLS-terminating proxy: the header (and value) by which that proxy, and only it,
# says the client used https, e.g. `X-Forwarded-Proto,https`. Set it only when the proxy
# overwrites the header: otherwise any client could claim https.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER takes a header and a value: X-Forwarded-Proto,https"
        )
    _header = "HTTP_" + _proxy_ssl_header[0].strip().upper().replace("-", "_")
    SECURE_PROXY_SSL_HEADER = (_header, _proxy_ssl_header[1].strip())

INSTALLED_APPS = [
    # contenttypes, auth, sessions, messages and admin: the operators' admin (teams, keys,
    # the usage dashboard) and their staff login for the browsable API.
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Failed logins counted per account and per address (accounts/login_limits.py).
    "axes",
    # The gateway's own apps, in the order a request meets them: how HTTP gets in, the shared
    # API layer, who is calling, limits, the inference core, the three surfaces, what is
    # recorded, and the pages for people.
    "server",
    "api",
    "accounts",
    "limits",
    "inference",
    "completions",
    "openai_compat",
    "responses",
    "anthropic_compat",
    "health",
    "usage",
    "batches",
    "observability",
    "audit",
    "playground",
    "portal",
]

MIDDLEWARE = [
    "server.middleware.RequestIdMiddleware",
    # Timing headers, metrics and the summary log line; inside the request id, so it is logged.
    "observability.middleware.ObservabilityMiddleware",
    # A request for a host not in ALLOWED_HOSTS: 400, before anything reads the host.
    "server.middleware.AllowedHostsMiddleware",
    "server.middleware.AsyncSecurityMiddleware",
    "accounts.browser_session.BrowserSessionMiddleware",
    # Sessions, auth and messages for the admin and staff logins only (a no-op for API calls).
    "accounts.middleware.AdminSessionMiddleware",
]

# CORS is off unless origins are listed (for browser apps on another origin).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
if CORS_ALLOWED_ORIGINS:
    INSTALLED_APPS.append("corsheaders")
    MIDDLEWARE.insert(1, "corsheaders.middleware.CorsMiddleware")
    CORS_ALLOW_HEADERS = [
        "authorization",
        "content-type",
        "x-api-key",
        "x-request-id",
        # Anthropic's SDKs send these from a browser too.
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
    ]
    CORS_EXPOSE_HEADERS = ["x-request-id", "retry-after"]

ROOT_URLCONF = "llmapi.urls"
ASGI_APPLICATION = "llmapi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                # The admin's templates need these two.
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# --- Database --------------------------------------------------------------------------------

# Teams, API keys and the usage ledger. SQLite in a file by default (created and migrated by
# `serve`); PostgreSQL with DATABASE_URL=postgres://user:password@host:5432/name.
DATABASE_SQLITE_PATH = Path(
    env.str("DATABASE__SQLITE_PATH", default="") or BASE_DIR / "var" / "llmapi.sqlite3"
)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATABASE_SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg's pool, per worker process: the request path never touches the database (keys
    # are cached, the ledger is written by one background thread), so a handful of
    # connections serves the writer, the cache refreshes and the admin.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": _setting("int", "DATABASE__POOL_MIN", 1),
        "max_size": _setting("int", "DATABASE__POOL_MAX", 4),
        "timeout": _setting("float", "DATABASE__POOL_TIMEOUT", 10.0),
    }
else:
    # SQLite: wait for the writer's lock instead of failing at once. A transaction takes that
    # lock when it begins (IMMEDIATE): one that read first and wrote later would otherwise fail
    # at once ("database is locked") when another process wrote in between, which it cannot
    # wait out (a failed login counted by axes is such a transaction).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Teams, API keys and usage ---------------------------------------------------------------

# Server-side secret mixed into every stored key hash. Empty: read from (or generated once
# into) API_KEYS__PEPPER_FILE. Every worker and host serving one database needs the same one.
API_KEYS_PEPPER = env.str("API_KEYS__PEPPER", default="")
API_KEYS_PEPPER_FILE = Path(
    env.str("API_KEYS__PEPPER_FILE", default="") or BASE_DIR / "var" / "api-key-pepper"
)
# Seconds a key lookup is cached in a worker: the bound on how long a revoked key keeps working.
API_KEYS_CACHE_SECONDS = min(5.0, _setting("float", "API_KEYS__CACHE_SECONDS", 2.0))
# Raw ledger rows are kept this many days; hourly rollups USAGE__ROLLUP_RETENTION_DAYS.
USAGE_RETENTION_DAYS = _setting("int", "USAGE__RETENTION_DAYS", 30)
USAGE_ROLLUP_RETENTION_DAYS = _setting("int", "USAGE__ROLLUP_RETENTION_DAYS", 400)

# Stored responses (/v1/responses with `store`): how long they are kept, how large one may be
# (its conversation included), how many one key keeps (the oldest go first), and whether the
# other keys of the key's team may read them.
RESPONSES_RETENTION_DAYS = _setting("int", "RESPONSES__RETENTION_DAYS", 30)
RESPONSES_MAX_STORED_BYTES = _setting("int", "RESPONSES__MAX_STORED_BYTES", 8 * 1024 * 1024)
RESPONSES_MAX_PER_KEY = _setting("int", "RESPONSES__MAX_PER_KEY", 1000)
RESPONSES_SHARE_WITH_TEAM = _setting("bool", "RESPONSES__SHARE_WITH_TEAM", False)
# Ledger rows waiting to be written; above it rows are counted as dropped, never waited for.
USAGE_QUEUE_SIZE = _setting("int", "USAGE__QUEUE_SIZE", 100_000)
USAGE_BATCH_SIZE = _setting("int", "USAGE__BATCH_SIZE", 500)
# Seconds between the writer's flushes, and between its rollup and retention runs.
USAGE_FLUSH_INTERVAL = _setting("float", "USAGE__FLUSH_INTERVAL", 1.0)
USAGE_ROLLUP_INTERVAL = _setting("float", "USAGE__ROLLUP_INTERVAL", 300.0)
# The ledger's write-ahead journal (usage/journal.py): what a killed worker can lose. Rows
# reach its file once FLUSH_ROWS wait or every FLUSH_MS, whichever is first; a kill loses at
# most FLUSH_ROWS - 1 rows (1: none), and the next worker to start writes the rest. Files
# live beside the SQLite database, or in USAGE__JOURNAL_DIR (one per database).
USAGE_JOURNAL = _setting("bool", "USAGE__JOURNAL", True)
USAGE_JOURNAL_FLUSH_ROWS = _setting("int", "USAGE__JOURNAL_FLUSH_ROWS", 64)
USAGE_JOURNAL_FLUSH_MS = _setting("float", "USAGE__JOURNAL_FLUSH_MS", 100.0)
USAGE_JOURNAL_DIR = env.str("USAGE__JOURNAL_DIR", default="")

# The admin lives here (sessions, CSRF and messages are set up for these paths only, so the
# API's hot path pays nothing for them).
ADMIN_URL_PREFIX = "/admin/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Login attempts (admin, key login, any page taking a password): after LOGIN__FAILURE_LIMIT
# failures for one account or from one address, every attempt is refused (429) for
# LOGIN__LOCKOUT_MINUTES, even with the right password. Staff see and clear lock-outs in the
# admin. Behind a proxy, LOGIN__CLIENT_IP_HEADER names the header that proxy writes the
# client's address in (X-Real-IP); unset, attempts count against the connection's address.
LOGIN_FAILURE_LIMIT = _setting("int", "LOGIN__FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_MINUTES = _setting("float", "LOGIN__LOCKOUT_MINUTES", 15.0)
LOGIN_CLIENT_IP_HEADER = env.str("LOGIN__CLIENT_IP_HEADER", default="")
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = LOGIN_LOCKOUT_MINUTES / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own
AXES_USERNAME_FORM_FIELD = "username"
AXES_CLIENT_IP_CALLABLE = "accounts.login_limits.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.login_limits.lockout_response"
AXES_VERBOSE = False  # accounts.login_limits logs each lock-out, without a start-up banner
# Django's session, auth and messages middleware would hop to a thread twice per request;
# accounts.middleware.AdminSessionMiddleware runs them only for the admin and for staff
# sessions, so Django's checks for their presence in MIDDLEWARE are silenced.
# The same holds for axes' middleware, which runs in the admin's chain.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410", "axes.W002"]

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
APPEND_SLASH = False

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Single sign-on, the portal and the audit log ----------------------------------------------

# OpenID Connect (mozilla-django-oidc): on when OIDC__ISSUER is set. The provider's endpoints
# are read from its discovery document (<issuer>/.well-known/openid-configuration) on first
# use, unless given here.
OIDC_ISSUER = env.str("OIDC__ISSUER", default="").rstrip("/")
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_PROVIDER_NAME = env.str("OIDC__PROVIDER_NAME", default="") or "single sign-on"
OIDC_RP_CLIENT_ID = env.str("OIDC__CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC__CLIENT_SECRET", default="")
OIDC_RP_SIGN_ALGO = env.str("OIDC__SIGN_ALGO", default="") or "RS256"
OIDC_RP_SCOPES = env.str("OIDC__SCOPES", default="") or "openid email profile"
OIDC_ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": env.str("OIDC__AUTHORIZATION_ENDPOINT", default=""),
    "OIDC_OP_TOKEN_ENDPOINT": env.str("OIDC__TOKEN_ENDPOINT", default=""),
    "OIDC_OP_USER_ENDPOINT": env.str("OIDC__USERINFO_ENDPOINT", default=""),
    "OIDC_OP_JWKS_ENDPOINT": env.str("OIDC__JWKS_ENDPOINT", default=""),
    "OIDC_OP_END_SESSION_ENDPOINT": env.str("OIDC__END_SESSION_ENDPOINT", default=""),
}
# The claim that lists a person's groups, and which groups make them what: comma-separated
# `group=team:role` (role admin or member; the team is created on first use) and
# `group=staff` (an operator).
OIDC_GROUPS_CLAIM = env.str("OIDC__GROUPS_CLAIM", default="") or "groups"
OIDC_GROUP_MAP = env.str("OIDC__GROUP_MAP", default="")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = _setting("float", "OIDC__TIMEOUT", 10.0)
# The ID token is kept in the session for the provider's logout (id_token_hint).
OIDC_STORE_ID_TOKEN = True
OIDC_OP_LOGOUT_URL_METHOD = "accounts.single_sign_on.provider_logout_url"
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc_authentication_callback"
# Passwords kept in this database: off, only superusers (the bootstrap account made with
# `manage.py createsuperuser`) may sign in with one; everyone else signs in through the
# identity provider.
AUTH_LOCAL_PASSWORDS = _setting("bool", "AUTH__LOCAL_PASSWORDS", True)
# axes' backend first: it refuses a locked-out account or address before any password check.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.single_sign_on.LocalPasswordBackend",
]
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("accounts.single_sign_on.IdentityProviderBackend")
LOGIN_URL = "/portal/login"
LOGIN_REDIRECT_URL = "/portal/"
LOGIN_REDIRECT_URL_FAILURE = "/portal/login?failed=1"
LOGOUT_REDIRECT_URL = "/portal/login"
# Pages with Django's full session, auth and messages middleware (see accounts/middleware.py).
BROWSER_PAGE_PREFIXES = ("/admin/", "/portal/", "/oidc/")
# Hours a rotated key may keep working beside its replacement (the portal offers up to this).
PORTAL_ROTATION_MAX_OVERLAP_HOURS = _setting("int", "PORTAL__ROTATION_MAX_OVERLAP_HOURS", 168)
# Audit rows older than this are deleted by `manage.py prune_audit`.
AUDIT_RETENTION_DAYS = _setting("int", "AUDIT__RETENTION_DAYS", 400)

# --- Browser sessions (the browsable API's "Log in with API key" and the admin) ------------
# Sessions live on the server (see "Shared limits" below for where): the cookie holds only a
# random session id, so logging out ends a session everywhere, and a copied cookie is dead
# after it. HttpOnly and SameSite=Lax, and it ends with the browser or after 8 hours. CSRF
# tokens are checked for session requests only, never for X-API-Key calls.
SESSION_COOKIE_NAME = "llmapi_session"
SESSION_COOKIE_AGE = 8 * 60 * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_NAME = "llmapi_csrftoken"
CSRF_COOKIE_SAMESITE = "Lax"
# Behind TLS, mark the session and CSRF cookies Secure (browsers then never send them over
# plain http). Off by default because `serve` itself speaks plain http.
SESSION_COOKIE_SECURE = _setting("bool", "SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = _setting("bool", "CSRF_COOKIE_SECURE", False)
# Origins (scheme://host) allowed to post forms behind a proxy that changes the origin.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# JSON bodies larger than this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = _setting("int", "SERVER__MAX_BODY_BYTES", 4 * 1024 * 1024)

# --- Server ----------------------------------------------------------------------------------

SERVER_HOST = _serve_host
SERVER_PORT = _setting("int", "SERVER__PORT", 1999)
SERVER_WORKERS = _setting("int", "SERVER__WORKERS", 1)
# Where `serve` writes its process id, for `manage.py reload_models` (SIGHUP).
SERVER_PID_FILE = env.str("SERVER__PID_FILE", default="") or str(BASE_DIR / "var" / "llmapi.pid")
# Seconds in-flight requests and streams get to finish after SIGTERM.
SERVER_GRACEFUL_TIMEOUT = _setting("float", "SERVER__GRACEFUL_TIMEOUT", 30.0)
# With several workers: seconds a worker has to answer the supervisor's health check before it
# is killed and replaced. uvicorn's own 5 s also counts a new worker's start, before it can
# answer: on a busy machine, starting workers were killed and replaced before they could serve.
SERVER_WORKER_HEALTHCHECK_TIMEOUT = _setting("int", "SERVER__WORKER_HEALTHCHECK_TIMEOUT", 30)
# The cycle collector's thresholds (gc.set_threshold) once start-up is done. Python's own
# (700, 10, 10): each collection pauses the process for well under a millisecond. Rarer
# collections are longer ones: at 50,000 each paused it for tens of milliseconds, which was the
# one-connection p99 (bench/tail_latency.py, bench/results/tail-latency.md).
SERVER_GC_THRESHOLDS = tuple(
    int(value) for value in env.list("SERVER__GC_THRESHOLDS", default=["700", "10", "10"])
)
# Conversation limits (400 above them), beside the body size limit.
SERVER_MAX_MESSAGES = _setting("int", "SERVER__MAX_MESSAGES", 1000)
SERVER_MAX_TOTAL_CHARS = _setting("int", "SERVER__MAX_TOTAL_CHARS", 1_000_000)
# JSON bodies nested deeper than this are refused with 400 (a real request needs about 6).
SERVER_MAX_JSON_DEPTH = _setting("int", "SERVER__MAX_JSON_DEPTH", 64)
# /v1 forwards unknown top-level fields to the model server, except these (400 instead).
OPENAI_DENIED_FIELDS = frozenset(
    name.strip() for name in env.list("OPENAI__DENIED_FIELDS", default=[]) if name.strip()
)
# Seconds a Messages stream may stay silent (a slow server) before a `ping` event is sent.
ANTHROPIC_PING_INTERVAL = _setting("float", "ANTHROPIC__PING_INTERVAL", 10.0)
# Slow and huge clients: the request line and headers may hold this many bytes (431 above it)
# and must arrive within HEADER_TIMEOUT seconds; a body must arrive within BODY_TIMEOUT
# seconds (408, or the connection is closed).
SERVER_MAX_HEADER_BYTES = _setting("int", "SERVER__MAX_HEADER_BYTES", 64 * 1024)
SERVER_HEADER_TIMEOUT = _setting("float", "SERVER__HEADER_TIMEOUT", 10.0)
SERVER_BODY_TIMEOUT = _setting("float", "SERVER__BODY_TIMEOUT", 60.0)

# Comma-separated list of accepted client keys. No default: `manage.py serve` generates one
# for the run when this is empty.
API_KEYS = [key.strip() for key in env.str("API_KEY", default="").split(",") if key.strip()]


# --- Models ----------------------------------------------------------------------------------


def _model_settings(
    prefix: str, *, default_concurrency: int, default_queue_timeout: float = 30.0
) -> dict:
    """Read one model's settings: `<PREFIX>__MODEL_NAME`, `<PREFIX>__LLM_ARGS__TEMPERATURE`, ..."""
    return {
        "model_name": env.str(f"{prefix}__MODEL_NAME", default=""),
        "base_url": env.str(f"{prefix}__BASE_URL", default=""),
        "api_key": env.str(f"{prefix}__API_KEY", default=""),
        "max_concurrency": _setting("int", f"{prefix}__MAX_CONCURRENCY", default_concurrency),
        "timeout": _setting("float", f"{prefix}__TIMEOUT", 120.0),
        "connect_timeout": _setting("float", f"{prefix}__CONNECT_TIMEOUT", 5.0),
        "queue_timeout": _setting("float", f"{prefix}__QUEUE_TIMEOUT", default_queue_timeout),
        # Resilience: retries before the first byte, and outlier ejection of failing replicas.
        "max_retries": _setting("int", f"{prefix}__MAX_RETRIES", 2),
        "eject_after": _setting("int", f"{prefix}__EJECT_AFTER", 3),
        "eject_seconds": _setting("float", f"{prefix}__EJECT_SECONDS", 30.0),
        # prefix | least_busy | round_robin; empty: prefix-aware with several servers.
        "routing": env.str(f"{prefix}__ROUTING", default=""),
        # Structured output: repair attempts for invalid JSON, and how json_schema is sent.
        "json_retries": _setting("int", f"{prefix}__JSON_RETRIES", 1),
        "json_schema_mode": env.str(f"{prefix}__JSON_SCHEMA_MODE", default="auto") or "auto",
        "defaults": {
            "temperature": _setting("float", f"{prefix}__LLM_ARGS__TEMPERATURE", 0.0),
            "max_tokens": _setting("int", f"{prefix}__LLM_ARGS__MAX_TOKENS", 2048),
            "top_p": _setting("float", f"{prefix}__LLM_ARGS__TOP_P", 1.0),
            "frequency_penalty": _setting("float", f"{prefix}__LLM_ARGS__FREQUENCY_PENALTY", 0.0),
            "presence_penalty": _setting("float", f"{prefix}__LLM_ARGS__PRESENCE_PENALTY", 0.0),
            "seed": _setting("int", f"{prefix}__LLM_ARGS__SEED", 0),
        },
    }


_text_is_local = not env.str("TEXT_MODEL__BASE_URL", default="")

# Spreading a model's requests over its servers (docs/routing.md).
ROUTING = {
    # No replica takes a request that brings it above load_factor x the mean load (+1).
    "load_factor": max(1.0, _setting("float", "ROUTING__LOAD_FACTOR", 1.5)),
    # How often the servers' own load (/metrics, /slots) is read, off the request path; 0: never.
    "scrape_seconds": _setting("float", "ROUTING__SCRAPE_SECONDS", 2.0),
    # How long a prompt prefix stays placed on the replica that last served it.
    "placement_seconds": _setting("float", "ROUTING__PLACEMENT_SECONDS", 600.0),
    # Placements each process keeps per model (Redis keeps its own, for placement_seconds).
    "max_placements": _setting("int", "ROUTING__MAX_PLACEMENTS", 100_000),
}

# Any number of named models, with aliases, replicas and fallbacks (YAML; see README, "Models").
# The seed variables below still define the models the seed endpoints use by default.
LLMAPI_MODELS_FILE = env.str("LLMAPI_MODELS_FILE", default="")
# Model name patterns mapped onto catalog models, tried in order after the exact names and
# aliases: "pattern=model" pairs with shell-style patterns. Claude Code asks for claude-*
# names: LLMAPI_MODEL_PATTERNS=claude-*haiku*=small,claude-*=coder


def _model_patterns(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    mapped = []
    for pair in pairs:
        pattern, equals, model = pair.partition("=")
        if not equals or not pattern.strip() or not model.strip():
            raise ImproperlyConfigured(
                f"LLMAPI_MODEL_PATTERNS: '{pair}' is not pattern=model (for example claude-*=coder)."
            )
        mapped.append((pattern.strip(), model.strip()))
    return tuple(mapped)


LLMAPI_MODEL_PATTERNS = _model_patterns(env.list("LLMAPI_MODEL_PATTERNS", default=[]))

# Limits on client JSON Schemas (`response_format`), checked before any model call, and the
# budget for checking a model's answer against one (off the event loop, in its own threads).
STRUCTURED_OUTPUT = {
    "max_schema_bytes": _setting("int", "STRUCTURED_OUTPUT__MAX_SCHEMA_BYTES", 64 * 1024),
    "max_schema_depth": _setting("int", "STRUCTURED_OUTPUT__MAX_SCHEMA_DEPTH", 32),
    # Subschemas applied to one value through $ref, allOf, anyOf, oneOf, not, if/then/else.
    "max_schema_fanout": _setting("int", "STRUCTURED_OUTPUT__MAX_SCHEMA_FANOUT", 1000),
    "max_answer_bytes": _setting("int", "STRUCTURED_OUTPUT__MAX_ANSWER_BYTES", 1024 * 1024),
    "max_answer_depth": _setting("int", "STRUCTURED_OUTPUT__MAX_ANSWER_DEPTH", 64),
    "validation_seconds": _setting("float", "STRUCTURED_OUTPUT__VALIDATION_SECONDS", 2.0),
    "validation_threads": _setting("int", "STRUCTURED_OUTPUT__VALIDATION_THREADS", 2),
}

# The embedded model that serves the text endpoints when TEXT_MODEL__BASE_URL is empty.
LOCAL_MODEL = {
    "enabled": _setting("bool", "LOCAL_MODEL__ENABLED", True),
    "path": env.str("LOCAL_MODEL__PATH", default=""),
    "context": _setting("int", "LOCAL_MODEL__CONTEXT", 4096),
    "threads": _setting("int", "LOCAL_MODEL__THREADS", 0),
    "chat_format": env.str("LOCAL_MODEL__CHAT_FORMAT", default=""),
    # llama.cpp's classic default. Without it, greedy decoding (temperature 0) makes a small
    # model loop ("...addition of integers. In the context of ... addition of integers...").
    "repeat_penalty": _setting("float", "LOCAL_MODEL__REPEAT_PENALTY", 1.1),
    # How many recent tokens the repeat penalty looks at. llama.cpp's 64 is shorter than the
    # three-line cycles SmolLM2 falls into when it tells a story at temperature 0.
    "repeat_last_n": _setting("int", "LOCAL_MODEL__REPEAT_LAST_N", 256),
    # The longest answer the embedded model writes, whatever max_tokens asks for: a 135M model
    # has said all it usefully can by then, and a long answer holds the model for everyone.
    "max_tokens": _setting("int", "LOCAL_MODEL__MAX_TOKENS", 512),
    # The same for JSON answers (response_format), which are short unless a string runs away.
    "json_max_tokens": _setting("int", "LOCAL_MODEL__JSON_MAX_TOKENS", 256),
    # Llama contexts, each serving one request at a time (and MAX_CONCURRENCY's default). Two
    # contexts of one thread each beat one of two threads on 2 cores: two answers are written
    # at once, and a single-thread context keeps its speed when the cores are busy, where
    # llama.cpp's threads wait on each other (8 tokens/s against 1-2 on a loaded machine).
    "contexts": _setting("int", "LOCAL_MODEL__CONTEXTS", 2),
}

LLMAPI_MODELS = {
    # The embedded model serves LOCAL_MODEL__CONTEXTS requests at once; the others wait their
    # turn in order, long enough for a few answers of LOCAL_MODEL__MAX_TOKENS tokens.
    "text": _model_settings(
        "TEXT_MODEL",
        default_concurrency=LOCAL_MODEL["contexts"] if _text_is_local else 10,
        default_queue_timeout=120.0 if _text_is_local else 30.0,
    ),
    "image": _model_settings("IMAGE_MODEL", default_concurrency=10),
}
LLMAPI_MODELS["image"]["max_image_bytes"] = _setting(
    "int", "IMAGE_MODEL__MAX_IMAGE_BYTES", 20 * 1024 * 1024
)
LLMAPI_MODELS["image"]["max_image_side"] = _setting("int", "IMAGE_MODEL__MAX_IMAGE_SIDE", 2048)
# Images whose header claims more pixels are refused before they are decoded (413).
LLMAPI_MODELS["image"]["max_image_pixels"] = _setting(
    "int", "IMAGE_MODEL__MAX_IMAGE_PIXELS", 64_000_000
)
# Images decoded at once per worker (each in a thread); the rest wait their turn.
LLMAPI_MODELS["image"]["max_decodes"] = _setting("int", "IMAGE_MODEL__MAX_DECODES", 2)
# --- Shared limits (Redis) --------------------------------------------------------------------

# With REDIS_URL, concurrency slots, quotas, replica health and key revocations are shared by
# every worker and host using that Redis; without it they are counted per process.
SHARED_LIMITS = {
    "url": env.str("REDIS_URL", default=""),
    # Short on purpose: a dead Redis must cost a request milliseconds, not seconds.
    "connect_timeout": _setting("float", "LIMITS__REDIS_CONNECT_TIMEOUT", 0.2),
    "timeout": _setting("float", "LIMITS__REDIS_TIMEOUT", 0.2),
    "max_connections": _setting("int", "LIMITS__REDIS_MAX_CONNECTIONS", 64),
    "key_prefix": env.str("LIMITS__REDIS_KEY_PREFIX", default="") or "llmapi",
    # open: admit uncounted while Redis is unreachable; closed: refuse with 503.
    "on_redis_error": env.str("LIMITS__ON_REDIS_ERROR", default="") or "open",
    # A crashed worker's concurrency slots free themselves after this long.
    "lease_seconds": _setting("float", "LIMITS__LEASE_SECONDS", 10.0),
    # After a Redis failure, requests skip Redis (applying the policy) for this long.
    "retry_seconds": _setting("float", "LIMITS__REDIS_RETRY_SECONDS", 1.0),
    # How the scripts travel: pipelined (least CPU) or redis-py (Sentinel URLs always use it).
    "client": env.str("LIMITS__REDIS_CLIENT", default="") or "pipelined",
    # While interactive work for a model holds or waits for a slot, or ended less than
    # BATCH_HEADROOM_SECONDS ago, batch work leaves this many of its slots free (0: off).
    "batch_headroom": _setting("int", "LIMITS__BATCH_HEADROOM", 1),
    "batch_headroom_seconds": _setting("float", "LIMITS__BATCH_HEADROOM_SECONDS", 2.0),
    # An interactive request that finds a model's slots all held cancels the youngest batch
    # line holding one in its process (run again later), and batch lines take every free slot
    # (the headroom counts their slots as free; slots shared on Redis cannot be cut).
    "batch_preempt": _setting("bool", "LIMITS__BATCH_PREEMPT", True),
}

# Where browser sessions are kept: in Redis when REDIS_URL is set (shared by every worker and
# host; a Redis outage logs browsers out rather than failing requests), in the database
# otherwise (never in a per-process cache: a logout in one worker must end the session in all).
if SHARED_LIMITS["url"]:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": SHARED_LIMITS["url"],
            "KEY_PREFIX": f"{SHARED_LIMITS['key_prefix']}:cache",
            "OPTIONS": {
                "socket_connect_timeout": max(1.0, SHARED_LIMITS["connect_timeout"]),
                "socket_timeout": max(1.0, SHARED_LIMITS["timeout"]),
                # redis+sentinel:// URLs: the pool of the master the Sentinels name.
                **(
                    {"pool_class": "limits.redis_transport.SentinelCachePool"}
                    if SHARED_LIMITS["url"].lower().startswith("redis+sentinel://")
                    else {}
                ),
            },
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
else:
    SESSION_ENGINE = "django.contrib.sessions.backends.db"

# --- Batches (/v1/files, /v1/batches) --------------------------------------------------------

BATCHES = {
    # Where uploaded files and the batches' output and error files are kept.
    "files_dir": Path(env.str("BATCHES__FILES_DIR", default="") or BASE_DIR / "var" / "files"),
    # One uploaded file (413 above it), one line of a batch file, the lines of one batch.
    "max_file_bytes": _setting("int", "BATCHES__MAX_FILE_BYTES", 200 * 1024 * 1024),
    "max_line_bytes": _setting("int", "BATCHES__MAX_LINE_BYTES", 1024 * 1024),
    "max_lines": _setting("int", "BATCHES__MAX_LINES", 50_000),
    # Everything one key keeps in files (uploads and results); 0: no limit.
    "max_bytes_per_key": _setting("int", "BATCHES__MAX_BYTES_PER_KEY", 2 * 1024 * 1024 * 1024),
    # Files (uploads and results) expire this many days after they are made, and are then
    # deleted; 0: kept until deleted.
    "files_expire_days": _setting("int", "BATCHES__FILES_EXPIRE_DAYS", 30),
    # Run batches in this process (off: it only serves the API; another process runs them).
    "run": _setting("bool", "BATCHES__RUN", True),
    # Lines this process runs at once (each waits for a model slot like any request).
    "concurrency": _setting("int", "BATCHES__CONCURRENCY", 8),
    # A claimed line is this process's for this long, renewed while it runs; a killed
    # process's lines are taken up again by another once it passes.
    "lease_seconds": _setting("float", "BATCHES__LEASE_SECONDS", 60.0),
    # How often an idle process looks for work.
    "poll_seconds": _setting("float", "BATCHES__POLL_SECONDS", 1.0),
    # Tries of a line that meets a model server failure (502, 503, 504) before it fails.
    "max_attempts": _setting("int", "BATCHES__MAX_ATTEMPTS", 3),
}

# --- Django REST framework and the OpenAPI docs -----------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.StaffSessionAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "api.browsable_api.LlmapiBrowsableAPIRenderer",
    ],
    # JSON everywhere (depth-limited); the image endpoints declare their multipart parsers.
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # No django.contrib.auth: clients are identified by API key only.
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
}

from llmapi.api_guide import API_GUIDE, API_ORIGIN  # noqa: E402  (long text kept in its own module)

SPECTACULAR_SETTINGS = {
    "TITLE": "llmapi",
    "DESCRIPTION": API_GUIDE,
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI's one "Authorize" form: the X-API-Key. Staff sessions (a cookie) and /v1's
    # Bearer alternative are described in the text, not as schemes of their own.
    "AUTHENTICATION_WHITELIST": ["accounts.authentication.ApiKeyAuthentication"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {
        "persistAuthorization": True,
        "tryItOutEnabled": True,
        # drf-spectacular's request interceptor adds an X-CSRFToken header to every call;
        # the curl Swagger shows is the request as written, which is what a person reruns.
        "showMutatedRequest": False,
    },
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "llmapi.api_guide.use_request_origin",
    ],
    "TAGS": [
        {"name": "Text model", "description": "Chat with the text model (an LLM)."},
        {"name": "Image model", "description": "Ask a vision-language model about a picture."},
        {"name": "Health", "description": "Liveness and readiness probes (no key needed)."},
        {
            "name": "OpenAI-compatible",
            "description": "The same models through the OpenAI API, for existing OpenAI clients: "
            f"set `base_url` to `{API_ORIGIN}/v1`.",
        },
        {
            "name": "Batches",
            "description": "OpenAI's Files and Batch APIs: a JSONL file of requests, run on the "
            "models' idle capacity, with output and error files.",
        },
    ],
}

# --- Observability ---------------------------------------------------------------------------

METRICS = {
    # Bearer token Prometheus sends to GET /metrics. No default: without it /metrics answers 404
    # (and, without a port below, nothing is recorded).
    "token": env.str("METRICS__TOKEN", default=""),
    # A port of its own for /metrics (no token there; bind it to a private address). 0: none.
    "port": _setting("int", "METRICS__PORT", 0),
    "host": env.str("METRICS__HOST", default="127.0.0.1"),
    # Label requests and 429s with the API key's id (one series per key: opt in).
    "key_labels": _setting("bool", "METRICS__KEY_LABELS", False),
}
# /readyz probes every model's servers at most once per this many seconds per worker (callers
# in between get that round's answer): its cost does not grow with how often it is asked.
HEALTH_READYZ_CACHE_SECONDS = _setting("float", "HEALTH__READYZ_CACHE_SECONDS", 2.0)
# Server-Timing and x-llmapi-*-ms headers on every response.
OBSERVABILITY_TIMING_HEADERS = _setting("bool", "OBSERVABILITY__TIMING_HEADERS", True)

# --- Logging ---------------------------------------------------------------------------------

# plain: one human-readable line per record; json: one JSON object per line.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain") or "plain"
# Prompts and answers in the request summary lines (JSON format only). Off: they are personal data.
LOG_CONTENT = _setting("bool", "LOG_CONTENT", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "server.middleware.RequestIdLogFilter"},
        "scrub_secrets": {"()": "observability.json_logs.ScrubSecretsFilter"},
        # Plain lines only (JSON escapes by itself): a client's newline never starts a line.
        "escape_control": {"()": "observability.plain_logs.EscapeControlCharactersFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "observability.json_logs.JsonFormatter", "log_content": LOG_CONTENT},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id", "scrub_secrets"]
            + ([] if LOG_FORMAT == "json" else ["escape_control"]),
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Our own handler logs each error once; Django's request logger would log it again.
        "django.request": {"level": "CRITICAL"},
        "httpx": {"level": "WARNING"},
        # Failed logins and lock-outs are warnings; axes' per-attempt notes are not needed.
        "axes": {"level": "WARNING"},
    },
}
