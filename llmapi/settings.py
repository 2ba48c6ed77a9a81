"""
Django settings for llmapi.

Everything a deployment changes comes from the environment (or a `.env` file beside
`manage.py`), read once here with django-environ. `.env.example` documents every name.
"""

from pathlib import Path

import environ

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

# No secret material is derived from SECRET_KEY: there are no sessions, cookies or signed
# values. It still must not be guessable if someone adds them later, so it is random per
# process unless set.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or __import__("secrets").token_urlsafe(50)
DEBUG = _setting("bool", "DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])

INSTALLED_APPS = [
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "completions",
    "observability",
]

MIDDLEWARE = [
    "completions.middleware.RequestIdMiddleware",
    "completions.middleware.AsyncSecurityMiddleware",
]

# CORS is off unless origins are listed (for browser apps on another origin).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
if CORS_ALLOWED_ORIGINS:
    INSTALLED_APPS.append("corsheaders")
    MIDDLEWARE.insert(1, "corsheaders.middleware.CorsMiddleware")
    CORS_ALLOW_HEADERS = ["authorization", "content-type", "x-api-key", "x-request-id"]
    CORS_EXPOSE_HEADERS = ["x-request-id", "retry-after"]

ROOT_URLCONF = "llmapi.urls"
ASGI_APPLICATION = "llmapi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# The gateway keeps no state in a database.
DATABASES: dict = {}

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
APPEND_SLASH = False

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# JSON bodies larger than this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = _setting("int", "SERVER__MAX_BODY_BYTES", 4 * 1024 * 1024)

# --- Server ----------------------------------------------------------------------------------

SERVER_HOST = env.str("SERVER__HOST", default="127.0.0.1")
SERVER_PORT = _setting("int", "SERVER__PORT", 1999)
SERVER_WORKERS = _setting("int", "SERVER__WORKERS", 1)
# Seconds in-flight requests and streams get to finish after SIGTERM.
SERVER_GRACEFUL_TIMEOUT = _setting("float", "SERVER__GRACEFUL_TIMEOUT", 30.0)
# Conversation limits (400 above them), beside the body size limit.
SERVER_MAX_MESSAGES = _setting("int", "SERVER__MAX_MESSAGES", 1000)
SERVER_MAX_TOTAL_CHARS = _setting("int", "SERVER__MAX_TOTAL_CHARS", 1_000_000)

# Comma-separated list of accepted client keys. No default: `manage.py serve` generates one
# for the run when this is empty.
API_KEYS = [key.strip() for key in env.str("API_KEY", default="").split(",") if key.strip()]


# --- Models ----------------------------------------------------------------------------------


def _model_settings(prefix: str, *, default_concurrency: int) -> dict:
    """Read one model's settings: `<PREFIX>__MODEL_NAME`, `<PREFIX>__LLM_ARGS__TEMPERATURE`, ..."""
    return {
        "model_name": env.str(f"{prefix}__MODEL_NAME", default=""),
        "base_url": env.str(f"{prefix}__BASE_URL", default=""),
        "api_key": env.str(f"{prefix}__API_KEY", default=""),
        "max_concurrency": _setting("int", f"{prefix}__MAX_CONCURRENCY", default_concurrency),
        "timeout": _setting("float", f"{prefix}__TIMEOUT", 120.0),
        "connect_timeout": _setting("float", f"{prefix}__CONNECT_TIMEOUT", 5.0),
        "queue_timeout": _setting("float", f"{prefix}__QUEUE_TIMEOUT", 30.0),
        # Resilience: retries before the first byte, and outlier ejection of failing replicas.
        "max_retries": _setting("int", f"{prefix}__MAX_RETRIES", 2),
        "eject_after": _setting("int", f"{prefix}__EJECT_AFTER", 3),
        "eject_seconds": _setting("float", f"{prefix}__EJECT_SECONDS", 30.0),
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

LLMAPI_MODELS = {
    # One llama.cpp context serves one request at a time, so the embedded model defaults to 1.
    "text": _model_settings("TEXT_MODEL", default_concurrency=1 if _text_is_local else 10),
    "image": _model_settings("IMAGE_MODEL", default_concurrency=10),
}
LLMAPI_MODELS["image"]["max_image_bytes"] = _setting(
    "int", "IMAGE_MODEL__MAX_IMAGE_BYTES", 20 * 1024 * 1024
)
LLMAPI_MODELS["image"]["max_image_side"] = _setting("int", "IMAGE_MODEL__MAX_IMAGE_SIDE", 2048)

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
}

# --- Django REST framework and the OpenAPI docs -----------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["completions.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # JSON everywhere; the image endpoints declare their multipart parsers themselves.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "completions.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # No django.contrib.auth: clients are identified by API key only.
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
}

from llmapi.api_guide import API_GUIDE  # noqa: E402  (long text kept in its own module)

SPECTACULAR_SETTINGS = {
    "TITLE": "llmapi",
    "DESCRIPTION": API_GUIDE,
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "tryItOutEnabled": True},
    "COMPONENT_SPLIT_REQUEST": True,
    "TAGS": [
        {"name": "Text model", "description": "Chat with the text model (an LLM)."},
        {"name": "Image model", "description": "Ask a vision-language model about a picture."},
        {"name": "Health", "description": "Liveness and readiness probes (no key needed)."},
        {
            "name": "OpenAI-compatible",
            "description": "The same models through the OpenAI API, for existing OpenAI clients: "
            "set base_url to http://<host>:1999/v1.",
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
        "request_id": {"()": "completions.middleware.RequestIdLogFilter"},
        "scrub_secrets": {"()": "observability.json_logs.ScrubSecretsFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "observability.json_logs.JsonFormatter", "log_content": LOG_CONTENT},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_id", "scrub_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Our own handler logs each error once; Django's request logger would log it again.
        "django.request": {"level": "CRITICAL"},
        "httpx": {"level": "WARNING"},
    },
}
