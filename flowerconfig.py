"""Flower's configuration for mfa-gate, read by ``celery -A tasks flower`` from the working directory.

Flower executes this file and takes the module-level names it knows as options. The
dashboard is never open: without MFA_GATE_FLOWER_BASIC_AUTH (``user:password``) Flower
refuses to start. Flower's /metrics and /healthcheck are exempt from its auth: keep its
port internal (bound to 127.0.0.1 by default; MFA_GATE_FLOWER_ADDRESS to change).
"""

import os as _os

from config import get_settings as _get_settings

_settings = _get_settings()
if _settings.flower_basic_auth is None:
    raise SystemExit(
        "Flower needs MFA_GATE_FLOWER_BASIC_AUTH=user:password (comma-separate several pairs); "
        "mfa-gate never serves an open dashboard"
    )

basic_auth = _settings.flower_basic_auth.get_secret_value().split(",")
address = _os.environ.get("MFA_GATE_FLOWER_ADDRESS", "127.0.0.1")
persistent = True
db = str(_settings.flower_db)
state_save_interval = 60_000  # milliseconds
purge_offline_workers = 3600  # seconds
enable_events = True  # Flower asks the workers to send task events
