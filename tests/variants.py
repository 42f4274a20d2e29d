"""The combinations of answers that the tests render. Each one runs every static and suite check."""

from support import Variant

DEFAULT = Variant("default")
STDLIB_LOGGING = Variant("stdlib-logging", {"logging": "stdlib"})
POSTGRES_REDIS = Variant("postgresql-redis", {"database": "postgresql", "cache": "redis"})
SQLITE_REDIS = Variant("sqlite-redis", {"database": "sqlite", "cache": "redis"})
POSTGRES_MEMORY = Variant("postgresql-memory", {"database": "postgresql", "cache": "memory"})
NO_DATABASE_NO_CACHE = Variant("no-database-no-cache", {"database": "none", "cache": "none"})
NO_EXAMPLE_API = Variant("no-example-api", {"example_api": False})
JWT = Variant("jwt", {"auth": "jwt"})
JWT_WITHOUT_EXAMPLE_API = Variant("jwt-no-example-api", {"auth": "jwt", "example_api": False})
HTTP_CLIENT = Variant("http-client", {"http_client": True})
METRICS = Variant("metrics", {"metrics": True})
# With auth, so the offline Swagger UI has an Authorize button to show.
SELF_HOSTED_DOCS = Variant("self-hosted-docs", {"docs": "self_hosted", "auth": "jwt"})

VARIANTS = [
    DEFAULT,
    STDLIB_LOGGING,
    POSTGRES_REDIS,
    SQLITE_REDIS,
    POSTGRES_MEMORY,
    NO_DATABASE_NO_CACHE,
    NO_EXAMPLE_API,
    JWT,
    JWT_WITHOUT_EXAMPLE_API,
    HTTP_CLIENT,
    METRICS,
    SELF_HOSTED_DOCS,
]
