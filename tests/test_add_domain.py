"""A second domain added to a rendered service exactly as its README says: a folder, one line in
the domain registry, a migration made by `alembic revision --autogenerate`. Every check the
project runs on itself still passes, the new routes included."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support import run, run_static_checks
from variants import DEFAULT

from harness import render

PACKAGE = DEFAULT.package

ORDERS = {
    "__init__.py": '''
        """Orders: what customers bought."""

        from ..features import Feature
        from .router import TAG, router

        feature: Feature[object] = Feature(name="orders", routers=[router], tags=[TAG])
    ''',
    "models.py": '''
        """The orders table."""

        from datetime import datetime
        from decimal import Decimal

        from sqlalchemy import ForeignKey
        from sqlalchemy.orm import Mapped, mapped_column

        from ..db import Base, Money, UtcDateTime
        from ..fields import utc_now


        class Order(Base):
            __tablename__ = "orders"

            id: Mapped[int] = mapped_column(primary_key=True)
            product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
            quantity: Mapped[int]
            total: Mapped[Decimal] = mapped_column(Money)
            created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    ''',
    "schemas.py": '''
        """What the orders API accepts and answers."""

        from datetime import datetime
        from decimal import Decimal

        from pydantic import BaseModel, ConfigDict, Field

        from ..fields import MAX_ID


        class OrderCreate(BaseModel):
            product_id: int = Field(gt=0, le=MAX_ID)
            quantity: int = Field(gt=0, le=1000)


        class OrderOut(OrderCreate):
            model_config = ConfigDict(from_attributes=True)

            id: int
            total: Decimal
            created_at: datetime
    ''',
    "router.py": '''
        """HTTP routes of the orders API."""

        from typing import Annotated

        from fastapi import APIRouter, Path

        from ..config import SettingsDep
        from ..db import SessionDep
        from ..errors import NotFoundError
        from ..fields import MAX_ID
        from ..openapi import error_response_doc
        from ..products.models import Product
        from ..security import requires
        from .models import Order
        from .schemas import OrderCreate, OrderOut

        TAG = {"name": "orders", "description": "What customers bought."}
        NOT_FOUND = error_response_doc(404, "No such order or product")

        router = APIRouter(prefix="/api/v1/orders", tags=["orders"])

        OrderId = Annotated[int, Path(ge=1, le=MAX_ID)]


        @router.post(
            "",
            status_code=201,
            responses=NOT_FOUND,
            dependencies=[requires("orders:write")],
        )
        async def place_order(payload: OrderCreate, session: SessionDep) -> OrderOut:
            product = await session.get(Product, payload.product_id)
            if product is None:
                raise NotFoundError("Product", payload.product_id)
            order = Order(**payload.model_dump(), total=product.price * payload.quantity)
            session.add(order)
            await session.flush()
            return OrderOut.model_validate(order)


        @router.get("/limits", summary="What one order may hold")
        async def read_limits(settings: SettingsDep) -> dict[str, int]:
            return {"max_quantity": settings.orders_max_quantity}


        @router.get("/{order_id:int}", responses=NOT_FOUND)
        async def read_order(order_id: OrderId, session: SessionDep) -> OrderOut:
            order = await session.get(Order, order_id)
            if order is None:
                raise NotFoundError("Order", order_id)
            return OrderOut.model_validate(order)
    ''',
}

ORDERS_TEST = """
    from httpx import AsyncClient

    PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}


    async def test_an_order_totals_its_product(user_client: AsyncClient) -> None:
        product = (await user_client.post("/api/v1/products", json=PRODUCT)).json()
        placed = await user_client.post(
            "/api/v1/orders", json={"product_id": product["id"], "quantity": 3}
        )
        assert placed.status_code == 201
        read = await user_client.get(f"/api/v1/orders/{placed.json()['id']}")
        assert read.json()["total"] == "59.70"


    async def test_the_limits_come_from_the_settings(client: AsyncClient) -> None:
        response = await client.get("/api/v1/orders/limits")
        assert response.json() == {"max_quantity": 1000}


    async def test_an_order_of_a_missing_product_answers_404(user_client: AsyncClient) -> None:
        response = await user_client.post("/api/v1/orders", json={"product_id": 9, "quantity": 1})
        assert response.status_code == 404
        assert response.json()["error"] == "NOT_FOUND"
"""


DOMAIN_SETTING = """
    orders_max_quantity: int = Field(default=1000, ge=1, description="Items one order may hold")
"""


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.mark.xdist_group("add-domain")
def test_a_domain_added_as_the_readme_says_passes_every_check(tmp_path: Path) -> None:
    project = render(tmp_path, DEFAULT.answers)
    run(["uv", "sync", "--quiet"], project)
    source = project / "src" / PACKAGE

    # 1. The folder.
    (source / "orders").mkdir()
    for name, text in ORDERS.items():
        write(source / "orders" / name, text)
    write(project / "tests" / "test_orders.py", ORDERS_TEST)
    # 2. One line in the domain registry (and its import).
    registry = source / "domains.py"
    text = registry.read_text()
    text = text.replace(
        "from .features import Feature\n",
        "from .features import Feature\nfrom .orders import feature as orders\n",
    )
    registry.write_text(text.replace(" = []\n", " = [\n    orders,\n]\n"))
    # 3. Its settings, in the class the template never rewrites.
    settings = source / "domain_settings.py"
    text = settings.read_text().replace(
        "from pydantic import BaseModel\n", "from pydantic import BaseModel, Field\n"
    )
    settings.write_text(text + DOMAIN_SETTING)
    with (project / ".env.example").open("a") as env_example:
        env_example.write("# Items one order may hold\n# APP_ORDERS_MAX_QUANTITY=1000\n")
    readme = project / "README.md"
    table = "### Settings of your own domains"
    header = "| variable | default | meaning |\n| --- | --- | --- |\n"
    text = readme.read_text()
    at = text.index(header, text.index(table)) + len(header)
    row = "| `APP_ORDERS_MAX_QUANTITY` | `1000` | items one order may hold |\n"
    readme.write_text(text[:at] + row + text[at:])
    # 4. Its migration, made from the models against a database at the newest revision.
    database = {"APP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}"}
    run(["uv", "run", "--no-sync", "alembic", "upgrade", "head"], project, **database)
    made = run(
        ["uv", "run", "--no-sync", "alembic", "revision", "--autogenerate", "-m", "create orders"],
        project,
        **database,
    )
    migration = source / "migrations" / "versions" / "0002_create_orders.py"
    assert migration.is_file(), made.stdout + made.stderr
    assert 'op.create_table(\n        "orders"' in migration.read_text()
    run(["uv", "run", "--no-sync", "alembic", "upgrade", "head"], project, **database)
    run(["uv", "run", "--no-sync", "alembic", "check"], project, **database)

    run_static_checks(project)
    suite = run(["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider"], project)
    assert (
        "test_orders.py"
        in run(
            ["uv", "run", "--no-sync", "pytest", "--collect-only", "-q", "tests/test_orders.py"],
            project,
        ).stdout
    )
    print(
        f"\nadd a domain: migration {migration.name}; suite {suite.stdout.strip().splitlines()[-1]}"
    )
