"""Entry point of the listener process."""

from __future__ import annotations

import asyncio
import logging
import signal

from listener.service import ConfirmationListener
from tasks.runtime import get_runtime


async def _serve(name: str | None) -> None:
    runtime = get_runtime()
    runtime.check()
    listener = ConfirmationListener(runtime, name=name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await listener.run(stop)


def main(name: str | None = None) -> int:
    """Run the listener; returns the process exit code."""
    from cli.logging_setup import configure_logging

    configure_logging(get_runtime().settings)
    logging.getLogger(__name__).info("confirmation listener starting")
    asyncio.run(_serve(name))
    return 0
