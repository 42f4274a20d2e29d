"""What the products API does, independent of HTTP: its rules, the cache kept consistent with
storage, reports, the CSV export."""

import asyncio
import csv
import io
import statistics
from collections.abc import AsyncIterator, Iterable, Sequence
from decimal import Decimal
from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, Request

from ..resources import resources_of
from .cache import ProductCache
from .repository import ProductRepository
from .schemas import ProductCreate, ProductOut, ProductPage, ProductStats, ProductUpdate

EXPORT_HEADER = ("id", "sku", "name", "price", "category_id", "created_at")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def price_percentiles(prices: list[Decimal]) -> tuple[Decimal | None, Decimal | None]:
    """Median and 90th percentile; CPU-bound on large catalogues, so run off the event loop."""
    if not prices:
        return None, None
    if len(prices) == 1:
        return prices[0], prices[0]
    deciles = statistics.quantiles(prices, n=10, method="inclusive")
    return statistics.median(prices), deciles[-1]


def spreadsheet_safe(cell: Any) -> Any:
    """The cell as text a spreadsheet shows rather than runs; numbers and dates as they are."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_chunk(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return buffer.getvalue()


class ProductService:
    # Each batch holds the event loop while it becomes CSV, and the other routes may wait for
    # one batch: small batches keep that wait short.
    export_batch_size = 500

    def __init__(self, repository: ProductRepository, cache: ProductCache) -> None:
        self._repository = repository
        self._cache = cache

    async def create(self, payload: ProductCreate) -> ProductOut:
        product = await self._repository.create(payload.model_dump())
        return ProductOut.model_validate(product)

    async def get(self, product_id: int) -> ProductOut:
        return ProductOut.model_validate(await self._repository.get(product_id))

    async def get_json(self, product_id: int) -> tuple[bytes, bool]:
        """The product as JSON, and whether it came from the cache."""

        async def load() -> bytes:
            return (await self.get(product_id)).model_dump_json().encode()

        return await self._cache.read(product_id, load)

    async def page(self, page: int, size: int) -> ProductPage:
        products, total = await self._repository.page(offset=(page - 1) * size, limit=size)
        items = [ProductOut.model_validate(product) for product in products]
        return ProductPage(items=items, total=total, page=page, size=size)

    async def update(self, product_id: int, payload: ProductUpdate) -> ProductOut:
        values = payload.model_dump(exclude_unset=True)
        # The write commits inside: once it returns, no read serves (or caches) the old version.
        async with self._cache.invalidating(product_id):
            product = await self._repository.update(product_id, values)
        return ProductOut.model_validate(product)

    async def delete(self, product_id: int) -> None:
        async with self._cache.invalidating(product_id):
            await self._repository.delete(product_id)

    async def stats(self) -> ProductStats:
        # Independent reads, each on its own session, so they may run concurrently.
        prices, per_category = await asyncio.gather(
            self._repository.prices(), self._repository.count_per_category()
        )
        median, p90 = await to_thread.run_sync(price_percentiles, prices)
        return ProductStats(
            count=len(prices),
            median_price=median,
            p90_price=p90,
            products_per_category=per_category,
        )

    async def ensure_reachable(self) -> None:
        await self._repository.ensure_reachable()

    async def export_csv(self) -> AsyncIterator[str]:
        """The catalogue as CSV, one chunk per batch: memory stays flat whatever the row count."""
        yield csv_chunk([EXPORT_HEADER])
        async for rows in self._repository.export_rows(self.export_batch_size):
            yield csv_chunk(rows)


async def get_product_service(request: Request) -> ProductService:
    return resources_of(request).products


ServiceDep = Annotated[ProductService, Depends(get_product_service)]
