"""Entry point of the listener process."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator

import uvloop
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from listener.service import ConfirmationListener
from tasks.runtime import get_runtime


class ListenerCollector(Collector):
    """The listener's own figures, read from it at scrape time."""

    def __init__(self, listener: ConfirmationListener) -> None:
        self.listener = listener

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        yield CounterMetricFamily(
            "mfa_gate_websocket_reconnects",
            "Times the listener re-opened its confirmation WebSocket or Redis notifications.",
            value=self.listener.reconnects,
        )
        yield GaugeMetricFamily(
            "mfa_gate_listener_pending_transactions",
            "Pending transactions this listener is subscribed to.",
            value=len(self.listener.pending),
        )


async def _serve(name: str | None) -> None:
    runtime = get_runtime()
    runtime.check()
    listener = ConfirmationListener(runtime, name=name)
    port = runtime.settings.listener_metrics_port
    if port:
        REGISTRY.register(ListenerCollector(listener))
        try:
            start_http_server(port, addr="127.0.0.1" if runtime.settings.env == "development" else "0.0.0.0")
        except OSError as exc:
            logging.getLogger(__name__).warning("metrics port %s unavailable (%s); this listener serves no metrics",
                                                port, exc.strerror)
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
    # uvloop (installed with uvicorn[standard]): a faster event loop for the WebSocket,
    # the Rublon calls and the store hand-offs that every release goes through.
    uvloop.run(_serve(name))
    return 0
