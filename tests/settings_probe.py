"""Settings as a fresh process reads them from a given environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def settings_value(name: str, **env: str):
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps(settings.{name}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "ENV_FILE": "/dev/null",
            "DJANGO_SETTINGS_MODULE": "llmapi.settings",
            "ALLOWED_HOSTS": "",
            "REDIS_URL": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)
