"""The worked example domain: products, from HTTP route to storage."""

from ..features import Feature
from .repository import open_storage
from .router import TAG, router

feature: Feature[object] = Feature(
    name="products", lifespan=open_storage, routers=[router], tags=[TAG]
)
