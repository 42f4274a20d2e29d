"""The worked example domain: products, from HTTP route to storage."""

from ..features import Feature
from .router import TAG, router

feature: Feature[object] = Feature(name="products", routers=[router], tags=[TAG])
