"""Which logs and which witnesses make a checkpoint final: C2SP tlog-policy (c2sp.org/tlog-policy).

A policy file lists logs, witnesses, groups and one quorum::

    log <vkey>                        a log's key (type 0x01); its key name is its origin
    witness <name> <vkey>             a witness's cosigning key (type 0x04)
    group <name> <k|all|any> <member>...   at least k of the members have witnessed
    quorum <name>|none

A checkpoint is *final* when a listed log signed it and the quorum is met by verified
cosignatures. Phalanx's default quorum for 3f + 1 witnesses is 2f + 1 (:meth:`Policy.byzantine`,
in general n - floor((n - 1) / 3) of n): two such quorums share at least f + 1 witnesses, so at
least one honest witness, who never cosigns two inconsistent trees, so no two conflicting
histories can both be final (the argument of Byzantine quorum systems, Malkhi and Reiter 1998).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from phalanx.ledger.checkpoint import SignedCheckpoint, open_checkpoint
from phalanx.ledger.note import (
    SIG_COSIGNATURE,
    SIG_ED25519,
    Note,
    NoteError,
    Verifier,
    parse_vkey,
)


class PolicyError(ValueError):
    """A policy file that is malformed, or a checkpoint that the policy does not make final."""


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass
class Policy:
    """Known logs, known witnesses (by policy name), groups, and the quorum (None: no cosigning)."""

    logs: list[Verifier]
    witnesses: dict[str, Verifier] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str | None = None

    def __post_init__(self) -> None:
        for log in self.logs:
            if log.sig_type != SIG_ED25519:
                raise PolicyError(f"log {log.name}: a log key has signature type 0x01")
        for name, w in self.witnesses.items():
            if w.sig_type != SIG_COSIGNATURE:
                raise PolicyError(f"witness {name}: a witness key has signature type 0x04 (cosignature/v1)")
        keys = [v.public_key for v in self.logs] + [v.public_key for v in self.witnesses.values()]
        if len(set(keys)) != len(keys):
            raise PolicyError("the same public key is listed twice")
        if self.quorum is not None and self.quorum not in self.witnesses and self.quorum not in self.groups:
            raise PolicyError(f"quorum {self.quorum!r} names no witness or group")

    # -------------------------------------------------------------- building

    @classmethod
    def byzantine(cls, logs: Iterable[Verifier | str], witnesses: Mapping[str, Verifier | str] | Iterable[Verifier | str],
                  f: int | None = None) -> Policy:
        """Quorum of n - f of the n witnesses (2f + 1 of 3f + 1); f defaults to floor((n - 1) / 3)."""
        logs = [parse_vkey(v) if isinstance(v, str) else v for v in logs]
        if not isinstance(witnesses, Mapping):
            witnesses = {(parse_vkey(w) if isinstance(w, str) else w).name: w for w in witnesses}
        ws = {n: parse_vkey(v) if isinstance(v, str) else v for n, v in witnesses.items()}
        if not ws:
            return cls(logs)
        n = len(ws)
        f = (n - 1) // 3 if f is None else f
        if not 0 <= f or 3 * f + 1 > n:
            raise PolicyError(f"{n} witnesses tolerate at most f = {(n - 1) // 3} faults (3f + 1 <= n); got f = {f}")
        group = Group("witnesses", n - f, tuple(ws))
        return cls(logs, ws, {group.name: group}, group.name)

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Read a tlog-policy file; errors name the line."""
        logs: list[Verifier] = []
        witnesses: dict[str, Verifier] = {}
        groups: dict[str, Group] = {}
        quorum: list[str | None] = []
        for n, raw in enumerate(text.split("\n"), 1):
            line = raw.strip(" \t")
            if not line or line.startswith("#"):
                continue
            if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in line):
                raise PolicyError(f"policy line {n}: control character")
            words = [w for w in line.replace("\t", " ").split(" ") if w]  # only ASCII space and tab separate
            try:
                if words[0] == "log" and len(words) in (2, 3):
                    logs.append(parse_vkey(words[1]))
                elif words[0] == "witness" and len(words) in (3, 4):
                    if words[1] in witnesses or words[1] in groups or words[1] == "none":
                        raise PolicyError(f"name {words[1]!r} is defined twice or reserved")
                    witnesses[words[1]] = parse_vkey(words[2])
                elif words[0] == "group" and len(words) >= 4:
                    groups[words[1]] = _parse_group(words, witnesses, groups)
                elif words[0] == "quorum" and len(words) == 2:
                    if quorum:
                        raise PolicyError("a second quorum line")
                    if words[1] != "none" and words[1] not in witnesses and words[1] not in groups:
                        raise PolicyError(f"quorum {words[1]!r} is not defined on an earlier line")
                    quorum.append(None if words[1] == "none" else words[1])
                else:
                    raise PolicyError(f"cannot read {words[0]!r} with {len(words) - 1} arguments")
            except (PolicyError, NoteError) as e:
                raise PolicyError(f"policy line {n}: {e}") from None
        if not quorum:
            raise PolicyError("policy has no quorum line")
        try:
            return cls(logs, witnesses, groups, quorum[0])
        except PolicyError as e:
            raise PolicyError(f"policy: {e}") from None

    def format(self) -> str:
        lines = [f"log {log.vkey}" for log in self.logs]
        lines += [f"witness {name} {w.vkey}" for name, w in self.witnesses.items()]
        for g in self.groups.values():
            k = "all" if g.threshold == len(g.members) and len(g.members) > 1 else str(g.threshold)
            lines.append(f"group {g.name} {k} {' '.join(g.members)}")
        lines.append(f"quorum {self.quorum or 'none'}")
        return "\n".join(lines) + "\n"

    # -------------------------------------------------------------- checking

    def verifiers(self) -> list[Verifier]:
        return [*self.logs, *self.witnesses.values()]

    def open(self, note: Note | bytes | str) -> SignedCheckpoint:
        """Verify the log's signature (and every known cosignature) on a checkpoint."""
        return open_checkpoint(note, self.verifiers())

    def cosigners(self, signed: SignedCheckpoint) -> list[str]:
        """Policy names of the witnesses whose cosignatures verified."""
        return [name for name, w in self.witnesses.items() if signed.verified.signed_by(w)]

    def check(self, note: Note | bytes | str) -> SignedCheckpoint:
        """Return the checkpoint if it is final under this policy; raise :class:`PolicyError` if not."""
        try:
            signed = self.open(note)
        except NoteError as e:
            raise PolicyError(f"checkpoint: {e}") from None
        if self.quorum is None:
            return signed
        have = set(self.cosigners(signed))
        if not self._met(self.quorum, have):
            raise PolicyError(f"checkpoint {signed.checkpoint.origin} at size {signed.checkpoint.size} "
                              f"is not final: {self._shortfall(self.quorum, have)}")
        return signed

    def is_final(self, note: Note | bytes | str) -> bool:
        try:
            self.check(note)
        except PolicyError:
            return False
        return True

    def _met(self, name: str, have: set[str]) -> bool:
        if name in self.witnesses:
            return name in have
        group = self.groups[name]
        return sum(self._met(m, have) for m in group.members) >= group.threshold

    def _shortfall(self, name: str, have: set[str]) -> str:
        if name in self.witnesses:
            return f"no cosignature from witness {name}"
        g = self.groups[name]
        met = [m for m in g.members if self._met(m, have)]
        missing = [m for m in g.members if m not in met]
        return (f"group {g.name} needs {g.threshold} of {len(g.members)}, has {len(met)} "
                f"({', '.join(met) or 'none'}; missing {', '.join(missing)})")


def _parse_group(words: list[str], witnesses: dict[str, Verifier], groups: dict[str, Group]) -> Group:
    name, k, members = words[1], words[2], words[3:]
    if name in witnesses or name in groups or name == "none":
        raise PolicyError(f"name {name!r} is defined twice or reserved")
    for m in members:
        if m not in witnesses and m not in groups:
            raise PolicyError(f"group {name}: member {m!r} is not defined on an earlier line")
    if len(set(members)) != len(members):
        raise PolicyError(f"group {name}: a member is listed twice")
    if k == "all":
        threshold = len(members)
    elif k == "any":
        threshold = 1
    elif k.isascii() and k.isdigit() and not k.startswith("0"):
        threshold = int(k)
        if not 1 <= threshold <= len(members):
            raise PolicyError(f"group {name}: threshold {threshold} is not in 1..{len(members)}")
    else:
        raise PolicyError(f"group {name}: threshold {k!r} is not a number, 'all' or 'any'")
    return Group(name, threshold, tuple(members))
