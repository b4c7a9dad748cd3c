"""A minimal stage for exercising the runtime: consumes the requests topic and commits.

`python -m tests.integration.sample_stage [stubborn]`; stubborn ignores the stop flag, so
the runtime's hard deadline has to end it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from pipeline import runtime
from pipeline.config import load_settings
from pipeline.kafka import Batch, consume_batches, make_consumer, started

log = logging.getLogger("sample")


class SampleStage(runtime.Stage):
    name = "sample"

    def __init__(self, stubborn: bool) -> None:
        super().__init__(load_settings())
        self.stubborn = stubborn

    async def run(self, stopping: asyncio.Event) -> None:
        kafka = self.settings.kafka
        consumer = make_consumer(
            kafka, self.settings.topic.requests, group_id="sample", client_id="sample"
        )
        async with started(consumer, kafka):
            self.ready = True
            if self.stubborn:
                await asyncio.Event().wait()
            await consume_batches(consumer, self.handle, stopping, max_records=50)

    async def handle(self, batch: Batch) -> None:
        log.info("handled", extra={"records": sum(len(r) for r in batch.values())})


if __name__ == "__main__":
    sys.exit(runtime.main(SampleStage(stubborn="stubborn" in sys.argv)))
