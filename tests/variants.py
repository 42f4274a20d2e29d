"""The combinations of answers that the tests render. Each one runs every static and suite check."""

from support import Variant

DEFAULT = Variant("default")
STDLIB_LOGGING = Variant("stdlib-logging", {"logging": "stdlib"})
JWT = Variant("jwt", {"auth": "jwt"})
JWT_WITHOUT_EXAMPLE_API = Variant("jwt-no-example-api", {"auth": "jwt", "example_api": False})
HTTP_CLIENT = Variant("http-client", {"http_client": True})
METRICS = Variant("metrics", {"metrics": True})
# With auth, so the offline Swagger UI has an Authorize button to show.
SELF_HOSTED_DOCS = Variant("self-hosted-docs", {"docs": "self_hosted", "auth": "jwt"})

VARIANTS = [
    DEFAULT,
    STDLIB_LOGGING,
    JWT,
    JWT_WITHOUT_EXAMPLE_API,
    HTTP_CLIENT,
    METRICS,
    SELF_HOSTED_DOCS,
]
