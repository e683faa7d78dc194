"""Engine and session factory; the URL may be a plain postgresql:// URI (as pgserver prints)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> str:
    """Accept postgresql:// or postgres:// and use the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def make_engine(url: str, pool_size: int = 5, hide_parameters: bool = True) -> AsyncEngine:
    """``hide_parameters`` (on by default, in every service): leave the bound values out of error
    messages; they can hold secrets (a webhook's signing secret, a DKIM private key, message metadata),
    and database errors get logged."""
    return create_async_engine(async_url(url), pool_size=pool_size, pool_pre_ping=True,
                               hide_parameters=hide_parameters)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
