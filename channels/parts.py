"""A reply that leaves as several provider messages (a long text cut in parts, pictures apart):
when a send fails midway, the dispatcher's retry sends only the parts that did not go out.

What went out is remembered in this process (the latest 1,000 replies): a retry handled by
another hub process, or after a restart, sends the whole reply again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from hub.messages import DeliveryStatus

Step = TypeVar("Step")
# A part's provider id, or a final answer (a refusal) that ends the reply there.
SendOne = Callable[[int, Step], Awaitable[str | DeliveryStatus]]


class PartsSent:
    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self._sent: OrderedDict[str, list[str]] = OrderedDict()

    async def send(
        self, outbound_id: str, steps: Sequence[Step], send_one: SendOne[Step]
    ) -> list[str] | DeliveryStatus:
        """Each step not yet sent, in order: the provider ids of all parts, or the final
        answer a step gave. A step that raises leaves the parts before it remembered."""
        sent = list(self._sent.get(outbound_id, ()))
        for n, step in enumerate(steps):
            if n < len(sent):
                continue  # went out on an earlier attempt
            outcome = await send_one(n, step)
            if isinstance(outcome, DeliveryStatus):
                self._sent.pop(outbound_id, None)
                return outcome
            sent.append(outcome)
            self._sent[outbound_id] = list(sent)
            self._sent.move_to_end(outbound_id)
            while len(self._sent) > self.keep:
                self._sent.popitem(last=False)
        self._sent.pop(outbound_id, None)
        return sent
