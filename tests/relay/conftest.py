"""The relay tests' broker: a vhost of their own, deleted after the test."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from tests.support.rabbitmq import Vhost, require_rabbitmq


@pytest.fixture
async def vhost() -> AsyncIterator[Vhost]:
    require_rabbitmq()
    made = Vhost()
    yield made
    await made.close()
