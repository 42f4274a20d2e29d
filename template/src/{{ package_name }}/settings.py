"""The settings every service has: where it runs, how it logs, its secret.

Each feature declares its own fields beside its code (e.g. `DatabaseSettings` in db.py);
config.py puts them together into the one `Settings` that the service reads. A feature's class
is a `BaseModel` of its own fields, or a `CoreSettings` when one of its rules reads a core field
(the environment, the number of workers); a rule checks only fields, and no class overrides
another's method, so the order config.py lists them in never changes what is valid.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

MIN_SECRET_BYTES = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    TESTING = "testing"


def environment_of(data: dict[str, Any]) -> Environment:
    """The environment named in raw settings input, for defaults that depend on it."""
    try:
        return Environment(str(data.get("environment", Environment.DEVELOPMENT)).lower())
    except ValueError:
        return Environment.DEVELOPMENT  # the field's own validation names the bad value


class CoreSettings(BaseModel):
    app_name: str = Field(description="Title of the API docs")
    environment: Environment = Field(
        default=Environment.DEVELOPMENT,
        description="development, staging, production or testing; outside development a "
        f"secret of {MIN_SECRET_BYTES}+ bytes is required",
    )
    host: str = Field(default="127.0.0.1", description="Address the server listens on")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the server listens on")
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes")
    graceful_timeout: int = Field(
        default=10, ge=0, le=300, description="Seconds in-flight requests get after SIGTERM"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level logged"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", description="json, or console (the default in development)"
    )
    secret_key: SecretStr = Field(default=SecretStr(""), description="Signing secret")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="Comma-separated origins that CORS allows"
    )
    docs_enabled: bool = Field(
        default=True, description="Serve /docs, /redoc and /openapi.json (off in production)"
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest request body accepted; larger get 413"
    )
    max_header_bytes: int = Field(
        default=65_536,
        # Granian's smallest read buffer.
        ge=8192,
        description="Largest request head (request line and headers) accepted; larger get 431",
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a request's body may take to arrive in whole after its head; "
        "then it gets 408 and the connection is closed",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Requests one worker serves at once; past it they get 503 (health excepted)",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_for_environment(cls, data: Any) -> Any:
        """Readable logs while developing; no docs in production."""
        if isinstance(data, dict):
            environment = environment_of(data)
            if environment == Environment.DEVELOPMENT:
                data.setdefault("log_format", "console")
            if environment == Environment.PRODUCTION:
                data.setdefault("docs_enabled", False)
        return data

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _no_wildcard_origin(cls, origins: list[str]) -> list[str]:
        if "*" in origins:
            raise ValueError("list the origins; '*' is refused as CORS allows credentials")
        return origins

    @model_validator(mode="after")
    def _strong_secret_outside_development(self) -> Self:
        secret = self.secret_key.get_secret_value().encode()
        if self.environment != Environment.DEVELOPMENT and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"APP_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes "
                f"when APP_ENVIRONMENT is {self.environment.value}"
            )
        return self
