"""An aiohttp app served on 127.0.0.1 from a background thread: the harness of the test stand-ins.

``start()`` returns the URL once the port is bound (or raises what stopped
it); ``stop()`` ends the loop and joins the thread. Subclasses build the app.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class BackgroundServer:
    name = "stand-in"

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    def start(self) -> str:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
            try:
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", self.port)
                loop.run_until_complete(site.start())
                self.port = runner.addresses[0][1]
                self.url = f"http://127.0.0.1:{self.port}"
            except BaseException as error:  # report to the starting thread
                errors.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.shutdown())
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
