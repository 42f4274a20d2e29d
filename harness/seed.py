"""Run with a rendered project's interpreter: `python seed.py <package> <total>`.

Fills the products table of the database named by APP_DATABASE_URL up to `total` rows, in
batches, through the project's own `Product` model and engine; the fields are those of the API's
`ProductCreate`.
"""

import asyncio
import importlib
import sys
from decimal import Decimal

BATCH = 10_000


async def seed(package: str, total: int) -> None:
    config = importlib.import_module(f"{package}.config")
    db = importlib.import_module(f"{package}.db")
    models = importlib.import_module(f"{package}.products.models")
    from sqlalchemy import func, insert, select

    url = config.get_settings().database_url
    async with db.open_database(url) as database, database.engine.begin() as connection:
        start = await connection.scalar(select(func.count()).select_from(models.Product))
        for first in range(start, total, BATCH):
            rows = [
                {
                    "name": f"Product {n}",
                    "description": None,
                    "price": Decimal(1990 + n % 1000).scaleb(-2),
                    "category_id": 1 + n % 50,
                    "sku": f"SD-{n // 1000 % 10_000:04d}-{n % 1000:03d}",
                }
                for n in range(first, min(first + BATCH, total))
            ]
            await connection.execute(insert(models.Product), rows)


if __name__ == "__main__":
    asyncio.run(seed(sys.argv[1], int(sys.argv[2])))
