"""The shop's own tables, on its own DeclarativeBase and metadata.

worksync_sa's ``works`` table is deliberately NOT part of this metadata: the
package owns it (its migrations create it, ``worksync_sa.metadata`` models
it). That is why ``migrations/env.py`` tells autogenerate to look away from it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    # Named constraints, so migrations can refer to them on every database.
    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ix": "ix_%(table_name)s_%(column_0_name)s",
        }
    )


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    amount_cents: Mapped[int]
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_in_tick: Mapped[str | None] = mapped_column(String(255))
    """The worksync sequence of the nightly run that sent it: proof it went out once."""
