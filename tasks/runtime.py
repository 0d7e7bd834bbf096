"""The parts a process of mfa-gate works with, built once from the settings.

Workers, the listener, the web process and the CLI each hold one ``Runtime``: the store,
the policy, the directory, the Rublon client and the keys. Tests build their own.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from functools import cached_property

from config import Settings, get_settings
from policies.directory import Directory, DirectoryError, load_directory
from policies.loader import load_policy
from policies.model import Policy
from rublon.client import AsyncRublonClient, RublonClient
from store import Store
from tasks import registry
from tasks.metrics import observe_rublon_call


@dataclass
class Runtime:
    """Process-wide parts, built lazily from ``settings``."""

    settings: Settings
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _directory: Directory | None = field(default=None, repr=False)
    _directory_stamp: int = field(default=0, repr=False)

    @cached_property
    def store(self) -> Store:
        store = Store(self.settings.database_url, audit_key=self.audit_key)
        return store

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_file)

    @property
    def directory(self) -> Directory:
        """The directory file, re-read when it changes (credential rotation and revocation apply at once)."""
        path = self.settings.directory_file
        stamp = path.stat().st_mtime_ns
        with self._lock:
            if self._directory is None or stamp != self._directory_stamp:
                directory = load_directory(path)
                if self.settings.env == "production" and directory.development_agents():
                    raise DirectoryError(
                        f"{path}: agents {', '.join(directory.development_agents())} use the "
                        "public development credential; rotate them with 'mfa-gate agents rotate'"
                    )
                self._directory, self._directory_stamp = directory, stamp
            return self._directory

    @cached_property
    def secrets(self) -> dict[str, str]:
        """Credentials for target services, held by the server, referenced by name in params."""
        path = self.settings.secrets_file
        if path is None:
            return {}
        with open(path, "rb") as handle:
            table = tomllib.load(handle).get("secrets", {})
        return {str(name): str(value) for name, value in table.items()}

    @property
    def audit_key(self) -> bytes:
        return self.settings.audit_key.get_secret_value().encode()

    @property
    def binding_key(self) -> bytes:
        return self.settings.binding_key.get_secret_value().encode()

    @property
    def rublon_secret(self) -> str:
        return self.settings.rublon_secret_key.get_secret_value()

    @cached_property
    def rublon(self) -> RublonClient:
        return RublonClient(
            api_server=self.settings.rublon_api_server,
            system_token=self.settings.rublon_system_token,
            secret_key=self.rublon_secret,
            timeout=self.settings.rublon_timeout,
            observer=observe_rublon_call,
        )

    def async_rublon(self) -> AsyncRublonClient:
        """A new async client (one per event loop)."""
        return AsyncRublonClient(
            api_server=self.settings.rublon_api_server,
            system_token=self.settings.rublon_system_token,
            secret_key=self.rublon_secret,
            timeout=self.settings.rublon_timeout,
            observer=observe_rublon_call,
        )

    def load_actions(self) -> None:
        """Register the built-in and configured actions."""
        registry.load_modules(self.settings.action_modules)

    def check(self) -> None:
        """Load everything that can be wrong at start, so a broken file fails now, not later."""
        _ = self.policy, self.directory
        self.load_actions()
        self.store.create_schema()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
            _runtime.load_actions()
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests, the demo)."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime
