"""Your domains, one line each: a domain is a folder whose `feature` holds its routes.

This file is yours: the template wrote it once, and `copier update` never changes it. The
template's own example domain is listed in main.py. To add a domain, see "Adding a domain" in the
README.
"""

from .config import Settings
from .features import Feature

DOMAINS: list[Feature[Settings]] = []
