"""One typed settings object for every process of mfa-gate.

The well-known names are read unprefixed (``REDIS_URL``, ``DATABASE_URL``, ``RUBLON_*``);
the project's own carry the prefix ``MFA_GATE_``. The README's settings table is written
from this module: keep them in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_FILE = PACKAGE_DIR / "policies" / "default_policy.toml"
DEFAULT_DIRECTORY_FILE = PACKAGE_DIR / "policies" / "default_directory.toml"

# Development-only values, used when the environment does not set them. A production
# deployment (MFA_GATE_ENV=production) refuses to start with any of them.
DEV_SYSTEM_TOKEN = "0123456789ABCDEF0123456789ABCDEF"
DEV_SECRET_KEY = "dev-rublon-secret-key-not-for-production"
DEV_BINDING_KEY = "dev-binding-key-not-for-production"
DEV_AUDIT_KEY = "dev-audit-key-not-for-production"


def _unprefixed(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Every setting of mfa-gate. See the README table for meaning and defaults."""

    model_config = SettingsConfigDict(env_prefix="MFA_GATE_", extra="ignore", populate_by_name=True)

    # -- where things are ---------------------------------------------------------------
    env: Literal["development", "production"] = "development"
    redis_url: str | None = Field(default=None, validation_alias=_unprefixed("REDIS_URL"))
    database_url: str = Field(default="sqlite:///mfa_gate.db", validation_alias=_unprefixed("DATABASE_URL"))
    broker_dir: Path = Path(".mfa-gate/broker")
    policy_file: Path = DEFAULT_POLICY_FILE
    directory_file: Path = DEFAULT_DIRECTORY_FILE
    secrets_file: Path | None = None
    action_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # -- Rublon ---------------------------------------------------------------------------
    rublon_api_server: str = Field(default="http://127.0.0.1:8765", validation_alias=_unprefixed("RUBLON_API_SERVER"))
    rublon_ws_server: str | None = Field(default=None, validation_alias=_unprefixed("RUBLON_WS_SERVER"))
    rublon_system_token: str = Field(default=DEV_SYSTEM_TOKEN, validation_alias=_unprefixed("RUBLON_SYSTEM_TOKEN"))
    rublon_secret_key: SecretStr = Field(
        default=SecretStr(DEV_SECRET_KEY), validation_alias=_unprefixed("RUBLON_SECRET_KEY")
    )
    rublon_timeout: float = 30.0

    # -- keys held by the server only ------------------------------------------------------
    binding_key: SecretStr = SecretStr(DEV_BINDING_KEY)
    audit_key: SecretStr = SecretStr(DEV_AUDIT_KEY)

    # -- web process ----------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    max_params_bytes: int = 16_384
    max_context_bytes: int = 4_096
    wait_max_seconds: float = 60.0

    # -- timing (they nest: handler < task hard limit < executing lease < visibility) --
    execute_time_limit: int = 60
    execute_lease_seconds: int = 120
    visibility_timeout: int = 300
    confirm_lease_seconds: int = 30
    dispatch_grace_seconds: int = 30
    gate_grace_seconds: int = 60
    maintenance_interval: float = 5.0
    listener_poll_interval: float = 2.0
    listener_metrics_port: int = 9101
    audit_anchor_interval: float = 300.0

    # -- Flower ---------------------------------------------------------------------------
    flower_basic_auth: SecretStr | None = None
    flower_db: Path = Path("flower.db")

    log_json: bool = False
    log_level: str = "INFO"

    @field_validator("action_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_nesting(self) -> Settings:
        if not self.execute_time_limit < self.execute_lease_seconds < self.visibility_timeout:
            raise ValueError(
                "timing settings must nest: MFA_GATE_EXECUTE_TIME_LIMIT < MFA_GATE_EXECUTE_LEASE_SECONDS "
                f"< MFA_GATE_VISIBILITY_TIMEOUT (now {self.execute_time_limit} < {self.execute_lease_seconds} "
                f"< {self.visibility_timeout})"
            )
        if self.env == "production":
            weak = [
                name
                for name, value, dev in (
                    ("RUBLON_SECRET_KEY", self.rublon_secret_key, DEV_SECRET_KEY),
                    ("MFA_GATE_BINDING_KEY", self.binding_key, DEV_BINDING_KEY),
                    ("MFA_GATE_AUDIT_KEY", self.audit_key, DEV_AUDIT_KEY),
                )
                if value.get_secret_value() == dev
            ]
            if weak:
                raise ValueError(f"production settings still use development keys: set {', '.join(weak)}")
            if self.redis_url is None:
                raise ValueError("production needs REDIS_URL: the embedded broker is for development only")
        return self

    @property
    def embedded_broker(self) -> bool:
        """True when no REDIS_URL is set and the kombu filesystem transport stands in."""
        return self.redis_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
