"""Telegram's sending limits, kept inside the channel so a burst waits instead of failing.

Telegram asks bots to send about one message a second to a chat, no more than 20 a minute to a
group and about 30 a second in all; above that it answers 429 with `retry_after`. Each limit is
a GCRA gate (a token bucket written as "the theoretical arrival time"): asking a gate never
blocks, it returns when the message may go, and reserving that moment in every gate at once
keeps concurrent senders spaced without a lock. The caller sleeps (its own injectable sleep).

The gates have no burst: with a burst of b on top of a rate r, a window holds b + r messages
(30 + 29 in the first second), over Telegram's limit. Evenly spaced sends never are.

The limits are per process: several hub processes sending through one bot share Telegram's
limits but not these gates, and 429s (honoured by the channel) cover the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRIVATE_INTERVAL = 1.0  # seconds between messages to one chat
GROUP_INTERVAL = 3.0  # 20 a minute to one group
BOT_RATE = 30.0  # messages a second for the whole bot
MAX_TRACKED_CHATS = 10_000


@dataclass
class Gate:
    """One GCRA limit: `burst` messages at once (1 here), then one every `interval` seconds."""

    interval: float
    burst: int = 1
    tat: float = float("-inf")  # when the bucket would be empty again

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval

    def earliest(self, now: float) -> float:
        return max(now, self.tat - self.tolerance)

    def commit(self, at: float) -> None:
        self.tat = max(self.tat, at) + self.interval


@dataclass
class ChatGates:
    gates: list[Gate]

    def idle(self, now: float) -> bool:
        return all(g.tat <= now for g in self.gates)


@dataclass
class SendLimits:
    """The gates of one bot: one per chat (two for a group) and one for the bot."""

    private_interval: float = PRIVATE_INTERVAL
    group_interval: float = GROUP_INTERVAL
    bot_rate: float = BOT_RATE
    chats: dict[str, ChatGates] = field(default_factory=dict)
    bot: Gate = field(init=False)

    def __post_init__(self) -> None:
        self.bot = Gate(interval=1.0 / self.bot_rate)

    def chat_slot(self, chat: str, *, group: bool, now: float) -> float:
        """Reserve the chat's next slot; the seconds to wait before sending."""
        gates = self._chat(chat, group, now).gates
        at = max(g.earliest(now) for g in gates)
        for gate in gates:
            gate.commit(at)
        return at - now

    def bot_slot(self, now: float) -> float:
        """Reserve the bot's next slot, once the chat's wait is over (so a chat with a queue
        does not hold up the others)."""
        at = self.bot.earliest(now)
        self.bot.commit(at)
        return at - now

    def sending(self, chat: str, *, at: float) -> None:
        """The message goes now (`at`), maybe a little after its chat slot because of the bot
        gate: the chat's next slot counts from here, so the spacing holds."""
        gates = self.chats.get(chat)
        for gate in gates.gates if gates else ():
            gate.tat = max(gate.tat, at + gate.interval)

    def defer(self, chat: str, *, group: bool, until: float, now: float) -> None:
        """Telegram said "retry after": the retried message goes at `until`, the next after."""
        for gate in self._chat(chat, group, now).gates:
            gate.tat = max(gate.tat, until + gate.interval)

    def _chat(self, chat: str, group: bool, now: float) -> ChatGates:
        gates = self.chats.get(chat)
        if gates is None:
            if len(self.chats) >= MAX_TRACKED_CHATS:
                self._forget_idle(now)
            gates = ChatGates([Gate(self.private_interval)])
            if group:
                gates.gates.append(Gate(self.group_interval))
            self.chats[chat] = gates
        return gates

    def _forget_idle(self, now: float) -> None:
        # A chat whose gates have all run dry constrains nothing: drop it.
        for chat in [c for c, g in self.chats.items() if g.idle(now)]:
            del self.chats[chat]
