"""The combinations of answers that the tests render. Each one runs every static and suite check."""

from support import Variant

DEFAULT = Variant("default")
STDLIB_LOGGING = Variant("stdlib-logging", {"logging": "stdlib"})
POSTGRES_REDIS = Variant("postgresql-redis", {"database": "postgresql", "cache": "redis"})
SQLITE_REDIS = Variant("sqlite-redis", {"database": "sqlite", "cache": "redis"})
POSTGRES_MEMORY = Variant("postgresql-memory", {"database": "postgresql", "cache": "memory"})
NO_DATABASE_NO_CACHE = Variant("no-database-no-cache", {"database": "none", "cache": "none"})
NO_EXAMPLE_API = Variant("no-example-api", {"example_api": False})

VARIANTS = [
    DEFAULT,
    STDLIB_LOGGING,
    POSTGRES_REDIS,
    SQLITE_REDIS,
    POSTGRES_MEMORY,
    NO_DATABASE_NO_CACHE,
    NO_EXAMPLE_API,
]
