"""The worked example domain: products, from HTTP route to storage."""

from ..features import Feature
from .router import TAG, router
from .service import open_products

feature: Feature[object] = Feature(
    name="products", lifespan=open_products, routers=[router], tags=[TAG]
)
