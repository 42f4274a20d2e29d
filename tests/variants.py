"""The combinations of answers that the tests render. Each one runs every static and suite check."""

from support import Variant

DEFAULT = Variant("default")
STDLIB_LOGGING = Variant("stdlib-logging", {"logging": "stdlib"})

VARIANTS = [DEFAULT, STDLIB_LOGGING]
