"""The settings of your own domains, read with the others from APP_* variables and `.env`.

This file is yours: the template wrote it once, and `copier update` never changes it. Name a
field after its domain: `orders_page_size` is read from APP_ORDERS_PAGE_SIZE. Routes read it
through `SettingsDep` (config.py).
"""

from pydantic import BaseModel


class DomainSettings(BaseModel):
    """Each field here is a field of `Settings`; list it in `.env.example` and in the README."""
