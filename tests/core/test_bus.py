from __future__ import annotations

import asyncio
import threading

from karkhana.core.bus import Bus
from karkhana.core.model import Sample


def test_publish_from_another_thread_reaches_subscribers() -> None:
    async def go() -> None:
        bus = Bus()
        every = bus.subscribe()
        only_b = bus.subscribe(devices=["b"])
        samples = [Sample("a", "k", 1, 1.0), Sample("b", "k", 1, 2.0)]
        t = threading.Thread(target=bus.publish, args=(samples,))
        t.start()
        t.join()
        assert await asyncio.wait_for(every.get(), 5) == samples
        assert await asyncio.wait_for(only_b.get(), 5) == samples[1:]
        only_b.close()
        every.close()
        bus.publish(samples)  # nobody listening: nothing happens

    asyncio.run(go())


def test_slow_subscriber_drops_its_oldest() -> None:
    async def go() -> None:
        bus = Bus()
        with bus.subscribe(maxsize=2) as sub:
            for i in range(5):
                bus.publish([Sample("a", "k", i, float(i))])
            await asyncio.sleep(0.05)
            assert sub.dropped == 3
            assert (await sub.get())[0].ts == 3

    asyncio.run(go())
