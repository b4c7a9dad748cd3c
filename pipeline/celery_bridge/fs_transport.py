"""kombu's filesystem transport, with each file written whole before anyone can read it.

kombu creates a message's file and then writes into it; a worker that lists the folder in
between moves and reads an empty file, and dies of the JSON error ("Unrecoverable error").
Here the message is written under a name no reader matches and then renamed into place,
which is atomic within one file system. An exchange's binding table has the same gap: kombu
creates the file and only then locks and fills it, so a publisher reading it in between
fails on an empty document. Here the table is created whole (empty) and linked into place
if absent, and kombu then adds the binding under its lock. Everything else is kombu's.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any, Final

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PATH: Final = "pipeline.celery_bridge.fs_transport:Transport"
"""What `broker_transport` names for a `filesystem://` broker URL."""
PARTIAL: Final = ".part"


class Channel(filesystem.Channel):  # type: ignore[misc]
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Put `payload` on `queue`: written aside, then renamed to the name readers match."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        try:
            with open(final + PARTIAL, "wb") as partial:
                partial.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(final + PARTIAL, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _queue_bind(self, exchange: Any, routing_key: Any, pattern: Any, queue: Any) -> None:
        table: Path = self._exchange_file(exchange)  # type: ignore[no-untyped-call]
        if not table.exists():
            self.control_folder.mkdir(exist_ok=True)
            partial = table.with_name(f"{table.name}.{uuid.uuid4()}{PARTIAL}")
            partial.write_bytes(str_to_bytes(dumps([])))  # type: ignore[no-untyped-call]
            try:
                os.link(partial, table)  # atomic, and only if no table exists yet
            except FileExistsError:
                pass
            finally:
                partial.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[no-untyped-call]


class Transport(filesystem.Transport):  # type: ignore[misc]
    Channel = Channel
