"""What the products API accepts and answers, with the examples shown in the OpenAPI docs."""

import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from ..fields import MAX_ID

# ASCII digits only: `\d` would match the digits of every script (Arabic-Indic, fullwidth...).
SKU_PATTERN = r"^[A-Z]{2}-[0-9]{4}-[0-9]{3}$"

# PostgreSQL cannot store the NUL character in text: refused up front, whatever the backend.
TEXT_PATTERN = r"^[^\x00]*$"

Name = Annotated[
    str, Field(min_length=1, max_length=200, pattern=TEXT_PATTERN, examples=["Espresso machine"])
]
Description = Annotated[
    str, Field(max_length=2000, pattern=TEXT_PATTERN, examples=["15 bar pump, steam wand"])
]
# A price: whole cents above 0, at most 7 digits before the point (its cents fit the 32-bit
# column). The schema says so exactly, and the check below accepts what it allows, no more.
PRICE_PATTERN = r"^(?=.*[1-9])[0-9]{1,7}(\.[0-9]{1,2})?$"
MAX_PRICE = Decimal("9999999.99")
CENT = Decimal("0.01")
PRICE_SCHEMA: dict[str, JsonValue] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": 9999999.99, "multipleOf": 0.01},
        {"type": "string", "pattern": PRICE_PATTERN},
    ],
    "examples": ["249.90"],
}
PRICE_ERROR = "must be above 0, in whole cents, with at most 7 digits before the point"


def _price(value: Any) -> Any:
    if isinstance(value, str):
        if not re.fullmatch(PRICE_PATTERN, value):
            raise ValueError(PRICE_ERROR)
        return Decimal(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(PRICE_ERROR)
        amount = Decimal(repr(value))
        if not 0 < amount <= MAX_PRICE or amount % CENT != 0:
            raise ValueError(PRICE_ERROR)
        return amount
    return value  # a Decimal from Python code: the constraints below check it


Price = Annotated[
    Decimal,
    BeforeValidator(_price),
    Field(gt=0, max_digits=9, decimal_places=2),
    WithJsonSchema(PRICE_SCHEMA),
]
CategoryId = Annotated[int, Field(gt=0, le=MAX_ID, examples=[3])]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, examples=["KT-1024-001"])]

EXAMPLE: dict[str, JsonValue] = {
    "name": "Espresso machine",
    "description": "15 bar pump, steam wand",
    "price": "249.90",
    "category_id": 3,
    "sku": "KT-1024-001",
}


class ProductCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    name: Name
    description: Description | None = None
    price: Price
    category_id: CategoryId
    sku: Sku


class ProductUpdate(BaseModel):
    """Only the fields sent change; `description` alone may be cleared with null.

    The other fields may be left out but not sent as null: the schema says so (no null in it).
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"price": "199.90"}]})

    name: Name | SkipJsonSchema[None] = None
    description: Description | None = None
    price: Price | SkipJsonSchema[None] = None
    category_id: CategoryId | SkipJsonSchema[None] = None
    sku: Sku | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _required_fields_are_not_null(self) -> Self:
        nulls = sorted(
            name for name in self.model_fields_set - {"description"} if getattr(self, name) is None
        )
        if nulls:
            raise ValueError(f"may not be null: {', '.join(nulls)}")
        return self


class ProductOut(ProductCreate):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    **EXAMPLE,
                    "created_at": "2026-01-01T12:00:00Z",
                    "updated_at": "2026-01-01T12:00:00Z",
                }
            ]
        },
    )

    id: int
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int = Field(examples=[42])
    page: int = Field(examples=[1])
    size: int = Field(examples=[20])


class ProductStats(BaseModel):
    count: int = Field(examples=[42])
    median_price: Decimal | None = Field(examples=[Decimal("19.90")])
    p90_price: Decimal | None = Field(examples=[Decimal("249.90")])
    products_per_category: dict[int, int] = Field(examples=[{3: 40, 7: 2}])
